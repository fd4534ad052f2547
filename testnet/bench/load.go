package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// request makes one lookup of the parcels from index i on (spread over
// the store by the caller) and returns an error if the answer is wrong.
type request func(ctx context.Context, i int) error

// round is one timed run of a load.
type round struct {
	rate     float64 // parcels/s
	p50, p99 time.Duration
	requests int64
}

// runRound keeps conc requests in flight for d and measures them. Each
// worker completes at least one request, however late a loaded machine
// schedules it: the round lasts as long as the work, not less.
func runRound(ctx context.Context, conc, perRequest, parcels int, d time.Duration, do request) (round, error) {
	lat := make([][]time.Duration, conc)
	errs := make([]error, conc)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for g := range conc {
		rng := rand.New(rand.NewPCG(uint64(g), uint64(start.UnixNano())))
		lat[g] = make([]time.Duration, 0, 1<<14)
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if err := do(ctx, rng.IntN(parcels)); err != nil {
					errs[g] = err
					cancel()
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
				if time.Now().After(deadline) {
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return round{}, err
		}
	}
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return round{}, fmt.Errorf("bench: no request completed in %s", d)
	}
	slices.Sort(all)
	return round{
		rate:     float64(len(all)*perRequest) / elapsed.Seconds(),
		p50:      all[len(all)/2],
		p99:      all[len(all)*99/100],
		requests: int64(len(all)),
	}, nil
}

// cpu is the process's CPU time, or 0 for no process (a load served in
// the harness's own).
func (n *nodeProc) cpu() (time.Duration, error) {
	if n == nil {
		return 0, nil
	}
	return n.CPU()
}

// measure warms a load up (a round, at most a second), then runs rounds
// rounds and returns the median of each figure, with the CPU that the
// server process and the harness spent per parcel over all the rounds.
func measure(ctx context.Context, o *Options, srv *nodeProc, name string, conc, perRequest int, do request) (Load, error) {
	l := Load{Transport: name, Concurrency: conc, PerRequest: perRequest}
	if _, err := runRound(ctx, conc, perRequest, o.Parcels, min(o.Round, time.Second), do); err != nil {
		return l, fmt.Errorf("%s c=%d: %w", name, conc, err)
	}
	srv0, err := srv.cpu()
	if err != nil {
		return l, err
	}
	self0 := selfCPU()
	var rs []round
	for range o.Rounds {
		r, err := runRound(ctx, conc, perRequest, o.Parcels, o.Round, do)
		if err != nil {
			return l, fmt.Errorf("%s c=%d: %w", name, conc, err)
		}
		rs = append(rs, r)
		l.Requests += r.requests
	}
	srv1, err := srv.cpu()
	if err != nil {
		return l, err
	}
	parcels := float64(l.Requests * int64(perRequest))
	l.ServerCPUus = float64((srv1 - srv0).Microseconds()) / parcels
	l.HarnessCPUus = float64((selfCPU() - self0).Microseconds()) / parcels
	l.ParcelsPerS = median(rs, func(r round) float64 { return r.rate })
	l.P50ms = median(rs, func(r round) float64 { return ms(r.p50) })
	l.P99ms = median(rs, func(r round) float64 { return ms(r.p99) })
	o.Logger.Info("lookups", "transport", name, "concurrency", conc, "per_request", perRequest,
		"parcels_per_s", int(l.ParcelsPerS), "p50_ms", l.P50ms, "p99_ms", l.P99ms,
		"server_cpu_us", l.ServerCPUus, "harness_cpu_us", l.HarnessCPUus)
	return l, nil
}

func median[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
