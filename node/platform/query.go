package platform

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/opentrack/opentrack/node/client"
	lphost "github.com/opentrack/opentrack/node/host"
	"github.com/opentrack/opentrack/protocol"
)

// peerTimeout bounds reaching one node and asking it what it serves
// before WatchPeer subscribes there.
const peerTimeout = 30 * time.Second

// UnreachableError is the error of a node that could not be dialed: its
// peer ID and why, worded by node/host.DialError. It matches
// ErrUnreachable, and a caller can word it with what to check.
type UnreachableError struct {
	Peer peer.ID
	Err  error
}

// Error says which node and why.
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%s %s: %v", ErrUnreachable, e.Peer, e.Err)
}

// Unwrap is the dial error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// Is matches ErrUnreachable.
func (e *UnreachableError) Is(target error) bool { return target == ErrUnreachable }

// Track looks numbers up as a platform does with no hub in between
// (client.Client.TrackNumbers): each resolves through the registry to its
// carriers, which are asked at their registry nodes through the router,
// and every record is verified against a key the registry binds to the
// carrier. grant may be nil. Without trust it is ErrNoTrust.
func (p *Platform) Track(ctx context.Context, numbers []string, grant []byte) ([]client.ParcelView, error) {
	if p.trust == nil {
		return nil, ErrNoTrust
	}
	return p.client.TrackNumbers(ctx, p.trust, p.router, numbers, grant)
}

// TrackPeer asks the one node ai for numbers, as `opentrack track --peer`
// does (client.Client.TrackPeer): verified against the registry when the
// platform has trust, otherwise against the keys the node presents, which
// proves the chain but not who signed it. A node that cannot be dialed is
// an UnreachableError.
func (p *Platform) TrackPeer(ctx context.Context, ai peer.AddrInfo, numbers []string, grant []byte) ([]client.ParcelView, error) {
	if err := p.connect(ctx, ai); err != nil {
		return nil, err
	}
	return p.client.TrackPeer(ctx, ai.ID, p.keys(), numbers, grant)
}

// Watch subscribes as o says (client.Client.Watch), filling in what the
// platform knows: with no Carrier, o.Numbers resolve through the registry
// to their one carrier and its registry nodes (client.WatchTarget;
// numbers of several carriers are client.ErrSeveralCarriers), and with
// trust, Keys default to the registry and Connector to the router.
// Resolving without trust is ErrNoTrust.
func (p *Platform) Watch(ctx context.Context, o client.WatchOptions) (*client.Watcher, error) {
	if o.Carrier == "" {
		if p.trust == nil {
			return nil, ErrNoTrust
		}
		t, err := client.WatchTarget(p.trust, o.Numbers)
		if err != nil {
			return nil, err
		}
		o.Carrier, o.Peers = t.Carrier, t.Peers
	}
	if p.trust != nil && o.Keys == nil {
		o.Keys = p.trust
	}
	if p.router != nil && o.Connector == nil {
		o.Connector = p.router
	}
	return p.client.Watch(ctx, o)
}

// WatchPeer subscribes at the one node ai, as `opentrack watch --peer`
// does, for the carrier the node says it serves: o says what to watch,
// and its Carrier, Peers and Keys are set here. Heads are verified
// against the registry when the platform has trust, otherwise against the
// keys the node presents. The node's addresses are kept for good, so that
// the watcher dials it again after a restart however long it was gone. A
// node that cannot be dialed is an UnreachableError; one that serves no
// carrier is client.ErrNoCarrier.
func (p *Platform) WatchPeer(ctx context.Context, ai peer.AddrInfo, o client.WatchOptions) (*client.Watcher, error) {
	p.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
	cctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	if err := p.connect(cctx, ai); err != nil {
		return nil, err
	}
	info, err := p.Info(cctx, ai.ID)
	if err != nil {
		return nil, fmt.Errorf("platform: ask %s what it serves: %w", ai.ID, err)
	}
	if info.Carrier == "" {
		return nil, fmt.Errorf("%w: %s", client.ErrNoCarrier, ai.ID)
	}
	o.Carrier, o.Peers = info.Carrier, []peer.ID{ai.ID}
	o.Keys = client.InfoKeys{Carrier: info.Carrier, Keys: info.Keys}
	if p.trust != nil {
		o.Keys = p.trust
	}
	return p.client.Watch(ctx, o)
}

// Info asks node id what it is over the info protocol: the carrier it
// serves and its keys, its version, limits and registry sequence. It
// presents the sequence the platform holds, so that the answer carries
// the node's registry only when it is newer.
func (p *Platform) Info(ctx context.Context, id peer.ID) (*protocol.Info, error) {
	var seq uint64
	if p.trust != nil {
		seq = p.trust.Seq()
	}
	return p.client.Info(ctx, id, seq)
}

// connect dials ai unless the host is connected to it already.
func (p *Platform) connect(ctx context.Context, ai peer.AddrInfo) error {
	if err := p.host.Connect(ctx, ai); err != nil {
		return &UnreachableError{Peer: ai.ID, Err: lphost.DialError(err)}
	}
	return nil
}

// keys is the trust the client verifies against, nil for none: a nil
// *discovery.Trust must stay a nil client.Trust.
func (p *Platform) keys() client.Trust {
	if p.trust == nil {
		return nil
	}
	return p.trust
}
