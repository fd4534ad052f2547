package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/opentrack/opentrack/internal/options"
	othost "github.com/opentrack/opentrack/node/host"
	"github.com/opentrack/opentrack/protocol"
)

// Errors of peer routing and registry exchange.
var (
	// ErrInvalidOptions is wrapped by constructors with every problem
	// found in their options.
	ErrInvalidOptions = errors.New("discovery: invalid options")
	// ErrUnreachable means that neither the addresses known for a peer
	// (the registry's, identify's) nor those the DHT found led to a
	// connection.
	ErrUnreachable = errors.New("discovery: peer unreachable")
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("discovery: closed")
)

// DHTPrefix is the protocol prefix of the private DHT, whose protocol ID
// is thus /opentrack/kad/1.0.0 (spec section 11.7). It keeps the DHT
// apart from the public IPFS one.
const DHTPrefix = "/opentrack"

const (
	// bootstrapDialers bounds the registry nodes one bootstrap round dials
	// at once.
	bootstrapDialers = 4
	// bootstrapAttempts bounds the registry nodes one bootstrap round
	// tries, as a multiple of RouterOptions.BootstrapPeers.
	bootstrapAttempts = 4
)

// RouterOptions tune a Router. The zero value of a field means its
// default; EnsureDefaults fills them in and Validate checks them.
type RouterOptions struct {
	// BootstrapInterval is how often the router checks that it is
	// connected to BootstrapPeers registry nodes and dials more if not. A
	// newer registry triggers a check at once. Default: 1m.
	BootstrapInterval time.Duration
	// BootstrapPeers is how many registry nodes the router keeps
	// connections to (all of them when the registry lists fewer): enough
	// for the DHT to have peers, and for a node that comes back on a new
	// address to tell it to the nodes that others will ask. Default: 8.
	BootstrapPeers int
	// RefreshInterval is how often the DHT refreshes its routing table.
	// Default: 10m, kad-dht's own.
	RefreshInterval time.Duration
	// DialTimeout bounds one attempt to connect to a peer at the
	// addresses known for it. Default: 10s.
	DialTimeout time.Duration
	// LookupTimeout bounds one DHT lookup of a peer. Default: 30s.
	LookupTimeout time.Duration
	// MaxLookups bounds the DHT lookups in flight at once; further
	// Connect calls wait for a slot. Default: 16.
	MaxLookups int
	// AddrTTL is how long registry addresses stay in the peerstore after
	// the router last put them there; every bootstrap round puts them
	// again. Default: 1h (peerstore.AddressTTL).
	AddrTTL time.Duration
}

// routerDefaults holds every default of RouterOptions;
// EnsureDefaults takes them from here and from nowhere else.
var routerDefaults = RouterOptions{
	BootstrapInterval: time.Minute,
	BootstrapPeers:    8,
	RefreshInterval:   10 * time.Minute,
	DialTimeout:       10 * time.Second,
	LookupTimeout:     30 * time.Second,
	MaxLookups:        16,
	AddrTTL:           peerstore.AddressTTL,
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new RouterOptions with all defaults.
func (o *RouterOptions) EnsureDefaults() *RouterOptions {
	o = options.New(o)
	options.Default(&o.BootstrapInterval, routerDefaults.BootstrapInterval)
	options.Default(&o.BootstrapPeers, routerDefaults.BootstrapPeers)
	options.Default(&o.RefreshInterval, routerDefaults.RefreshInterval)
	options.Default(&o.DialTimeout, routerDefaults.DialTimeout)
	options.Default(&o.LookupTimeout, routerDefaults.LookupTimeout)
	options.Default(&o.MaxLookups, routerDefaults.MaxLookups)
	options.Default(&o.AddrTTL, routerDefaults.AddrTTL)
	return o
}

// Validate checks o after EnsureDefaults and reports every problem at once.
func (o *RouterOptions) Validate() error {
	var p []string
	positive(&p, "BootstrapInterval", o.BootstrapInterval)
	positive(&p, "BootstrapPeers", o.BootstrapPeers)
	positive(&p, "RefreshInterval", o.RefreshInterval)
	positive(&p, "DialTimeout", o.DialTimeout)
	positive(&p, "LookupTimeout", o.LookupTimeout)
	positive(&p, "MaxLookups", o.MaxLookups)
	positive(&p, "AddrTTL", o.AddrTTL)
	return problems(p)
}

// Router finds and connects to peers, registry nodes above all, in a
// private Kademlia DHT among the registry's nodes. The DHT does peer
// routing only: it stores no provider or value records, so nothing about
// parcels is ever announced (spec section 11.7). It is safe for
// concurrent use.
type Router struct {
	h       host.Host
	trust   *Trust
	dht     *dht.IpfsDHT
	opts    RouterOptions
	log     *slog.Logger
	lookups chan struct{} // a slot per DHT lookup in flight
	nodes   nodeIndex

	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// NewRouter starts the DHT on h and a loop that keeps h connected to the
// nodes of t's registry; both run until Close. opts may be nil for
// defaults and is not modified; log may be nil to discard.
func NewRouter(h host.Host, t *Trust, opts *RouterOptions, log *slog.Logger) (*Router, error) {
	var o RouterOptions
	if opts != nil {
		o = *opts
	}
	if err := o.EnsureDefaults().Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Router{h: h, trust: t, nodes: nodeIndex{trust: t}, opts: o, log: log, lookups: make(chan struct{}, o.MaxLookups)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	var err error
	r.dht, err = dht.New(h,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(DHTPrefix),
		// Only peer routing: no provider or value records, so the DHT can
		// hold nothing about parcels, and none of IPFS's record types.
		dht.DisableProviders(),
		dht.DisableValues(),
		// The registry's nodes, read at each use so that a newer registry
		// counts at once. Without this option kad-dht has no bootstrap
		// peers at all; the public IPFS ones are never used.
		dht.BootstrapPeersFunc(r.bootstrapPeers),
		// The DHT is among registry nodes: anyone can query it, but only
		// the registry's nodes enter routing tables, so peers outside the
		// registry cannot crowd them out or steer lookups.
		dht.RoutingTableFilter(func(_ any, p peer.ID) bool { return r.isRegistryNode(p) }),
		dht.RoutingTableRefreshPeriod(o.RefreshInterval),
	)
	if err != nil {
		r.cancel()
		return nil, fmt.Errorf("discovery: dht: %w", err)
	}
	r.wg.Go(r.run)
	return r, nil
}

// Connect makes sure h has a connection to p, reusing one it already has.
// Otherwise it dials the addresses the registry lists for p, along with
// any the peerstore learned (identify, an earlier lookup); if that fails,
// it looks p up in the DHT and dials what it finds there. That is how a
// node that moved since the registry was signed is found again: it tells
// its new address to the registry nodes it reconnects to, and the DHT
// hands it on.
//
// Its errors leave p out: every caller names the peer it asked for.
func (r *Router) Connect(ctx context.Context, p peer.ID) error {
	if p == r.h.ID() {
		return fmt.Errorf("discovery: %w", swarm.ErrDialToSelf)
	}
	if r.ctx.Err() != nil {
		return ErrClosed
	}
	if r.h.Network().Connectedness(p) == network.Connected {
		return nil
	}
	// Close ends a Connect in progress.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.ctx, cancel)()

	if addrs := r.nodes.get().addrs[p]; len(addrs) > 0 {
		r.h.Peerstore().AddAddrs(p, addrs, r.opts.AddrTTL)
	}
	tried := r.h.Peerstore().Addrs(p)
	var dialErr error
	if len(tried) > 0 {
		if dialErr = r.dial(ctx, peer.AddrInfo{ID: p}); dialErr == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", ErrUnreachable, dialErr)
		}
	}
	found, err := r.lookup(ctx, p)
	if err != nil && ctx.Err() == nil {
		// A lookup gives up on a peer it failed to query, even when a later
		// answer brings the peer's new address; and the moved peer's old
		// routing-table entry is what it tries first. The answers' addresses
		// are in the peerstore, so those not tried yet are worth a dial.
		found = peer.AddrInfo{ID: p, Addrs: untried(r.h.Peerstore().Addrs(p), tried)}
		if len(found.Addrs) > 0 {
			err = nil
		}
	}
	if err != nil {
		if dialErr != nil {
			return fmt.Errorf("%w: known addresses: %w; dht: %w", ErrUnreachable, dialErr, err)
		}
		return fmt.Errorf("%w: no known addresses; dht: %w", ErrUnreachable, err)
	}
	if err := r.dial(ctx, found); err != nil {
		return fmt.Errorf("%w: at the addresses the dht found: %w", ErrUnreachable, err)
	}
	r.log.Debug("peer found through the dht", "peer", p, "addrs", found.Addrs)
	return nil
}

// untried returns the addresses in addrs that are not in tried.
func untried(addrs, tried []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range addrs {
		if !slices.ContainsFunc(tried, a.Equal) {
			out = append(out, a)
		}
	}
	return out
}

// Close stops the bootstrap loop and the DHT. It does not close the host.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		r.wg.Wait()
		r.closeErr = r.dht.Close()
	})
	return r.closeErr
}

// RoutingTableSize is how many peers the DHT's routing table holds, for
// health checks and tests.
func (r *Router) RoutingTableSize() int { return r.dht.RoutingTable().Size() }

// dial connects to ai within DialTimeout.
//
// libp2p's dial worker answers a dial that joins an earlier one with the
// connection that one made, even when it has been closed since (the
// bootstrap's dial, say, and a ClosePeer in between); so a nil error is
// trusted only with a live connection. Otherwise dial waits for that
// worker to finish, backing off, and dials again until DialTimeout.
func (r *Router) dial(ctx context.Context, ai peer.AddrInfo) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.DialTimeout)
	defer cancel()
	wait := time.Millisecond
	for closed := 0; ; closed++ {
		if err := r.h.Connect(ctx, ai); err != nil {
			return othost.DialError(err)
		}
		if r.h.Network().Connectedness(ai.ID) == network.Connected {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %d dials each gave a connection closed at once: %w", ErrUnreachable, closed+1, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// lookup asks the DHT where p is, within LookupTimeout once a lookup slot
// is free.
func (r *Router) lookup(ctx context.Context, p peer.ID) (peer.AddrInfo, error) {
	select {
	case r.lookups <- struct{}{}:
		defer func() { <-r.lookups }()
	case <-ctx.Done():
		return peer.AddrInfo{}, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.LookupTimeout)
	defer cancel()
	return r.dht.FindPeer(ctx, p)
}

// run bootstraps at start, on every newer registry, and every
// BootstrapInterval, until Close.
func (r *Router) run() {
	tick := time.NewTicker(r.opts.BootstrapInterval)
	defer tick.Stop()
	for {
		// Taken before bootstrapping, so a registry installed meanwhile
		// is not missed.
		changed := r.trust.Changed()
		r.bootstrap()
		select {
		case <-r.ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// bootstrap puts the registry's addresses in the peerstore and dials
// registry nodes, in random order so that nodes do not all pick the same
// few, until BootstrapPeers of them are connected or all were tried. New
// connections make the DHT refresh its routing table.
func (r *Router) bootstrap() {
	idx := r.nodes.get()
	var todo []peer.ID
	connected := 0
	for _, p := range idx.peers {
		if p == r.h.ID() {
			continue
		}
		r.h.Peerstore().AddAddrs(p, idx.addrs[p], r.opts.AddrTTL)
		if r.h.Network().Connectedness(p) == network.Connected {
			connected++
		} else {
			todo = append(todo, p)
		}
	}
	need := int64(r.opts.BootstrapPeers - connected)
	if need <= 0 || len(todo) == 0 {
		return
	}
	rand.Shuffle(len(todo), func(i, j int) { todo[i], todo[j] = todo[j], todo[i] })
	// A round tries a bounded number of nodes, so that when the network
	// is down it ends after a few DialTimeouts and a newer registry is
	// not kept waiting; the next round tries others.
	todo = todo[:min(len(todo), bootstrapAttempts*r.opts.BootstrapPeers)]

	var made atomic.Int64
	var wg sync.WaitGroup
	slots := make(chan struct{}, bootstrapDialers)
	for _, p := range todo {
		select {
		case slots <- struct{}{}:
		case <-r.ctx.Done():
		}
		if r.ctx.Err() != nil || made.Load() >= need {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := r.dial(r.ctx, peer.AddrInfo{ID: p}); err != nil {
				r.log.Debug("registry node unreachable", "peer", p, "err", err)
				return
			}
			made.Add(1)
		})
	}
	wg.Wait()
	if made.Load() > 0 && r.ctx.Err() == nil {
		// Bootstrap never fails; it only asks for a refresh.
		_ = r.dht.Bootstrap(r.ctx)
	}
}

// bootstrapPeers is the DHT's bootstrap list: every node of the registry
// held but this one.
func (r *Router) bootstrapPeers() []peer.AddrInfo {
	idx := r.nodes.get()
	out := make([]peer.AddrInfo, 0, len(idx.peers))
	for _, p := range idx.peers {
		if p != r.h.ID() {
			out = append(out, peer.AddrInfo{ID: p, Addrs: idx.addrs[p]})
		}
	}
	return out
}

// isRegistryNode reports whether the registry held lists p as a node.
func (r *Router) isRegistryNode(p peer.ID) bool {
	_, ok := r.nodes.get().addrs[p]
	return ok
}

// nodeIndex is the index of the nodes of the registry a Trust holds,
// rebuilt when a newer registry is installed. A nil Trust has none.
type nodeIndex struct {
	trust *Trust
	cur   atomic.Pointer[registryIndex]
}

// get returns the index of the registry held now. Two callers may rebuild
// it at once; both get the same.
func (n *nodeIndex) get() *registryIndex {
	var reg *protocol.Registry
	if n.trust != nil {
		reg = n.trust.Registry()
	}
	if idx := n.cur.Load(); idx != nil && idx.reg == reg {
		return idx
	}
	idx := indexRegistry(reg)
	n.cur.Store(idx)
	return idx
}

// registryIndex is the registry's nodes by peer ID.
type registryIndex struct {
	reg   *protocol.Registry
	peers []peer.ID // in registry order
	addrs map[peer.ID][]ma.Multiaddr
}

// indexRegistry indexes reg's nodes; reg may be nil. The registry was
// validated when it was installed, so an entry that does not parse here
// cannot occur, and is skipped rather than failing the rest.
func indexRegistry(reg *protocol.Registry) *registryIndex {
	idx := &registryIndex{reg: reg, addrs: map[peer.ID][]ma.Multiaddr{}}
	if reg == nil {
		return idx
	}
	for _, c := range reg.Carriers {
		for _, n := range c.Nodes {
			p, err := peer.Decode(n.Peer)
			if err != nil {
				continue
			}
			if _, ok := idx.addrs[p]; !ok {
				idx.peers = append(idx.peers, p)
				idx.addrs[p] = nil
			}
			for _, s := range n.Addrs {
				if a, err := ma.NewMultiaddr(s); err == nil {
					idx.addrs[p] = append(idx.addrs[p], a)
				}
			}
		}
	}
	return idx
}

// positive adds a problem to p unless v is above zero.
func positive[T int | time.Duration](p *[]string, name string, v T) {
	if v <= 0 {
		*p = append(*p, fmt.Sprintf("%s (%v) must be positive", name, v))
	}
}

// problems turns a list of problems into one ErrInvalidOptions, or nil.
func problems(p []string) error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(p, "; "))
}
