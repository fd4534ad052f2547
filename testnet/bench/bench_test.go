package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/testnet/bench"
)

// cmdEnv makes the test binary act as `opentrack node --repo DIR` and
// `opentrack bench baseline --repo DIR`, the two processes Run starts.
const cmdEnv = "OPENTRACK_BENCH_CMD"

func TestMain(m *testing.M) {
	if os.Getenv(cmdEnv) == "1" {
		os.Exit(runCommand(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runCommand(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir := args[len(args)-1] // both end in --repo DIR
	var err error
	switch {
	case len(args) == 3 && args[0] == "node":
		var r *repo.Repo
		if r, err = repo.Open(dir); err == nil {
			err = node.Run(ctx, r, node.Options{})
		}
	case len(args) == 4 && args[0] == "bench" && args[1] == "baseline":
		err = bench.ServeBaseline(ctx, dir, "127.0.0.1:0")
	default:
		err = fmt.Errorf("unexpected command %q", args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func testCommand(args ...string) *exec.Cmd {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), cmdEnv+"=1")
	return cmd
}

// contractKeys are the keys issue 8 names for bench/results.json.
var contractKeys = []string{
	"ingest_events_per_s", "store_put_events_per_s", "track_lookups_per_s_c1", "track_lookups_per_s_c16",
	"track_lookups_per_s_c64", "track_p50_ms_c16", "track_p99_ms_c16", "quic_track_lookups_per_s_c16",
	"https_json_lookups_per_s_c16", "batch_track_parcels_per_s", "watch_lag_p50_ms", "watch_lag_p99_ms",
	"rss_idle_mb", "rss_load_mb", "disk_bytes_per_event", "testnet_startup_s",
}

// TestRun runs the whole harness small: every phase must complete, every
// contract figure must be measured (positive, except lags and latencies
// that may round to zero), and nothing may be lost. Speed is not judged
// here; `make bench` does that.
func TestRun(t *testing.T) {
	o := bench.Options{
		Parcels: 3000, EventsPerParcel: 2, Batch: 500, Posters: 2,
		Concurrency: []int{1, 16, 64}, BatchConcurrency: 2, Rounds: 2, Round: 300 * time.Millisecond,
		WatchRate: 1000, WatchParcels: 300, WatchDuration: time.Second,
		Settle: 500 * time.Millisecond, TestnetCarriers: 3, TestnetPlatforms: 2,
		Dir: t.TempDir(), Command: testCommand,
	}
	res, err := bench.Run(context.Background(), o)
	require.NoError(t, err)
	require.Empty(t, res.Failures)

	b, err := json.Marshal(res)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range contractKeys {
		v, ok := m[k].(float64)
		require.True(t, ok, "key %s missing or not a number", k)
		if k != "watch_lag_p50_ms" && k != "watch_lag_p99_ms" {
			require.Positive(t, v, k)
		}
	}
	env := m["env"].(map[string]any)
	for _, k := range []string{"cpus", "go_version", "commit"} {
		require.NotEmpty(t, env[k], "env.%s", k)
	}

	require.Equal(t, uint64(o.Parcels*o.EventsPerParcel), res.StoreEvents)
	require.Equal(t, res.WatchEvents, res.WatchDelivered, "every acknowledged event reached the watcher")
	require.Equal(t, o.WatchRate*int(o.WatchDuration/time.Second), res.WatchEvents)
	transports := map[string]int{}
	for _, l := range res.Lookups {
		transports[l.Transport]++
		require.Positive(t, l.Requests)
	}
	require.Equal(t, map[string]int{"tcp": 5, "quic": 3, "https-json": 3, "store": 1}, transports)
	require.Positive(t, res.StoreLookupsPerSC16)
	require.Len(t, res.Targets, 10)
	require.Positive(t, res.TestnetNodesUpS)
	require.GreaterOrEqual(t, res.TestnetStartupS, res.TestnetNodesUpS)

	// Some phases again over the same store: nothing is ingested anew,
	// the watch phase continues the parcels past what the store holds,
	// and only the phases that ran are judged.
	o.Only = []string{"lookups", "watch"}
	again, err := bench.Run(context.Background(), o)
	require.NoError(t, err)
	require.Empty(t, again.Failures)
	require.Zero(t, again.IngestEventsPerS)
	require.Positive(t, again.TrackLookupsPerSC16)
	require.Equal(t, again.WatchEvents, again.WatchDelivered)
	var judged []string
	for _, tg := range again.Targets {
		judged = append(judged, tg.Key)
	}
	require.ElementsMatch(t, []string{"track_lookups_per_s_c16", "track_p99_ms_c16", "batch_track_parcels_per_s",
		"watch_lag_p99_ms", "rss_idle_mb"}, judged)
}

// TestOptionsValidate: every problem is reported at once.
func TestOptionsValidate(t *testing.T) {
	o := bench.Options{Parcels: -1, Concurrency: []int{0}, WatchRate: 50, WatchParcels: 20_000}
	err := o.EnsureDefaults().Validate()
	require.ErrorIs(t, err, bench.ErrInvalidOptions)
	o = bench.Options{Parcels: -1, Concurrency: []int{0}, WatchRate: 50, WatchParcels: 20_000, Only: []string{"lookups", "nap"}, CacheMB: -1}
	err = o.EnsureDefaults().Validate()
	for _, want := range []string{"must be positive", "concurrency 0", "watch rate 50", "watch parcels 20000",
		`phase "nap"`, "without the ingest phase", "cache -1 MB"} {
		require.ErrorContains(t, err, want)
	}
	require.NoError(t, new(bench.Options).EnsureDefaults().Validate())
}
