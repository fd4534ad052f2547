package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// Result statuses.
const (
	StatusAccepted  = "accepted"
	StatusDuplicate = "duplicate"
	StatusRejected  = "rejected"
)

// Result is the outcome of one input event, in input order.
type Result struct {
	// ID is the carrier's event id as posted.
	ID string `json:"id"`
	// Number is the normalized tracking number, or the input as posted
	// when it could not be normalized.
	Number string `json:"number"`
	// CID is the stored event's CID: the new one when accepted, the
	// original one when a duplicate, empty when rejected.
	CID string `json:"cid,omitempty"`
	// Seq is the stored event's position in its parcel's chain.
	Seq uint64 `json:"seq"`
	// Status is StatusAccepted, StatusDuplicate or StatusRejected.
	Status string `json:"status"`
	// Error is the rejection reason.
	Error string `json:"error,omitempty"`
}

// Ingester validates, chains, signs and commits carrier events. It is
// safe for concurrent use.
type Ingester struct {
	carrier    string
	schemes    []*protocol.CompiledScheme
	schemeList string // for rejections: the schemes a number must match
	signer     *protocol.Signer
	st         Store
	space      *store.Space // nil: no free-space check
	m          *metrics.Metrics
	log        *slog.Logger
	now        func() time.Time
	opts       Options

	// mu guards the commit queue. At most one committer goroutine (run)
	// drains it, merging requests queued while the previous group
	// committed into one store batch, so that concurrent small posters
	// share an fsync and a signature per parcel.
	mu         sync.Mutex
	queue      []*request
	committing bool
}

// New checks cfg and opts and returns an Ingester. A nil opts means all
// defaults.
func New(cfg Config, opts *Options) (*Ingester, error) {
	o := opts.EnsureDefaults()
	optErr := o.Validate()
	var p []string
	if err := protocol.ValidCarrierCode(cfg.Carrier); err != nil {
		p = append(p, trimProto(err))
	}
	if cfg.Signer == nil {
		p = append(p, "no signer")
	}
	if cfg.Store == nil {
		p = append(p, "no store")
	}
	schemes := cfg.Schemes
	if len(schemes) == 0 && cfg.Carrier != "" {
		schemes = []protocol.Scheme{protocol.DefaultScheme(cfg.Carrier)}
	}
	g := &Ingester{
		carrier: cfg.Carrier, signer: cfg.Signer, st: cfg.Store, space: cfg.Space, m: cfg.Metrics,
		log: cfg.Logger, now: cfg.Now, opts: *o,
	}
	names := make([]string, 0, len(schemes))
	for _, s := range schemes {
		c, err := protocol.CompileScheme(s)
		if err != nil {
			p = append(p, fmt.Sprintf("scheme %s: %s", s, trimProto(err)))
			continue
		}
		g.schemes = append(g.schemes, c)
		names = append(names, s.String())
	}
	switch {
	case len(p) > 0 && optErr != nil:
		return nil, fmt.Errorf("%w: %s; %w", ErrInvalidConfig, strings.Join(p, "; "), optErr)
	case len(p) > 0:
		return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(p, "; "))
	case optErr != nil:
		return nil, optErr
	}
	g.schemeList = strings.Join(names, ", ")
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	return g, nil
}

// Ingest validates every event on its own, commits the accepted ones
// durably and returns one Result per event in input order; an event
// DecodeBatch could not decode is rejected with the decoding error. It
// returns an error, and no results, when the batch is too large, the disk
// is full (Writable) or the commit fails; then nothing of the batch was
// acknowledged and posting it again is safe.
func (g *Ingester) Ingest(ctx context.Context, events []InputEvent) ([]Result, error) {
	if len(events) > g.opts.MaxBatchEvents {
		return nil, fmt.Errorf("%w: %d events, limit %d", ErrTooManyEvents, len(events), g.opts.MaxBatchEvents)
	}
	if err := g.Writable(); err != nil {
		return nil, err
	}
	start := g.now()
	results := make([]Result, len(events))
	items := make([]*item, 0, len(events))
	for i := range events {
		if it := g.check(&events[i], &results[i], start); it != nil {
			items = append(items, it)
		}
	}
	if err := g.commit(ctx, items); err != nil {
		return nil, err
	}
	g.count(results, start)
	return results, nil
}

// item is an event that passed validation, waiting to be committed.
type item struct {
	ev       *protocol.Event
	id       string
	audience []string
	details  protocol.Details
	res      *Result // written by the committer before the request is done
}

// check validates in, filling res with the rejection when it fails. It
// returns the item to commit, or nil.
func (g *Ingester) check(in *InputEvent, res *Result, now time.Time) *item {
	res.ID, res.Number = in.ID, in.Number
	if in.invalid != nil {
		res.Status, res.Error = StatusRejected, in.invalid.Error()
		return nil
	}
	ev, err := g.prepare(in, now)
	if err != nil {
		res.Status, res.Error = StatusRejected, err.Error()
		return nil
	}
	res.Number = ev.Number
	return &item{ev: ev, id: in.ID, audience: in.Audience, details: in.Details, res: res}
}

// count records the outcome of one request in the metrics.
func (g *Ingester) count(results []Result, start time.Time) {
	if g.m == nil {
		return
	}
	a, d, r := Tally(results)
	g.m.IngestEvents.WithLabelValues(StatusAccepted).Add(float64(a))
	g.m.IngestEvents.WithLabelValues(StatusDuplicate).Add(float64(d))
	g.m.IngestEvents.WithLabelValues(StatusRejected).Add(float64(r))
	g.m.IngestLatency.Observe(g.now().Sub(start).Seconds())
}

// Tally counts results by status.
func Tally(results []Result) (accepted, duplicates, rejected int) {
	for i := range results {
		switch results[i].Status {
		case StatusAccepted:
			accepted++
		case StatusDuplicate:
			duplicates++
		default:
			rejected++
		}
	}
	return accepted, duplicates, rejected
}

// request is one caller's share of a group commit.
type request struct {
	items []*item
	done  chan struct{} // closed once err and the items' results are set
	err   error
}

// Writable refuses a batch, with an error wrapping store.ErrDiskFull,
// while the store's disk is below its reserve, and counts the refusal.
// Ingest checks it first; node/admin checks it before reading a body.
func (g *Ingester) Writable() error {
	if g.space == nil {
		return nil
	}
	err := g.space.Check()
	if err != nil && g.m != nil {
		g.m.IngestRefused.Inc()
	}
	return err
}

// Options returns the options in force, defaults filled in.
func (g *Ingester) Options() Options { return g.opts }

// commit queues items for the committer and waits until they are durable.
// It returns early only when ctx ends, and then acknowledges nothing.
func (g *Ingester) commit(ctx context.Context, items []*item) error {
	if len(items) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err // not queued: a caller that already gave up commits nothing
	}
	r := &request{items: items, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, r)
	if !g.committing {
		g.committing = true
		go g.run()
	}
	g.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run commits queued requests, a group at a time, until the queue is
// empty. It is a two-stage pipeline: while one group's Append (and its
// fsync) runs in the background, the next group is planned, that is its
// ids looked up and its parcels chained and signed. The goroutine exists
// only while there is work, so an idle Ingester holds no goroutine and
// needs no Close.
func (g *Ingester) run() {
	// The commit serves several callers, so no single caller's context may
	// cancel it half-way; callers that give up just stop waiting.
	ctx := context.Background()
	var prev *job // the group whose append may still be running
	for {
		group := g.take(prev == nil)
		if group == nil {
			if prev == nil {
				return
			}
			<-prev.done
			prev = nil
			continue
		}
		j := newJob(group)
		// A group that shares a parcel or an event id with the one still
		// appending must see that append's outcome, so it waits for it.
		if prev != nil && prev.overlaps(j) {
			<-prev.done
			prev = nil
		}
		p, err := g.plan(ctx, j.items)
		if prev != nil {
			<-prev.done // one append at a time keeps the feed in commit order
		}
		prev = j
		go g.finish(ctx, j, p, err)
	}
}

// take removes the next group from the queue: whole requests, so that
// each caller's events share a fate, until the group holds GroupEvents
// events. On an empty queue it returns nil, and with last set it also
// marks the committer stopped, under the same lock, so that a request
// queued meanwhile starts a new one.
func (g *Ingester) take(last bool) []*request {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, events := 0, 0
	for n < len(g.queue) && (n == 0 || events < g.opts.GroupEvents && events+len(g.queue[n].items) <= g.opts.MaxBatchEvents) {
		events += len(g.queue[n].items)
		n++
	}
	if n == 0 {
		if last {
			g.committing = false
		}
		return nil
	}
	group := slices.Clone(g.queue[:n])
	g.queue = slices.Delete(g.queue, 0, n)
	return group
}

// job is one group of requests on its way through the pipeline.
type job struct {
	group   []*request
	items   []*item
	numbers map[string]bool // the parcels it touches
	ids     map[string]bool
	done    chan struct{} // closed when its append has finished
}

func newJob(group []*request) *job {
	n := 0
	for _, r := range group {
		n += len(r.items)
	}
	j := &job{group: group, items: make([]*item, 0, n), numbers: make(map[string]bool, n), ids: make(map[string]bool, n), done: make(chan struct{})}
	for _, r := range group {
		j.items = append(j.items, r.items...)
	}
	for _, it := range j.items {
		j.numbers[it.ev.Number] = true
		j.ids[it.id] = true
	}
	return j
}

// overlaps reports whether next touches a parcel or an event id of j.
func (j *job) overlaps(next *job) bool {
	for _, it := range next.items {
		if j.numbers[it.ev.Number] || j.ids[it.id] {
			return true
		}
	}
	return false
}

// finish appends j's planned batch, replanning it when another writer
// appended to one of its parcels first, then answers j's requests.
func (g *Ingester) finish(ctx context.Context, j *job, p *plan, err error) {
	for attempt := 0; ; attempt++ {
		if err == nil {
			if err = g.apply(ctx, p); err == nil {
				if g.m != nil {
					g.m.IngestBatches.Inc()
				}
				break
			}
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= g.opts.ConflictRetries {
			g.log.Error("ingest commit failed", "events", len(j.items), "attempts", attempt+1, "err", err)
			err = fmt.Errorf("%w: %w", ErrCommit, err)
			break
		}
		// Another writer on the store (a replica) appended to one of the
		// parcels first: replan at once from the new heads. A pause would
		// only let that writer, if it keeps committing, win again.
		p, err = g.plan(ctx, j.items)
	}
	for _, r := range j.group {
		r.err = err
		close(r.done)
	}
	close(j.done)
}

// parcelWork is one parcel's part of a commit: its head before the
// commit, the events chained to it and the update that will write them.
type parcelWork struct {
	number string
	head   *store.Parcel // nil for a parcel the store does not have yet
	items  []*item
	update store.ParcelUpdate
	cids   []cid.Cid
}

// plan is a group ready to append: which items are duplicates of stored
// events or of each other, and the signed update of every parcel.
type plan struct {
	items  []*item
	stored map[string]store.EventRef
	dups   map[*item]*item // a repeated id's item → the item that stores it
	work   []*parcelWork
}

// lookupChunk is how many event ids one LookupEventIDs call carries, so
// that the lookup of a large group spreads over the workers.
const lookupChunk = 256

// plan deduplicates items, reads the heads they continue, chains them and
// signs the new heads. It writes nothing, so it can be redone.
func (g *Ingester) plan(ctx context.Context, items []*item) (*plan, error) {
	ids := make([]string, 0, len(items))
	byNumber := make(map[string]*parcelWork)
	var work []*parcelWork
	for _, it := range items {
		ids = append(ids, it.id)
		if byNumber[it.ev.Number] == nil {
			pw := &parcelWork{number: it.ev.Number}
			byNumber[it.ev.Number] = pw
			work = append(work, pw)
		}
	}

	// The id lookup and the head reads do not depend on each other, so
	// they run together on the workers, the heads first: a store that
	// reads them all in one call makes that the longest task. A head read
	// for a parcel whose events all turn out to be duplicates is wasted,
	// but reposts are rare.
	reader, batched := g.st.(store.HeadsReader)
	headTasks := len(work)
	if batched {
		headTasks = 1
	}
	chunks := (len(ids) + lookupChunk - 1) / lookupChunk
	found := make([]map[string]store.EventRef, chunks)
	err := parallel(headTasks+chunks, g.opts.SignWorkers, func(i int) error {
		switch {
		case batched && i == 0:
			return readHeads(ctx, reader, work)
		case i < headTasks:
			pw := work[i]
			p, err := g.st.Parcel(ctx, pw.number)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("read parcel %s: %w", pw.number, err)
			}
			pw.head = p
			return nil
		}
		i -= headTasks
		refs, err := g.st.LookupEventIDs(ctx, ids[i*lookupChunk:min(len(ids), (i+1)*lookupChunk)])
		if err != nil {
			return fmt.Errorf("look up event ids: %w", err)
		}
		found[i] = refs
		return nil
	})
	if err != nil {
		return nil, err
	}
	p := &plan{items: items, stored: make(map[string]store.EventRef), dups: make(map[*item]*item)}
	for _, refs := range found {
		maps.Copy(p.stored, refs)
	}

	// first maps an id to the item that will store it, so that a repeat
	// within the group becomes its duplicate.
	first := make(map[string]*item, len(items))
	for _, it := range items {
		if _, ok := p.stored[it.id]; ok {
			continue
		}
		if f, ok := first[it.id]; ok {
			p.dups[it] = f
			continue
		}
		first[it.id] = it
		pw := byNumber[it.ev.Number]
		pw.items = append(pw.items, it)
	}
	p.work = slices.DeleteFunc(work, func(pw *parcelWork) bool { return len(pw.items) == 0 })

	signedAt := g.now().UnixMilli()
	err = parallel(len(p.work), g.opts.SignWorkers, func(i int) error {
		return g.build(p.work[i], signedAt)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// readHeads sets the head of every parcel of work with one call.
func readHeads(ctx context.Context, r store.HeadsReader, work []*parcelWork) error {
	numbers := make([]string, len(work))
	for i, pw := range work {
		numbers[i] = pw.number
	}
	heads, err := r.Parcels(ctx, numbers)
	if err != nil {
		return fmt.Errorf("read parcels: %w", err)
	}
	for i, pw := range work {
		pw.head = heads[i]
	}
	return nil
}

// apply appends p in one store batch and, once it is durable, writes the
// items' results. A failed append leaves every result untouched.
func (g *Ingester) apply(ctx context.Context, p *plan) error {
	if len(p.work) > 0 {
		b := &store.Batch{Updates: make([]store.ParcelUpdate, len(p.work))}
		for i, pw := range p.work {
			b.Updates[i] = pw.update
		}
		if _, err := g.st.Append(ctx, b); err != nil {
			return fmt.Errorf("append: %w", err)
		}
	}
	for _, it := range p.items {
		if ref, ok := p.stored[it.id]; ok {
			*it.res = Result{ID: it.id, Number: ref.Number, CID: ref.CID.String(), Seq: ref.Seq, Status: StatusDuplicate}
		}
	}
	for _, pw := range p.work {
		for i, it := range pw.items {
			*it.res = Result{ID: it.id, Number: pw.number, CID: pw.cids[i].String(), Seq: pw.update.Events[i].Seq, Status: StatusAccepted}
		}
	}
	for it, f := range p.dups {
		*it.res = *f.res
		it.res.Status = StatusDuplicate
	}
	return nil
}

// build chains pw's events to the parcel's head and signs the new head.
// Parcels are independent, so builds run in parallel.
func (g *Ingester) build(pw *parcelWork, signedAt int64) error {
	u := store.ParcelUpdate{Number: pw.number, Events: make([]store.NewEvent, len(pw.items))}
	var prev protocol.Link
	var seq uint64
	var audience []string
	if p := pw.head; p == nil {
		// IfAbsent: another writer on the same store (a replica) may start
		// the parcel first; then this one must chain to it, not start a
		// second parcel with the number.
		u.New, u.IfAbsent = true, true
	} else {
		u.ParcelID, u.PrevSeq = p.ID, p.Seq
		prev, seq = protocol.LinkTo(p.Head), p.Seq+1
		audience = p.Audience
	}
	pw.cids = make([]cid.Cid, len(pw.items))
	for i, it := range pw.items {
		it.ev.Seq, it.ev.Prev = seq, prev
		b, err := protocol.Marshal(it.ev)
		if err != nil {
			return fmt.Errorf("encode event %q: %w", it.id, err)
		}
		c := protocol.CIDOf(b)
		u.Events[i] = store.NewEvent{ID: it.id, Seq: seq, CID: c, Bytes: b}
		pw.cids[i] = c
		for _, a := range it.audience {
			if !slices.Contains(audience, a) && !slices.Contains(u.Audience, a) {
				u.Audience = append(u.Audience, a)
			}
		}
		for k, v := range it.details {
			if u.Details == nil {
				u.Details = protocol.Details{}
			}
			u.Details[k] = v
		}
		prev, seq = protocol.LinkTo(c), seq+1
	}
	head := &protocol.Head{Carrier: g.carrier, Number: pw.number, Seq: seq - 1, Head: prev, Time: signedAt}
	signed, err := protocol.SignHead(g.signer, head)
	if err != nil {
		return fmt.Errorf("sign head of %s: %w", pw.number, err)
	}
	u.SignedHead = signed
	pw.update = u
	return nil
}

// parallel runs fn(0..n-1) on up to workers goroutines and returns the
// first error. Small jobs run inline, where a goroutine costs more than
// it saves.
func parallel(n, workers int, fn func(i int) error) error {
	if workers > n {
		workers = n
	}
	if workers <= 1 {
		for i := 0; i < n; i++ {
			if err := fn(i); err != nil {
				return err
			}
		}
		return nil
	}
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n)) // stop handing out work
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
