package testnet

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"text/tabwriter"
	"time"
)

// Stats are the counters of a run so far, for a live display.
type Stats struct {
	Elapsed          time.Duration
	Phase            string // "traffic", "drain"
	EventsIngested   int64
	UpdatesDelivered int64
	Queries          int64
	WatchLagP99      time.Duration
	Errors           int64
}

// Report is what a run measured and whether its invariants held. Its JSON
// keys are a contract for scripts (`opentrack testnet --json`).
type Report struct {
	Carriers             int     `json:"carriers"`
	Platforms            int     `json:"platforms"`
	Parcels              int64   `json:"parcels"`
	EventsIngested       int64   `json:"events_ingested"`
	UpdatesDelivered     int64   `json:"updates_delivered"`
	Queries              int64   `json:"queries"`
	QueryP50ms           float64 `json:"query_p50_ms"`
	QueryP99ms           float64 `json:"query_p99_ms"`
	WatchLagP50ms        float64 `json:"watch_lag_p50_ms"`
	WatchLagP99ms        float64 `json:"watch_lag_p99_ms"`
	VerificationFailures int64   `json:"verification_failures"`
	LostUpdates          int64   `json:"lost_updates"`
	DuplicatesAfterDedup int64   `json:"duplicates_after_dedupe"`
	RejectedForgeries    int64   `json:"rejected_forgeries"`
	ForgeriesAccepted    int64   `json:"forgeries_accepted"`
	DetailsLeaked        int64   `json:"details_leaked"`
	DetailsGranted       int64   `json:"details_granted"`
	StartupS             float64 `json:"startup_s"`
	ReadyS               float64 `json:"ready_s"`
	Errors               int64   `json:"errors"`

	// Expected failures: what a scenario's kill or cut causes and the
	// network recovers from.
	IngestRetries      int64 `json:"ingest_retries"`
	QueriesUnavailable int64 `json:"queries_unavailable"`

	Scenario     string   `json:"scenario"`
	Procs        bool     `json:"procs"`
	Seed         uint64   `json:"seed"`
	DurationS    float64  `json:"duration_s"`
	EventsPerS   float64  `json:"events_per_s"`
	Timeline     []string `json:"timeline"`      // what the scenario did, and when
	ErrorSamples []string `json:"error_samples"` // the first errors, for a start
	Failures     []string `json:"failures"`      // invariants that failed; empty when all held
	Passed       bool     `json:"passed"`
}

// check fills Failures and Passed from the invariants.
func (r *Report) check() {
	r.Failures = r.Failures[:0]
	fail := func(cond bool, format string, args ...any) {
		if cond {
			r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
		}
	}
	fail(r.LostUpdates != 0, "lost_updates = %d: an ingested event of a platform's audience never reached it", r.LostUpdates)
	fail(r.VerificationFailures != 0, "verification_failures = %d: an honest record failed verification", r.VerificationFailures)
	fail(r.DetailsLeaked != 0, "details_leaked = %d: details reached a platform without a grant", r.DetailsLeaked)
	fail(r.ForgeriesAccepted != 0, "forgeries_accepted = %d: a platform accepted a forged record", r.ForgeriesAccepted)
	fail(r.EventsIngested == 0, "no event was ingested")
	fail(r.Scenario == ScenarioRogue && r.RejectedForgeries == 0, "rogue: no forgery was offered and rejected")
	r.Passed = len(r.Failures) == 0
}

// WriteTable writes the report as a readable summary.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rows := []struct {
		k string
		v any
	}{
		{"scenario", orNone(r.Scenario)},
		{"carriers / platforms", fmt.Sprintf("%d / %d", r.Carriers, r.Platforms)},
		{"nodes up / ready (s)", fmt.Sprintf("%.2f / %.2f", r.StartupS, r.ReadyS)},
		{"parcels", r.Parcels},
		{"events ingested", fmt.Sprintf("%d (%.0f/s)", r.EventsIngested, r.EventsPerS)},
		{"updates delivered", r.UpdatesDelivered},
		{"watch lag p50 / p99 (ms)", fmt.Sprintf("%.1f / %.1f", r.WatchLagP50ms, r.WatchLagP99ms)},
		{"queries", r.Queries},
		{"query p50 / p99 (ms)", fmt.Sprintf("%.2f / %.2f", r.QueryP50ms, r.QueryP99ms)},
		{"details shown with a grant", r.DetailsGranted},
		{"forgeries rejected", r.RejectedForgeries},
		{"ingest retries / queries unavailable", fmt.Sprintf("%d / %d", r.IngestRetries, r.QueriesUnavailable)},
		{"errors", r.Errors},
		{"lost updates", r.LostUpdates},
		{"verification failures", r.VerificationFailures},
		{"details leaked", r.DetailsLeaked},
		{"duplicates after dedupe", r.DuplicatesAfterDedup},
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "  %s\t%v\n", row.k, row.v)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range r.Timeline {
		fmt.Fprintf(w, "  - %s\n", t)
	}
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	if r.Passed {
		_, err := fmt.Fprintln(w, "PASS: no update lost, every honest record verified, no details leaked")
		return err
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "FAIL: %s\n", f)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// latencies collects durations for percentiles.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// quantile returns the q-quantile (0..1) by nearest rank, 0 with no
// samples.
func (l *latencies) quantile(q float64) time.Duration {
	l.mu.Lock()
	s := slices.Clone(l.d)
	l.mu.Unlock()
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
