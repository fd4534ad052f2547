package service

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

const (
	// watchQueueAllowance is how many bytes of queued frames a
	// subscription's standing reservation covers; a frame queued beyond it
	// reserves its own size until it is written, so the resource manager
	// bounds what all subscribers together hold in their queues.
	watchQueueAllowance = 32 << 10
	// watchStreamMemory is reserved for as long as a watch stream is open:
	// the subscription's own state and the queue allowance. Reading the
	// request reserves protocol.MaxWatchRequest more for that time only.
	watchStreamMemory = 8<<10 + watchQueueAllowance
	// watchNumberMemory is charged per watched number: its entry in the
	// subscription's set.
	watchNumberMemory = 64
	// watchStatusMemory is charged per status until the opening that
	// carries it is written.
	watchStatusMemory = 64
	// watchCoalesce bounds the bytes of queued frames written in one
	// Write: yamux sends every Write as its own frame, so a burst of small
	// updates costs one packet rather than one each.
	watchCoalesce = 64 << 10
	// maxSentParcels bounds a subscription's dedupe map. Past it the map
	// is dropped: dedupe only saves bytes, clients dedupe by CID anyway.
	maxSentParcels = 4096
	// updateOverhead bounds an update frame beyond its head and events:
	// the length prefix, the map with its keys, the type, a cursor of
	// MaxCursorLen, a number and the events array header.
	updateOverhead = 512
)

// An update of MaxEventsPerResult events of MaxEventSize each, under the
// largest head, fits in a frame: this constant does not compile otherwise.
// So the only limit on an update's events is their count.
const _ = uint64(protocol.MaxWatchFrame - updateOverhead - maxSignedHead -
	protocol.MaxEventsPerResult*(protocol.MaxEventSize+eventOverhead))

// errDataAfterRequest means a watch client wrote after its one request.
var errDataAfterRequest = errors.New("service: data after the watch request")

// WatchStore is what a Watch needs of a store: the parcels, the feed
// it follows, and the grants and audit log behind details.
type WatchStore interface {
	store.EventLog
	store.FeedReader
	store.Access
}

// WatchConfig is what a Watch serves.
type WatchConfig struct {
	// Store holds the parcels and the change feed that subscriptions
	// read, and the grants and audit log behind details. Its ID prefixes
	// every cursor. Required.
	Store WatchStore
	// Metrics receives subscription, message and reset counts; nil for
	// none.
	Metrics *metrics.Metrics
	// Logger receives internal errors and, at debug level, bad peer input;
	// nil discards.
	Logger *slog.Logger
	// Policy admits subscriptions and says whether public lookups are
	// open; nil admits all.
	Policy Policy
	// Carrier and Keys verify a grant presented with a subscription; a nil
	// Keys refuses every grant.
	Carrier string
	Keys    protocol.KeyResolver
	// Schemes are the carrier's tracking-number schemes: a watched number
	// that matches none gets the status wrong_carrier, and one that fails
	// only a check digit invalid_number, without a store lookup.
	// Default: protocol.DefaultScheme(Carrier); without a Carrier, none,
	// and every number the store lacks gets not_found.
	Schemes []protocol.Scheme
}

// Watch serves /opentrack/watch/1.0.0 (spec section 8.5): a stream carries
// one WatchRequest, then the server pushes update, heartbeat and, at the
// end, catchup or error frames.
//
// One tailer reads the store's change feed for the whole service and hands
// each entry to the subscriptions watching its number; a subscription
// behind the tail (resuming from a cursor, or fallen behind the tailer)
// reads the feed on its own until it catches up. Each subscription turns
// its entries into frames on its own goroutine and queues them for a
// writer goroutine, so ingest never waits for a subscriber: appending only
// wakes the tailer. A subscriber that leaves its queue full for
// Options.WatchStall gets catchup and the stream ends; it resumes from the
// catchup's cursor, replayed from the durable feed.
//
// A cursor is "<store id>.<feed position>", opaque to clients. Every
// cursor the service sends names a position up to which the subscriber
// has every matching update once it has processed that message.
type Watch struct {
	cfg     WatchConfig
	opts    Options
	schemes schemeSet
	prefix  string                        // the store ID and a dot: every cursor starts so
	sent    map[string]prometheus.Counter // messages by type, nil without metrics
	srv     server
	tailer  *tailer // from Register to Unregister
}

// NewWatch checks cfg and opts (nil for defaults) and builds the service.
func NewWatch(cfg WatchConfig, opts *Options) (*Watch, error) {
	o, err := resolve(opts)
	var p []string
	if err != nil {
		p = append(p, err.Error())
	}
	w := &Watch{cfg: cfg, opts: o, srv: newServer(protocol.WatchID, "watch", cfg.Metrics, cfg.Logger)}
	w.schemes, p = compileSchemes(cfg.Carrier, cfg.Schemes, p)
	if cfg.Store == nil {
		p = append(p, "no store")
	} else {
		w.prefix = cfg.Store.ID() + "."
		// The longest cursor is the prefix and a 20-digit position.
		if n := len(w.prefix) + 20; cfg.Store.ID() == "" || n > protocol.MaxCursorLen {
			p = append(p, fmt.Sprintf("store id %q makes cursors of up to %d bytes, limit %d", cfg.Store.ID(), n, protocol.MaxCursorLen))
		}
	}
	if err := problems(p); err != nil {
		return nil, err
	}
	if cfg.Metrics != nil {
		w.sent = counters(cfg.Metrics.WatchUpdates, protocol.WatchUpdate, protocol.WatchCatchUp, protocol.WatchHeartbeat, protocol.WatchError, protocol.WatchStatus)
	}
	return w, nil
}

// Register starts serving watch streams on h. Register once.
func (w *Watch) Register(h host.Host) {
	w.tailer = startTailer(w.cfg.Store, w.opts.FeedBatch)
	w.srv.register(h, w.handle)
}

// Unregister stops serving, resets open subscriptions and waits for their
// handlers to return.
func (w *Watch) Unregister() {
	w.srv.unregister()
	if w.tailer != nil { // registered
		w.tailer.stop()
	}
}

func (w *Watch) handle(s network.Stream) {
	ctx, done, ok := w.srv.open(s, protocol.WatchServiceName, watchStreamMemory)
	if !ok {
		return
	}
	defer done()
	req, ok := w.readRequest(s)
	if !ok {
		return
	}
	sub, code, msg := w.subscribe(ctx, s, req)
	if code != "" {
		w.refuse(s, code, msg)
		return
	}
	defer s.Scope().ReleaseMemory(sub.memory)
	sub.run(ctx)
}

// admit applies the carrier's policy to a valid request: the per-peer
// subscription budget, then the grant if one is presented (a failing grant
// is audited and refused forbidden, spec section 12.2), then public access:
// with public lookups closed, only the audience scope or a grant opens a
// subscription to numbers. A valid grant is returned: the updates of the
// parcels it covers carry the details it names.
func (w *Watch) admit(ctx context.Context, remote peer.ID, req *protocol.WatchRequest) (g *protocol.Grant, code, msg string) {
	if p := w.cfg.Policy; p != nil {
		if ok, retry := p.AdmitWatch(remote); !ok {
			return nil, protocol.CodeRateLimited, fmt.Sprintf("subscription budget spent; retry after %s", retry.Round(time.Millisecond))
		}
	}
	if len(req.Grant) > 0 {
		g, err := policy.VerifyGrant(ctx, w.cfg.Store, w.cfg.Keys, w.cfg.Carrier, req.Grant, remote, time.Now())
		if err != nil {
			entry := store.AuditEntry{Time: time.Now().UnixMilli(), Peer: remote.String(), GrantID: policy.GrantID(req.Grant), Reason: "watch: " + protocol.Detail(err)}
			if aerr := policy.AppendAudit(ctx, w.cfg.Store, w.cfg.Metrics, []store.AuditEntry{entry}); aerr != nil {
				return nil, protocol.CodeInternal, "audit log unavailable"
			}
			return nil, protocol.CodeForbidden, protocol.Detail(err)
		}
		return g, "", ""
	}
	if !req.Audience && w.cfg.Policy != nil && !w.cfg.Policy.AllowPublic(remote) {
		return nil, protocol.CodeForbidden, "public lookups are closed on this node: subscribe to your audience or present a grant"
	}
	return nil, "", ""
}

// readRequest reads and decodes the one request, within RequestTimeout of
// the stream's opening and with memory reserved for a request of the cap
// while it does. On failure it has ended the stream.
func (w *Watch) readRequest(s network.Stream) (*protocol.WatchRequest, bool) {
	if err := s.Scope().ReserveMemory(protocol.MaxWatchRequest, network.ReservationPriorityAlways); err != nil {
		w.srv.reset(s, reasonLimit, err)
		return nil, false
	}
	defer s.Scope().ReleaseMemory(protocol.MaxWatchRequest)
	if err := s.SetReadDeadline(time.Now().Add(w.opts.RequestTimeout)); err != nil {
		s.Reset()
		return nil, false
	}
	body, err := protocol.NewFrameReader(s, protocol.MaxWatchRequest).Next()
	if err != nil {
		w.srv.readFailed(s, err)
		return nil, false
	}
	var req protocol.WatchRequest
	if err := protocol.Unmarshal(body, &req); err != nil {
		w.srv.reset(s, reasonDecode, err)
		return nil, false
	}
	return &req, true
}

// subscribe checks a decoded request and sets up its subscription, or
// returns the error code and message to refuse it with.
func (w *Watch) subscribe(ctx context.Context, s network.Stream, req *protocol.WatchRequest) (_ *subscription, code, msg string) {
	if n := len(req.Numbers); n > protocol.MaxWatchNumbers {
		return nil, protocol.CodeTooMany, fmt.Sprintf("%d numbers, limit %d", n, protocol.MaxWatchNumbers)
	}
	if err := req.Validate(); err != nil {
		return nil, protocol.CodeBadRequest, protocol.Detail(err)
	}
	g, code, msg := w.admit(ctx, s.Conn().RemotePeer(), req)
	if code != "" {
		return nil, code, msg
	}
	start, err := w.position(ctx, req.Cursor)
	if err != nil {
		return nil, w.errorCode(err), protocol.Detail(err)
	}
	sub := &subscription{
		w:      w,
		s:      s,
		start:  start,
		frames: make(chan frame, w.opts.WatchBuffer),
		sent:   make(map[uint64]uint64),
		grant:  g,
		remote: s.Conn().RemotePeer().String(),
		inbox:  newInbox(),
	}
	if req.Audience {
		sub.peer = s.Conn().RemotePeer().String()
	} else {
		sub.memory = len(req.Numbers) * watchNumberMemory
		if err := s.Scope().ReserveMemory(sub.memory, network.ReservationPriorityHigh); err != nil {
			return nil, protocol.CodeUnavailable, "node is out of memory for this subscription"
		}
		sub.numbers = make(map[string]struct{}, len(req.Numbers))
		for _, n := range req.Numbers {
			sub.numbers[n] = struct{}{}
		}
		if req.Cursor == "" {
			if code, msg := sub.answerNumbers(ctx, req.Numbers); code != "" {
				s.Scope().ReleaseMemory(sub.memory)
				return nil, code, msg
			}
		}
	}
	return sub, "", ""
}

// numberStatus is the opening status of one watched number.
type numberStatus struct {
	number, code, msg string
	retryAfter        uint64 // ms
}

// answerNumbers finds the watched numbers the node has no parcel for, in
// the order of spec section 8.4 (schemes, then the store), and keeps a
// status for each for the opening (spec 8.5). It runs once the start
// position is fixed, so a parcel it misses is created after it, and is
// delivered by update. Each not_found is charged to the peer's not_found
// budget as track charges it, per 100 numbers; when that budget is spent,
// every number is answered rate_limited and none looked up, so that
// watch tells no more than track. It returns the code to refuse the
// subscription with when the store fails or memory is short.
func (sub *subscription) answerNumbers(ctx context.Context, numbers []string) (code, msg string) {
	w, remote, addr := sub.w, sub.s.Conn().RemotePeer(), sub.s.Conn().RemoteMultiaddr()
	var statuses []numberStatus
	if p := w.cfg.Policy; p != nil {
		if ok, retry := p.AdmitNotFound(remote, addr); !ok {
			statuses = make([]numberStatus, len(numbers))
			for i, n := range numbers {
				statuses[i] = numberStatus{number: n, code: protocol.CodeRateLimited, retryAfter: millis(retry),
					msg: "not_found budget spent: no number's status is told"}
			}
		}
	}
	if statuses == nil {
		ctx, cancel := context.WithTimeout(ctx, w.opts.RequestTimeout)
		defer cancel()
		notFound := 0
		for i, n := range numbers {
			if code, msg := w.schemes.match(n); code != "" {
				statuses = append(statuses, numberStatus{number: n, code: code, msg: msg})
			} else {
				switch _, err := w.cfg.Store.Parcel(ctx, n); {
				case errors.Is(err, store.ErrNotFound):
					statuses = append(statuses, numberStatus{number: n, code: protocol.CodeNotFound, msg: w.notFoundMessage()})
					notFound++
				case err != nil && ctx.Err() != nil:
					// Out of time (RequestTimeout) or shutting down.
					return protocol.CodeUnavailable, "node could not look the numbers up in time"
				case err != nil:
					return w.errorCode(err), err.Error()
				}
			}
			// Charged as the track requests of 100 that would have told
			// the same: ObserveNotFound caps one charge at a burst.
			if i%protocol.MaxNumbersPerRequest == protocol.MaxNumbersPerRequest-1 || i == len(numbers)-1 {
				if p := w.cfg.Policy; p != nil {
					p.ObserveNotFound(remote, addr, notFound)
				}
				notFound = 0
			}
		}
	}
	if n := len(statuses) * watchStatusMemory; n > 0 {
		if err := sub.s.Scope().ReserveMemory(n, network.ReservationPriorityHigh); err != nil {
			return protocol.CodeUnavailable, "node is out of memory for this subscription"
		}
		sub.statusMemory = n
	}
	sub.statuses = statuses
	return "", ""
}

// position resolves a request's cursor to a feed position: the current
// tail without one. A cursor of another store, a malformed one, or one
// beyond the tail was never issued by this store: store.ErrUnknownCursor.
func (w *Watch) position(ctx context.Context, cursor string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, w.opts.RequestTimeout)
	defer cancel()
	tail, err := w.cfg.Store.FeedTail(ctx)
	if err != nil {
		return 0, err
	}
	if cursor == "" {
		return tail, nil
	}
	digits, ok := strings.CutPrefix(cursor, w.prefix)
	pos, err := strconv.ParseUint(digits, 10, 64)
	// Only the form this service writes is accepted, so that one
	// position has one cursor: no sign, no leading zeros.
	if !ok || err != nil || strconv.FormatUint(pos, 10) != digits {
		return 0, fmt.Errorf("service: cursor %q: %w", cursor, store.ErrUnknownCursor)
	}
	if pos > tail {
		return 0, fmt.Errorf("service: cursor %q is beyond the feed tail %d: %w", cursor, tail, store.ErrUnknownCursor)
	}
	return pos, nil
}

func (w *Watch) cursor(pos uint64) string { return w.prefix + strconv.FormatUint(pos, 10) }

// errorCode maps a store error to the watch error code the peer sees,
// logging the internal ones. It is the one place where that happens.
func (w *Watch) errorCode(err error) string {
	switch {
	case errors.Is(err, store.ErrUnknownCursor):
		return protocol.CodeUnknownCursor
	case errors.Is(err, store.ErrClosed):
		return protocol.CodeUnavailable // the node is shutting down
	default:
		w.srv.log.Warn("watch failed", "err", err)
		return protocol.CodeInternal
	}
}

// notFoundMessage is the message of a not_found status.
func (w *Watch) notFoundMessage() string {
	if w.cfg.Carrier == "" {
		return "no such parcel"
	}
	return "no such parcel at carrier " + w.cfg.Carrier
}

// refuse answers a request with an error frame and closes the stream.
func (w *Watch) refuse(s network.Stream, code, msg string) {
	if code == protocol.CodeInternal {
		msg = "" // internal errors stay inside the node
	}
	b, err := w.encode(&protocol.WatchMessage{Type: protocol.WatchError, Code: code, Message: truncate(msg)})
	if err == nil {
		if err = s.SetWriteDeadline(time.Now().Add(w.opts.WriteTimeout)); err == nil {
			_, err = s.Write(b)
		}
	}
	if err != nil {
		s.Reset()
		w.srv.log.Debug("watch refusal failed", "peer", s.Conn().RemotePeer(), "err", err)
		return
	}
	w.count(protocol.WatchError, 1)
	s.Close()
}

// encode returns m as one frame.
func (w *Watch) encode(m *protocol.WatchMessage) ([]byte, error) {
	msg, err := protocol.Marshal(m)
	if err != nil {
		return nil, err
	}
	return protocol.AppendFrame(make([]byte, 0, binary.MaxVarintLen64+len(msg)), msg, protocol.MaxWatchFrame)
}

func (w *Watch) count(typ string, n int) {
	if w.sent != nil {
		w.sent[typ].Add(float64(n))
	}
}

// subscription is one watch stream's state. Three goroutines share it:
// produce reads the feed and queues frames, write writes them (and
// heartbeats), and watchPeer notices the subscriber resetting the stream.
type subscription struct {
	w       *Watch
	s       network.Stream
	start   uint64              // the feed position the subscription starts after
	peer    string              // audience scope: the subscriber's peer ID
	numbers map[string]struct{} // numbers scope: the numbers watched
	memory  int                 // reserved for numbers, released by handle
	grant   *protocol.Grant     // verified at subscription; nil without one
	remote  string              // the subscriber's peer ID
	// statuses open the stream (spec 8.5); the writer sends them, then
	// drops them and releases statusMemory.
	statuses     []numberStatus
	statusMemory int

	frames chan frame // the bounded queue, closed by produce when it ends
	// final is what the stream ends with (catchup or error). produce sets
	// it before it closes frames, and write reads it after.
	final   *protocol.WatchMessage
	queued  atomic.Int64  // bytes in frames
	scanned atomic.Uint64 // the feed position up to which every update is queued

	// sent maps a parcel id to the head seq of its last update, when that
	// update carried events of feed entries not yet reached. Those entries
	// are then skipped or shortened, and the record goes with the last of
	// them, so the map stays small. Only produce uses it.
	sent map[uint64]uint64

	inbox *inbox // where the tailer queues entries once produce has caught up
}

// run serves the subscription until it ends: the subscriber resets or
// falls behind, the store fails, or the service unregisters.
func (sub *subscription) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if m := sub.w.cfg.Metrics; m != nil {
		m.WatchStreams.Inc()
		defer m.WatchStreams.Dec()
	}
	sub.scanned.Store(sub.start)
	defer sub.dropStatuses()
	// The request deadline is over; from now on the stream is only read
	// to notice a reset.
	if err := sub.s.SetReadDeadline(time.Time{}); err != nil {
		sub.s.Reset()
		return
	}
	ww := &watchWriter{sub: sub}
	if err := ww.opening(); err != nil {
		ww.failed(err)
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { sub.produce(ctx) })
	wg.Go(func() { sub.watchPeer(cancel) })
	sub.write(ctx, ww)
	cancel()
	wg.Wait()
	for f := range sub.frames { // left unwritten when the stream failed
		sub.release(f)
	}
}

// watchPeer waits for the subscriber to reset the stream and then ends the
// subscription, so that it does not live on until the next heartbeat
// fails. A clean end of the subscriber's side ends nothing (spec section
// 8.5); more data after the request is a protocol violation.
func (sub *subscription) watchPeer(cancel context.CancelFunc) {
	var b [1]byte
	n, err := sub.s.Read(b[:])
	switch {
	case n > 0:
		sub.w.srv.reset(sub.s, reasonFrame, errDataAfterRequest)
	case errors.Is(err, io.EOF):
		return
	}
	cancel()
}

// produce reads the change feed from the start position and queues an
// update for every matching entry; once it has read it all, it joins the
// tailer and takes its entries from the inbox, until the tailer detaches
// it. It ends the queue with catchup when the subscriber stops taking
// frames, and with error when the store fails.
func (sub *subscription) produce(ctx context.Context) {
	defer close(sub.frames)
	t := sub.w.tailer
	defer t.leave(sub)
	st, pos := sub.w.cfg.Store, sub.start
	joined, since := false, uint64(0) // since: the tailer's position at the join
	var entries []store.FeedEntry
	for {
		var err error
		if joined && pos >= since {
			entries, joined, err = sub.inbox.take(ctx, entries)
		} else {
			entries, err = st.Feed(ctx, pos, sub.w.opts.FeedBatch)
			if err == nil && len(entries) == 0 {
				if !joined {
					since, joined = t.join(sub, pos), true
					continue
				}
				// The tailer has read entries this read does not see
				// yet: a backend whose reads may lag one another.
				err = st.WaitFeed(ctx, pos)
			}
		}
		if err != nil {
			sub.fail(ctx, err)
			return
		}
		for i := range entries {
			if entries[i].Pos <= pos {
				continue // read on its own before the join
			}
			f, err := sub.update(ctx, &entries[i])
			if err != nil {
				sub.fail(ctx, err)
				return
			}
			if f.b != nil && !sub.push(ctx, f) {
				if ctx.Err() == nil {
					// Everything before this entry is queued: the
					// subscriber resumes right here.
					sub.final = &protocol.WatchMessage{Type: protocol.WatchCatchUp, Cursor: sub.w.cursor(pos),
						Message: "subscriber fell behind; resume from this cursor"}
				}
				return
			}
			pos = entries[i].Pos
			// Published only once the entry's update is queued: a
			// heartbeat's cursor must not pass an update still to come.
			sub.scanned.Store(pos)
		}
	}
}

// update builds the update frame for a feed entry, or returns no frame
// when the entry does not match the subscription or was sent already. The
// update carries the parcel's current head and the events from the entry's
// first up to that head (at most MaxEventsPerResult, the newest), so that
// they always end at the head the subscriber verifies them against.
func (sub *subscription) update(ctx context.Context, e *store.FeedEntry) (frame, error) {
	if sub.numbers != nil {
		if _, ok := sub.numbers[e.Number]; !ok {
			return frame{}, nil
		}
	}
	from := e.FromSeq
	if seq, ok := sub.sent[e.ParcelID]; ok {
		if seq >= e.ToSeq {
			if seq == e.ToSeq { // the last entry that update covered
				delete(sub.sent, e.ParcelID)
			}
			return frame{}, nil
		}
		from = max(from, seq+1)
		delete(sub.sent, e.ParcelID)
	}
	st := sub.w.cfg.Store
	p, err := st.ParcelByID(ctx, e.ParcelID)
	if err != nil {
		return frame{}, err
	}
	inAudience := slices.Contains(p.Audience, sub.remote)
	if sub.peer != "" && !inAudience {
		return frame{}, nil
	}
	if len(p.SignedHead) == 0 || p.Seq < e.ToSeq {
		return frame{}, fmt.Errorf("%w: parcel %d at seq %d (signed head of %d bytes) behind its feed entry %d to seq %d",
			errBadEvents, p.ID, p.Seq, len(p.SignedHead), e.Pos, e.ToSeq)
	}
	// A longer run keeps its newest events; the subscriber fetches the
	// rest with track, as for any update that does not join its head.
	from = max(from, (p.Seq+1)-min(p.Seq+1, uint64(sub.w.opts.MaxEventsPerResult)))
	evs, err := readEvents(ctx, st, p.ID, from, p.Seq+1-from)
	if err != nil {
		return frame{}, err
	}
	blocks := make([][]byte, len(evs))
	for i := range evs {
		blocks[i] = evs[i].Bytes
	}
	details, detailsErr, err := sub.details(ctx, p, inAudience)
	if err != nil {
		return frame{}, err
	}
	b, err := sub.w.encode(&protocol.WatchMessage{
		Type: protocol.WatchUpdate, Cursor: sub.w.cursor(e.Pos), Number: p.Number, Head: p.SignedHead, Events: blocks, Details: details,
		DetailsError: detailsErr,
	})
	if err != nil {
		return frame{}, err
	}
	if p.Seq > e.ToSeq {
		if len(sub.sent) >= maxSentParcels {
			clear(sub.sent)
		}
		sub.sent[p.ID] = p.Seq
	}
	return frame{b: b}, nil
}

// details returns what the subscription's grant discloses of p (spec
// section 12.2): nothing without a grant or outside its scope, else the
// fields it names that the carrier has. A disclosure is audited durably
// before the update is queued; an audit that fails ends the stream.
// Each update of a covered parcel carries them, as each track result
// does, so that a subscriber that resumes from any cursor has them. Details
// erased under retention give the details error code instead, audited
// as a refusal.
func (sub *subscription) details(ctx context.Context, p *store.Parcel, inAudience bool) (protocol.Details, string, error) {
	g := sub.grant
	if g == nil || (g.Audience && !inAudience) || (!g.Audience && !slices.Contains(g.Numbers, p.Number)) {
		return nil, "", nil
	}
	d, err := store.DetailsFor(ctx, sub.w.cfg.Store, p)
	var entry store.AuditEntry
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, "", nil
	case errors.Is(err, store.ErrExpired):
		entry = policy.ExpiredEntry(sub.remote, "watch: ", g, p.Number)
	case err != nil:
		return nil, "", err
	default:
		d = d.Only(g.Fields)
		if len(d) == 0 {
			return nil, "", nil
		}
		entry = store.AuditEntry{Time: time.Now().UnixMilli(), Peer: sub.remote, GrantID: g.ID, Number: p.Number,
			Fields: policy.DetailFields(d), Allowed: true, Reason: "watch: " + policy.GrantScope(g)}
	}
	if err := policy.AppendAudit(ctx, sub.w.cfg.Store, sub.w.cfg.Metrics, []store.AuditEntry{entry}); err != nil {
		return nil, "", fmt.Errorf("audit: %w", err)
	}
	if !entry.Allowed {
		return nil, protocol.DetailsExpired, nil
	}
	return d, "", nil
}

// readEvents reads count events of a parcel from seq from and checks that
// the store returned exactly those seqs, each within MaxEventSize (which
// keeps every update within the frame cap).
func readEvents(ctx context.Context, st store.EventLog, parcelID, from, count uint64) ([]store.Event, error) {
	evs, err := st.Events(ctx, parcelID, from, int(count))
	if err != nil {
		return nil, err
	}
	if uint64(len(evs)) != count {
		return nil, fmt.Errorf("%w: %d events from seq %d of parcel %d, want %d", errBadEvents, len(evs), from, parcelID, count)
	}
	for i := range evs {
		if evs[i].Seq != from+uint64(i) || len(evs[i].Bytes) > protocol.MaxEventSize {
			return nil, fmt.Errorf("%w: seq %d (%d bytes) at position %d from seq %d of parcel %d",
				errBadEvents, evs[i].Seq, len(evs[i].Bytes), i, from, parcelID)
		}
	}
	return evs, nil
}

// fail ends the subscription because of a store error, unless the
// subscription is ending anyway.
func (sub *subscription) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	sub.final = &protocol.WatchMessage{Type: protocol.WatchError, Code: sub.w.errorCode(err)}
	if sub.final.Code == protocol.CodeUnavailable {
		sub.final.Message = "node is shutting down"
	}
}
