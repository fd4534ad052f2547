package testnet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/platform"
	"github.com/opentrack/opentrack/protocol"
)

// maxErrorSamples bounds the errors a Report quotes.
const maxErrorSamples = 20

// Run starts a testnet as o says, runs traffic and the scenario for
// o.Duration, waits up to o.Drain for every update to arrive, and returns
// the report. An error means the testnet could not run; a run whose
// invariants failed returns a Report with Passed false.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.EnsureDefaults().Validate(); err != nil {
		return nil, err
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	n, err := Start(ctx, o)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	return n.Simulate(ctx)
}

// Simulate runs traffic, queries and the scenario on n, as Run does.
func (n *Net) Simulate(ctx context.Context) (*Report, error) {
	o := n.Opts
	s := &sim{net: n, o: o, led: newLedger(len(n.Platforms)), rng: mrand.New(mrand.NewPCG(o.Seed, 0x0917)), follow: follower{fn: o.Follow}}
	s.report.Carriers, s.report.Platforms = len(n.Carriers), len(n.Platforms)
	s.report.Scenario, s.report.Procs, s.report.Seed = o.Scenario, o.Procs, o.Seed
	s.report.StartupS = n.Startup.Seconds()
	began := time.Now()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.issueGrants(ctx); err != nil {
		return nil, err
	}
	if err := s.watchAll(ctx); err != nil {
		return nil, err
	}
	s.report.ReadyS = s.report.StartupS + time.Since(began).Seconds()

	s.start = time.Now()
	trafficCtx, stopTraffic := context.WithTimeout(ctx, o.Duration)
	defer stopTraffic()
	var traffic sync.WaitGroup
	for i, c := range n.Carriers {
		share := max(1, o.Parcels/len(n.Carriers))
		rate := o.Rate / float64(len(n.Carriers))
		seed := s.rng.Uint64()
		traffic.Go(func() { s.carrierTraffic(trafficCtx, c, i, share, rate, seed) })
	}
	for i := range n.Platforms {
		seed := s.rng.Uint64()
		traffic.Go(func() { s.queries(trafficCtx, i, o.QueryRate/float64(len(n.Platforms)), seed) })
	}
	var scenario sync.WaitGroup
	scenario.Go(func() { s.scenario(trafficCtx) })
	progressDone := make(chan struct{})
	go s.progress(ctx, progressDone)

	traffic.Wait()
	scenario.Wait()
	s.phase.Store("drain")
	trafficTime := time.Since(s.start)
	s.drain(ctx)
	close(progressDone)
	s.stopWatchers()
	s.finish(trafficTime)
	if ctx.Err() != nil {
		return &s.report, ctx.Err()
	}
	return &s.report, nil
}

// sim is one run's state.
type sim struct {
	net    *Net
	o      Options
	follow follower
	led    *ledger
	rng    *mrand.Rand // setup only; each goroutine draws its own from it
	start  time.Time
	phase  atomic.Value
	grants []map[string][]byte // platform -> carrier code -> grant

	watchMu  sync.Mutex
	watchers [][]*platform.Watcher // platform -> its watchers
	consumed sync.WaitGroup

	parcels, events, updates, nqueries atomic.Int64
	verifyFail, forgeriesRejected      atomic.Int64
	forgeriesAccepted, leaked, granted atomic.Int64
	watchGranted                       atomic.Int64
	retries, unavailable, errCount     atomic.Int64
	audienceLeaked, scenarioFailed     atomic.Int64
	rejected, stale, refused           atomic.Int64
	forgedRecords, forgedRegistries    atomic.Int64
	// victim is the carrier a crash or partition acts on; failures met
	// with it while disrupted are counted into the Disruption.
	victim        atomic.Pointer[Carrier]
	cutOff        atomic.Int64 // 1 + the platform cut off from victim; 0: the victim is down for all
	failuresSeen  atomic.Int64
	rejectPlanted atomic.Bool
	// rogueUnreachable counts lookups at the rogue that got no answer.
	rogueUnreachable atomic.Int64
	// disrupted is set while a scenario has a node down or a link cut,
	// and for a grace period after: failed lookups then are expected.
	disrupted atomic.Bool
	lag, qlat latencies

	mu         sync.Mutex
	samples    []string
	timeline   []string
	disruption *Disruption
	report     Report
}

// scenarioFailure counts a scenario step that did not happen as it says.
func (s *sim) scenarioFailure(format string, args ...any) {
	s.scenarioFailed.Add(1)
	s.fail("scenario: "+format, args...)
}

// planted reports whether o plants fault f.
func (s *sim) planted(f Fault) bool { return s.o.Fault == f }

// disruptedAt reports whether a scenario has carrier c down or cut off
// from platform pi right now (pi -1: from its own ingest), and counts the
// failure met with it if so.
func (s *sim) disruptedAt(pi int, c *Carrier) bool {
	if !s.disrupted.Load() || s.victim.Load() != c {
		return false
	}
	if cut := s.cutOff.Load(); cut != 0 && cut != int64(pi)+1 {
		return false
	}
	s.failuresSeen.Add(1)
	return true
}

func (s *sim) fail(format string, args ...any) {
	s.errCount.Add(1)
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	if len(s.samples) < maxErrorSamples {
		s.samples = append(s.samples, msg)
	}
	s.mu.Unlock()
	s.o.Logger.Warn("testnet error", "err", msg)
}

func (s *sim) verificationFailure(format string, args ...any) {
	s.verifyFail.Add(1)
	s.fail("verification: "+format, args...)
}

func (s *sim) note(format string, args ...any) {
	msg := fmt.Sprintf("%6.1fs ", time.Since(s.start).Seconds()) + fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.timeline = append(s.timeline, msg)
	s.mu.Unlock()
	s.o.Logger.Info("testnet: " + msg)
}

// issueGrants gives the first platform a grant from every carrier for
// the recipient details of the parcels it books: the one platform that
// may see details. The others never may.
func (s *sim) issueGrants(ctx context.Context) error {
	s.grants = make([]map[string][]byte, len(s.net.Platforms))
	holder := s.net.Platforms[0]
	grants := make([][]byte, len(s.net.Carriers))
	var g errgroup.Group
	g.SetLimit(8)
	for i, c := range s.net.Carriers {
		g.Go(func() error {
			b, _, err := node.IssueGrant(c.Repo, protocol.Grant{
				Holder: holder.ID.String(), Audience: true,
				Fields: []string{protocol.FieldRecipientName, protocol.FieldRecipientAddress},
			}, 24*time.Hour)
			if err != nil {
				return fmt.Errorf("testnet: grant of %s: %w", c.Code, err)
			}
			if _, err := c.admin.PutGrant(ctx, b); err != nil {
				return fmt.Errorf("testnet: record grant at %s: %w", c.Code, err)
			}
			grants[i] = b
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	s.grants[0] = map[string][]byte{}
	for i, c := range s.net.Carriers {
		s.grants[0][c.Code] = grants[i]
	}
	return nil
}

// watchAll subscribes every platform to its audience at every carrier and
// waits until each subscription is live, so that no event of the run
// falls before its watch began.
func (s *sim) watchAll(ctx context.Context) error {
	s.watchers = make([][]*platform.Watcher, len(s.net.Platforms))
	for pi, p := range s.net.Platforms {
		for _, c := range s.net.Carriers {
			w, err := p.WatchAudience(ctx, c, s.grants[pi][c.Code])
			if err != nil {
				return fmt.Errorf("testnet: %s watch %s: %w", p.Name, c.Code, err)
			}
			s.watchers[pi] = append(s.watchers[pi], w)
			s.consumed.Go(func() { s.consume(pi, c, w) })
		}
	}
	subs := len(s.net.Platforms) * len(s.net.Carriers)
	return s.net.WaitUntil(watchWait(subs), "every watch subscription live", func() (bool, string) {
		live := 0
		var waiting []string
		for pi, ws := range s.watchers {
			for ci, w := range ws {
				if w.Cursor() != "" {
					live++
				} else if len(waiting) < 5 {
					waiting = append(waiting, s.net.Platforms[pi].Name+"→"+s.net.Carriers[ci].Code)
				}
			}
		}
		return live == subs, fmt.Sprintf("%d of %d live; waiting for %s", live, subs, strings.Join(waiting, ", "))
	})
}

// consume checks and records what a watcher hands over.
func (s *sim) consume(pi int, c *Carrier, w *platform.Watcher) {
	for u := range w.Updates() {
		now := time.Now()
		if !u.Verified {
			s.verificationFailure("%s watch update from %s for %s: %s %s", s.net.Platforms[pi].Name, c.Code, u.Number, u.Error, u.Message)
			continue
		}
		if u.Carrier != c.Code {
			s.verificationFailure("%s watch of %s handed over an update of %s", s.net.Platforms[pi].Name, c.Code, u.Carrier)
		}
		for _, e := range u.Events {
			lag, first, mine := s.led.receive(pi, u.Number, e.CID, now)
			if !mine {
				// An event of a parcel another platform booked: the
				// audience filter let it through.
				s.audienceLeaked.Add(1)
				s.fail("%s received %s event %s of a parcel it did not book", s.net.Platforms[pi].Name, u.Number, e.CID)
				continue
			}
			if first {
				s.updates.Add(1)
				s.lag.add(lag)
				s.follow.event(pi, s.net.Platforms[pi].Name, c.Code, u.Number, e)
			}
		}
		if len(u.Details) > 0 {
			// Only the grant holder's own parcels may come with details.
			if s.grants[pi] != nil && s.led.parcel(u.Number).platform == pi {
				s.watchGranted.Add(1)
			} else {
				s.leaked.Add(1)
				s.fail("details leaked: %s watch got %v of %s", s.net.Platforms[pi].Name, slices.Sorted(maps.Keys(u.Details)), u.Number)
			}
		}
	}
	if err := w.Err(); err != nil && !errors.Is(err, context.Canceled) {
		s.fail("%s watch of %s stopped: %v", s.net.Platforms[pi].Name, c.Code, err)
	}
}

// stopWatchers closes every watcher and waits for their consumers.
func (s *sim) stopWatchers() {
	for pi := range s.watchers {
		s.stopPlatformWatchers(pi)
	}
	s.consumed.Wait()
}

// stopPlatformWatchers closes platform pi's watchers.
func (s *sim) stopPlatformWatchers(pi int) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for _, w := range s.watchers[pi] {
		_ = w.Close()
	}
	s.watchers[pi] = nil
}

// parcel is one simulated parcel.
type parcel struct {
	number   string
	platform int // the platform that booked it
	steps    []step
	next     int
	details  map[string]string
}

// carrierTraffic runs c's share of the traffic: parcels in flight, each
// advanced one scan at a time at random, rate events per second in all,
// posted every tick as one batch through the admin API. A batch that
// fails because the node is down is posted again, the same ids, until
// it is acknowledged.
func (s *sim) carrierTraffic(ctx context.Context, c *Carrier, ci, inFlight int, rate float64, seed uint64) {
	r := mrand.New(mrand.NewPCG(seed, uint64(ci)))
	pool := make([]*parcel, 0, inFlight)
	for range inFlight {
		if p := s.book(c, r); p != nil {
			pool = append(pool, p)
		}
	}
	const tick = 100 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	last, budget := time.Now(), 0.0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			budget += rate * now.Sub(last).Seconds()
			last = now
		}
		k := min(int(budget), len(pool))
		if k == 0 {
			continue
		}
		budget -= float64(k)
		r.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
		batch := pool[:k]
		evs := s.nextScans(batch)
		results, ok := s.post(ctx, c, evs)
		if !ok {
			return
		}
		s.acked(c, batch, evs, results)
		// Delivered and returned parcels make room for new bookings.
		for i, p := range pool {
			if p.next >= len(p.steps) {
				if np := s.book(c, r); np != nil {
					pool[i] = np
				}
			}
		}
	}
}

// book books a new parcel with c for a random platform, with details for
// three in ten; nil when c has no number to give.
func (s *sim) book(c *Carrier, r *mrand.Rand) *parcel {
	num, err := c.NewNumber()
	if err != nil {
		s.fail("%v", err)
		return nil
	}
	p := &parcel{number: num, platform: r.IntN(len(s.net.Platforms)), steps: lifecycle(r)}
	if r.IntN(100) < 30 {
		p.details = map[string]string{
			protocol.FieldRecipientName:    fmt.Sprintf("Recipient %d", r.IntN(1e6)),
			protocol.FieldRecipientAddress: fmt.Sprintf("%d Example Road", 1+r.IntN(999)),
		}
	}
	s.parcels.Add(1)
	s.led.book(p.number, c.Code, p.platform)
	return p
}

// nextScans is the next scan of each parcel of batch, for its booking
// platform only, with the faults planted.
func (s *sim) nextScans(batch []*parcel) []admin.Event {
	evs := make([]admin.Event, len(batch))
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for i, p := range batch {
		st := p.steps[p.next]
		evs[i] = admin.Event{
			ID: fmt.Sprintf("%s-%d", p.number, p.next), Number: p.number, Time: now,
			Status: string(st.status), Reason: st.reason, Location: st.loc,
			Audience: []string{s.net.Platforms[p.platform].ID.String()},
		}
		if s.planted(FaultAudience) && i%4 == 0 && len(s.net.Platforms) > 1 {
			other := s.net.Platforms[(p.platform+1)%len(s.net.Platforms)]
			evs[i].Audience = append(evs[i].Audience, other.ID.String())
		}
		if s.planted(FaultRejectEvent) && s.rejectPlanted.CompareAndSwap(false, true) {
			evs[i].Status = "teleported"
		}
		if p.next == 0 {
			evs[i].Details = p.details
		}
	}
	return evs
}

// acked moves each parcel of batch whose event was stored to its next
// step and notes the event in the ledger; a refused honest event fails.
func (s *sim) acked(c *Carrier, batch []*parcel, evs []admin.Event, results []admin.Result) {
	for i, res := range results {
		p := batch[i]
		switch res.Status {
		case admin.StatusAccepted, admin.StatusDuplicate:
			s.events.Add(1)
			s.led.ack(res.CID, p.number, p.platform, time.Now())
			p.next++
		default:
			s.rejected.Add(1)
			s.fail("%s rejected honest event %s: %s", c.Code, evs[i].ID, res.Error)
		}
	}
}

// post sends a batch until it is acknowledged or ctx ends; false means
// ctx ended first. A node that a scenario has down, paused or restarting
// costs retries, not errors; any other failure is an error too.
func (s *sim) post(ctx context.Context, c *Carrier, evs []admin.Event) ([]admin.Result, bool) {
	for {
		// The batch is the carrier's: it goes through even after traffic
		// time is up, so that what was scanned is never dropped.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		res, err := c.Ingest(pctx, evs)
		cancel()
		if err == nil {
			return res, true
		}
		// Only the carrier a scenario has down may fail to answer.
		if !errors.Is(err, ErrDown) || !s.disruptedAt(-1, c) {
			s.fail("%v", err)
		}
		s.retries.Add(1)
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			if !c.Up() {
				return nil, false
			}
		}
	}
}

// queries runs a platform's lookups: mostly parcels booked anywhere in
// the testnet, some numbers no carrier issued, and some malformed ones.
// Every answer is verified by the client and checked here.
func (s *sim) queries(ctx context.Context, pi int, rate float64, seed uint64) {
	if rate <= 0 {
		return
	}
	p := s.net.Platforms[pi]
	r := mrand.New(mrand.NewPCG(seed, uint64(pi)+1000))
	const workers = 4
	jobs := make(chan func(), workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				j()
			}
		})
	}
	defer func() { close(jobs); wg.Wait() }()
	interval := time.Duration(float64(time.Second) / rate)
	t := time.NewTicker(max(interval, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.Closed() {
			return
		}
		var job func()
		switch roll := r.IntN(100); {
		case roll < 90:
			number, ok := s.led.randomParcel(r)
			if !ok {
				continue
			}
			// Now and then a platform without a grant presents the
			// holder's: it must not see details either.
			stolen := s.grants[pi] == nil && r.IntN(100) < 3
			job = func() { s.queryParcel(ctx, pi, number, stolen) }
		case roll < 95:
			c := s.net.Carriers[r.IntN(len(s.net.Carriers))]
			number, err := c.NewNumber() // never ingested
			if err != nil {
				s.fail("%v", err)
				continue
			}
			job = func() { s.queryExpecting(ctx, pi, number, protocol.CodeNotFound) }
		default:
			job = func() { s.queryExpecting(ctx, pi, "ZZ-not-a-number", protocol.CodeInvalidNumber) }
		}
		select {
		case jobs <- job:
		case <-ctx.Done():
			return
		}
	}
}

// queryParcel looks up a booked parcel and checks the answer: verified,
// at least every event acknowledged before the query, and details only
// for the platform holding the grant for a parcel it booked. With
// stolen, a platform other than the holder presents the holder's grant.
func (s *sim) queryParcel(ctx context.Context, pi int, number string, stolen bool) {
	p := s.net.Platforms[pi]
	info := s.led.parcel(number)
	c := s.net.Carrier(info.carrier)
	var grant []byte
	switch {
	case s.grants[pi] != nil:
		grant = s.grants[pi][c.Code]
	case stolen && s.grants[0] != nil:
		grant = s.grants[0][c.Code]
	}
	// A lookup started before the end of traffic runs to its end.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	began := time.Now()
	views, err := p.Track(qctx, grant, number)
	if p.Closed() {
		return // the platform has gone
	}
	s.nqueries.Add(1)
	if err != nil {
		s.fail("%s track %s: %v", p.Name, number, err)
		return
	}
	took := time.Since(began)
	s.qlat.add(took)
	if len(views) != 1 {
		s.fail("%s track %s: %d answers", p.Name, number, len(views))
		return
	}
	v := views[0]
	k := s.nqueries.Load()
	switch {
	case s.planted(FaultStaleLookup) && k%8 == 0 && v.Error == "" && len(v.Events) > 0:
		v.Events = v.Events[:len(v.Events)-1]
	case s.planted(FaultNotFound) && k%8 == 0 && v.Error == "":
		v.Error, v.Message, v.Verified = protocol.CodeNotFound, "planted", false
	}
	if v.Error != "" {
		s.badAnswer(pi, c, v, took)
		return
	}
	if len(v.Events) < info.acked {
		s.stale.Add(1)
		s.fail("%s track %s at %s: %d events, %d acknowledged before the query", p.Name, number, c.Code, len(v.Events), info.acked)
	}
	if len(v.Details) > 0 {
		if s.grants[pi] != nil && info.platform == pi && !stolen {
			s.granted.Add(1)
		} else {
			s.leaked.Add(1)
			s.fail("details leaked: %s got %v of %s (booked by platform%d, grant held: %v, stolen: %v)",
				p.Name, slices.Sorted(maps.Keys(v.Details)), number, info.platform+1, s.grants[pi] != nil, stolen)
		}
	}
}

// badAnswer classifies a failed answer for an existing parcel: expected
// while the carrier is down or cut off, a verification failure when the
// record itself failed, an error otherwise.
func (s *sim) badAnswer(pi int, c *Carrier, v platform.ParcelView, took time.Duration) {
	switch v.Error {
	case protocol.CodeUnavailable, protocol.CodeInternal:
		if s.disruptedAt(pi, c) {
			s.unavailable.Add(1)
			return
		}
		s.fail("%s track %s (%s): %s %s", s.net.Platforms[pi].Name, v.Number, took.Round(time.Millisecond), v.Error, v.Message)
	case protocol.CodeForbidden:
		// A stolen grant is refused outright: nothing leaked.
	case protocol.CodeRateLimited, protocol.CodeNotFound:
		s.refused.Add(1)
		s.fail("%s track %s: %s %s", s.net.Platforms[pi].Name, v.Number, v.Error, v.Message)
	default:
		s.verificationFailure("%s track %s at %s: %s %s", s.net.Platforms[pi].Name, v.Number, c.Code, v.Error, v.Message)
	}
}

// queryExpecting looks up a number that must come back with code.
func (s *sim) queryExpecting(ctx context.Context, pi int, number, code string) {
	p := s.net.Platforms[pi]
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	began := time.Now()
	views, err := p.Track(qctx, nil, number)
	if p.Closed() {
		return
	}
	s.nqueries.Add(1)
	if err != nil {
		s.fail("%s track %s: %v", p.Name, number, err)
		return
	}
	took := time.Since(began)
	s.qlat.add(took)
	for _, v := range views {
		switch {
		case v.Error == code:
		case (v.Error == protocol.CodeUnavailable || v.Error == protocol.CodeInternal) && s.disrupted.Load():
			s.unavailable.Add(1)
		default:
			s.fail("%s track %s (%s): want %s, got %q %s", p.Name, number, took.Round(time.Millisecond), code, v.Error, v.Message)
		}
	}
}

// drain waits until every live platform has every event of its audience,
// or until Drain passes.
func (s *sim) drain(ctx context.Context) {
	dctx, cancel := context.WithTimeout(ctx, s.o.Drain)
	defer cancel()
	for s.led.missing(s.livePlatforms()) > 0 {
		select {
		case <-dctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// livePlatforms lists the platforms that have not gone.
func (s *sim) livePlatforms() []int {
	var out []int
	for i, p := range s.net.Platforms {
		if !p.Closed() {
			out = append(out, i)
		}
	}
	return out
}

// progress reports Stats about twice a second.
func (s *sim) progress(ctx context.Context, done <-chan struct{}) {
	if s.o.Progress == nil {
		return
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			s.o.Progress(s.stats())
		}
	}
}

func (s *sim) stats() Stats {
	phase, _ := s.phase.Load().(string)
	if phase == "" {
		phase = "traffic"
	}
	return Stats{
		Elapsed: time.Since(s.start), Phase: phase,
		EventsIngested: s.events.Load(), UpdatesDelivered: s.updates.Load(), Queries: s.nqueries.Load(),
		WatchLagP99: s.lag.quantile(0.99), Errors: s.errCount.Load(),
	}
}

// finish fills the report.
func (s *sim) finish(traffic time.Duration) {
	live := s.livePlatforms()
	r := &s.report
	r.Parcels, r.EventsIngested, r.UpdatesDelivered, r.Queries = s.parcels.Load(), s.events.Load(), s.updates.Load(), s.nqueries.Load()
	r.QueryP50ms, r.QueryP99ms = ms(s.qlat.quantile(0.5)), ms(s.qlat.quantile(0.99))
	r.WatchLagP50ms, r.WatchLagP99ms = ms(s.lag.quantile(0.5)), ms(s.lag.quantile(0.99))
	r.VerificationFailures = s.verifyFail.Load()
	r.LostUpdates = int64(s.led.missing(live))
	r.DuplicatesAfterDedup = s.led.duplicates()
	r.RejectedForgeries, r.ForgeriesAccepted = s.forgeriesRejected.Load(), s.forgeriesAccepted.Load()
	r.DetailsLeaked, r.DetailsGranted, r.WatchDetailsGranted = s.leaked.Load(), s.granted.Load(), s.watchGranted.Load()
	r.IngestRetries, r.QueriesUnavailable = s.retries.Load(), s.unavailable.Load()
	r.AudienceLeaked, r.ScenarioFailures = s.audienceLeaked.Load(), s.scenarioFailed.Load()
	r.RejectedEvents, r.StaleLookups, r.LookupsRefused = s.rejected.Load(), s.stale.Load(), s.refused.Load()
	r.ForgedRecordsRejected, r.ForgedRegistriesRejected = s.forgedRecords.Load(), s.forgedRegistries.Load()
	if n := s.rogueUnreachable.Load(); n > 0 {
		s.note("%d lookups at the rogue got no answer", n)
	}
	r.DurationS = traffic.Seconds()
	if traffic > 0 {
		r.EventsPerS = float64(r.EventsIngested) / traffic.Seconds()
	}
	if r.LostUpdates > 0 {
		for _, m := range s.led.missingSample(live, 5) {
			s.fail("lost: %s", m)
		}
	}
	r.Errors = s.errCount.Load()
	s.mu.Lock()
	r.Timeline, r.ErrorSamples = append([]string{}, s.timeline...), append([]string{}, s.samples...)
	r.Disruption = s.disruption
	s.mu.Unlock()
	r.Followed = s.follow.report(s.net)
	r.check()
}
