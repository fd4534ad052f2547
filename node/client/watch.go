package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/internal/options"
	"github.com/opentrack/opentrack/protocol"
)

// Watch errors.
var (
	// ErrWatchRefused stops a Watcher when a node refuses the subscription
	// for a reason that retrying cannot fix: bad_request, too_many or
	// forbidden. It wraps a *protocol.Error with the node's code.
	ErrWatchRefused = errors.New("client: watch refused")
	// ErrCursorFile stops a Watcher whose cursor file cannot be read or
	// written: carrying on would break the promise that a restart loses
	// nothing.
	ErrCursorFile = errors.New("client: cursor file")
	// ErrSeveralCarriers is returned by WatchTarget for numbers that do
	// not all resolve to one and the same carrier.
	ErrSeveralCarriers = errors.New("client: the numbers are not all one carrier's")
)

// Stream ends the Watcher recovers from by protocol: unknown_cursor by a
// re-sync (spec 8.5), catchup by resubscribing from the catchup's cursor.
var (
	errUnknownCursor = &protocol.Error{Code: protocol.CodeUnknownCursor, Msg: "client: the node does not know the cursor"}
	errCatchUp       = errors.New("client: the node asked to catch up from the cursor")
)

// resyncGrace is how long a re-sync waits for the first frame of its new
// subscription before it queries anyway. The first frame proves the
// subscription is live, so that the track answers cannot miss an event
// that the subscription does not carry either; a node that sends nothing
// until its first heartbeat has long registered it by then.
const resyncGrace = 500 * time.Millisecond

// WatchOptions say what a Watcher subscribes to, where, and how it
// verifies and resumes. Carrier, Peers, Keys and one of Numbers and
// Audience are required; every other zero field means its default.
type WatchOptions struct {
	// Carrier is the code of the carrier whose parcels are watched. Every
	// signed head must be this carrier's.
	Carrier string
	// Peers are the carrier's nodes, tried in order; after a failed
	// attempt the watcher moves on to the next one.
	Peers []peer.ID
	// Connector, when set, connects to a peer before each subscription
	// (discovery.Router finds a node that moved). Without it the host
	// dials the addresses in its peerstore.
	Connector Connector
	// Keys binds carrier keys to carriers: the platform's registry
	// (Trust), or InfoKeys of the node for a chain-only check.
	Keys protocol.KeyResolver

	// Numbers are the tracking numbers to watch, at most
	// protocol.MaxWatchNumbers. They are normalized, and duplicates
	// dropped, before subscribing.
	Numbers []string
	// Audience subscribes to every parcel whose ingest named this
	// client's peer ID instead of to Numbers.
	Audience bool
	// Grant, when set, is a grant the carrier issued to this client's
	// peer, presented with every subscription and back-fill lookup: the
	// updates of the parcels it covers carry the details it names (spec
	// section 12.2), and a grant the node refuses ends the watch with
	// forbidden. Default: none.
	Grant []byte
	// Sync makes the watcher track every watched number (with Audience,
	// every parcel it holds a head for, which at start is none) once its
	// first subscription is live, so that the consumer starts from each
	// parcel's current history rather than from its next change.
	// Default: false.
	Sync bool

	// Cursor is the position to resume from; empty starts from now.
	Cursor string
	// CursorFile, when set, holds the cursor across restarts. If the file
	// exists its cursor replaces Cursor; from then on the watcher keeps it
	// current. See Watcher for what a persisted cursor promises.
	CursorFile string
	// CursorInterval is how often the cursor file is brought up to date
	// while a stream runs: writes, each one fsynced, are coalesced so that
	// a busy stream costs one per interval, and the newest cursor is
	// written at once when a stream ends and when the watcher stops. A
	// lagging file only makes a restart repeat a few updates. Default:
	// 200ms.
	CursorInterval time.Duration

	// MinBackoff and MaxBackoff bound the wait before subscribing again
	// after a stream ends: it starts at MinBackoff, doubles after each
	// attempt that received nothing, up to MaxBackoff, and half of it is
	// random so that the watchers of a restarted node do not return in
	// step. Defaults: 200ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// IdleTimeout is how long a stream may stay silent before it is taken
	// for dead, reset, and subscribed again from the cursor. Nodes send a
	// heartbeat every protocol.HeartbeatInterval. Default:
	// protocol.WatchIdleTimeout (45s).
	IdleTimeout time.Duration
}

// watchDefaults holds every default of WatchOptions; EnsureDefaults
// takes them from here and from nowhere else.
var watchDefaults = WatchOptions{
	CursorInterval: 200 * time.Millisecond,
	MinBackoff:     200 * time.Millisecond,
	MaxBackoff:     30 * time.Second,
	IdleTimeout:    protocol.WatchIdleTimeout,
}

// EnsureDefaults fills every zero field that has a default and returns o.
// A nil receiver yields a new WatchOptions with all defaults.
func (o *WatchOptions) EnsureDefaults() *WatchOptions {
	o = options.New(o)
	options.Default(&o.CursorInterval, watchDefaults.CursorInterval)
	options.Default(&o.MinBackoff, watchDefaults.MinBackoff)
	options.Default(&o.MaxBackoff, watchDefaults.MaxBackoff)
	options.Default(&o.IdleTimeout, watchDefaults.IdleTimeout)
	return o
}

// Validate checks o after EnsureDefaults and reports every problem at
// once. Numbers are checked as typed; Watch normalizes them.
func (o *WatchOptions) Validate() error {
	var p []string
	if err := protocol.ValidCarrierCode(o.Carrier); err != nil {
		p = append(p, fmt.Sprintf("Carrier %q: %v", o.Carrier, err))
	}
	if len(o.Peers) == 0 {
		p = append(p, "Peers is empty")
	}
	if o.Keys == nil {
		p = append(p, "Keys is nil")
	}
	if o.Audience == (len(o.Numbers) > 0) {
		p = append(p, "give Numbers or Audience, not both or neither")
	}
	if len(o.Numbers) > protocol.MaxWatchNumbers {
		p = append(p, fmt.Sprintf("%d Numbers, limit %d", len(o.Numbers), protocol.MaxWatchNumbers))
	}
	for _, n := range o.Numbers {
		if _, err := protocol.NormalizeNumber(n); err != nil {
			p = append(p, fmt.Sprintf("number %q: %v", n, err))
		}
	}
	if len(o.Cursor) > protocol.MaxCursorLen {
		p = append(p, fmt.Sprintf("Cursor of %d bytes, limit %d", len(o.Cursor), protocol.MaxCursorLen))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"CursorInterval", o.CursorInterval}, {"MinBackoff", o.MinBackoff}, {"MaxBackoff", o.MaxBackoff}, {"IdleTimeout", o.IdleTimeout}} {
		if d.v <= 0 {
			p = append(p, fmt.Sprintf("%s (%s) must be positive", d.name, d.v))
		}
	}
	if o.MaxBackoff < o.MinBackoff {
		p = append(p, fmt.Sprintf("MaxBackoff (%s) is below MinBackoff (%s)", o.MaxBackoff, o.MinBackoff))
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(p, "; "))
	}
	return nil
}

// WatchTarget resolves numbers through the registry to the carrier a
// watch of them subscribes to, and returns options with Carrier, Peers
// (the carrier's registry nodes), Keys (trust) and Numbers set. A
// subscription goes to one carrier's node, so every number must resolve
// to that one carrier, and to no other: an ambiguous number (spec 10.7)
// could be a parcel at either, and is ErrSeveralCarriers too.
func WatchTarget(trust Trust, numbers []string) (WatchOptions, error) {
	var carrier *protocol.CarrierEntry
	for _, raw := range numbers {
		entries, err := Resolve(trust, raw)
		if err != nil {
			return WatchOptions{}, fmt.Errorf("client: %q: %w", raw, err)
		}
		codes := make([]string, len(entries))
		for i, e := range entries {
			codes[i] = e.Code
		}
		switch {
		case len(entries) == 0:
			return WatchOptions{}, fmt.Errorf("client: %q: %w", raw, protocol.ErrInvalidNumber)
		case len(entries) > 1:
			return WatchOptions{}, fmt.Errorf("%w: %q may be a parcel of %s", ErrSeveralCarriers, raw, strings.Join(codes, " or "))
		case carrier != nil && entries[0].Code != carrier.Code:
			return WatchOptions{}, fmt.Errorf("%w: %q is %s's, the numbers before it %s's", ErrSeveralCarriers, raw, entries[0].Code, carrier.Code)
		}
		carrier = entries[0]
	}
	if carrier == nil {
		return WatchOptions{}, fmt.Errorf("%w: no numbers", ErrInvalidOptions)
	}
	peers := newCarrierWork(carrier).ordered() // from a random node, to spread watchers
	if len(peers) == 0 {
		return WatchOptions{}, fmt.Errorf("%w: %s lists no node", ErrNoAnswer, carrier.Code)
	}
	return WatchOptions{Carrier: carrier.Code, Peers: peers, Keys: trust, Numbers: numbers}, nil
}

// WatchUpdate is what a Watcher hands over for one parcel: its new
// verified events, why an update for it failed verification, or (Code)
// that the node has no parcel with the number. It is also the line
// `opentrack watch --json` prints, so its JSON keys are a contract for
// scripts.
type WatchUpdate struct {
	Number  string `json:"number"`
	Carrier string `json:"carrier"`
	// Verified reports that the events chain to a head signed by a key
	// Keys binds to the carrier. When false, Error says why and Events is
	// empty: a record that fails is shown, never dropped, since dropping
	// it would hide an attack.
	Verified bool `json:"verified"`
	// Head is the CID of the newest event, the head the signature covers.
	Head string `json:"head,omitempty"`
	// Cursor is the position to resume from once this update is stored;
	// empty while a re-sync has no position yet.
	Cursor string `json:"cursor"`
	// Events are the events not handed over before, oldest first. Events
	// that start again at seq 0 are a new parcel with a recycled number
	// (spec 6.4).
	Events []EventView `json:"events"`
	// Details are what the grant in WatchOptions discloses of the
	// parcel; they are not signed (spec section 4.7).
	Details protocol.Details `json:"details,omitempty"`
	// DetailsError is why a parcel the grant covers came without details
	// ("expired": erased under the carrier's retention; spec 8.3).
	DetailsError string `json:"details_error,omitempty"`
	Error        string `json:"error,omitempty"` // protocol code: bad_signature, broken_chain...
	// Code is the result code (spec 8.3) of a watched number that has no
	// parcel to show: the node's status at the start of a subscription
	// (not_found, wrong_carrier, invalid_number, rate_limited; spec 8.5),
	// or invalid_number from Watchable for one no carrier claims. Such an
	// update has no events, and the watch goes on for the number: a parcel
	// created later comes as an update.
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"` // human-readable detail of Error or Code
}

// Watcher is a live subscription over /opentrack/watch/1.0.0 that outlives
// its streams. It verifies every update (spec 6.2 and 6.4), back-fills
// with track what an update does not link to, and hands over only events
// not handed over before, in seq order per parcel. When a stream ends,
// falls silent or the node restarts, it subscribes again from its cursor,
// after an exponential backoff with jitter; when the node no longer knows
// the cursor it re-syncs as spec 8.5 says.
//
// Delivery is at least once. Within one Watcher every event is handed
// over once: an event counts as handed over when the consumer receives
// its update, and the per-parcel heads the watcher holds filter out what
// a resumed stream repeats. The cursor file advances only to messages
// whose updates were received, so a restart from it repeats, and never
// skips; a restarted watcher holds no heads, so it hands over the whole
// history of each parcel that changes again, and a consumer dedupes by
// event CID. A consumer that needs its own storage and the cursor to move
// together stores WatchUpdate.Cursor with the events instead of setting
// CursorFile, and passes it back as Cursor.
//
// A Watcher holds a head per parcel it has seen, about 150 bytes each:
// the watched numbers, or with Audience every parcel of the audience that
// changed while it ran. One goroutine runs it, and one more reads its
// current stream; both end with the context passed to Watch or with
// Close. Close every Watcher before its Client.
type Watcher struct {
	c        *Client
	opts     WatchOptions
	numbers  []string            // normalized, nil with Audience
	watched  map[string]struct{} // numbers as a set
	out      chan WatchUpdate
	cancel   context.CancelFunc
	done     chan struct{}
	err      error // why run stopped; read after done
	position atomic.Pointer[string]
	live     chan struct{}
	liveOnce sync.Once

	// Owned by the run goroutine.
	parcels  map[string]*parcelState
	told     map[string]string // number -> the Code last handed over for it
	answered map[string]bool   // numbers the current subscription's statuses settle: a re-sync skips them
	// pending are statuses not taken yet. They wait here rather than hold
	// up the stream, so that the opening heartbeat sets the cursor while
	// the consumer has not read them; they go out before any later update,
	// and Live waits for them (liveDue).
	pending   []WatchUpdate
	liveDue   bool
	cursor    string
	saved     string // the cursor in the file
	resync    bool   // a re-sync by track is due once a subscription is live
	peerIndex int
}

// parcelState is what the watcher holds of one parcel (spec 6.4): its
// genesis, and its head with the head's seq and signing time.
type parcelState struct {
	genesis cid.Cid
	head    cid.Cid
	seq     uint64
	time    int64
}

// Watch subscribes as opts say and returns the running Watcher. It fails
// only on invalid options, an unreadable cursor file or a closed client;
// everything after that is retried or reported through Err.
func (c *Client) Watch(ctx context.Context, opts WatchOptions) (*Watcher, error) {
	if c.isClosed() {
		return nil, ErrClosed
	}
	if err := opts.EnsureDefaults().Validate(); err != nil {
		return nil, err
	}
	w := &Watcher{
		c: c, opts: opts, out: make(chan WatchUpdate), done: make(chan struct{}), live: make(chan struct{}),
		parcels: map[string]*parcelState{}, told: map[string]string{}, cursor: opts.Cursor, resync: opts.Sync,
	}
	w.opts.Peers = slices.Clone(opts.Peers)
	if !opts.Audience {
		w.watched = make(map[string]struct{}, len(opts.Numbers))
		for _, raw := range opts.Numbers {
			n, _ := protocol.NormalizeNumber(raw) // Validate checked it
			if _, dup := w.watched[n]; !dup {
				w.watched[n] = struct{}{}
				w.numbers = append(w.numbers, n)
			}
		}
	}
	if opts.CursorFile != "" {
		saved, err := readCursorFile(opts.CursorFile)
		if err != nil {
			return nil, err
		}
		if saved != "" {
			w.cursor = saved
		}
		w.saved = saved
	}
	w.setCursor(w.cursor)
	ctx, w.cancel = context.WithCancel(ctx)
	go w.run(ctx)
	return w, nil
}

// Live is closed once the first subscription is live and the statuses it
// opened with have been handed over, and with Sync once the current state
// of every watched parcel has been too: from then on every change is
// delivered. A consumer that must
// not miss an event caused after it started waits for it.
func (w *Watcher) Live() <-chan struct{} { return w.live }

// markLive closes live, once, as soon as every pending status is taken.
func (w *Watcher) markLive() {
	w.liveDue = true
	if len(w.pending) == 0 {
		w.liveOnce.Do(func() { close(w.live) })
	}
}

// Updates returns the channel of updates. It is unbuffered, so that a
// cursor is never persisted ahead of what the consumer has received, and
// it is closed when the watcher stops.
func (w *Watcher) Updates() <-chan WatchUpdate { return w.out }

// Err returns why the watcher stopped once Updates is closed: nil after
// Close or the end of Watch's context (unless the last cursor could not
// be written), otherwise ErrWatchRefused, ErrCursorFile or ErrClosed.
// Before that it returns nil.
func (w *Watcher) Err() error {
	select {
	case <-w.done:
		return w.err
	default:
		return nil
	}
}

// Cursor returns the cursor of the last message fully processed: the one
// to resume from.
func (w *Watcher) Cursor() string { return *w.position.Load() }

// Close stops the watcher, writes the cursor file a last time and waits
// for its goroutines. Call it once the updates received so far are
// processed: their cursor is what the file keeps. It returns Err. Close
// is idempotent.
func (w *Watcher) Close() error {
	w.cancel()
	<-w.done
	return w.err
}

// run subscribes, resubscribes and backs off until ctx ends or the node
// refuses for good.
func (w *Watcher) run(ctx context.Context) {
	// Deferred calls run last first: done is closed before Updates, so
	// that a consumer who sees Updates closed finds Err set.
	defer close(w.out)
	defer close(w.done)
	w.err = w.loop(ctx)
}

func (w *Watcher) loop(ctx context.Context) error {
	attempt := 0
	for {
		hadCursor := w.cursor != ""
		progress, err := w.session(ctx, w.opts.Peers[w.peerIndex])
		switch {
		case errors.Is(err, ErrWatchRefused), errors.Is(err, ErrCursorFile), errors.Is(err, ErrClosed):
			return err
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errUnknownCursor) && hadCursor:
			// Spec 8.5: subscribe again from now at once, so that no
			// update falls into a gap, then track what the subscription
			// no longer covers.
			w.setCursor("")
			w.resync = true
			continue
		}
		if progress {
			attempt = 0
		} else {
			w.peerIndex = (w.peerIndex + 1) % len(w.opts.Peers)
		}
		wait := backoff(attempt, w.opts.MinBackoff, w.opts.MaxBackoff)
		attempt++
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff is the wait before attempt (0 first): MinBackoff doubled per
// attempt up to MaxBackoff, the upper half of it random.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 0; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

// Watchable splits numbers into those the registry resolves to a carrier,
// which a watch can subscribe to, and a failed update for each other one
// (invalid_number, with why), so that one unknown number does not stop
// the watch of the rest.
func Watchable(trust Trust, numbers []string) (ok []string, rejected []WatchUpdate) {
	for _, raw := range numbers {
		entries, err := Resolve(trust, raw)
		if err == nil && len(entries) == 0 {
			err = fmt.Errorf("%w: %s matches no carrier in the registry", protocol.ErrInvalidNumber, raw)
		}
		if err != nil {
			code := protocol.CodeOf(err)
			if code == "" {
				code = protocol.CodeInvalidNumber
			}
			rejected = append(rejected, WatchUpdate{Number: raw, Events: []EventView{}, Code: code, Message: protocol.Detail(err)})
			continue
		}
		ok = append(ok, raw)
	}
	return ok, rejected
}

// codeText is a node's answer as one phrase: the code, then its message
// when the node gave one, with no trailing space.
func codeText(code, msg string) string {
	if msg == "" {
		return code
	}
	return code + ": " + msg
}
