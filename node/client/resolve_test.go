package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// registryOf signs a registry binding servicetest's key to its carrier,
// served by nodes, and returns trust holding it.
func registryOf(t *testing.T, nodes ...host.Host) *discovery.Trust {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	auth, err := protocol.NewSigner(priv)
	require.NoError(t, err)
	e := protocol.CarrierEntry{
		Code: servicetest.Carrier, Name: "test", Country: "ZZ",
		// servicetest signs its heads in 2026.
		Keys:    []protocol.CarrierKey{{Key: servicetest.Signer().Public(), NotBefore: 0, NotAfter: time.Now().Add(time.Hour).UnixMilli()}},
		Schemes: []protocol.Scheme{servicetest.Scheme},
	}
	for _, h := range nodes {
		n := protocol.NodeEntry{Peer: h.ID().String()}
		for _, a := range h.Addrs() {
			n.Addrs = append(n.Addrs, a.String())
		}
		e.Nodes = append(e.Nodes, n)
	}
	now := time.Now()
	signed, err := protocol.SignRegistry(auth, &protocol.Registry{
		Seq: 1, Issued: now.UnixMilli(), NotBefore: now.Add(-time.Hour).UnixMilli(), NotAfter: now.Add(time.Hour).UnixMilli(),
		Carriers: []protocol.CarrierEntry{e},
	})
	require.NoError(t, err)
	trust, err := discovery.NewTrust([]ed25519.PublicKey{auth.Public()}, "", nil)
	require.NoError(t, err)
	_, err = trust.Install(signed)
	require.NoError(t, err)
	return trust
}

// hostConnector connects h to the nodes of a registry, and refuses the
// peers in down as if they were unreachable.
type hostConnector struct {
	h     host.Host
	trust *discovery.Trust
	down  map[peer.ID]bool

	mu    sync.Mutex
	tries []peer.ID
}

func (c *hostConnector) Connect(ctx context.Context, p peer.ID) error {
	c.mu.Lock()
	c.tries = append(c.tries, p)
	c.mu.Unlock()
	if c.down[p] {
		return errors.New("test: peer down")
	}
	for _, e := range c.trust.Registry().Carriers {
		for _, n := range e.Nodes {
			if n.Peer == p.String() {
				ai, err := peer.AddrInfoFromString(n.Addrs[0] + "/p2p/" + n.Peer)
				if err != nil {
					return err
				}
				return c.h.Connect(ctx, *ai)
			}
		}
	}
	return errors.New("test: not a registry node")
}

func newResolveClient(t *testing.T, opts *Options) *Client {
	t.Helper()
	c, err := New(servicetest.NewHost(t, nil), opts)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestTrackNumbersBatches sends a carrier's numbers in requests of at most
// MaxNumbersPerRequest, each number once, and answers in input order.
func TestTrackNumbersBatches(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 230, Events: 2})
	trust := registryOf(t, srv.Host)
	var requests sync.Map
	c := newResolveClient(t, &Options{TamperResponse: func(p peer.ID, resp *protocol.TrackResponse) {
		requests.Store(resp, len(resp.Results))
	}})
	var numbers []string
	for i := range 230 {
		numbers = append(numbers, servicetest.Number(i))
	}
	numbers = append(numbers, servicetest.Number(5), " 77 0000 0000 07", servicetest.Number(999), "7#")

	views, err := c.TrackNumbers(context.Background(), trust, &hostConnector{h: c.h, trust: trust}, numbers, nil)
	require.NoError(t, err)
	require.Len(t, views, len(numbers))
	for i, v := range views[:232] {
		require.Empty(t, v.Error, "%d %s: %s", i, v.Number, v.Message)
		require.True(t, v.Verified)
		require.Equal(t, servicetest.Carrier, v.Carrier)
		require.Equal(t, KeySourceRegistry, v.KeySource)
		require.Len(t, v.Events, 2)
	}
	require.Equal(t, servicetest.Number(5), views[230].Number)
	require.Equal(t, servicetest.Number(7), views[231].Number, "normalized")
	require.Equal(t, protocol.CodeNotFound, views[232].Error)
	require.Equal(t, servicetest.Carrier, views[232].Carrier)
	require.Equal(t, protocol.CodeInvalidNumber, views[233].Error)

	var sizes []int
	asked := 0
	requests.Range(func(_, v any) bool {
		sizes = append(sizes, v.(int))
		asked += v.(int)
		return true
	})
	require.Len(t, sizes, 3, "231 distinct numbers make 3 requests: %v", sizes)
	require.Equal(t, 231, asked, "each number is asked once")
}

// TestTrackNumbersFailover goes on to the carrier's next node when one is
// unreachable or refuses the numbers, and starts later requests at the
// node that answered.
func TestTrackNumbersFailover(t *testing.T) {
	servicetest.CheckLeaks(t)
	dead := servicetest.NewHost(t, nil)
	busy := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 2, Track: func(tc *service.TrackConfig) { tc.Policy = refuseAll{} }})
	live := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 150, Events: 2})
	trust := registryOf(t, dead, busy.Host, live.Host)
	c := newResolveClient(t, nil)
	conn := &hostConnector{h: c.h, trust: trust, down: map[peer.ID]bool{dead.ID(): true}}

	numbers := make([]string, 150)
	for i := range numbers {
		numbers[i] = servicetest.Number(i)
	}
	views, err := c.TrackNumbers(context.Background(), trust, conn, numbers, nil)
	require.NoError(t, err)
	for _, v := range views {
		require.True(t, v.Verified, "%s: %s", v.Number, v.Message)
	}
	// Requests start at a random node and go round: each of the two found
	// the live node at the latest third, or started there after the
	// other one did.
	require.GreaterOrEqual(t, len(conn.tries), 2)
	require.LessOrEqual(t, len(conn.tries), 6)
	require.Equal(t, live.Host.ID(), conn.tries[len(conn.tries)-1])
}

// TestTrackNumbersSpreads: lookups of a carrier with several nodes
// (replicas) start at a random one, so that every node serves a share.
func TestTrackNumbersSpreads(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 1})
	b := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 1})
	trust := registryOf(t, a.Host, b.Host)
	c := newResolveClient(t, nil)
	conn := &hostConnector{h: c.h, trust: trust}
	const lookups = 40
	for range lookups {
		views, err := c.TrackNumbers(context.Background(), trust, conn, []string{servicetest.Number(0)}, nil)
		require.NoError(t, err)
		require.True(t, views[0].Verified, views[0].Message)
	}
	per := map[peer.ID]int{}
	for _, p := range conn.tries {
		per[p]++
	}
	require.Len(t, conn.tries, lookups, "a live node answers at the first try")
	// Both ways about half; all on one node is 2^-39 likely.
	require.Positive(t, per[a.Host.ID()])
	require.Positive(t, per[b.Host.ID()])
}

// refuseAll is a track policy that rate-limits every request.
type refuseAll struct{}

func (refuseAll) AdmitTrack(peer.ID, ma.Multiaddr, int) (bool, time.Duration) {
	return false, time.Second
}
func (refuseAll) ObserveNotFound(peer.ID, ma.Multiaddr, int) {}
func (refuseAll) AdmitWatch(peer.ID) (bool, time.Duration)   { return false, time.Second }
func (refuseAll) AllowPublic(peer.ID) bool                   { return true }

// TestTrackNumbersNoAnswer reports unavailable, with the reason, for the
// numbers of a carrier none of whose nodes answers.
func TestTrackNumbersNoAnswer(t *testing.T) {
	servicetest.CheckLeaks(t)
	busy := servicetest.StartServer(t, servicetest.ServerConfig{Track: func(tc *service.TrackConfig) { tc.Policy = refuseAll{} }})
	dead := servicetest.NewHost(t, nil)
	for _, tc := range []struct {
		name  string
		nodes []host.Host
		code  string
		msg   string
	}{
		{"no nodes", nil, protocol.CodeUnavailable, "lists no node"},
		{"unreachable", []host.Host{dead}, protocol.CodeUnavailable, "peer down"},
		{"rate limited", []host.Host{dead, busy.Host}, protocol.CodeRateLimited, "the carrier gave no reason"}, // the busy node's answer, not the dead one's
	} {
		t.Run(tc.name, func(t *testing.T) {
			trust := registryOf(t, tc.nodes...)
			c := newResolveClient(t, nil)
			conn := &hostConnector{h: c.h, trust: trust, down: map[peer.ID]bool{dead.ID(): true}}
			views, err := c.TrackNumbers(context.Background(), trust, conn, []string{servicetest.Number(1)}, nil)
			require.NoError(t, err)
			require.Len(t, views, 1)
			require.Equal(t, tc.code, views[0].Error, views[0].Message)
			require.Contains(t, views[0].Message, tc.msg)
			require.False(t, views[0].Verified)
			require.Equal(t, servicetest.Carrier, views[0].Carrier)
		})
	}
}

// TestTrackNumbersWithoutRegistry fails the whole lookup: nothing can be
// resolved or verified.
func TestTrackNumbersWithoutRegistry(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	trust, err := discovery.NewTrust([]ed25519.PublicKey{priv.Public().(ed25519.PublicKey)}, "", nil)
	require.NoError(t, err)
	c := newResolveClient(t, nil)
	_, err = c.TrackNumbers(context.Background(), trust, &hostConnector{h: c.h, trust: trust}, []string{servicetest.Number(1)}, nil)
	require.ErrorIs(t, err, discovery.ErrNoRegistry)
}

func TestResolveNormalizes(t *testing.T) {
	tr := staticTrust{carriers: map[string][]*protocol.CarrierEntry{"SF1234567890": {{Code: "SF"}}}}
	got, err := Resolve(tr, " sf-1234 567890 ")
	require.NoError(t, err)
	require.Equal(t, "SF", got[0].Code)
	_, err = Resolve(tr, "S*F")
	require.ErrorIs(t, err, protocol.ErrInvalidNumber)
}

// staticTrust resolves from a fixed table.
type staticTrust struct {
	Trust
	carriers map[string][]*protocol.CarrierEntry
}

func (s staticTrust) Resolve(n string) ([]*protocol.CarrierEntry, error) {
	if c, ok := s.carriers[n]; ok {
		return c, nil
	}
	return nil, protocol.ErrInvalidNumber
}
