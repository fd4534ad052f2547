package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/protocol"
)

// maxLastEventID bounds a stream's resume id: a cursor per carrier.
const maxLastEventID = 16 << 10

// watchQuery is a parsed GET /v1/watch.
type watchQuery struct {
	numbers  []string // normalized, without duplicates; nil with audience
	invalid  []string // numbers as given that do not normalize: each gets its status
	audience bool
	carrier  string            // only this carrier's, when set
	cursors  map[string]string // carrier code -> cursor to resume from
}

// parseWatch reads the query of GET /v1/watch and the resume id: the
// Last-Event-ID header, or for clients that cannot set it the lastEventId
// or cursor parameter. Errors carry the protocol code they are answered
// with.
func parseWatch(q url.Values, lastEventID string, maxNumbers int) (*watchQuery, error) {
	bad := func(format string, args ...any) error {
		return &protocol.Error{Code: protocol.CodeBadRequest, Msg: fmt.Sprintf("gateway: "+format, args...)}
	}
	if err := checkQuery(q, "number", "audience", "carrier", "cursor", "lastEventId"); err != nil {
		return nil, bad("%v", err)
	}
	for _, k := range []string{"audience", "carrier", "cursor", "lastEventId"} {
		if len(q[k]) > 1 {
			return nil, bad("%s given %d times", k, len(q[k]))
		}
	}
	w := &watchQuery{carrier: q.Get("carrier")}
	if q.Has("audience") {
		switch q.Get("audience") {
		case "", "1", "true":
			w.audience = true
		case "0", "false":
		default:
			return nil, bad("audience=%q: want true or false", q.Get("audience"))
		}
	}
	raw := q["number"]
	if len(raw) > maxNumbers {
		return nil, &protocol.Error{Code: protocol.CodeTooMany, Msg: fmt.Sprintf("gateway: %d numbers, limit %d", len(raw), maxNumbers)}
	}
	for _, r := range raw {
		n, err := protocol.NormalizeNumber(r)
		switch {
		case err != nil:
			if !slices.Contains(w.invalid, r) {
				w.invalid = append(w.invalid, r)
			}
		case !slices.Contains(w.numbers, n):
			w.numbers = append(w.numbers, n)
		}
	}
	if w.audience == (len(raw) > 0) {
		return nil, bad("give number=N (repeatable) or audience, not both or neither")
	}
	if w.carrier != "" {
		if err := protocol.ValidCarrierCode(w.carrier); err != nil {
			return nil, bad("carrier %q: %v", w.carrier, err)
		}
	}
	id := lastEventID
	for _, k := range []string{"lastEventId", "cursor"} {
		if id == "" {
			id = q.Get(k)
		}
	}
	cursors, err := decodeCursors(id)
	if err != nil {
		return nil, bad("resume id %q: %v", truncate(id, 64), err)
	}
	w.cursors = cursors
	return w, nil
}

// decodeCursors parses a stream's event id: each carrier's watch cursor,
// as a query string (SF=c1&GBPOST=c2), since one stream may watch
// several carriers. "" is no cursor: start from now.
func decodeCursors(id string) (map[string]string, error) {
	out := map[string]string{}
	if id == "" {
		return out, nil
	}
	if len(id) > maxLastEventID {
		return nil, fmt.Errorf("%d bytes, limit %d", len(id), maxLastEventID)
	}
	v, err := url.ParseQuery(id)
	if err != nil {
		return nil, err
	}
	for code, cs := range v {
		if err := protocol.ValidCarrierCode(code); err != nil {
			return nil, fmt.Errorf("carrier %q: %v", truncate(code, 32), err)
		}
		if len(cs) != 1 || cs[0] == "" || len(cs[0]) > protocol.MaxCursorLen {
			return nil, fmt.Errorf("carrier %s: want one cursor of 1 to %d bytes", code, protocol.MaxCursorLen)
		}
		out[code] = cs[0]
	}
	return out, nil
}

// encodeCursors is the event id for cursors; url.Values sorts the
// carriers, so the same positions give the same id.
func encodeCursors(cursors map[string]string) string {
	v := url.Values{}
	for code, c := range cursors {
		v.Set(code, c)
	}
	return v.Encode()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// watchPlan is one subscription per carrier the stream covers, and the
// status of each number none can cover: one that does not normalize or
// that no carrier in the registry claims (client.Watchable). Only when
// nothing is left to watch is the stream refused, with the first such
// number's problem.
func (g *Gateway) watchPlan(q *watchQuery) ([]client.WatchOptions, []client.WatchUpdate, *problem) {
	base := func(e *protocol.CarrierEntry) client.WatchOptions {
		cursor := q.cursors[e.Code]
		return client.WatchOptions{
			Carrier: e.Code, Peers: client.CarrierPeers(e), Connector: g.conn, Keys: g.trust,
			Audience: q.audience, Cursor: cursor,
			// A fresh stream starts with each parcel's history, so that a
			// page that looked a parcel up misses nothing scanned between
			// its lookup and the subscription; a resumed one needs none.
			Sync: cursor == "" && !q.audience,
		}
	}
	var plan []client.WatchOptions
	at := map[string]int{}
	if q.audience {
		reg := g.trust.Registry()
		if reg == nil {
			return nil, nil, newProblem(protocol.CodeInternal, "the platform holds no registry")
		}
		for i := range reg.Carriers {
			if e := &reg.Carriers[i]; q.carrier == "" || e.Code == q.carrier {
				plan = append(plan, base(e))
			}
		}
	}
	var numbers []string
	var rejected []client.WatchUpdate
	if !q.audience {
		numbers, rejected = client.Watchable(g.trust, append(slices.Clone(q.numbers), q.invalid...))
	}
	for _, n := range numbers {
		entries, err := g.trust.Resolve(n)
		if err != nil {
			return nil, nil, newProblem(protocol.CodeInternal, "resolving numbers failed")
		}
		for _, e := range entries {
			if q.carrier != "" && e.Code != q.carrier {
				continue
			}
			i, ok := at[e.Code]
			if !ok {
				i, at[e.Code] = len(plan), len(plan)
				plan = append(plan, base(e))
			}
			plan[i].Numbers = append(plan[i].Numbers, n)
		}
	}
	plan = slices.DeleteFunc(plan, func(o client.WatchOptions) bool { return len(o.Peers) == 0 })
	switch {
	case len(plan) == 0 && len(rejected) > 0:
		p := newProblem(rejected[0].Code, fmt.Sprintf("gateway: number %q: %s", rejected[0].Number, rejected[0].Message))
		p.Number = rejected[0].Number
		return nil, nil, p
	case len(plan) == 0:
		p := newProblem(protocol.CodeNotFound, "no carrier in the registry serves what was asked")
		p.Carrier = q.carrier
		return nil, nil, p
	}
	return plan, rejected, nil
}

// tagged is an update from one carrier's watcher; done marks the end of
// that watcher, with why it stopped.
type tagged struct {
	carrier string
	u       client.WatchUpdate
	done    bool
	err     error
}

// watch streams verified updates as Server-Sent Events: "event: update",
// "data:" the update as `opentrack watch --json` prints it, and "id:"
// every carrier's cursor, from which Last-Event-ID resumes. A number with
// nothing to show gets "event: status" instead, its code in the data:
// first those no carrier covers, then those a carrier's node lacks (spec
// 8.5), and the stream goes on for the others.
func (g *Gateway) watch(w http.ResponseWriter, r *http.Request) {
	var q *watchQuery
	values, err := query(r)
	if err == nil {
		q, err = parseWatch(values, r.Header.Get("Last-Event-ID"), g.opts.MaxWatchNumbers)
	}
	if err != nil {
		newProblem(protocol.CodeOf(err), err.Error()).write(w)
		return
	}
	if !g.admit(w, r, 1) {
		return
	}
	plan, rejected, p := g.watchPlan(q)
	if p != nil {
		p.write(w)
		return
	}
	key := clientKey(r)
	if !g.streams.open(key) {
		newProblem(protocol.CodeRateLimited, "too many open streams").retryAfter(5 * time.Second).write(w)
		return
	}
	defer g.streams.close(key)
	g.m.SSEStreams.Inc()
	defer g.m.SSEStreams.Dec()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(g.closing, cancel)
	defer stop()

	events := make(chan tagged)
	var wg sync.WaitGroup
	watchers, err := g.startWatchers(ctx, plan)
	// Ending ctx ends the forwarders and the watchers; Close waits for
	// each watcher's goroutines, wg for the forwarders.
	defer func() {
		cancel()
		for _, wt := range watchers {
			_ = wt.Close()
		}
		wg.Wait()
	}()
	if err != nil {
		g.log.Warn("gateway: watch", "err", err)
		newProblem(protocol.CodeInternal, "starting the watch failed").write(w)
		return
	}
	// Answer once every subscription is live, so that a client that sees
	// the stream open misses nothing from then on. Until the forwarders
	// start, no watcher can hand an update over (a status it opened with
	// waits in the watcher and carries no cursor), so no cursor read here
	// is ahead of an update not yet written: each can go in the first id.
	g.awaitLive(ctx, watchers)
	for i, wt := range watchers {
		if c := wt.Cursor(); c != "" && !plan[i].Sync {
			q.cursors[plan[i].Carrier] = c
		}
	}
	first := make([]tagged, len(rejected))
	for i, u := range rejected {
		first[i] = tagged{u: u}
	}
	for i, wt := range watchers {
		wg.Go(func() { forward(ctx, plan[i].Carrier, wt, events) })
	}
	g.stream(ctx, w, q.cursors, first, events, len(watchers))
}

// startWatchers starts one watcher per carrier of plan. On error it
// returns the watchers started so far, for the caller to close.
func (g *Gateway) startWatchers(ctx context.Context, plan []client.WatchOptions) ([]*client.Watcher, error) {
	watchers := make([]*client.Watcher, 0, len(plan))
	for _, o := range plan {
		wt, err := g.client.Watch(ctx, o)
		if err != nil {
			return watchers, fmt.Errorf("carrier %s: %w", o.Carrier, err)
		}
		watchers = append(watchers, wt)
	}
	return watchers, nil
}

// forward hands wt's updates to events, tagged with carrier, and then
// that it ended, until ctx ends.
func forward(ctx context.Context, carrier string, wt *client.Watcher, events chan<- tagged) {
	for u := range wt.Updates() {
		select {
		case events <- tagged{carrier: carrier, u: u}:
		case <-ctx.Done():
			return
		}
	}
	select {
	case events <- tagged{carrier: carrier, done: true, err: wt.Err()}:
	case <-ctx.Done():
	}
}

// liveWait bounds how long a new stream waits for its subscriptions to
// go live before it answers anyway; a carrier that cannot be reached is
// retried by its watcher in the background.
const liveWait = 5 * time.Second

// awaitLive waits until every watcher has received a first message from
// its node (its cursor is set), liveWait passes, or ctx ends.
func (g *Gateway) awaitLive(ctx context.Context, watchers []*client.Watcher) {
	deadline := time.Now().Add(liveWait)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if !slices.ContainsFunc(watchers, func(wt *client.Watcher) bool { return wt.Cursor() == "" }) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// stream writes events until the client goes away, the gateway shuts
// down, or every watcher has stopped.
func (g *Gateway) stream(ctx context.Context, w http.ResponseWriter, cursors map[string]string, first []tagged, events <-chan tagged, live int) {
	rc := http.NewResponseController(w)
	// A stream lives long: lift the server's read deadline, which would
	// otherwise end the request, and bound each write instead.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(s string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(g.opts.WriteTimeout))
		if _, err := w.Write([]byte(s)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	open := "retry: 2000\n: verified updates follow\n"
	if id := encodeCursors(cursors); id != "" {
		// An id alone sets the client's Last-Event-ID without an event.
		open += "id: " + id + "\n"
	}
	if !send(open + "\n") {
		return
	}
	for _, t := range first {
		if !sendUpdate(send, cursors, t) {
			return
		}
	}
	beat := time.NewTicker(g.opts.Heartbeat)
	defer beat.Stop()
	for live > 0 {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if !send(": heartbeat\n\n") {
				return
			}
		case t := <-events:
			if t.done {
				live--
				if t.err != nil {
					p := newProblem(codeFor(t.err), fmt.Sprintf("the watch of %s stopped: %v", t.carrier, t.err))
					p.Carrier = t.carrier
					b, _ := json.Marshal(p)
					if !send("event: problem\ndata: " + string(b) + "\n\n") {
						return
					}
				}
				continue
			}
			if !sendUpdate(send, cursors, t) {
				return
			}
		}
	}
}

// sendUpdate sends one watcher's update: "event: update", or "event:
// status" for a number with nothing to show, with every carrier's cursor
// as its id once the update's own is in.
func sendUpdate(send func(string) bool, cursors map[string]string, t tagged) bool {
	if t.u.Cursor != "" {
		cursors[t.carrier] = t.u.Cursor
	}
	b, err := json.Marshal(t.u)
	if err != nil {
		return false
	}
	event := "update"
	if t.u.Code != "" {
		event = "status"
	}
	msg := "event: " + event + "\ndata: " + string(b) + "\n\n"
	if id := encodeCursors(cursors); id != "" {
		msg = "id: " + id + "\n" + msg
	}
	return send(msg)
}

// codeFor is err's protocol code, internal when it has none.
func codeFor(err error) string {
	if c := protocol.CodeOf(err); c != "" {
		return c
	}
	return protocol.CodeInternal
}
