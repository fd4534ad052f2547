package testnet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/sync/errgroup"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/keyfile"
	"github.com/opentrack/opentrack/node/platform"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet/internal/proc"
)

// Errors of the network's controls.
var (
	// ErrDown is returned when a carrier that is down is asked to serve.
	ErrDown = errors.New("testnet: carrier is down")
	// ErrTimeout is returned by WaitFor when the condition never held.
	ErrTimeout = errors.New("testnet: condition did not hold in time")
)

// Loopback tuning: a restarted node is found again at once and a dead
// one is given up on quickly, so scenarios fit in seconds.
var (
	routerOptions = platform.RouterOptions{BootstrapInterval: time.Second, DialTimeout: 2 * time.Second, LookupTimeout: 4 * time.Second}
	clientOptions = platform.ClientOptions{RequestTimeout: 4 * time.Second, ConnectTimeout: 4 * time.Second}
)

// Small stores: a testnet runs dozens of carriers in one process.
const (
	carrierCacheMB    = 8
	carrierMemTableMB = 4
)

// Net is a running testnet.
type Net struct {
	Opts Options
	// Dir holds the repos: carriers/<CODE>, platforms/<name>, and the
	// authority's public key.
	Dir string
	// Authority signs the registry; AuthorityPub is its public key file,
	// every node's trust anchor.
	Authority    *protocol.Signer
	AuthorityPub string
	// Registry is the signed registry every node holds.
	Registry  []byte
	Carriers  []*Carrier
	Platforms []*Platform
	// Startup is how long Start took to bring every node up.
	Startup time.Duration

	log    *slog.Logger
	ownDir bool
	rogues []*Carrier
}

// New starts a testnet for a test and closes it when the test ends. Dir
// defaults to the test's temporary directory.
func New(tb testing.TB, o Options) *Net {
	tb.Helper()
	if o.Dir == "" {
		o.Dir = tb.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := Start(ctx, o)
	if err != nil {
		tb.Fatalf("testnet: %v", err)
	}
	tb.Cleanup(func() {
		if err := n.Close(); err != nil {
			tb.Errorf("testnet: close: %v", err)
		}
	})
	return n
}

// Start creates the authority, the carriers and the platforms, signs the
// registry and starts every node. On error everything started is closed.
func Start(ctx context.Context, o Options) (_ *Net, err error) {
	if err := o.EnsureDefaults().Validate(); err != nil {
		return nil, err
	}
	began := time.Now()
	n := &Net{Opts: o, Dir: o.Dir, log: o.Logger}
	if n.Dir == "" {
		if n.Dir, err = os.MkdirTemp("", "opentrack-testnet-"); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
		n.ownDir = true
	}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	if err := n.createAuthority(); err != nil {
		return nil, err
	}
	n.Carriers = make([]*Carrier, o.Carriers)
	n.Platforms = make([]*Platform, o.Platforms)
	var g errgroup.Group
	g.SetLimit(8)
	for i := range n.Carriers {
		g.Go(func() (err error) {
			code, scheme := carrierSpec(i)
			n.Carriers[i], err = n.createCarrier(code, scheme, true)
			return err
		})
	}
	for i := range n.Platforms {
		g.Go(func() (err error) {
			n.Platforms[i], err = n.createPlatform(fmt.Sprintf("platform%d", i+1))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := n.signRegistry(); err != nil {
		return nil, err
	}
	// Carriers first: a platform dials the registry's nodes as it starts,
	// and a refused dial would leave the carrier in its dial backoff.
	for _, c := range n.Carriers {
		g.Go(func() error { return c.start(ctx) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, p := range n.Platforms {
		g.Go(func() error { return p.start() })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	n.Startup = time.Since(began)
	n.log.Info("testnet up", "carriers", len(n.Carriers), "platforms", len(n.Platforms), "startup", n.Startup, "dir", n.Dir)
	return n, nil
}

func (n *Net) createAuthority() error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	if n.Authority, err = protocol.NewSigner(priv); err != nil {
		return err
	}
	pub, err := keyfile.MarshalPublic(n.Authority.Public())
	if err != nil {
		return err
	}
	n.AuthorityPub = filepath.Join(n.Dir, "authority.pub")
	if err := os.MkdirAll(n.Dir, 0o700); err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	return os.WriteFile(n.AuthorityPub, pub, 0o644)
}

// signRegistry lists every carrier at its fixed loopback address, signs
// the registry and installs it in every repo, as an operator would with
// `opentrack node --registry`.
func (n *Net) signRegistry() error {
	now := time.Now()
	entries := make([]protocol.CarrierEntry, len(n.Carriers))
	for i, c := range n.Carriers {
		entries[i] = c.entry(now)
	}
	slices.SortFunc(entries, func(x, y protocol.CarrierEntry) int { return strings.Compare(x.Code, y.Code) })
	reg, err := protocol.SignRegistry(n.Authority, &protocol.Registry{
		Seq: 1, Issued: now.UnixMilli(), NotBefore: now.Add(-time.Hour).UnixMilli(), NotAfter: now.Add(7 * 24 * time.Hour).UnixMilli(),
		Carriers: entries,
	})
	if err != nil {
		return fmt.Errorf("testnet: sign registry: %w", err)
	}
	n.Registry = reg
	repos := make([]*repo.Repo, 0, len(n.Carriers)+len(n.Platforms))
	for _, c := range n.Carriers {
		repos = append(repos, c.Repo)
	}
	for _, p := range n.Platforms {
		repos = append(repos, p.Repo)
	}
	for _, r := range repos {
		t, err := r.Trust()
		if err != nil {
			return fmt.Errorf("testnet: %s: %w", r.Dir, err)
		}
		if _, err := t.Install(reg); err != nil {
			return fmt.Errorf("testnet: install registry in %s: %w", r.Dir, err)
		}
	}
	return nil
}

// Carrier returns the carrier with code, or nil.
func (n *Net) Carrier(code string) *Carrier {
	for _, c := range n.Carriers {
		if c.Code == code {
			return c
		}
	}
	return nil
}

// Kill stops c the hard way: SIGKILL with Procs; in process, the node
// closes at once, without waiting for the simulator.
func (n *Net) Kill(c *Carrier) error { return c.kill() }

// Restart starts c again from its repo, at the same addresses.
func (n *Net) Restart(ctx context.Context, c *Carrier) error { return c.start(ctx) }

// Partition cuts the link between p and c: in process, p's host refuses
// every connection with c and drops the ones it has. With Procs the
// carrier's process is stopped (SIGSTOP), which cuts it off from every
// platform.
func (n *Net) Partition(p *Platform, c *Carrier) error {
	if c.proc != nil {
		return c.pause()
	}
	p.gater.block(c.ID)
	_ = p.Node.Host.Network().ClosePeer(c.ID)
	return nil
}

// Heal restores the link Partition cut.
func (n *Net) Heal(p *Platform, c *Carrier) error {
	if c.proc != nil {
		return c.resume()
	}
	p.gater.unblock(c.ID)
	// The refused dials left c in the swarm's dial backoff; a healed link
	// is usable at once.
	if sw, ok := p.Node.Host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(c.ID)
	}
	return nil
}

// WaitFor polls cond until it holds or timeout passes.
func (n *Net) WaitFor(timeout time.Duration, cond func() bool) error {
	return n.WaitUntil(timeout, "condition", func() (bool, string) { return cond(), "" })
}

// WaitUntil polls cond until it holds or timeout passes. cond also says
// what it saw; a timeout's error, which wraps ErrTimeout, names what
// was awaited and the last thing seen, so that a slow machine's failure
// can be told from a wrong one.
func (n *Net) WaitUntil(timeout time.Duration, what string, cond func() (ok bool, seen string)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if seen == "" {
				return fmt.Errorf("%w: %s, after %s", ErrTimeout, what, timeout)
			}
			return fmt.Errorf("%w: %s, after %s: %s", ErrTimeout, what, timeout, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close stops every node, platforms first, and removes Dir if Start
// created it.
func (n *Net) Close() error {
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	add := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	for _, p := range n.Platforms {
		if p != nil {
			wg.Go(func() { add(p.Close()) })
		}
	}
	wg.Wait()
	for _, c := range append(slices.Clone(n.Carriers), n.rogues...) {
		if c != nil {
			wg.Go(func() { add(c.stop()) })
		}
	}
	wg.Wait()
	if n.ownDir {
		add(os.RemoveAll(n.Dir))
	}
	return errors.Join(errs...)
}

// freePort returns a loopback TCP port that is free now and outside the
// kernel's ephemeral range, so that no outbound connection takes it
// while its node is down. A carrier keeps its ports across restarts, so
// that the registry's addresses stay right.
func freePort() (int, error) {
	lo, hi := portRange()
	portMu.Lock()
	defer portMu.Unlock()
	if portNext == 0 {
		portNext = lo + mrand.IntN(hi-lo)
	}
	for range hi - lo {
		p := portNext
		portNext++
		if portNext >= hi {
			portNext = lo
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		return p, nil
	}
	return 0, fmt.Errorf("testnet: no free loopback port in %d-%d", lo, hi)
}

var (
	portMu   sync.Mutex
	portNext int
)

// portRange is where freePort looks: below the ephemeral range, which
// Linux reads from ip_local_port_range (default 32768-60999).
func portRange() (lo, hi int) {
	lo, hi = 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var elo, ehi int
		if _, err := fmt.Sscan(string(b), &elo, &ehi); err == nil && elo > lo+2000 {
			hi = elo
		}
	}
	return lo, hi
}

// Carrier is a carrier node of the testnet, in process or as a process.
type Carrier struct {
	Code   string
	Scheme string // CLI form, "" for the default scheme
	Repo   *repo.Repo
	ID     peer.ID
	Key    ed25519.PublicKey // the carrier signing key
	// Addr is the libp2p listen address, AdminAddr the admin API's; both
	// stay the same across restarts.
	Addr      ma.Multiaddr
	AdminAddr string

	net     *Net
	numbers *numberGen
	admin   *admin.Client

	mu     sync.Mutex
	node   *node.Node    // in process, while up
	proc   *proc.Process // with Procs, while up
	paused bool
}

// carrierSpec is carrier i's code and number scheme: an S10 postal
// operator first, then a carrier with digit-only GS1 numbers, then the
// others cycling through prefixed mod10, Luhn and default schemes.
func carrierSpec(i int) (code, scheme string) {
	switch {
	case i == 0:
		return "GBPOST", "s10:GB"
	case i == 1:
		return "SF", ""
	case i == 2:
		return "DX", `\d{12}:mod10`
	}
	switch i % 3 {
	case 0:
		code = fmt.Sprintf("WB%02d", i)
		return code, code + `\d{11}:mod10`
	case 1:
		code = fmt.Sprintf("LX%02d", i)
		return code, code + `\d{9}:luhn`
	default:
		return fmt.Sprintf("EX%02d", i), ""
	}
}

// createCarrier initializes a carrier repo. A registered carrier trusts
// the authority; a rogue does not need to.
func (n *Net) createCarrier(code, scheme string, registered bool) (*Carrier, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
	io := repo.InitOptions{Carrier: code, Name: code + " (testnet)", Country: "ZZ", Listen: []string{addr.String()}}
	if scheme != "" {
		io.Schemes = []string{scheme}
	}
	if registered {
		io.Trust = []string{n.AuthorityPub}
	}
	dir := filepath.Join(n.Dir, "carriers", code)
	if !registered {
		dir = filepath.Join(n.Dir, "rogue", code)
	}
	r, err := repo.Init(dir, io)
	if err != nil {
		return nil, fmt.Errorf("testnet: carrier %s: %w", code, err)
	}
	r.Config.Store.CacheMB, r.Config.Store.MemTableMB = carrierCacheMB, carrierMemTableMB
	r.Config.Admin.Addr = fmt.Sprintf("127.0.0.1:%d", adminPort)
	if err := writeConfig(r); err != nil {
		return nil, err
	}
	gen, err := newNumberGen(r)
	if err != nil {
		return nil, err
	}
	return &Carrier{
		Code: code, Scheme: scheme, Repo: r, ID: r.PeerID(), Key: r.CarrierKey.Public().(ed25519.PublicKey),
		Addr: addr, AdminAddr: r.Config.Admin.Addr, net: n, numbers: gen,
		admin: &admin.Client{URL: "http://" + r.Config.Admin.Addr, Token: r.AdminToken, HTTP: &http.Client{Timeout: 30 * time.Second}},
	}, nil
}

// writeConfig saves r's config, so that a node process reads the same.
func writeConfig(r *repo.Repo) error {
	b, err := r.Config.Render()
	if err != nil {
		return err
	}
	return os.WriteFile(r.Path(repo.ConfigFile), b, 0o600)
}

// entry is c's registry entry.
func (c *Carrier) entry(now time.Time) protocol.CarrierEntry {
	schemes, _ := c.Repo.Config.Schemes() // Init validated them
	return protocol.CarrierEntry{
		Code: c.Code, Name: c.Repo.Config.Carrier.Name, Country: "ZZ",
		Keys:    []protocol.CarrierKey{{Key: c.Key, NotBefore: now.Add(-24 * time.Hour).UnixMilli(), NotAfter: now.Add(30 * 24 * time.Hour).UnixMilli()}},
		Nodes:   []protocol.NodeEntry{{Peer: c.ID.String(), Addrs: []string{c.Addr.String()}}},
		Schemes: schemes,
	}
}

// AddrInfo is where c listens.
func (c *Carrier) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: c.ID, Addrs: []ma.Multiaddr{c.Addr}}
}

// Up reports whether c is running and not paused.
func (c *Carrier) Up() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return (c.node != nil || c.proc != nil) && !c.paused
}

// PID is the process id of c's node with Procs while it runs, else 0.
func (c *Carrier) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return 0
	}
	return c.proc.Pid()
}

// NewNumber returns a fresh tracking number in c's scheme.
func (c *Carrier) NewNumber() (string, error) { return c.numbers.next() }

func (c *Carrier) start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.node != nil || c.proc != nil {
		return nil
	}
	if c.net.Opts.Procs {
		p, err := proc.Start(c.net.Opts.Command, c.Repo.Dir, "node.log", "node", "--repo", c.Repo.Dir, "--listen", c.Addr.String(), "--admin", c.AdminAddr)
		if err != nil {
			return fmt.Errorf("testnet: carrier %s: %w", c.Code, err)
		}
		c.proc = p
		if err := c.waitHealthy(ctx, p); err != nil {
			_ = p.Kill()
			c.proc = nil
			return fmt.Errorf("testnet: carrier %s: %w", c.Code, err)
		}
		return nil
	}
	nd, err := node.Start(c.Repo, node.Options{Logger: c.net.log.With("carrier", c.Code), Router: &routerOptions})
	if err != nil {
		return fmt.Errorf("testnet: carrier %s: %w", c.Code, err)
	}
	c.node = nd
	return nil
}

// waitHealthy polls the process's admin health check until it answers.
func (c *Carrier) waitHealthy(ctx context.Context, p *proc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if c.admin.Health(ctx) == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("node process exited: %v (log: %s)", p.Err(), p.LogPath)
		case <-ctx.Done():
			return fmt.Errorf("node did not become healthy: %w (log: %s)", ctx.Err(), p.LogPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Carrier) kill() error { return c.halt(true) }

// stop shuts c down cleanly.
func (c *Carrier) stop() error { return c.halt(false) }

// halt stops c's node: a process with SIGKILL when hard, else with
// SIGTERM (resumed first if paused); a node in process closes either way.
func (c *Carrier) halt(hard bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	switch {
	case c.proc != nil && hard:
		err = c.proc.Kill()
		// A killed node leaves its node.json behind; it is stale.
		_ = c.Repo.RemoveNodeInfo()
	case c.proc != nil:
		if c.paused {
			_ = c.proc.Signal(syscall.SIGCONT)
		}
		err = c.proc.Stop(20 * time.Second)
	case c.node != nil:
		err = c.node.Close()
	}
	c.node, c.proc, c.paused = nil, nil, false
	return err
}

func (c *Carrier) pause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return ErrDown
	}
	c.paused = true
	if err := c.proc.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	// The cut is real only once the kernel has stopped the process.
	if st, ok := c.proc.WaitState(5*time.Second, "T", "t"); !ok {
		return fmt.Errorf("testnet: carrier %s: pid %d still in state %q 5s after SIGSTOP", c.Code, c.proc.Pid(), st)
	}
	return nil
}

func (c *Carrier) resume() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return ErrDown
	}
	c.paused = false
	return c.proc.Signal(syscall.SIGCONT)
}

// Ingest posts events to c's admin API, as the carrier's own systems do,
// and returns one result per event.
func (c *Carrier) Ingest(ctx context.Context, events []admin.Event) ([]admin.Result, error) {
	res, err := c.admin.Ingest(ctx, events)
	var unreachable *url.Error
	switch {
	case errors.As(err, &unreachable):
		return nil, fmt.Errorf("%w: %s: %w", ErrDown, c.Code, err)
	case err != nil:
		return nil, fmt.Errorf("testnet: %s %w", c.Code, err)
	}
	return res, nil
}

// Platform is a platform node of the testnet with its client.
type Platform struct {
	Name string
	Repo *repo.Repo
	ID   peer.ID
	Node *node.Node
	// Platform is the node's: its trust, routing and client, to look up
	// and watch through.
	Platform *platform.Platform

	net    *Net
	gater  *gater
	mu     sync.Mutex
	closed bool
}

func (n *Net) createPlatform(name string) (*Platform, error) {
	r, err := repo.Init(filepath.Join(n.Dir, "platforms", name), repo.InitOptions{
		Platform: name, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: []string{n.AuthorityPub},
	})
	if err != nil {
		return nil, fmt.Errorf("testnet: platform %s: %w", name, err)
	}
	return &Platform{Name: name, Repo: r, ID: r.PeerID(), net: n, gater: newGater()}, nil
}

func (p *Platform) start() error {
	o := clientOptions
	nd, err := node.Start(p.Repo, node.Options{Logger: p.net.log.With("platform", p.Name), Router: &routerOptions, Client: &o, Gater: p.gater})
	if err != nil {
		return fmt.Errorf("testnet: platform %s: %w", p.Name, err)
	}
	p.Node, p.Platform = nd, nd.Platform
	return nil
}

// Track looks numbers up the way a platform does: resolve each through
// the registry, ask the carrier directly, verify.
func (p *Platform) Track(ctx context.Context, grant []byte, numbers ...string) ([]platform.ParcelView, error) {
	return p.Platform.Track(ctx, numbers, grant)
}

// WatchAudience subscribes to every parcel of c that names p in its
// audience, from now; with grant, its updates carry the details the
// grant names.
func (p *Platform) WatchAudience(ctx context.Context, c *Carrier, grant ...[]byte) (*platform.Watcher, error) {
	o := platform.WatchOptions{
		Carrier: c.Code, Peers: []peer.ID{c.ID}, Audience: true, MaxBackoff: 2 * time.Second,
	}
	if len(grant) > 0 {
		o.Grant = grant[0]
	}
	return p.Platform.Watch(ctx, o) // its registry checks the heads, its router finds c
}

// Closed reports whether Close was called: the platform has gone.
func (p *Platform) Closed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Close stops the platform's client and node: the platform disappears.
func (p *Platform) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.Node == nil {
		return nil
	}
	return p.Node.Close() // and with it the platform and its client
}

// watchWait bounds the wait for subs watch subscriptions to go live: a
// minute, and a tenth of a second more for each, as a loaded machine
// opens them one after another (50 carriers and 20 platforms are 1000).
func watchWait(subs int) time.Duration {
	return time.Minute + time.Duration(subs)*100*time.Millisecond
}
