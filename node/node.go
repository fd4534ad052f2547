package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/discovery"
	lphost "github.com/opentrack/opentrack/node/host"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/platform"
	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/node/store/postgres"
	"github.com/opentrack/opentrack/node/store/seal"
	"github.com/opentrack/opentrack/node/version"
	"github.com/opentrack/opentrack/protocol"
)

// Options adjust a node at start, over what its repo's config says.
type Options struct {
	// Listen replaces the config's listen multiaddrs when not empty.
	Listen []string
	// AdminAddr replaces the config's admin address when not empty.
	AdminAddr string
	// Logger receives the node's logs. Default: slog.Default().
	Logger *slog.Logger
	// Service tunes the protocol handlers; nil for defaults.
	Service *service.Options
	// MDNS turns on mDNS discovery of peers on the LAN, for testnets: it
	// remembers every node it hears and connects to registry nodes.
	// Default: false.
	MDNS bool
	// Router tunes peer routing (the private DHT and the connections to
	// registry nodes); nil for defaults. Only a node with trust anchors
	// routes.
	Router *discovery.RouterOptions
	// Exchange tunes registry exchange; nil for defaults. Only a node
	// with trust anchors exchanges.
	Exchange *discovery.ExchangeOptions
	// Client tunes the client of the node's Platform, which registry
	// exchange asks through; nil for defaults.
	Client *client.Options
	// Gater vets the host's connections (host.Options.Gater); testnets cut
	// links with it. Default: nil, every connection allowed.
	Gater connmgr.ConnectionGater
}

// Node is a running node: the libp2p host, the protocol services and, on
// a carrier node, the store, ingest and the admin API.
type Node struct {
	Repo     *repo.Repo
	Host     host.Host
	Store    store.Store // nil on a platform node
	Metrics  *metrics.Metrics
	Ingester *ingest.Ingester // nil on a platform node
	// Space guards the pebble store's free space; nil on postgres and on
	// a platform node.
	Space *store.Space
	// Trust holds the anchors and the newest registry; nil on a node
	// whose repo has no trust anchors, which then neither routes nor
	// exchanges registries.
	Trust *discovery.Trust
	// Platform is the node's peer routing, registry exchange and client
	// over Trust and Host; nil on a node without trust anchors.
	Platform *platform.Platform
	Log      *slog.Logger

	admin     *admin.Server
	track     *service.Track
	watch     *service.Watch
	info      *service.Info
	mdns      *discovery.MDNS
	sweeping  context.CancelFunc // stops the details sweeper
	swept     chan struct{}      // closed when it has stopped
	closeOnce sync.Once
	closeErr  error
}

// Start opens the store, starts the host and the services, and listens.
// On error everything started so far is closed again.
func Start(r *repo.Repo, o Options) (_ *Node, err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	n := &Node{Repo: r, Metrics: metrics.New(), Log: log}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	switch t, err := r.Trust(); {
	case err == nil:
		n.Trust = t
	case !errors.Is(err, discovery.ErrNoAnchors):
		return nil, err
	}
	if r.Config.Role == repo.RoleCarrier {
		err = n.startCarrier(o)
	} else {
		err = n.startPlatform(o)
	}
	if err != nil {
		return nil, err
	}
	log.Info("node started", "role", r.Config.Role, "peer", n.Host.ID(), "carrier", r.Config.Carrier.Code, "addrs", n.Addrs(), "admin", n.AdminURL())
	return n, nil
}

// startCarrier starts a carrier node: the store, the host, track, watch
// and ingest over the store, info, discovery, and the admin API.
func (n *Node) startCarrier(o Options) error {
	cfg := n.Repo.Config
	if err := n.startCarrierStore(); err != nil {
		return err
	}
	if err := n.startHost(o); err != nil {
		return err
	}
	signer, err := n.Repo.Signer()
	if err != nil {
		return err
	}
	schemes, err := cfg.Schemes()
	if err != nil {
		return err
	}
	code, keys := cfg.Carrier.Code, protocol.PublicKeyResolver{Carrier: cfg.Carrier.Code, Key: signer.Public()}
	pol, err := policy.New(cfg.PolicyOptions(), n.registryMember, nil)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.track, err = service.NewTrack(service.TrackConfig{Carrier: code, Schemes: schemes, Store: n.Store, Metrics: n.Metrics, Logger: n.Log, Policy: pol, Keys: keys}, o.Service)
	if err != nil {
		return err
	}
	n.track.Register(n.Host)
	n.watch, err = service.NewWatch(service.WatchConfig{Store: n.Store, Metrics: n.Metrics, Logger: n.Log, Policy: pol, Carrier: code, Schemes: schemes, Keys: keys}, o.Service)
	if err != nil {
		return err
	}
	n.watch.Register(n.Host)
	var iopts *ingest.Options
	if cfg.Store.Backend == repo.BackendPostgres {
		// Replicas on one database race for the same parcels, which a
		// lone pebble node never does: a commit that lost may lose
		// again to a replica that keeps committing.
		iopts = &ingest.Options{ConflictRetries: replicaConflictRetries}
	}
	n.Ingester, err = ingest.New(ingest.Config{Carrier: code, Schemes: schemes, Signer: signer, Store: n.Store, Space: n.Space, Metrics: n.Metrics, Logger: n.Log}, iopts)
	if err != nil {
		return err
	}
	if err := n.startInfo(code, signer.Public(), o); err != nil {
		return err
	}
	if err := n.startDiscovery(o); err != nil {
		return err
	}
	addr := cfg.Admin.Addr
	if o.AdminAddr != "" {
		addr = o.AdminAddr
	}
	return n.startAdmin(addr)
}

// startPlatform starts a platform node: the host, info, and discovery,
// whose Platform is what the node looks parcels up with.
func (n *Node) startPlatform(o Options) error {
	if err := n.startHost(o); err != nil {
		return err
	}
	if err := n.startInfo("", nil, o); err != nil {
		return err
	}
	return n.startDiscovery(o)
}

// startHost starts the libp2p host the config describes, on o.Listen
// when given.
func (n *Node) startHost(o Options) error {
	hopts := n.Repo.Config.HostOptions()
	if len(o.Listen) > 0 {
		hopts.ListenAddrs = o.Listen
	}
	hopts.Registerer = n.Metrics.Registry
	hopts.Gater = o.Gater
	var err error
	if n.Host, err = lphost.New(n.Repo.NodeKey, hopts); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// startInfo registers the info service: the carrier served and its key
// (none on a platform node), and the registry held.
func (n *Node) startInfo(carrier string, key ed25519.PublicKey, o Options) error {
	cfg := service.InfoConfig{Version: version.Agent, Metrics: n.Metrics, Logger: n.Log, Carrier: carrier}
	if key != nil {
		cfg.Keys = []ed25519.PublicKey{key}
	}
	if n.Trust != nil {
		cfg.Registry = n.Trust
	}
	var err error
	if n.info, err = service.NewInfo(cfg, o.Service); err != nil {
		return err
	}
	n.info.Register(n.Host)
	return nil
}

// startDiscovery opens the node's Platform on a node with trust anchors:
// peer routing, registry exchange and a client over the node's host. It
// starts mDNS when asked.
func (n *Node) startDiscovery(o Options) error {
	if n.Trust != nil {
		var err error
		n.Platform, err = platform.Open(platform.Config{Host: n.Host, Trust: n.Trust, Logger: n.Log},
			&platform.Options{Client: o.Client, Router: o.Router, Exchange: true, ExchangeOptions: o.Exchange})
		if err != nil {
			return err
		}
	}
	if o.MDNS {
		var err error
		if n.mdns, err = discovery.StartMDNS(n.Host, n.Trust, n.Log); err != nil {
			return err
		}
	}
	return nil
}

// registryMember reports whether p is a node of some carrier in the
// registry held, for the policy's "members" mode. Without trust anchors
// no peer is a member.
func (n *Node) registryMember(p peer.ID) bool {
	if n.Trust == nil {
		return false
	}
	reg := n.Trust.Registry()
	if reg == nil {
		return false
	}
	id := p.String()
	for i := range reg.Carriers {
		if slices.ContainsFunc(reg.Carriers[i].Nodes, func(e protocol.NodeEntry) bool { return e.Peer == id }) {
			return true
		}
	}
	return false
}

// Router is the node's peer routing; nil on a node without trust anchors.
func (n *Node) Router() *discovery.Router {
	if n.Platform == nil {
		return nil
	}
	return n.Platform.Router()
}

func (n *Node) startCarrierStore() error {
	st, space, err := openStore(context.Background(), n.Repo, n.Log)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		// Pebble's lock on the store: another process has it open.
		return fmt.Errorf("node: open store: %w (is a node already running from %s?)", err, n.Repo.Dir)
	}
	if err != nil {
		return fmt.Errorf("node: open store: %w", err)
	}
	if space != nil {
		n.Space = space
		if space.ReadOnly() {
			n.Log.Warn("store opened read-only: the disk is below its free-space reserve; ingest is refused until the node is restarted with space",
				"dir", space.Dir(), "free_bytes", space.FreeNow(), "reserve_bytes", space.Reserve())
		}
		writable := func() float64 {
			if space.Check() != nil {
				return 0
			}
			return 1
		}
		n.Metrics.WatchSpace(func() float64 { _ = space.Check(); return float64(space.FreeNow()) },
			func() float64 { return float64(space.Reserve()) }, writable)
	}
	if sc := n.Repo.Config.Store; sc.Backend == repo.BackendPostgres {
		n.Log.Info("store", "backend", sc.Backend, "url", postgres.Redact(sc.URL), "id", st.ID())
	}
	n.Store = st
	ctx, stop := context.WithCancel(context.Background())
	n.sweeping, n.swept = stop, make(chan struct{})
	go func() {
		defer close(n.swept)
		st.RunSweeper(ctx, detailsSweepInterval)
	}()
	stats := newStatsCache(st, 5*time.Second)
	n.Metrics.WatchStore(stats.events, stats.disk)
	return nil
}

// detailsSweepInterval is how often the node destroys the keys of details
// past retention; it also does at start. Hourly keeps an expired day's
// key at most an hour past its day.
const detailsSweepInterval = time.Hour

// Backoff of waitStore between tries to reach the database.
const (
	storeRetryMin = 100 * time.Millisecond
	storeRetryMax = 10 * time.Second
)

// waitStore holds the start of a carrier node whose PostgreSQL cannot be
// reached, as the node already rides out a database that dies while it
// runs: it retries with backoff, logs why, and answers /healthz on the
// admin address with 503 and the reason until the database answers. It
// returns nil once it does, or when ctx ends.
func waitStore(ctx context.Context, r *repo.Repo, o Options) error {
	sc := r.Config.Store
	if r.Config.Role != repo.RoleCarrier || sc.Backend != repo.BackendPostgres {
		return nil
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	probe := func() error {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		st, err := postgres.Open(pctx, PostgresOptions(sc))
		if err == nil {
			err = st.Close()
		}
		return err
	}
	err := probe()
	if err == nil {
		return nil
	}
	addr := r.Config.Admin.Addr
	if o.AdminAddr != "" {
		addr = o.AdminAddr
	}
	ln, lerr := net.Listen("tcp", addr)
	if lerr != nil {
		return fmt.Errorf("node: admin listen: %w", lerr)
	}
	var why atomic.Value
	why.Store(err.Error())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "unhealthy: store unavailable, retrying: "+why.Load().(string), http.StatusServiceUnavailable)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	defer func() {
		_ = srv.Close()
		<-done
	}()
	for wait := storeRetryMin; ; wait = min(2*wait, storeRetryMax) {
		log.Warn("node: store unavailable at start, retrying", "url", postgres.Redact(sc.URL), "err", err, "retry_in", wait, "healthz", "http://"+ln.Addr().String()+"/healthz")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err = probe(); err == nil {
			log.Info("node: store reachable, starting")
			return nil
		}
		why.Store(err.Error())
	}
}

// replicaConflictRetries is how often ingest on a shared database
// replans a commit that another replica beat before it gives up (and the
// poster, told nothing was acknowledged, posts again).
const replicaConflictRetries = 10

// openStore opens the carrier store the repo's config names, its details
// sealed with the repo's keyring (node/store/seal). A postgres store is
// migrated to this build's schema first. A pebble store on a disk already
// below the reserve is opened read-only, so that the node comes up and
// serves lookups rather than failing its first write (pebble exits the
// process on ENOSPC).
func openStore(ctx context.Context, r *repo.Repo, log *slog.Logger) (*seal.Store, *store.Space, error) {
	b, space, err := openBackend(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	keep, err := r.Config.DetailsRetention()
	if err == nil {
		var st *seal.Store
		if st, err = seal.Open(ctx, b, r.Path(seal.KeyringFile), &seal.Options{Retention: keep, Logger: log}); err == nil {
			return st, space, nil
		}
	}
	return nil, nil, errors.Join(err, b.Close())
}

// openBackend opens the store under the sealing layer.
func openBackend(ctx context.Context, r *repo.Repo) (seal.Backend, *store.Space, error) {
	sc := r.Config.Store
	if sc.Backend == repo.BackendPostgres {
		st, err := postgres.Open(ctx, PostgresOptions(sc))
		return st, nil, err
	}
	dir := r.Path(sc.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	space := store.NewSpace(dir, uint64(sc.ReserveMB)<<20, nil)
	o := &pebble.Options{CacheSize: int64(sc.CacheMB) << 20, MemTableSize: uint64(sc.MemTableMB) << 20}
	if err := space.Check(); err != nil {
		o.ReadOnly = true
		space.SetReadOnly()
	}
	st, err := pebble.Open(dir, o)
	if err != nil && o.ReadOnly {
		err = fmt.Errorf("%w (%v; a new store cannot be created read-only)", err, space.Check())
	}
	if err != nil {
		return nil, nil, err
	}
	return st, space, nil
}

// PostgresOptions are the postgres store options of a [store] config.
func PostgresOptions(sc repo.StoreConfig) *postgres.Options {
	return &postgres.Options{URL: sc.URL, MaxConns: int32(sc.MaxConns), DisableNotify: sc.DisableNotify}
}

func (n *Node) startAdmin(addr string) error {
	signer, err := n.Repo.Signer()
	if err != nil {
		return err
	}
	code := n.Repo.Config.Carrier.Code
	api := admin.API(admin.APIConfig{Ingester: n.Ingester, Grants: n.Store, Keys: protocol.PublicKeyResolver{Carrier: code, Key: signer.Public()},
		Carrier: code, Logger: n.Log})
	srv, err := admin.New(&admin.Options{Addr: addr}, n.Repo.AdminToken, api, n.Metrics, func() error { return health(n.Store, n.Space) })
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("node: admin listen: %w", err)
	}
	if err := srv.Start(ln); err != nil {
		ln.Close()
		return err
	}
	n.admin = srv
	return nil
}

// health reports whether the store answers, asking its feed (nil on a
// platform node) for the tail, and, as degraded, why ingest is refused
// when the disk is below space's reserve.
func health(feed store.FeedReader, space *store.Space) error {
	if feed == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := feed.FeedTail(ctx); err != nil {
		return err
	}
	if space != nil {
		if err := space.Check(); err != nil {
			return fmt.Errorf("%w: ingest refused: %w", admin.ErrDegraded, err)
		}
	}
	return nil
}

// Addrs returns the node's full multiaddrs, each ending in /p2p/<id>.
func (n *Node) Addrs() []string {
	info := peer.AddrInfo{ID: n.Host.ID(), Addrs: n.Host.Addrs()}
	full, err := peer.AddrInfoToP2pAddrs(&info)
	if err != nil {
		return nil
	}
	out := make([]string, len(full))
	for i, a := range full {
		out[i] = a.String()
	}
	return out
}

// AddrInfo is the node's peer ID and listen addresses.
func (n *Node) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.Host.ID(), Addrs: append([]ma.Multiaddr(nil), n.Host.Addrs()...)}
}

// AdminURL is the admin API's base URL, empty on a platform node.
func (n *Node) AdminURL() string {
	if n.admin == nil {
		return ""
	}
	return n.admin.URL()
}

// NodeInfo is what node.json says about this node.
func (n *Node) NodeInfo() *repo.NodeInfo {
	return &repo.NodeInfo{PeerID: n.Host.ID().String(), Carrier: n.Repo.Config.Carrier.Code, Addrs: n.Addrs(), AdminURL: n.AdminURL()}
}

// Close shuts the node down in order: the admin API first, letting
// in-flight ingest requests finish; then mDNS and the Platform (registry
// exchange, its client, peer routing), which use the host; then the
// protocol services and the host, and the store last.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.admin != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			errs = append(errs, n.admin.Shutdown(ctx))
			cancel()
		}
		if n.mdns != nil {
			errs = append(errs, n.mdns.Close())
		}
		if n.Platform != nil {
			errs = append(errs, n.Platform.Close())
		}
		if n.track != nil {
			n.track.Unregister()
		}
		if n.watch != nil {
			n.watch.Unregister()
		}
		if n.info != nil {
			n.info.Unregister()
		}
		if n.Host != nil {
			errs = append(errs, n.Host.Close())
		}
		if n.sweeping != nil {
			n.sweeping()
			<-n.swept
		}
		if n.Store != nil {
			errs = append(errs, n.Store.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// Run starts the node, writes node.json, and serves until ctx ends; then
// it removes node.json and shuts down gracefully.
func Run(ctx context.Context, r *repo.Repo, o Options) error {
	if err := waitStore(ctx, r, o); err != nil || ctx.Err() != nil {
		return err
	}
	n, err := Start(r, o)
	if err != nil {
		return err
	}
	if err := r.WriteNodeInfo(n.NodeInfo()); err != nil {
		_ = n.Close()
		return err
	}
	<-ctx.Done()
	n.Log.Info("shutting down")
	err = n.Close()
	if rerr := r.RemoveNodeInfo(); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// statsCache keeps store.Stats from being called on every scrape.
type statsCache struct {
	st  store.StatsCloser
	ttl time.Duration

	mu    sync.Mutex
	at    time.Time
	stats store.Stats
}

func newStatsCache(st store.StatsCloser, ttl time.Duration) *statsCache {
	return &statsCache{st: st, ttl: ttl}
}

func (c *statsCache) get() store.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) > c.ttl {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if s, err := c.st.Stats(ctx); err == nil {
			c.stats, c.at = s, time.Now()
		}
		cancel()
	}
	return c.stats
}

func (c *statsCache) events() float64 { return float64(c.get().Events) }
func (c *statsCache) disk() float64   { return float64(c.get().DiskBytes) }
