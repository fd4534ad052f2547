package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"

	"github.com/opentrack/opentrack/internal/options"
	"github.com/opentrack/opentrack/protocol"
)

// InfoAsker asks a peer for its Info over /opentrack/info/1.0.0, saying
// which registry sequence the caller holds; the answer carries the peer's
// registry when it is newer. node/client.Client implements it; taking an
// interface keeps this package free of the client's.
type InfoAsker interface {
	Info(ctx context.Context, p peer.ID, haveSeq uint64) (*protocol.Info, error)
}

// ExchangeOptions tune an Exchange. The zero value of a field means its
// default; EnsureDefaults fills them in and Validate checks them.
type ExchangeOptions struct {
	// Interval is how often the exchange asks a sample of connected peers
	// for a newer registry, besides asking every peer it connects to.
	// Default: 5m.
	Interval time.Duration
	// PeersPerInterval is the size of that sample. Every node that holds a
	// newer edition passes it on, so a few random peers per round spread
	// it through the network; asking all would cost a busy node
	// thousands of requests a round. Default: 8.
	PeersPerInterval int
	// Concurrency bounds the info requests in flight at once. Default: 4.
	Concurrency int
	// Queue bounds the peers waiting to be asked; a peer that finds the
	// queue full is skipped, and the next round may pick it. Default: 256.
	Queue int
	// RequestTimeout bounds one info request. Default: 10s, the server's
	// own bound (protocol.RequestTimeout).
	RequestTimeout time.Duration
}

// exchangeDefaults holds every default of ExchangeOptions;
// EnsureDefaults takes them from here and from nowhere else.
var exchangeDefaults = ExchangeOptions{
	Interval:         5 * time.Minute,
	PeersPerInterval: 8,
	Concurrency:      4,
	Queue:            256,
	RequestTimeout:   protocol.RequestTimeout,
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new ExchangeOptions with all defaults.
func (o *ExchangeOptions) EnsureDefaults() *ExchangeOptions {
	o = options.New(o)
	options.Default(&o.Interval, exchangeDefaults.Interval)
	options.Default(&o.PeersPerInterval, exchangeDefaults.PeersPerInterval)
	options.Default(&o.Concurrency, exchangeDefaults.Concurrency)
	options.Default(&o.Queue, exchangeDefaults.Queue)
	options.Default(&o.RequestTimeout, exchangeDefaults.RequestTimeout)
	return o
}

// Validate checks o after EnsureDefaults and reports every problem at once.
func (o *ExchangeOptions) Validate() error {
	var p []string
	positive(&p, "Interval", o.Interval)
	positive(&p, "PeersPerInterval", o.PeersPerInterval)
	positive(&p, "Concurrency", o.Concurrency)
	positive(&p, "Queue", o.Queue)
	positive(&p, "RequestTimeout", o.RequestTimeout)
	return problems(p)
}

// Exchange keeps a node's registry current (spec section 11.3): it asks
// every peer it connects to that speaks the info protocol, and a sample of
// connected peers every Interval, for a registry newer than the one held,
// and offers what comes back to Trust.Install. Install alone decides: an
// edition that no anchor signed, that is outside its validity window, or
// that is not newer is never accepted.
type Exchange struct {
	h     host.Host
	trust *Trust
	ask   InfoAsker
	opts  ExchangeOptions
	log   *slog.Logger
	sub   event.Subscription

	queue   chan peer.ID
	mu      sync.Mutex
	pending map[peer.ID]struct{} // queued and not yet taken

	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// NewExchange starts exchanging registries over h, asking peers through
// ask, until Close. opts may be nil for defaults and is not modified; log
// may be nil to discard.
func NewExchange(h host.Host, t *Trust, ask InfoAsker, opts *ExchangeOptions, log *slog.Logger) (*Exchange, error) {
	var o ExchangeOptions
	if opts != nil {
		o = *opts
	}
	if err := o.EnsureDefaults().Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Identify completes once per new connection, and it is the first
	// moment the peer's protocols are known.
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted), eventbus.Name("opentrack/registry-exchange"))
	if err != nil {
		return nil, fmt.Errorf("discovery: subscribe: %w", err)
	}
	e := &Exchange{
		h: h, trust: t, ask: ask, opts: o, log: log, sub: sub,
		queue:   make(chan peer.ID, o.Queue),
		pending: make(map[peer.ID]struct{}),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.wg.Go(e.watchConnections)
	e.wg.Go(e.periodic)
	for range o.Concurrency {
		e.wg.Go(e.work)
	}
	// Peers connected before the exchange started get no identify event.
	for _, p := range h.Network().Peers() {
		if e.speaksInfo(p) {
			e.enqueue(p)
		}
	}
	return e, nil
}

// Sync asks p once for a registry newer than the one held and installs
// it. It reports whether a newer registry was installed. A peer that
// holds nothing newer is not an error; an edition it offers that Install
// refuses is, with Install's reason (protocol.ErrStaleRegistry,
// ErrUntrustedIssuer, ErrExpired, ...).
func (e *Exchange) Sync(ctx context.Context, p peer.ID) (bool, error) {
	if e.ctx.Err() != nil {
		return false, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, e.opts.RequestTimeout)
	defer cancel()
	defer context.AfterFunc(e.ctx, cancel)()
	have := e.trust.Seq()
	info, err := e.ask.Info(ctx, p, have)
	if err != nil {
		return false, err
	}
	if info.RegistrySeq <= have {
		return false, nil
	}
	if len(info.Registry) == 0 {
		// The spec obliges the peer to send it (section 8.6).
		return false, fmt.Errorf("discovery: %s holds registry seq %d but did not send it", p, info.RegistrySeq)
	}
	ok, err := e.trust.Install(info.Registry)
	if err != nil {
		return false, err
	}
	return ok, nil
}

// Close stops the exchange and waits for requests in flight to end.
func (e *Exchange) Close() error {
	e.closeOnce.Do(func() {
		e.cancel()
		e.sub.Close()
		e.wg.Wait()
	})
	return nil
}

// watchConnections queues every newly identified peer that speaks info.
func (e *Exchange) watchConnections() {
	for {
		select {
		case <-e.ctx.Done():
			return
		case ev, ok := <-e.sub.Out():
			if !ok {
				return
			}
			id := ev.(event.EvtPeerIdentificationCompleted)
			if slices.Contains(id.Protocols, protocol.InfoID) {
				e.enqueue(id.Peer)
			}
		}
	}
}

// periodic queues a random sample of connected peers every Interval, and
// warns while the registry held is past its validity (section 11.3 item 5).
func (e *Exchange) periodic() {
	tick := time.NewTicker(e.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-tick.C:
		}
		if r := e.trust.Registry(); r != nil && time.Now().UnixMilli() > r.NotAfter {
			e.log.Warn("registry expired; looking for a newer one", "seq", r.Seq, "not_after", time.UnixMilli(r.NotAfter).UTC())
		}
		peers := e.h.Network().Peers()
		rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
		n := 0
		for _, p := range peers {
			if n == e.opts.PeersPerInterval {
				break
			}
			if e.speaksInfo(p) {
				e.enqueue(p)
				n++
			}
		}
	}
}

// work asks queued peers until Close.
func (e *Exchange) work() {
	for {
		select {
		case <-e.ctx.Done():
			return
		case p := <-e.queue:
			e.mu.Lock()
			delete(e.pending, p)
			e.mu.Unlock()
			e.syncLogged(p)
		}
	}
}

// syncLogged runs Sync and logs the outcome. Anything a peer offers that
// is refused goes to debug: a peer's bad registry must not fill the log.
func (e *Exchange) syncLogged(p peer.ID) {
	installed, err := e.Sync(e.ctx, p)
	switch {
	case installed:
		e.log.Info("newer registry installed", "seq", e.trust.Seq(), "from", p)
	case err == nil, e.ctx.Err() != nil:
	case errors.Is(err, protocol.ErrStaleRegistry):
		// Another peer's copy was installed while this one was in flight.
		e.log.Debug("registry offered is not newer", "peer", p, "err", err)
	default:
		e.log.Debug("registry exchange failed", "peer", p, "err", err)
	}
}

// enqueue queues p unless it is queued already or the queue is full.
func (e *Exchange) enqueue(p peer.ID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.pending[p]; ok {
		return
	}
	select {
	case e.queue <- p:
		e.pending[p] = struct{}{}
	default:
		e.log.Debug("registry exchange queue full; peer skipped", "peer", p)
	}
}

// speaksInfo reports whether identify said p serves the info protocol.
func (e *Exchange) speaksInfo(p peer.ID) bool {
	if e.h.Network().Connectedness(p) != network.Connected {
		return false
	}
	ps, err := e.h.Peerstore().SupportsProtocols(p, protocol.InfoID)
	return err == nil && len(ps) > 0
}
