package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Results is what a run measured. The JSON keys are a contract for
// scripts that track performance over time (bench/results.json); new
// figures are added, none is renamed.
type Results struct {
	Env Env `json:"env"`

	// Durable ingest through the admin API, and the raw store put of the
	// same events.
	IngestEventsPerS float64 `json:"ingest_events_per_s"`
	IngestBatchP50ms float64 `json:"ingest_batch_p50_ms"`
	IngestBatchP99ms float64 `json:"ingest_batch_p99_ms"`
	// IngestNodeCPUusPerEvent is the node process's CPU time (user and
	// system) per ingested event: what the node costs whatever else runs.
	IngestNodeCPUusPerEvent float64 `json:"ingest_node_cpu_us_per_event"`
	StorePutEventsPerS      float64 `json:"store_put_events_per_s"`
	StoreEvents             uint64  `json:"store_events"`

	// Single-number lookups over libp2p on TCP (Noise, yamux).
	TrackLookupsPerSC1  float64 `json:"track_lookups_per_s_c1"`
	TrackLookupsPerSC16 float64 `json:"track_lookups_per_s_c16"`
	TrackLookupsPerSC64 float64 `json:"track_lookups_per_s_c64"`
	TrackP50msC16       float64 `json:"track_p50_ms_c16"`
	TrackP99msC16       float64 `json:"track_p99_ms_c16"`
	// The same on QUIC, and through the HTTPS+JSON baseline.
	QUICTrackLookupsPerSC16 float64 `json:"quic_track_lookups_per_s_c16"`
	QUICTrackP99msC16       float64 `json:"quic_track_p99_ms_c16"`
	HTTPSJSONLookupsPerSC16 float64 `json:"https_json_lookups_per_s_c16"`
	// StoreLookupsPerSC16 is the same lookups' store reads in the
	// harness's process, no network: the ceiling of DESIGN section 8.
	StoreLookupsPerSC16      float64 `json:"store_lookups_per_s_c16"`
	HTTPSJSONP99msC16        float64 `json:"https_json_p99_ms_c16"`
	P2POverHTTPSC16          float64 `json:"p2p_over_https_c16"`
	QUICOverHTTPSC16         float64 `json:"quic_over_https_c16"`
	Lookups                  []Load  `json:"lookups"` // every transport and concurrency
	BatchTrackParcelsPerS    float64 `json:"batch_track_parcels_per_s"`
	BatchTrackP99ms          float64 `json:"batch_track_p99_ms"`
	VerifiedBatchParcelsPerS float64 `json:"verified_batch_track_parcels_per_s"`

	// Watch delivery lag, from the harness's receipt of the ingest
	// acknowledgement to its receipt of the verified update (zero when the
	// update comes first), and from the ingest request's start.
	WatchLagP50ms         float64 `json:"watch_lag_p50_ms"`
	WatchLagP99ms         float64 `json:"watch_lag_p99_ms"`
	WatchLagMaxms         float64 `json:"watch_lag_max_ms"`
	WatchLagFromPostP99ms float64 `json:"watch_lag_from_post_p99_ms"`
	WatchEventsPerS       float64 `json:"watch_events_per_s"`
	WatchEvents           int     `json:"watch_events"`
	WatchDelivered        int     `json:"watch_delivered"`
	// CPU time per watch-phase event of the node (ingest and serving the
	// update) and of the harness (posting, and verifying the update).
	WatchNodeCPUusPerEvent    float64 `json:"watch_node_cpu_us_per_event"`
	WatchHarnessCPUusPerEvent float64 `json:"watch_harness_cpu_us_per_event"`

	// Node memory, from /proc: idle after a restart on the full store,
	// and the peak over ingest, lookups and watch.
	RSSIdleMB float64 `json:"rss_idle_mb"`
	RSSLoadMB float64 `json:"rss_load_mb"`
	// The peak of each node run: ingest, lookups, watch.
	RSSIngestMB float64 `json:"rss_ingest_mb"`
	RSSServeMB  float64 `json:"rss_serve_mb"`
	RSSWatchMB  float64 `json:"rss_watch_mb"`
	DiskBytes   uint64  `json:"disk_bytes"`
	DiskPerEvt  float64 `json:"disk_bytes_per_event"`

	// Testnet start-up: every node up, and every platform answered by
	// every carrier.
	TestnetNodesUpS float64 `json:"testnet_nodes_up_s"`
	TestnetStartupS float64 `json:"testnet_startup_s"`

	Targets  []Target `json:"targets"`
	Failures []string `json:"failures"` // errors that made a figure unmeasurable
	Elapsed  float64  `json:"elapsed_s"`
}

// Load is one measured lookup configuration, medians over rounds.
type Load struct {
	Transport   string  `json:"transport"` // tcp, quic, https-json
	Concurrency int     `json:"concurrency"`
	PerRequest  int     `json:"per_request"`
	Verify      bool    `json:"verify"`
	ParcelsPerS float64 `json:"parcels_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	Requests    int64   `json:"requests"`
	// CPU per parcel, µs: the serving process's, and the harness's (the
	// client, plus whatever else the harness process does meanwhile).
	ServerCPUus  float64 `json:"server_cpu_us"`
	HarnessCPUus float64 `json:"harness_cpu_us"`
}

// Env is where the figures were measured.
type Env struct {
	Date       string `json:"date"`
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	Kernel     string `json:"kernel"`
	Commit     string `json:"commit"`
	Dirty      bool   `json:"dirty"`
	Options    string `json:"options"`
	// LoadAvg is the machine's 1-minute load average when the run began
	// and when it ended (/proc/loadavg): above the CPU count, other work
	// shared the machine and the rates are low.
	LoadAvg [2]float64 `json:"load_avg"`
}

// loadAvg is the 1-minute load average, 0 where /proc does not say.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// Target is one DESIGN section 8 target and whether this run met it.
type Target struct {
	What     string  `json:"what"`
	Key      string  `json:"key"`
	Measured float64 `json:"measured"`
	Target   string  `json:"target"`
	Met      bool    `json:"met"`
}

func environment(o *Options) Env {
	e := Env{
		Date: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		Options: fmt.Sprintf("parcels=%d events_per_parcel=%d batch=%d posters=%d rounds=%d round=%s watch_rate=%d watch_parcels=%d testnet=%dx%d cache_mb=%d only=%s",
			o.Parcels, o.EventsPerParcel, o.Batch, o.Posters, o.Rounds, o.Round, o.WatchRate, o.WatchParcels, o.TestnetCarriers, o.TestnetPlatforms,
			o.CacheMB, strings.Join(o.Only, ",")),
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	// A built binary carries its commit; `go run` does not, so ask git.
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				e.Commit = s.Value
			case "vcs.modified":
				e.Dirty = s.Value == "true"
			}
		}
	}
	if e.Commit == "" {
		if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
			e.Commit = strings.TrimSpace(string(out))
		}
		if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
			e.Dirty = len(strings.TrimSpace(string(out))) > 0
		}
	}
	return e
}

// judge fills in Targets from the figures, DESIGN section 8.
func (r *Results) judge(o *Options) {
	// A target is judged when every phase its figure needs ran.
	ran := func(phases ...string) bool {
		for _, p := range phases {
			if !o.runs(p) {
				return false
			}
		}
		return true
	}
	at := func(judged bool, what, key string, v float64, target string, met bool) {
		if judged {
			r.Targets = append(r.Targets, Target{What: what, Key: key, Measured: v, Target: target, Met: met})
		}
	}
	at(ran("ingest"), "durable ingest, events/s", "ingest_events_per_s", r.IngestEventsPerS, "≥ 60000", r.IngestEventsPerS >= 60_000)
	at(ran("lookups"), "lookups/s, TCP, c=16", "track_lookups_per_s_c16", r.TrackLookupsPerSC16, "≥ 20000", r.TrackLookupsPerSC16 >= 20_000)
	at(ran("lookups"), "lookup p99 ms, TCP, c=16", "track_p99_ms_c16", r.TrackP99msC16, "≤ 5", r.TrackP99msC16 > 0 && r.TrackP99msC16 <= 5)
	at(ran("lookups", "baseline"), "p2p / HTTPS+JSON, c=16", "p2p_over_https_c16", r.P2POverHTTPSC16, "≥ 1.0", r.P2POverHTTPSC16 >= 1)
	at(ran("lookups"), "batched track, parcels/s", "batch_track_parcels_per_s", r.BatchTrackParcelsPerS, "≥ 60000", r.BatchTrackParcelsPerS >= 60_000)
	at(ran("watch"), "watch lag p99 ms", "watch_lag_p99_ms", r.WatchLagP99ms, "≤ 50", r.WatchDelivered > 0 && r.WatchLagP99ms <= 50)
	at(ran("lookups"), "idle node RSS MB", "rss_idle_mb", r.RSSIdleMB, "≤ 80", r.RSSIdleMB > 0 && r.RSSIdleMB <= 80)
	at(ran("ingest", "lookups", "watch"), "node RSS under load MB", "rss_load_mb", r.RSSLoadMB, "≤ 400", r.RSSLoadMB > 0 && r.RSSLoadMB <= 400)
	at(ran("put"), "disk bytes per event", "disk_bytes_per_event", r.DiskPerEvt, "≤ 200", r.DiskPerEvt > 0 && r.DiskPerEvt <= 200)
	at(ran("testnet"), "testnet start-up s", "testnet_startup_s", r.TestnetStartupS, "≤ 10", r.TestnetStartupS > 0 && r.TestnetStartupS <= 10)
}

// Met reports whether every target was met and nothing failed.
func (r *Results) Met() bool {
	for _, t := range r.Targets {
		if !t.Met {
			return false
		}
	}
	return len(r.Failures) == 0
}

// WriteTable writes the figures and the targets for people.
func (r *Results) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s, %d CPUs (GOMAXPROCS %d), %s, commit %.12s%s, load average %.2f at the start, %.2f at the end\n\n",
		r.Env.CPUModel, r.Env.CPUs, r.Env.GOMAXPROCS, r.Env.GoVersion, r.Env.Commit, map[bool]string{true: " (dirty)"}[r.Env.Dirty], r.Env.LoadAvg[0], r.Env.LoadAvg[1])
	fmt.Fprintf(tw, "ingest (admin API, batches of 1000)\t%.0f events/s\tbatch p50 %.1f ms, p99 %.1f ms, node CPU %.1f µs/event\n", r.IngestEventsPerS, r.IngestBatchP50ms, r.IngestBatchP99ms, r.IngestNodeCPUusPerEvent)
	fmt.Fprintf(tw, "raw store put, same events\t%.0f events/s\tingest/put %.2f\n", r.StorePutEventsPerS, ratio(r.IngestEventsPerS, r.StorePutEventsPerS))
	fmt.Fprintln(tw, "\t\t")
	fmt.Fprintln(tw, "lookups\tparcels/s\tp50 ms\tp99 ms\tCPU µs/parcel: server, harness")
	for _, l := range r.Lookups {
		name := fmt.Sprintf("%s, c=%d", l.Transport, l.Concurrency)
		if l.PerRequest > 1 {
			name += fmt.Sprintf(", %d a request", l.PerRequest)
		}
		if l.Verify {
			name += ", verified"
		}
		fmt.Fprintf(tw, "  %s\t%.0f\t%.2f\t%.2f\t%.1f, %.1f\n", name, l.ParcelsPerS, l.P50ms, l.P99ms, l.ServerCPUus, l.HarnessCPUus)
	}
	fmt.Fprintf(tw, "p2p / HTTPS+JSON at c=16\tTCP %.2fx\tQUIC %.2fx\n", r.P2POverHTTPSC16, r.QUICOverHTTPSC16)
	fmt.Fprintln(tw, "\t\t")
	fmt.Fprintf(tw, "watch lag (%d events at %.0f/s)\tp50 %.2f ms\tp99 %.2f ms\tmax %.1f ms, p99 from post %.1f ms\n",
		r.WatchEvents, r.WatchEventsPerS, r.WatchLagP50ms, r.WatchLagP99ms, r.WatchLagMaxms, r.WatchLagFromPostP99ms)
	fmt.Fprintf(tw, "watch CPU per event\tnode %.1f µs\tharness %.1f µs\n", r.WatchNodeCPUusPerEvent, r.WatchHarnessCPUusPerEvent)
	fmt.Fprintf(tw, "node RSS\tidle %.0f MB\tload %.0f MB\tpeak in ingest %.0f, lookups %.0f, watch %.0f MB\n", r.RSSIdleMB, r.RSSLoadMB, r.RSSIngestMB, r.RSSServeMB, r.RSSWatchMB)
	fmt.Fprintf(tw, "disk after compaction\t%.1f bytes/event\t%d events\n", r.DiskPerEvt, r.StoreEvents)
	if r.TestnetStartupS > 0 {
		fmt.Fprintf(tw, "testnet start-up\t%.2f s\tnodes up %.2f s\n", r.TestnetStartupS, r.TestnetNodesUpS)
	}
	fmt.Fprintln(tw, "\t\t")
	fmt.Fprintln(tw, "target\tmeasured\ttarget\t")
	for _, t := range r.Targets {
		fmt.Fprintf(tw, "  %s\t%.4g\t%s\t%s\n", t.What, t.Measured, t.Target, map[bool]string{true: "met", false: "NOT MET"}[t.Met])
	}
	for _, f := range r.Failures {
		fmt.Fprintf(tw, "failed: %s\n", f)
	}
	return tw.Flush()
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
