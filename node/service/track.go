package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

const (
	// trackResponseAllowance is the response size covered by a stream's
	// standing memory reservation; a larger response reserves the rest
	// while it is written.
	trackResponseAllowance = 64 << 10
	// trackStreamMemory is reserved for as long as a track stream is open:
	// the request frame buffer and a typical response.
	trackStreamMemory = protocol.MaxTrackRequest + trackResponseAllowance
	// unavailableRetry is the retry_after sent when the node has no memory
	// left for a large response.
	unavailableRetry = time.Second
)

// Upper bounds of parts of an encoded TrackResponse, used to keep a
// response under protocol.MaxTrackResponse without encoding it twice.
const (
	// responseOverhead covers the response map, its keys and the results
	// array header.
	responseOverhead = 16
	// resultOverhead covers one result's map and keys, its number (up to
	// 2*MaxNumberLen for an unnormalized one), code, more, retry_after, a
	// full message, and the headers of head and of the events array.
	resultOverhead = 512
	// maxSignedHead is the largest head a client accepts (protocol.ParseSigned
	// caps a head at 1 KiB).
	maxSignedHead = 1024
	// eventOverhead is the byte-string header of one event block.
	eventOverhead = 5
	// maxDetailsSize bounds the encoded details of one result: every field
	// at its longest, with its key and headers.
	maxDetailsSize = 16 + 8*(protocol.MaxDetailLen+32)
	// resultReserve is held back for every result not built yet: its
	// overhead, a head and one event. Early results with long histories
	// cannot crowd out later ones, and every page holds at least one
	// event, as the spec requires.
	resultReserve = resultOverhead + maxSignedHead + protocol.MaxEventSize + eventOverhead
)

// errBadEvents means the store returned events the service cannot serve:
// not the consecutive seqs asked for, or one above protocol.MaxEventSize.
// Either is a backend bug.
var errBadEvents = errors.New("service: store returned bad events")

// Policy admits track requests. It is the hook for the access policy of
// DESIGN section 5 (per-peer token buckets, allow and deny lists).
type Policy interface {
	// AdmitTrack is asked once per valid request with how many numbers it
	// carries and the remote address of the stream's connection, as peer
	// IDs cost nothing to make. When it refuses, every number that
	// normalizes is answered rate_limited with retryAfter (others
	// invalid_number, as the spec orders the checks).
	AdmitTrack(p peer.ID, addr ma.Multiaddr, numbers int) (ok bool, retryAfter time.Duration)
	// ObserveNotFound reports how many numbers of an admitted request were
	// answered not_found, so that enumeration spends a stricter budget
	// than tracking real parcels.
	ObserveNotFound(p peer.ID, addr ma.Multiaddr, n int)
	// AdmitNotFound is asked before a watch subscription's statuses tell
	// which numbers exist: when it refuses, every number is answered
	// rate_limited with retryAfter, as AdmitTrack's refusal answers a
	// request. It spends nothing; ObserveNotFound charges the answers.
	AdmitNotFound(p peer.ID, addr ma.Multiaddr) (ok bool, retryAfter time.Duration)
	// AdmitWatch is asked once per subscription.
	AdmitWatch(p peer.ID) (ok bool, retryAfter time.Duration)
	// AllowPublic reports whether p may see public events at all: carrier
	// policy can turn public lookups off or keep them to registry members.
	// Grant holders and a parcel's audience are judged separately.
	AllowPublic(p peer.ID) bool
}

// TrackStore is what a Track needs of a store: the parcels, and the
// grants and audit log behind their details.
type TrackStore interface {
	store.EventLog
	store.Access
}

// TrackConfig is what a Track serves.
type TrackConfig struct {
	// Carrier is the code of the carrier whose parcels the store holds.
	Carrier string
	// Schemes are the carrier's tracking-number schemes. A number that
	// matches none is answered wrong_carrier, and one that fails only a
	// check digit invalid_number, without a store lookup.
	// Default: protocol.DefaultScheme(Carrier), as for a carrier that
	// registers none.
	Schemes []protocol.Scheme
	// Store holds the parcels, and the grants and audit log behind their
	// details. Required.
	Store TrackStore
	// Metrics receives request, result and reset counts; nil for none.
	Metrics *metrics.Metrics
	// Logger receives internal errors and, at debug level, bad peer input;
	// nil discards.
	Logger *slog.Logger
	// Policy admits requests; nil admits all.
	Policy Policy
	// Keys resolves the carrier's public keys, to verify the grants that
	// requests present (spec section 5.10). Nil refuses every grant with
	// forbidden.
	Keys protocol.KeyResolver
}

// Track serves /opentrack/track/1.0.0: a stream carries requests one after
// another, each answered by one response frame, until the client closes
// it or it sits idle past Options.IdleTimeout.
type Track struct {
	cfg     TrackConfig
	opts    Options
	schemes schemeSet
	codes   map[string]prometheus.Counter // result counters by code, nil without metrics
	srv     server
}

// NewTrack checks cfg and opts (nil for defaults) and builds the service.
func NewTrack(cfg TrackConfig, opts *Options) (*Track, error) {
	o, err := resolve(opts)
	var p []string
	if err != nil {
		p = append(p, err.Error())
	}
	if err := protocol.ValidCarrierCode(cfg.Carrier); err != nil {
		p = append(p, "carrier: "+err.Error())
	}
	if cfg.Store == nil {
		p = append(p, "no store")
	}
	t := &Track{cfg: cfg, opts: o, srv: newServer(protocol.TrackID, "track", cfg.Metrics, cfg.Logger)}
	t.schemes, p = compileSchemes(cfg.Carrier, cfg.Schemes, p)
	if err := problems(p); err != nil {
		return nil, err
	}
	if cfg.Metrics != nil {
		t.codes = counters(cfg.Metrics.TrackRequests, protocol.CodeOK, protocol.CodeNotFound, protocol.CodeInvalidNumber, protocol.CodeWrongCarrier,
			protocol.CodeRateLimited, protocol.CodeForbidden, protocol.CodeInternal, protocol.CodeTooMany, protocol.CodeBadRequest, protocol.CodeUnavailable)
	}
	return t, nil
}

// Register starts serving track streams on h. Register once.
func (t *Track) Register(h host.Host) { t.srv.register(h, t.handle) }

// Unregister stops serving, resets open streams and waits for their
// handlers to return.
func (t *Track) Unregister() { t.srv.unregister() }

func (t *Track) handle(s network.Stream) {
	ctx, done, ok := t.srv.open(s, protocol.TrackServiceName, trackStreamMemory)
	if !ok {
		return
	}
	defer done()

	ts := &trackStream{t: t, s: s, base: ctx}
	defer ts.close()
	ts.frames = protocol.NewFrameReader(ts, protocol.MaxTrackRequest)
	remote, addr := s.Conn().RemotePeer(), s.Conn().RemoteMultiaddr()
	for {
		ts.awaitRequest(time.Now())
		body, err := ts.frames.Next()
		if err != nil {
			t.srv.readFailed(s, err)
			return
		}
		start := time.Now()
		var req protocol.TrackRequest
		if err := protocol.Unmarshal(body, &req); err != nil {
			t.srv.reset(s, reasonDecode, err)
			return
		}
		resp := t.serve(ts.requestContext(start), remote, addr, &req)
		if err := ts.write(resp); err != nil {
			s.Reset()
			t.srv.log.Debug("write failed", "peer", remote, "err", err)
			return
		}
		t.observe(resp, start)
	}
}

// serve answers one decoded request. Audit entries for what it discloses
// or refuses are stored before it returns, so before the response is
// written.
func (t *Track) serve(ctx context.Context, remote peer.ID, addr ma.Multiaddr, req *protocol.TrackRequest) *protocol.TrackResponse {
	if n := len(req.Queries); n > protocol.MaxNumbersPerRequest {
		return requestError(protocol.CodeTooMany, fmt.Sprintf("%d numbers, limit %d", n, protocol.MaxNumbersPerRequest), 0)
	}
	if err := req.Validate(); err != nil {
		return requestError(protocol.CodeBadRequest, protocol.Detail(err), 0)
	}
	if t.cfg.Policy != nil {
		if ok, retry := t.cfg.Policy.AdmitTrack(remote, addr, len(req.Queries)); !ok {
			return t.refuseAll(req, &protocol.TrackResult{Code: protocol.CodeRateLimited, RetryAfter: millis(retry)})
		}
	}
	acc := &access{remote: remote.String(), public: t.cfg.Policy == nil || t.cfg.Policy.AllowPublic(remote)}
	if len(req.Grant) > 0 {
		g, err := policy.VerifyGrant(ctx, t.cfg.Store, t.cfg.Keys, t.cfg.Carrier, req.Grant, remote, time.Now())
		if err != nil {
			return t.refuseGrant(ctx, remote, req, err)
		}
		acc.grant = g
	}
	reserve := resultReserve
	if acc.grant != nil {
		reserve += maxDetailsSize
	}
	results := make([]protocol.TrackResult, len(req.Queries))
	left := protocol.MaxTrackResponse - responseOverhead - len(results)*reserve
	notFound := 0
	for i := range req.Queries {
		left += reserve
		results[i] = t.lookup(ctx, &req.Queries[i], acc, left-resultOverhead)
		left -= resultSize(&results[i])
		if results[i].Code == protocol.CodeNotFound {
			notFound++
		}
	}
	if err := t.audit(ctx, acc.audit); err != nil {
		// Nothing may be disclosed that the log does not hold.
		t.srv.log.Warn("audit append failed", "peer", remote, "err", err)
		return requestError(protocol.CodeInternal, "audit log unavailable", 0)
	}
	if t.cfg.Policy != nil {
		t.cfg.Policy.ObserveNotFound(remote, addr, notFound)
	}
	return &protocol.TrackResponse{Results: results}
}

// refuseAll answers every number that normalizes with r, and the others
// invalid_number, as spec section 8.4 orders the checks.
func (t *Track) refuseAll(req *protocol.TrackRequest, r *protocol.TrackResult) *protocol.TrackResponse {
	results := make([]protocol.TrackResult, len(req.Queries))
	for i, q := range req.Queries {
		n, err := protocol.NormalizeNumber(q.Number)
		if err != nil {
			results[i] = protocol.TrackResult{Number: q.Number, Code: protocol.CodeInvalidNumber, Message: truncate(protocol.Detail(err))}
			continue
		}
		results[i] = *r
		results[i].Number = n
	}
	return &protocol.TrackResponse{Results: results}
}

// refuseGrant audits a grant that failed verification, once per number
// asked, and answers the request forbidden as spec section 12.2 requires.
func (t *Track) refuseGrant(ctx context.Context, remote peer.ID, req *protocol.TrackRequest, cause error) *protocol.TrackResponse {
	now, id := time.Now().UnixMilli(), policy.GrantID(req.Grant)
	entries := make([]store.AuditEntry, len(req.Queries))
	for i, q := range req.Queries {
		n, err := protocol.NormalizeNumber(q.Number)
		if err != nil {
			n = q.Number
		}
		entries[i] = store.AuditEntry{Time: now, Peer: remote.String(), GrantID: id, Number: n, Reason: protocol.Detail(cause)}
	}
	if err := t.audit(ctx, entries); err != nil {
		t.srv.log.Warn("audit append failed", "peer", remote, "err", err)
		return requestError(protocol.CodeInternal, "audit log unavailable", 0)
	}
	t.srv.log.Debug("grant refused", "peer", remote, "grant", id, "err", cause)
	return requestError(protocol.CodeForbidden, protocol.Detail(cause), 0)
}

// audit appends entries durably and counts them.
func (t *Track) audit(ctx context.Context, entries []store.AuditEntry) error {
	return policy.AppendAudit(ctx, t.cfg.Store, t.cfg.Metrics, entries)
}

// access is what one request may see beyond the public view, and the
// audit entries that its answer produces.
type access struct {
	remote string
	public bool            // the policy lets remote see public events
	grant  *protocol.Grant // verified; nil without one
	audit  []store.AuditEntry
}

// covers reports whether the grant reaches parcel p (spec section 12.2).
func (a *access) covers(p *store.Parcel, inAudience bool) bool {
	if a.grant == nil {
		return false
	}
	if a.grant.Audience {
		return inAudience
	}
	return slices.Contains(a.grant.Numbers, p.Number)
}

// lookup answers one number in the order of spec section 8.4:
// normalization, schemes, store, access. room is how many bytes the head,
// events and details may take.
func (t *Track) lookup(ctx context.Context, q *protocol.TrackQuery, acc *access, room int) protocol.TrackResult {
	n, err := protocol.NormalizeNumber(q.Number)
	if err != nil {
		return protocol.TrackResult{Number: q.Number, Code: protocol.CodeInvalidNumber, Message: truncate(protocol.Detail(err))}
	}
	if code, msg := t.schemes.match(n); code != "" {
		return protocol.TrackResult{Number: n, Code: code, Message: msg}
	}
	p, err := t.cfg.Store.Parcel(ctx, n)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return protocol.TrackResult{Number: n, Code: protocol.CodeNotFound}
	case err != nil:
		return t.internal(n, err)
	case len(p.SignedHead) == 0:
		return t.internal(n, fmt.Errorf("parcel %d has no signed head", p.ID))
	}
	inAudience := slices.Contains(p.Audience, acc.remote)
	covered := acc.covers(p, inAudience)
	if !acc.public && !inAudience && !covered {
		return protocol.TrackResult{Number: n, Code: protocol.CodeForbidden, Message: "public lookups are closed"}
	}
	var details protocol.Details
	var detailsErr string
	if covered {
		d, err := store.DetailsFor(ctx, t.cfg.Store, p)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case errors.Is(err, store.ErrExpired):
			detailsErr = protocol.DetailsExpired
			acc.audit = append(acc.audit, policy.ExpiredEntry(acc.remote, "", acc.grant, n))
		case err != nil:
			return t.internal(n, err)
		default:
			details = d.Only(acc.grant.Fields)
		}
		room -= detailsSize(details)
	}
	events, more, err := t.eventsAfter(ctx, p, q.Known, room-len(p.SignedHead))
	if err != nil {
		return t.internal(n, err)
	}
	res := protocol.TrackResult{Number: n, Code: protocol.CodeOK, Head: p.SignedHead, Events: events, More: more, DetailsError: detailsErr}
	if len(details) > 0 {
		res.Details = details
		acc.audit = append(acc.audit, store.AuditEntry{
			Time: time.Now().UnixMilli(), Peer: acc.remote, GrantID: acc.grant.ID, Number: n,
			Fields: policy.DetailFields(details), Allowed: true, Reason: policy.GrantScope(acc.grant),
		})
	}
	return res
}

func (t *Track) internal(number string, err error) protocol.TrackResult {
	t.srv.log.Warn("track lookup failed", "number", number, "err", err)
	return protocol.TrackResult{Number: number, Code: protocol.CodeInternal}
}

// eventsAfter returns the stored event blocks after known, oldest first,
// as stored: they are canonical already and go out without re-encoding.
// Without known, or when known is not in this parcel, it starts at seq 0.
// It stops at MaxEventsPerResult events or room bytes and then reports
// more.
func (t *Track) eventsAfter(ctx context.Context, p *store.Parcel, known protocol.Link, room int) ([][]byte, bool, error) {
	if known.Defined() && known.Equals(p.Head) {
		return nil, false, nil
	}
	var (
		from uint64
		evs  []store.Event
		err  error
	)
	if known.Defined() {
		if from, evs, err = t.findKnown(ctx, p, known); err != nil {
			return nil, false, err
		}
	}
	if evs == nil {
		if evs, err = readEvents(ctx, t.cfg.Store, p.ID, from, min(p.Seq+1-from, uint64(t.opts.MaxEventsPerResult))); err != nil {
			return nil, false, err
		}
	}
	evs = evs[:min(len(evs), t.opts.MaxEventsPerResult)]
	out := make([][]byte, 0, len(evs))
	for _, e := range evs {
		if room -= len(e.Bytes) + eventOverhead; room < 0 {
			break
		}
		out = append(out, e.Bytes)
	}
	if len(out) == 0 && len(evs) > 0 {
		// resultReserve leaves room for one event of MaxEventSize, so only
		// a stored event above that size gets here.
		return nil, false, fmt.Errorf("%w: event %d of parcel %d does not fit a page", errBadEvents, evs[0].Seq, p.ID)
	}
	more := from+uint64(len(out)) <= p.Seq // the last event sent is below the head
	return out, more, nil
}

// findKnown looks for the event whose CID is known, reading the chain
// backwards a window at a time, since a client usually holds a recent
// head. It returns the seq after that event, or 0 when known is not in
// this parcel (the number was recycled) so the whole history goes back.
// When the window it read already holds the events to return, it returns
// them too.
func (t *Track) findKnown(ctx context.Context, p *store.Parcel, known protocol.Link) (uint64, []store.Event, error) {
	window := uint64(t.opts.MaxEventsPerResult)
	var tail []store.Event
	for hi := p.Seq + 1; hi > 0; { // hi is one past the window's last seq
		lo := hi - min(hi, window)
		evs, err := readEvents(ctx, t.cfg.Store, p.ID, lo, hi-lo)
		if err != nil {
			return 0, nil, err
		}
		last := len(evs) - 1
		if tail == nil {
			tail = evs
			last-- // the head; the caller compared it already
		}
		for j := last; j >= 0; j-- {
			if known.Equals(protocol.CIDOf(evs[j].Bytes)) {
				if hi == p.Seq+1 {
					return evs[j].Seq + 1, evs[j+1:], nil
				}
				return evs[j].Seq + 1, nil, nil
			}
		}
		hi = lo
	}
	if tail[0].Seq == 0 {
		return 0, tail, nil
	}
	return 0, nil, nil
}

func (t *Track) observe(resp *protocol.TrackResponse, start time.Time) {
	if t.codes == nil {
		return
	}
	t.cfg.Metrics.TrackLatency.Observe(time.Since(start).Seconds())
	if resp.Error != nil {
		t.count(resp.Error.Code)
		return
	}
	for i := range resp.Results {
		t.count(resp.Results[i].Code)
	}
}

func (t *Track) count(code string) {
	if c, ok := t.codes[code]; ok {
		c.Inc()
		return
	}
	t.cfg.Metrics.TrackRequests.WithLabelValues(code).Inc()
}

// resultSize bounds the encoded size of r.
func resultSize(r *protocol.TrackResult) int {
	n := resultOverhead + len(r.Head) + detailsSize(r.Details)
	for _, e := range r.Events {
		n += len(e) + eventOverhead
	}
	return n
}

// detailsSize bounds the encoded size of d.
func detailsSize(d protocol.Details) int {
	if len(d) == 0 {
		return 0
	}
	n := 16
	for k, v := range d {
		n += len(k) + len(v) + 10
	}
	return n
}

func requestError(code, msg string, retry time.Duration) *protocol.TrackResponse {
	return &protocol.TrackResponse{Error: &protocol.ErrorInfo{Code: code, Message: truncate(msg), RetryAfter: millis(retry)}}
}

// millis converts a retry delay to the wire's milliseconds, rounding up so
// that a client never comes back early.
func millis(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Millisecond - 1) / time.Millisecond)
}

// truncate cuts a message to protocol.MaxMessageLen bytes on a rune
// boundary, since the peer rejects longer messages and invalid UTF-8.
func truncate(s string) string {
	if len(s) <= protocol.MaxMessageLen {
		return s
	}
	n := protocol.MaxMessageLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
