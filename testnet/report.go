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
	// AudienceLeaked counts events handed to a platform that did not book
	// their parcel: the audience filter let them through.
	AudienceLeaked int64 `json:"audience_leaked"`
	// ScenarioFailures counts scenario steps that failed: a kill, restart,
	// cut or heal that did not happen, a recovery that did not come, a
	// disruption nobody saw.
	ScenarioFailures int64 `json:"scenario_failures"`
	// RejectedEvents counts honest events a carrier refused.
	RejectedEvents int64 `json:"rejected_events"`
	// StaleLookups counts lookups that returned fewer events than the
	// carrier had acknowledged before the lookup began: a lost update,
	// seen at query time.
	StaleLookups int64 `json:"stale_lookups"`
	// LookupsRefused counts lookups of a booked parcel answered
	// rate_limited or not_found.
	LookupsRefused int64 `json:"lookups_refused"`
	// ForgedRecordsRejected counts the rogue's records (track answers and
	// watch updates) that platforms rejected for the reasons a forgery
	// must be rejected for; ForgedRegistriesRejected counts the forged
	// registries refused as untrusted. RejectedForgeries is their sum.
	ForgedRecordsRejected    int64 `json:"forged_records_rejected"`
	ForgedRegistriesRejected int64 `json:"forged_registries_rejected"`
	DetailsGranted           int64 `json:"details_granted"`
	// WatchDetailsGranted counts watch updates that brought the grant
	// holder the details of its own parcels.
	WatchDetailsGranted int64   `json:"watch_details_granted"`
	StartupS            float64 `json:"startup_s"`
	ReadyS              float64 `json:"ready_s"`
	Errors              int64   `json:"errors"`

	// Expected failures: what a scenario's kill or cut causes and the
	// network recovers from.
	IngestRetries      int64 `json:"ingest_retries"`
	QueriesUnavailable int64 `json:"queries_unavailable"`

	// Disruption is what the crash or partition scenario did and what it
	// caused; nil for the other scenarios.
	Disruption *Disruption `json:"disruption,omitempty"`
	// Followed is the parcel whose timeline the run followed (Options.Follow),
	// nil if no parcel started within the run.
	Followed *FollowedParcel `json:"followed,omitempty"`

	Scenario     string   `json:"scenario"`
	Procs        bool     `json:"procs"`
	Seed         uint64   `json:"seed"`
	DurationS    float64  `json:"duration_s"`
	EventsPerS   float64  `json:"events_per_s"`
	Timeline     []string `json:"timeline"`      // what the scenario did, and when
	ErrorSamples []string `json:"error_samples"` // the first errors, for a start
	Failures     []string `json:"failures"`      // invariants that failed, each "key = value: why"; empty when all held
	// FailedInvariants are the report keys of the failed invariants, for
	// scripts: "lost_updates", "errors", ...
	FailedInvariants []string `json:"failed_invariants"`
	Passed           bool     `json:"passed"`
}

// Disruption records the effect of a crash or a partition: the
// carrier's process before and after (with Procs), what a probe saw while
// the carrier was down or cut off, the failures the traffic met, and how
// the platforms caught up.
type Disruption struct {
	Carrier  string `json:"carrier"`
	Platform string `json:"platform,omitempty"` // the platform cut off, for partition
	// PIDBefore and PIDAfter are the carrier's process ids before the
	// kill and after the restart, with Procs.
	PIDBefore int `json:"pid_before,omitempty"`
	PIDAfter  int `json:"pid_after,omitempty"`
	// Probe is what a lookup made during the disruption got: a code such
	// as "unavailable". "verified" means the disruption did not happen.
	Probe string `json:"probe"`
	// FailuresSeen counts lookups of the carrier that failed and ingest
	// batches posted again while it was disrupted.
	FailuresSeen int64 `json:"failures_seen"`
	// Backlog is the number of events acknowledged for the cut-off
	// platform (or, after a crash, for any platform) that had not reached
	// it when the disruption ended; the drain proves it caught up.
	Backlog int `json:"backlog"`
	// RecoveryS is how long the platforms took to get a verified answer
	// from the carrier again; negative if they never did.
	RecoveryS float64 `json:"recovery_s"`
}

// check fills Failures, FailedInvariants and Passed from the invariants.
// Every counter of something that went wrong is an invariant, and so is
// Errors, which counts them all: PASS means nothing went wrong.
func (r *Report) check() {
	r.Failures, r.FailedInvariants = r.Failures[:0], r.FailedInvariants[:0]
	fail := func(key string, cond bool, format string, args ...any) {
		if cond {
			r.Failures = append(r.Failures, key+" "+fmt.Sprintf(format, args...))
			r.FailedInvariants = append(r.FailedInvariants, key)
		}
	}
	fail("lost_updates", r.LostUpdates != 0, "= %d: an ingested event of a platform's audience never reached it", r.LostUpdates)
	fail("verification_failures", r.VerificationFailures != 0, "= %d: an honest record failed verification", r.VerificationFailures)
	fail("details_leaked", r.DetailsLeaked != 0, "= %d: details reached a platform without a grant", r.DetailsLeaked)
	fail("audience_leaked", r.AudienceLeaked != 0, "= %d: events reached a platform that did not book their parcel", r.AudienceLeaked)
	fail("forgeries_accepted", r.ForgeriesAccepted != 0, "= %d: a platform accepted a forged record", r.ForgeriesAccepted)
	fail("scenario_failures", r.ScenarioFailures != 0, "= %d: the scenario did not do what it says, or the network did not recover", r.ScenarioFailures)
	fail("rejected_events", r.RejectedEvents != 0, "= %d: a carrier refused honest events", r.RejectedEvents)
	fail("stale_lookups", r.StaleLookups != 0, "= %d: a lookup returned fewer events than were acknowledged before it", r.StaleLookups)
	fail("lookups_refused", r.LookupsRefused != 0, "= %d: a booked parcel was answered rate_limited or not_found", r.LookupsRefused)
	fail("events_ingested", r.EventsIngested == 0, "= 0: no event was ingested")
	fail("forged_records_rejected", r.Scenario == ScenarioRogue && r.ForgedRecordsRejected == 0,
		"= 0: the rogue's records were never offered and rejected as forgeries")
	fail("forged_registries_rejected", r.Scenario == ScenarioRogue && r.ForgedRegistriesRejected == 0,
		"= 0: the forged registry was never offered and rejected as untrusted")
	fail("errors", r.Errors != 0, "= %d: see error_samples", r.Errors)
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
		{"details shown with a grant (lookups / watch updates)", fmt.Sprintf("%d / %d", r.DetailsGranted, r.WatchDetailsGranted)},
		{"forgeries rejected (records / registries)", fmt.Sprintf("%d (%d / %d)", r.RejectedForgeries, r.ForgedRecordsRejected, r.ForgedRegistriesRejected)},
		{"ingest retries / queries unavailable", fmt.Sprintf("%d / %d", r.IngestRetries, r.QueriesUnavailable)},
		{"errors", r.Errors},
		{"lost updates", r.LostUpdates},
		{"verification failures", r.VerificationFailures},
		{"details leaked", r.DetailsLeaked},
		{"audience leaked", r.AudienceLeaked},
		{"rejected events / stale lookups / refused lookups", fmt.Sprintf("%d / %d / %d", r.RejectedEvents, r.StaleLookups, r.LookupsRefused)},
		{"scenario failures", r.ScenarioFailures},
		{"duplicates after dedupe", r.DuplicatesAfterDedup},
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "  %s\t%v\n", row.k, row.v)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if d := r.Disruption; d != nil {
		fmt.Fprintf(w, "  disruption of %s: probe %s, %d failures seen, backlog %d, recovered in %.1fs", d.Carrier, d.Probe, d.FailuresSeen, d.Backlog, d.RecoveryS)
		if d.PIDBefore != 0 {
			fmt.Fprintf(w, ", pid %d -> %d", d.PIDBefore, d.PIDAfter)
		}
		fmt.Fprintln(w)
	}
	for _, t := range r.Timeline {
		fmt.Fprintf(w, "  - %s\n", t)
	}
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	if r.Passed {
		_, err := fmt.Fprintln(w, "PASS: no error; no update lost, every honest record verified, nothing leaked")
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
