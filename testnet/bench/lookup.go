package bench

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/node/client"
	nodehost "github.com/opentrack/opentrack/node/host"
	"github.com/opentrack/opentrack/protocol"
)

// platform is the harness's client side: one libp2p host, as a
// platform's node would have, connected to the carrier on one transport.
type platform struct {
	host   host.Host
	client *client.Client
	node   peer.ID
}

func newPlatform(ctx context.Context, ai peer.AddrInfo) (*platform, error) {
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, err
	}
	h, err := nodehost.New(priv, &nodehost.Options{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}})
	if err != nil {
		return nil, err
	}
	if err := h.Connect(ctx, ai); err != nil {
		h.Close()
		return nil, fmt.Errorf("bench: connect %s: %w", ai.Addrs, err)
	}
	c, err := client.New(h, &client.Options{MaxIdleStreams: 64})
	if err != nil {
		h.Close()
		return nil, err
	}
	return &platform{host: h, client: c, node: ai.ID}, nil
}

func (p *platform) Close() error {
	p.client.Close()
	return p.host.Close()
}

// lookup is one single-number track request; the answer is decoded and
// its code checked, not verified (the baseline's client verifies nothing
// either).
func (p *platform) lookup(ctx context.Context, i int) error {
	resp, err := p.client.Track(ctx, p.node, []protocol.TrackQuery{{Number: number(i)}}, nil)
	if err != nil {
		return err
	}
	return okResults(resp, 1)
}

// batch asks for protocol.MaxNumbersPerRequest numbers from i on.
func (p *platform) batch(parcels int) request {
	return func(ctx context.Context, i int) error {
		q := make([]protocol.TrackQuery, protocol.MaxNumbersPerRequest)
		for j := range q {
			q[j].Number = number((i + j*7919) % parcels) // scattered, as a platform's batch is
		}
		resp, err := p.client.Track(ctx, p.node, q, nil)
		if err != nil {
			return err
		}
		return okResults(resp, len(q))
	}
}

// verifiedBatch is batch through Lookup, which verifies every head's
// signature against the carrier's key and every event's chain to it.
func (p *platform) verifiedBatch(parcels int, key ed25519.PublicKey) request {
	keys := protocol.PublicKeyResolver{Carrier: carrierCode, Key: key}
	return func(ctx context.Context, i int) error {
		numbers := make([]string, protocol.MaxNumbersPerRequest)
		for j := range numbers {
			numbers[j] = number((i + j*7919) % parcels)
		}
		views, err := p.client.Lookup(ctx, p.node, carrierCode, numbers, keys, nil)
		if err != nil {
			return err
		}
		for _, v := range views {
			if !v.Verified || len(v.Events) == 0 {
				return fmt.Errorf("%s: not verified: %s %s", v.Number, v.Error, v.Message)
			}
		}
		return nil
	}
}

func okResults(resp *protocol.TrackResponse, n int) error {
	if resp.Error != nil || len(resp.Results) != n {
		return fmt.Errorf("bench: bad track response: %+v, %d results", resp.Error, len(resp.Results))
	}
	for i := range resp.Results {
		if r := &resp.Results[i]; r.Code != protocol.CodeOK || len(r.Events) == 0 {
			return fmt.Errorf("bench: %s: %s, %d events", r.Number, r.Code, len(r.Events))
		}
	}
	return nil
}
