package bench

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/store/pebble"
)

// Run measures everything the package doc lists, in that order, and
// returns the results with the targets judged. A phase that fails is
// recorded in Failures and, where later phases need its output (the
// store), ends the run; err is set only when nothing useful remains.
func Run(ctx context.Context, o Options) (*Results, error) {
	if err := o.EnsureDefaults().Validate(); err != nil {
		return nil, err
	}
	began := time.Now()
	if o.Dir == "" {
		dir, err := os.MkdirTemp("", "opentrack-bench-")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer os.RemoveAll(dir)
		o.Dir = dir
	}
	res := &Results{Env: environment(&o)}
	res.Env.LoadAvg[0] = loadAvg()
	r := &runner{o: &o, res: res}
	err := r.run(ctx)
	if err != nil {
		res.Failures = append(res.Failures, err.Error())
	}
	r.summarize()
	res.RSSLoadMB = mb(r.peak)
	res.judge(&o)
	res.Env.LoadAvg[1] = loadAvg()
	res.Elapsed = time.Since(began).Seconds()
	return res, nil
}

type runner struct {
	o    *Options
	res  *Results
	repo *repo.Repo
	key  ed25519.PublicKey
	peak int64 // highest node RSS seen, bytes
}

func (r *runner) log(msg string, args ...any) { r.o.Logger.Info(msg, args...) }

func (r *runner) run(ctx context.Context) error {
	o := r.o
	var err error
	dir := filepath.Join(o.Dir, "carrier")
	if o.runs("ingest") {
		r.repo, err = initCarrier(dir)
	} else {
		r.repo, err = repo.Open(dir)
	}
	if err != nil {
		return err
	}
	// Always written, so that a reused repo does not keep another run's.
	if err := setCache(r.repo, cmp.Or(o.CacheMB, repo.DefaultCacheMB)); err != nil {
		return err
	}
	r.key = r.repo.CarrierKey.Public().(ed25519.PublicKey)

	for _, p := range []struct {
		name string
		run  func(context.Context) error
	}{
		{"ingest", r.ingest}, {"put", r.storePut}, {"lookups", r.serve},
		{"baseline", r.baseline}, {"watch", r.watch}, {"testnet", r.testnet},
	} {
		if !o.runs(p.name) {
			continue
		}
		if err := p.run(ctx); err != nil {
			return err
		}
	}
	return nil
}

// testnet times the start-up of a large testnet.
func (r *runner) testnet(ctx context.Context) error {
	up, ready, err := testnetStartup(ctx, r.o)
	if err != nil {
		return err
	}
	r.res.TestnetNodesUpS, r.res.TestnetStartupS = up.Seconds(), ready.Seconds()
	r.log("testnet", "carriers", r.o.TestnetCarriers, "platforms", r.o.TestnetPlatforms, "nodes_up_s", up.Seconds(), "ready_s", ready.Seconds())
	return nil
}

// ingest builds the store through the node's admin API.
func (r *runner) ingest(ctx context.Context) error {
	nd, err := startNode(ctx, r.o.Command, r.repo.Dir)
	if err != nil {
		return err
	}
	cpu0, err := nd.CPU()
	if err != nil {
		_, _ = nd.shutdown()
		return err
	}
	ing, err := ingestAll(ctx, r.o, newPoster(nd.info.AdminURL, r.repo.AdminToken, r.o.Posters))
	cpu1, cpuErr := nd.CPU()
	peak, stopErr := nd.shutdown()
	r.peak, r.res.RSSIngestMB = max(r.peak, peak), mb(peak)
	if err := errors.Join(err, cpuErr, stopErr); err != nil {
		return err
	}
	res := r.res
	res.IngestEventsPerS = float64(ing.events) / ing.elapsed.Seconds()
	res.IngestNodeCPUusPerEvent = float64((cpu1 - cpu0).Microseconds()) / float64(ing.events)
	res.IngestBatchP50ms, res.IngestBatchP99ms = percentiles(ing.batchLat)
	r.log("ingest", "events", ing.events, "seconds", ing.elapsed.Seconds(), "events_per_s", int(res.IngestEventsPerS),
		"batch_p99_ms", res.IngestBatchP99ms, "node_cpu_us_per_event", res.IngestNodeCPUusPerEvent, "peak_rss_mb", mb(peak))
	return nil
}

// storePut reads the events back, compacts the node's store and
// measures its size, then appends the same events to a fresh store.
func (r *runner) storePut(ctx context.Context) error {
	dir := r.repo.Path(r.repo.Config.Store.Path)
	st, err := pebble.Open(dir, nil)
	if err != nil {
		return err
	}
	batches, events, err := readBack(ctx, st, r.o.Batch)
	if err == nil {
		err = st.Compact(ctx)
	}
	if err := errors.Join(err, st.Close()); err != nil {
		return fmt.Errorf("bench: read back: %w", err)
	}
	// Reopening drops the WAL files pebble keeps for reuse, leaving what a
	// restarted node has on disk.
	if st, err = pebble.Open(dir, nil); err != nil {
		return err
	}
	stats, err := st.Stats(ctx)
	if err := errors.Join(err, st.Close()); err != nil {
		return err
	}
	res := r.res
	if res.DiskBytes, err = dirSize(dir); err != nil {
		return err
	}
	res.StoreEvents = stats.Events
	res.DiskPerEvt = float64(res.DiskBytes) / float64(stats.Events)
	r.log("disk", "events", stats.Events, "bytes", res.DiskBytes, "bytes_per_event", res.DiskPerEvt)

	putDir := filepath.Join(r.o.Dir, "store-put")
	took, err := putAll(ctx, putDir, batches, events, r.o.Progress)
	_ = os.RemoveAll(putDir)
	if err != nil {
		return err
	}
	res.StorePutEventsPerS = float64(events) / took.Seconds()
	r.log("store put", "events", events, "batches", len(batches), "seconds", took.Seconds(), "events_per_s", int(res.StorePutEventsPerS))
	return nil
}

// serve restarts the node on the full store, measures it idle, then
// measures lookups over TCP and QUIC and batched track.
func (r *runner) serve(ctx context.Context) error {
	nd, err := startNode(ctx, r.o.Command, r.repo.Dir)
	if err != nil {
		return err
	}
	err = r.lookups(ctx, nd)
	peak, stopErr := nd.shutdown()
	r.peak, r.res.RSSServeMB = max(r.peak, peak), mb(peak)
	return errors.Join(err, stopErr)
}

func (r *runner) lookups(ctx context.Context, nd *nodeProc) error {
	o, res := r.o, r.res
	select {
	case <-time.After(o.Settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	m, err := nd.Memory()
	if err != nil {
		return err
	}
	res.RSSIdleMB = mb(m.RSS)
	r.log("idle", "rss_mb", res.RSSIdleMB)

	for _, t := range []struct{ name, proto string }{{"tcp", "/tcp/"}, {"quic", "/quic-v1"}} {
		ai, err := nd.addrInfo(t.proto)
		if err != nil {
			return err
		}
		p, err := newPlatform(ctx, ai)
		if err != nil {
			return err
		}
		for _, c := range o.Concurrency {
			l, err := measure(ctx, o, nd, t.name, c, 1, p.lookup)
			if err != nil {
				p.Close()
				return err
			}
			res.Lookups = append(res.Lookups, l)
		}
		if t.name == "tcp" {
			for _, verify := range []bool{false, true} {
				do := p.batch(o.Parcels)
				if verify {
					do = p.verifiedBatch(o.Parcels, r.key)
				}
				l, err := measure(ctx, o, nd, t.name, o.BatchConcurrency, 100, do)
				if err != nil {
					p.Close()
					return err
				}
				l.Verify = verify
				res.Lookups = append(res.Lookups, l)
			}
		}
		if err := p.Close(); err != nil {
			return err
		}
	}
	return nil
}

// baseline measures the same single-number lookups through the HTTPS+JSON
// baseline over the same store, the node stopped.
func (r *runner) baseline(ctx context.Context) error {
	st, err := openNodeStore(r.repo)
	if err != nil {
		return err
	}
	l, err := measure(ctx, r.o, nil, "store", 16, 1, storeLookup(st))
	if err := errors.Join(err, st.Close()); err != nil {
		return err
	}
	r.res.Lookups = append(r.res.Lookups, l)
	r.res.StoreLookupsPerSC16 = l.ParcelsPerS

	bp, info, err := startBaseline(ctx, r.o, r.repo.Dir)
	if err != nil {
		return err
	}
	err = func() error {
		c, err := newBaselineClient(info, max(64, r.o.BatchConcurrency))
		if err != nil {
			return err
		}
		defer c.client.CloseIdleConnections()
		for _, conc := range r.o.Concurrency {
			l, err := measure(ctx, r.o, bp, "https-json", conc, 1, func(ctx context.Context, i int) error { return c.track(ctx, number(i)) })
			if err != nil {
				return err
			}
			r.res.Lookups = append(r.res.Lookups, l)
		}
		return nil
	}()
	_, stopErr := bp.shutdown()
	return errors.Join(err, stopErr)
}

// summarize copies the contract figures out of Lookups.
func (r *runner) summarize() {
	res := r.res
	find := func(transport string, conc, per int, verify bool) Load {
		for _, l := range res.Lookups {
			if l.Transport == transport && l.Concurrency == conc && l.PerRequest == per && l.Verify == verify {
				return l
			}
		}
		return Load{}
	}
	res.TrackLookupsPerSC1 = find("tcp", 1, 1, false).ParcelsPerS
	c16 := find("tcp", 16, 1, false)
	res.TrackLookupsPerSC16, res.TrackP50msC16, res.TrackP99msC16 = c16.ParcelsPerS, c16.P50ms, c16.P99ms
	res.TrackLookupsPerSC64 = find("tcp", 64, 1, false).ParcelsPerS
	q := find("quic", 16, 1, false)
	res.QUICTrackLookupsPerSC16, res.QUICTrackP99msC16 = q.ParcelsPerS, q.P99ms
	h := find("https-json", 16, 1, false)
	res.HTTPSJSONLookupsPerSC16, res.HTTPSJSONP99msC16 = h.ParcelsPerS, h.P99ms
	res.P2POverHTTPSC16 = ratio(c16.ParcelsPerS, h.ParcelsPerS)
	res.QUICOverHTTPSC16 = ratio(q.ParcelsPerS, h.ParcelsPerS)
	b := find("tcp", r.o.BatchConcurrency, 100, false)
	res.BatchTrackParcelsPerS, res.BatchTrackP99ms = b.ParcelsPerS, b.P99ms
	res.VerifiedBatchParcelsPerS = find("tcp", r.o.BatchConcurrency, 100, true).ParcelsPerS
}

// watch restarts the node and measures watch delivery lag.
func (r *runner) watch(ctx context.Context) error {
	nd, err := startNode(ctx, r.o.Command, r.repo.Dir)
	if err != nil {
		return err
	}
	err = func() error {
		ai, err := nd.addrInfo("/tcp/")
		if err != nil {
			return err
		}
		p, err := newPlatform(ctx, ai)
		if err != nil {
			return err
		}
		defer p.Close()
		w, err := watchLag(ctx, r.o, p, nd, r.key, newPoster(nd.info.AdminURL, r.repo.AdminToken, 8))
		if err != nil {
			return err
		}
		res := r.res
		res.WatchNodeCPUusPerEvent = float64(w.nodeCPU.Microseconds()) / float64(w.events)
		res.WatchHarnessCPUusPerEvent = float64(w.selfCPU.Microseconds()) / float64(w.events)
		res.WatchEvents, res.WatchDelivered, res.WatchEventsPerS = w.events, w.delivered, w.rate
		res.WatchLagP50ms, res.WatchLagP99ms, res.WatchLagMaxms = ms(w.p50), ms(w.p99), ms(w.max)
		res.WatchLagFromPostP99ms = ms(w.fromPostP99)
		r.log("watch", "events", w.events, "delivered", w.delivered, "events_per_s", int(w.rate), "p50_ms", res.WatchLagP50ms,
			"p99_ms", res.WatchLagP99ms, "max_ms", res.WatchLagMaxms, "from_post_p99_ms", res.WatchLagFromPostP99ms,
			"node_cpu_us_per_event", res.WatchNodeCPUusPerEvent, "harness_cpu_us_per_event", res.WatchHarnessCPUusPerEvent)
		if w.missed > 0 || w.unverified > 0 {
			return fmt.Errorf("bench: watch: %d of %d acknowledged events never delivered, %d updates unverified", w.missed, w.events, w.unverified)
		}
		return nil
	}()
	peak, stopErr := nd.shutdown()
	r.peak, r.res.RSSWatchMB = max(r.peak, peak), mb(peak)
	return errors.Join(err, stopErr)
}

func percentiles(d []time.Duration) (p50, p99 float64) {
	if len(d) == 0 {
		return 0, 0
	}
	s := append([]time.Duration(nil), d...)
	slices.Sort(s)
	return ms(s[len(s)/2]), ms(s[len(s)*99/100])
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
