package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/node/internal/deadline"
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

// Watch defaults, documented on WatchOptions.
const (
	defaultMinBackoff     = 200 * time.Millisecond
	defaultMaxBackoff     = 30 * time.Second
	defaultCursorInterval = 200 * time.Millisecond
	// resyncGrace is how long a re-sync waits for the first frame of its
	// new subscription before it queries anyway. The first frame proves
	// the subscription is live, so that the track answers cannot miss an
	// event that the subscription does not carry either; a node that sends
	// nothing until its first heartbeat has long registered it by then.
	resyncGrace = 500 * time.Millisecond
)

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

// EnsureDefaults fills every zero field that has a default and returns o.
func (o *WatchOptions) EnsureDefaults() *WatchOptions {
	if o.MinBackoff == 0 {
		o.MinBackoff = defaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = defaultMaxBackoff
	}
	if o.CursorInterval == 0 {
		o.CursorInterval = defaultCursorInterval
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = protocol.WatchIdleTimeout
	}
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

// frame is one message read from a stream, or why reading stopped.
type frame struct {
	msg *protocol.WatchMessage
	err error
	// pre is an update's signed head, parsed and its signature checked by
	// a worker while earlier frames are handled; read it once ready is
	// closed. Signature checks are most of an update's cost, and they
	// need no state, so they run on every core while the watcher applies
	// updates in order on one.
	pre   *checkedHead
	ready chan struct{}
}

// session runs one subscription on p until its stream ends, and reports
// whether any message arrived on it.
func (w *Watcher) session(ctx context.Context, p peer.ID) (progress bool, err error) {
	s, err := w.open(ctx, p)
	if err != nil {
		return false, err
	}
	w.answered = map[string]bool{}
	ahead := 2 * runtime.GOMAXPROCS(0)
	frames := make(chan *frame, ahead)
	checks := make(chan *frame, ahead)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(checks)
		w.read(s, frames, checks, stop)
	})
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for f := range checks {
				f.pre = checkHead(f.msg.Head, w.opts.Keys)
				close(f.ready)
			}
		})
	}
	defer func() {
		close(stop)
		s.Reset() // unblocks the reader; a subscription ends either way
		wg.Wait()
	}()
	// A cursor is written once the stream ends, however it ends, so that
	// a restart after a failure resumes from what was handed over. Failing
	// that outranks why the stream ended.
	defer func() {
		if ferr := w.flush(); ferr != nil {
			err = ferr
		}
	}()

	var resyncAt <-chan time.Time
	if w.resync {
		t := time.NewTimer(resyncGrace)
		defer t.Stop()
		resyncAt = t.C
	}
	var flushAt <-chan time.Time
	if w.opts.CursorFile != "" {
		t := time.NewTicker(w.opts.CursorInterval)
		defer t.Stop()
		flushAt = t.C
	}
	for {
		var out chan<- WatchUpdate // nil, and so never ready, with nothing pending
		var head WatchUpdate
		if len(w.pending) > 0 {
			out, head = w.out, w.pending[0]
		}
		select {
		case <-ctx.Done():
			return progress, ctx.Err()
		case out <- head:
			w.taken()
		case <-resyncAt:
			resyncAt = nil
			if err := w.resyncAll(ctx, p); err != nil {
				return progress, err
			}
			w.markLive()
		case <-flushAt:
			if err := w.flush(); err != nil {
				return progress, err
			}
		case f := <-frames:
			if f.err != nil {
				return progress, f.err
			}
			progress = true
			if f.ready != nil {
				<-f.ready
			}
			if err := w.handle(ctx, p, f.msg, f.pre); err != nil {
				return progress, err
			}
			if f.msg.Type == protocol.WatchStatus {
				continue // the opening goes on up to its heartbeat (spec 8.5)
			}
			if resyncAt != nil {
				// The first frame shows the subscription is live.
				resyncAt = nil
				if err := w.resyncAll(ctx, p); err != nil {
					return progress, err
				}
			}
			if !w.resync {
				w.markLive()
			}
		}
	}
}

// open connects to p, opens a watch stream and sends the subscription
// from the current cursor.
func (w *Watcher) open(ctx context.Context, p peer.ID) (network.Stream, error) {
	if w.c.isClosed() {
		return nil, ErrClosed
	}
	req := protocol.WatchRequest{Numbers: w.numbers, Audience: w.opts.Audience, Cursor: w.cursor, Grant: w.opts.Grant}
	msg, err := protocol.Marshal(&req)
	if err != nil {
		return nil, fmt.Errorf("client: watch request: %w", err)
	}
	// The watcher paces its own attempts; the swarm's dial backoff, which
	// grows with every failed dial, would keep it from a node that is
	// back on its address.
	octx, cancel := context.WithTimeout(network.WithForceDirectDial(ctx, "opentrack watch"), w.c.opts.ConnectTimeout)
	defer cancel()
	if w.opts.Connector != nil {
		if err := w.opts.Connector.Connect(octx, p); err != nil {
			return nil, fmt.Errorf("client: connect to %s: %w", p, err)
		}
	}
	s, err := w.c.h.NewStream(octx, p, protocol.WatchID)
	if err != nil {
		return nil, fmt.Errorf("client: open watch stream: %w", err)
	}
	if err := s.Scope().SetService(protocol.WatchServiceName); err != nil {
		s.Reset()
		return nil, fmt.Errorf("client: watch stream: %w", err)
	}
	if err := s.SetWriteDeadline(time.Now().Add(w.c.opts.RequestTimeout)); err != nil {
		s.Reset()
		return nil, wrap(err)
	}
	if err := protocol.WriteFrame(s, msg, protocol.MaxWatchRequest); err != nil {
		s.Reset()
		return nil, fmt.Errorf("client: send watch request: %w", err)
	}
	return s, nil
}

// read decodes the frames of s and passes them on, each update's head to
// checks as well, until the stream fails, stays silent past IdleTimeout,
// or stop closes.
func (w *Watcher) read(s network.Stream, out, checks chan<- *frame, stop <-chan struct{}) {
	frames := protocol.NewFrameReader(s, protocol.MaxWatchFrame)
	var readAt time.Time
	for {
		f := &frame{}
		if deadline.Renew(&readAt, time.Now(), w.opts.IdleTimeout) {
			if err := s.SetReadDeadline(readAt); err != nil {
				f.err = wrap(err)
			}
		}
		if f.err == nil {
			f.msg, f.err = readMessage(frames)
		}
		if f.err == nil && f.msg.Type == protocol.WatchUpdate {
			f.ready = make(chan struct{})
			select {
			case checks <- f:
			case <-stop:
				return
			}
		}
		select {
		case out <- f:
		case <-stop:
			return
		}
		if f.err != nil {
			return
		}
	}
}

// readMessage reads and checks one server message.
func readMessage(frames *protocol.FrameReader) (*protocol.WatchMessage, error) {
	body, err := frames.Next()
	if err == io.EOF {
		return nil, fmt.Errorf("client: watch stream ended: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("client: read watch message: %w", err)
	}
	var m protocol.WatchMessage
	if err := protocol.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("client: watch message: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("client: watch message: %w", err)
	}
	return &m, nil
}

// handle processes one message. A returned error ends the stream.
func (w *Watcher) handle(ctx context.Context, p peer.ID, m *protocol.WatchMessage, pre *checkedHead) error {
	switch m.Type {
	case protocol.WatchUpdate:
		if err := w.update(ctx, p, m, pre); err != nil {
			return err
		}
		w.setCursor(m.Cursor)
	case protocol.WatchHeartbeat:
		w.setCursor(m.Cursor)
	case protocol.WatchCatchUp:
		w.setCursor(m.Cursor)
		return errCatchUp
	case protocol.WatchStatus:
		return w.status(ctx, m)
	case protocol.WatchError:
		e := &protocol.Error{Code: m.Code, Msg: "client: watch: " + codeText(m.Code, m.Message)}
		switch m.Code {
		case protocol.CodeUnknownCursor:
			return errUnknownCursor
		case protocol.CodeBadRequest, protocol.CodeTooMany, protocol.CodeForbidden:
			return fmt.Errorf("%w: %w", ErrWatchRefused, e)
		}
		// rate_limited, unavailable, internal and codes this version does
		// not know: the node may serve again later.
		return e
	}
	return nil
}

func (w *Watcher) setCursor(c string) {
	w.cursor = c
	w.position.Store(&c)
}

// status hands over the node's status for a watched number once, and
// again only when it changes. A number it settles (the node has no parcel
// for it as the subscription starts, which then delivers one created
// later) is not tracked by a re-sync on this subscription.
func (w *Watcher) status(ctx context.Context, m *protocol.WatchMessage) error {
	if _, ok := w.watched[m.Number]; !ok {
		return w.emit(ctx, w.failed(m.Number, w.cursor, fmt.Errorf("%w: status for %q, which is not watched", protocol.ErrInvalid, m.Number)))
	}
	if settles[m.Code] {
		w.answered[m.Number] = true
	}
	w.tell(m.Number, m.Code, m.Message)
	return nil
}

// settles are the status codes after which tracking the number tells
// nothing new: the node has no parcel for it, or never will.
var settles = map[string]bool{protocol.CodeNotFound: true, protocol.CodeWrongCarrier: true, protocol.CodeInvalidNumber: true}

// tell queues code for number unless it was the last one handed over.
func (w *Watcher) tell(number, code, msg string) {
	if w.told[number] == code {
		return
	}
	w.told[number] = code
	w.pending = append(w.pending, WatchUpdate{Number: number, Carrier: w.opts.Carrier, Cursor: w.cursor, Events: []EventView{}, Code: code, Message: msg})
}

// taken drops the first pending status, which the consumer took.
func (w *Watcher) taken() {
	if w.pending = w.pending[1:]; len(w.pending) == 0 {
		w.pending = nil
		if w.liveDue {
			w.markLive()
		}
	}
}

// update verifies an update and hands over its new events. Spec 8.5: an
// update is ignored when its head is not above the one held; it is
// verified as a suffix of the held head, or as a full history when it
// starts at seq 0; and what does not link to the held head (none held,
// missed updates, a capped update) is fetched with track first.
// Verification failures are handed over as such; only a failure to
// fetch, which a retry may cure, is returned.
// pre is m's head parsed and checked already, or nil.
func (w *Watcher) update(ctx context.Context, p peer.ID, m *protocol.WatchMessage, pre *checkedHead) error {
	fail := func(err error) error { return w.emit(ctx, w.failed(m.Number, m.Cursor, err)) }
	if w.watched != nil {
		if _, ok := w.watched[m.Number]; !ok {
			return fail(fmt.Errorf("%w: update for %q, which is not watched", protocol.ErrInvalid, m.Number))
		}
	}
	if pre == nil {
		pre = &checkedHead{}
		pre.sh, pre.parseErr = protocol.ParseSignedHead(m.Head)
	}
	sh, err := pre.sh, pre.parseErr
	if err != nil {
		return fail(err)
	}
	first, err := protocol.DecodeEvent(m.Events[0])
	if err != nil {
		return fail(fmt.Errorf("event 0: %w", err))
	}
	st := w.parcels[m.Number]
	if st != nil && (sh.Head.Head.Equals(st.head) || (sh.Seq <= st.seq && first.Seq > 0)) {
		return nil // a replay after a resume
	}
	events := m.Events
	if st != nil && first.Seq > 0 && first.Seq <= st.seq {
		// The update starts inside what is held: keep what follows, which
		// must then link to the held head.
		events = events[min(st.seq+1-first.Seq, uint64(len(events))):]
	}
	last := first.Seq + uint64(len(m.Events)) - 1
	linked := first.Seq == 0 || (st != nil && first.Seq <= st.seq+1)
	res := &protocol.TrackResult{Number: m.Number, Code: protocol.CodeOK, Head: m.Head, Events: events}
	if !linked || last < sh.Seq {
		// Check the update's own signature, so that a forged one is
		// reported rather than replaced by what track says.
		head := &protocol.TrackResult{Number: m.Number, Code: protocol.CodeOK, Head: m.Head}
		if _, err := verifyResult(head, w.opts.Carrier, w.opts.Keys, sh.Head.Head, sh.Seq, time.Now(), pre); err != nil {
			return fail(err)
		}
		return w.backfill(ctx, p, []string{m.Number}, m.Cursor, true)
	}
	var known protocol.Link
	var knownSeq uint64
	if st != nil && first.Seq > 0 {
		known, knownSeq = protocol.LinkTo(st.head), st.seq
	}
	v, err := verifyResult(res, w.opts.Carrier, w.opts.Keys, known, knownSeq, time.Now(), pre)
	if err != nil {
		return fail(err)
	}
	return w.apply(ctx, m.Number, m.Cursor, v, m.Details, m.DetailsError)
}

// apply adopts a verified result for number as spec 6.4 says and hands
// over the events that are new, labelled with cursor, with the details
// that came with them.
func (w *Watcher) apply(ctx context.Context, number, cursor string, v *Verified, details protocol.Details, detailsErr string) error {
	st := w.parcels[number]
	events, cids := v.Events, v.CIDs
	if st != nil && v.Full {
		switch i := slices.IndexFunc(cids, st.head.Equals); {
		case i >= 0:
			// The same parcel resent in full.
			events, cids = events[i+1:], cids[i+1:]
		case len(cids) > 0 && cids[0].Equals(st.genesis) && v.Head.Seq < st.seq:
			return nil // an older head of the parcel held
		case len(cids) > 0 && cids[0].Equals(st.genesis):
			return w.emit(ctx, w.failed(number, cursor, fmt.Errorf("%w: the carrier signed two histories of %s: head %s at seq %d and head %s at seq %d",
				protocol.ErrBrokenChain, number, st.head, st.seq, v.Head.Head.Head, v.Head.Seq)))
		case v.Head.Time <= st.time:
			return nil // a stale answer about an older parcel with this number
		default:
			st = nil // a new parcel with a recycled number
		}
	}
	if st != nil && v.Head.Seq <= st.seq {
		return nil
	}
	next := &parcelState{head: v.Head.Head.Head.Cid, seq: v.Head.Seq, time: v.Head.Time}
	if st != nil {
		next.genesis = st.genesis
	} else if len(v.CIDs) > 0 {
		next.genesis = v.CIDs[0]
	}
	w.parcels[number] = next
	delete(w.told, number)
	if len(events) == 0 {
		return nil
	}
	fresh := *v
	fresh.Events, fresh.CIDs = events, cids
	pv := View(number, w.opts.Carrier, &protocol.TrackResult{}, &fresh, nil)
	return w.emit(ctx, WatchUpdate{
		Number: number, Carrier: w.opts.Carrier, Verified: true, Head: pv.Head, Cursor: cursor, Events: pv.Events, Details: details,
		DetailsError: detailsErr,
	})
}

// failed is the update that reports a verification failure for number.
func (w *Watcher) failed(number, cursor string, err error) WatchUpdate {
	code := protocol.CodeOf(err)
	if code == "" {
		code = protocol.CodeInternal
	}
	return WatchUpdate{Number: number, Carrier: w.opts.Carrier, Cursor: cursor, Events: []EventView{}, Error: code, Message: err.Error()}
}

// emit hands u to the consumer, after the statuses pending.
func (w *Watcher) emit(ctx context.Context, u WatchUpdate) error {
	for len(w.pending) > 0 {
		select {
		case w.out <- w.pending[0]:
			w.taken()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case w.out <- u:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// resyncAll tracks every watched number (with Audience, every parcel
// held) from the head held, as spec 8.5 says after unknown_cursor.
func (w *Watcher) resyncAll(ctx context.Context, p peer.ID) error {
	numbers := slices.DeleteFunc(slices.Clone(w.numbers), func(n string) bool { return w.answered[n] })
	if w.opts.Audience {
		numbers = slices.Sorted(func(yield func(string) bool) {
			for n := range w.parcels {
				if !yield(n) {
					return
				}
			}
		})
	}
	if err := w.backfill(ctx, p, numbers, w.cursor, false); err != nil {
		return err
	}
	w.resync = false
	return nil
}

// transientCodes are the answers about the node rather than the parcel:
// the fetch is retried on the next stream.
var transientCodes = map[string]bool{
	protocol.CodeRateLimited: true, protocol.CodeUnavailable: true, protocol.CodeInternal: true,
}

// backfill asks p for numbers' events after the heads held, a hundred
// numbers a request, following paged histories, and applies each result,
// labelled with cursor. A parcel the node does not hold is reported only
// when asked about because of an update (reportMissing). It returns an
// error only when the node could not answer, so that the stream is
// retried.
func (w *Watcher) backfill(ctx context.Context, p peer.ID, numbers []string, cursor string, reportMissing bool) error {
	for start := 0; start < len(numbers); start += protocol.MaxNumbersPerRequest {
		chunk := numbers[start:min(start+protocol.MaxNumbersPerRequest, len(numbers))]
		queries := make([]protocol.TrackQuery, len(chunk))
		for i, n := range chunk {
			queries[i] = w.query(n)
		}
		resp, err := w.c.Track(ctx, p, queries, w.opts.Grant)
		if err != nil {
			return fmt.Errorf("%w: %w", errFetch, err)
		}
		if resp.Error != nil {
			return fmt.Errorf("%w: %s", errFetch, codeText(resp.Error.Code, resp.Error.Message))
		}
		for i := range resp.Results {
			res := &resp.Results[i]
			if settles[res.Code] && !reportMissing {
				// No parcel to show yet: the number's result, once.
				w.tell(chunk[i], res.Code, res.Message)
				continue
			}
			v, err := w.fetchPages(ctx, p, chunk[i], queries[i], res)
			if errors.Is(err, errFetch) {
				return err
			}
			if err != nil {
				if err := w.emit(ctx, w.failed(chunk[i], cursor, err)); err != nil {
					return err
				}
				continue
			}
			if err := w.apply(ctx, chunk[i], cursor, v, res.Details, res.DetailsError); err != nil {
				return err
			}
		}
	}
	return nil
}

// errFetch marks a page of a back-fill that the node could not serve.
var errFetch = errors.New("client: back-fill")

// query asks for number from the head held.
func (w *Watcher) query(number string) protocol.TrackQuery {
	q := protocol.TrackQuery{Number: number}
	if st := w.parcels[number]; st != nil {
		q.Known = protocol.LinkTo(st.head)
	}
	return q
}

// fetchPages verifies res, the answer to q, and asks for the pages after
// it until one reaches the signed head (spec 6.3), within the client's
// history bound (Options.MaxHistoryPages and MaxHistoryEvents): a node
// that keeps answering "more" cannot grow the watcher without end. The
// result holds every page's events; none of them counts as verified
// before the last page does. Errors wrapping errFetch mean the node could
// not answer.
func (w *Watcher) fetchPages(ctx context.Context, p peer.ID, number string, q protocol.TrackQuery, res *protocol.TrackResult) (*Verified, error) {
	var knownSeq uint64
	if st := w.parcels[number]; st != nil {
		knownSeq = st.seq
	}
	var all *Verified
	for pages := 1; ; pages++ {
		if transientCodes[res.Code] || !protocol.ValidResultCode(res.Code) {
			return nil, fmt.Errorf("%w: %s: %s", errFetch, number, codeText(res.Code, res.Message))
		}
		v, err := VerifyResult(res, w.opts.Carrier, w.opts.Keys, q.Known, knownSeq)
		if err != nil {
			return nil, err
		}
		if all == nil || v.Full {
			all = v
		} else {
			all.Events, all.CIDs = append(all.Events, v.Events...), append(all.CIDs, v.CIDs...)
			all.Head, all.KeyID, all.More = v.Head, v.KeyID, v.More
		}
		if !v.More {
			return all, nil
		}
		if pages >= w.c.opts.MaxHistoryPages || len(all.Events) >= w.c.opts.MaxHistoryEvents {
			return nil, fmt.Errorf("%w: %s: history incomplete after %d pages (%d events, head seq %d), not verified; %s",
				protocol.ErrTooLarge, number, pages, len(all.Events), all.Head.Seq, w.c.bound())
		}
		last := len(v.Events) - 1
		q.Known, knownSeq = protocol.LinkTo(v.CIDs[last]), v.Events[last].Seq
		resp, err := w.c.Track(ctx, p, []protocol.TrackQuery{q}, nil)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: %w", errFetch, err)
		case resp.Error != nil:
			return nil, fmt.Errorf("%w: %s", errFetch, codeText(resp.Error.Code, resp.Error.Message))
		}
		res = &resp.Results[0]
	}
}

// flush writes the cursor file when it is behind, unless a re-sync is
// due: until then the old cursor is the one a restart must resume from.
func (w *Watcher) flush() error {
	if w.opts.CursorFile == "" || w.resync || w.cursor == w.saved || w.cursor == "" {
		return nil
	}
	if err := writeCursorFile(w.opts.CursorFile, w.cursor); err != nil {
		return err
	}
	w.saved = w.cursor
	return nil
}

// readCursorFile returns the cursor in path, "" when there is no file.
func readCursorFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrCursorFile, err)
	}
	c := strings.TrimSuffix(string(b), "\n")
	if len(c) > protocol.MaxCursorLen {
		return "", fmt.Errorf("%w: %s holds %d bytes, a cursor is at most %d", ErrCursorFile, path, len(c), protocol.MaxCursorLen)
	}
	return c, nil
}

// writeCursorFile replaces path with cursor: a synced temporary file
// renamed over it, so that a crash leaves the old cursor or the new one,
// never a torn or empty file.
func writeCursorFile(path, cursor string) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCursorFile, err)
	}
	_, err = f.WriteString(cursor + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("%w: %w", ErrCursorFile, err)
	}
	return nil
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
