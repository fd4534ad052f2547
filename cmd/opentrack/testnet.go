package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/opentrack/opentrack/testnet"
)

// plantedFault is set only by tests, to show that a broken run exits 1.
var plantedFault testnet.Fault

func testnetCmd() *cobra.Command {
	o := testnet.Options{Fault: plantedFault}
	var jsonFile string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "testnet",
		Short: "Run many carriers and platforms on loopback with simulated traffic, and check that nothing is lost, forged or leaked",
		Long: `testnet creates a registry authority, carriers (one a UPU S10 postal
operator, the others with other number schemes) and platforms, signs the
registry, and starts every node on loopback. Carriers ingest simulated
parcel lifecycles through their admin APIs; each platform watches the
parcels it booked and looks up random numbers, verifying everything.

Scenarios break the network on purpose:
  crash      kill a carrier mid-run and restart it; no update is lost
  partition  cut a platform off from a carrier, then heal; it catches up
  rogue      an unregistered node impersonates a carrier; every record is rejected
  cutoff     one platform disappears; the others keep tracking directly

PASS means nothing went wrong. The exit status is 1 when an invariant
fails: any of lost_updates, verification_failures, details_leaked,
audience_leaked, forgeries_accepted, scenario_failures, rejected_events,
stale_lookups, lookups_refused or errors above zero; for rogue, no forged
record or registry rejected. The report names each one that failed
(failed_invariants in --json).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTestnet(cmd.OutOrStdout(), &o, jsonFile, verbose)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Carriers, "carriers", 5, "carrier nodes")
	f.IntVar(&o.Platforms, "platforms", 3, "platform nodes")
	f.IntVar(&o.Parcels, "parcels", 1000, "parcels in flight at once; each delivered parcel is replaced by a new one")
	f.Float64Var(&o.Rate, "rate", 0, "scan events per second over all carriers (default parcels/4)")
	f.Float64Var(&o.QueryRate, "query-rate", 0, "track lookups per second over all platforms (default the event rate, at least 20)")
	f.DurationVar(&o.Duration, "duration", 60*time.Second, "how long traffic runs")
	f.DurationVar(&o.Drain, "drain", 30*time.Second, "how long to wait after traffic for every update to arrive")
	f.Uint64Var(&o.Seed, "seed", 0, "random seed for lifecycles, bookings and queries (default from the clock)")
	f.StringVar(&o.Scenario, "scenario", "", "crash, partition, rogue or cutoff")
	f.BoolVar(&o.Procs, "procs", false, "run every carrier as a separate `opentrack node` process")
	f.StringVar(&o.Dir, "dir", "", "keep the repos and logs here (default a temporary directory, removed at the end)")
	f.StringVar(&jsonFile, "json", "", "write the report as JSON to this file")
	f.BoolVarP(&verbose, "verbose", "v", false, "log node warnings to stderr as well as to the log file")
	return cmd
}

// runTestnet runs the testnet of o with the live display on out, then
// prints the report and writes it to jsonFile when set.
func runTestnet(out io.Writer, o *testnet.Options, jsonFile string, verbose bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.Dir != "" {
		if err := os.MkdirAll(o.Dir, 0o700); err != nil {
			return err
		}
	}
	closeLog, err := testnetLogger(o, verbose)
	if err != nil {
		return err
	}
	defer closeLog()
	o.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return err
	}
	display := newLiveDisplay(out, o.Duration)
	o.Progress, o.Follow = display.update, display.follow
	fmt.Fprintf(out, "starting %d carriers and %d platforms on loopback (%s)...\n", o.Carriers, o.Platforms, modeName(o.Procs))
	rep, err := testnet.Run(ctx, *o)
	display.finish()
	if rep == nil {
		return err
	}
	followedSummary(out, rep.Followed, o.Dir != "")
	fmt.Fprintln(out)
	if werr := rep.WriteTable(out); werr != nil {
		return werr
	}
	if jsonFile != "" {
		if jerr := writeJSONFile(jsonFile, rep); jerr != nil {
			return jerr
		}
	}
	if err != nil {
		return err
	}
	if !rep.Passed {
		return &exitError{code: 1, err: fmt.Errorf("testnet: %d invariant(s) failed", len(rep.Failures))}
	}
	return nil
}

func modeName(procs bool) string {
	if procs {
		return "carriers as processes"
	}
	return "one process"
}

// testnetLogger sends node warnings to DIR/testnet.log when a directory
// is kept, and to stderr with --verbose; otherwise they are dropped, and
// what matters reaches the report.
func testnetLogger(o *testnet.Options, verbose bool) (func(), error) {
	var w []io.Writer
	closer := func() {}
	if o.Dir != "" {
		f, err := os.OpenFile(filepath.Join(o.Dir, "testnet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		w, closer = append(w, f), func() { f.Close() }
	}
	if verbose {
		w = append(w, os.Stderr)
	}
	if len(w) > 0 {
		o.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(w...), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return closer, nil
}

// liveDisplay shows the run's counters: a bar on a terminal, a line every
// five seconds otherwise.
type liveDisplay struct {
	out      io.Writer
	bar      *progressbar.ProgressBar
	total    time.Duration
	mu       sync.Mutex // update and follow come from different goroutines
	lastLine time.Time
	followed bool
}

func newLiveDisplay(out io.Writer, total time.Duration) *liveDisplay {
	d := &liveDisplay{out: out, total: total}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		d.bar = progressbar.NewOptions64(int64(total/time.Millisecond),
			progressbar.OptionSetWriter(out),
			progressbar.OptionSetWidth(20),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionClearOnFinish())
	}
	return d
}

// follow prints an event of the followed parcel as its platform verified
// it, above the bar on a terminal.
func (d *liveDisplay) follow(f testnet.Followed) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bar != nil {
		_ = d.bar.Clear()
	}
	if !d.followed {
		fmt.Fprintf(d.out, "following %s of carrier %s, each event as %s verifies it:\n", f.Number, f.Carrier, f.Platform)
		d.followed = true
	}
	fmt.Fprintf(d.out, "  %s\n", eventLine(f.Event))
}

// followedSummary names the followed parcel once the run is over, and
// how to look it up: with the repos kept, the carrier can be started
// again and asked as the platform that followed it.
func followedSummary(out io.Writer, f *testnet.FollowedParcel, kept bool) {
	if f == nil {
		return
	}
	fmt.Fprintf(out, "followed %s (carrier %s): %d verified events, the last %s\n", f.Number, f.Carrier, f.Events, f.LastStatus)
	if !kept {
		fmt.Fprintln(out, "to look it up after a run, keep the repos with --dir DIR")
		return
	}
	fmt.Fprintf(out, "look it up yourself: start its carrier again, and ask as %s:\n", f.Platform)
	fmt.Fprintf(out, "  %s node --repo %s &\n", progName(), f.CarrierRepo)
	fmt.Fprintf(out, "  %s track --repo %s %s\n", progName(), f.PlatformRepo, f.Number)
}

// progName is how the user ran this binary, for commands to copy:
// bin/opentrack as make run calls it, plain opentrack from go run or a
// test binary.
func progName() string {
	if p := os.Args[0]; p != "" && !strings.Contains(p, "go-build") && !strings.HasSuffix(p, ".test") {
		return p
	}
	return "opentrack"
}

func (d *liveDisplay) update(s testnet.Stats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	desc := fmt.Sprintf("%-7s events %d · updates %d · queries %d · lag p99 %.1f ms · errors %d",
		s.Phase, s.EventsIngested, s.UpdatesDelivered, s.Queries, float64(s.WatchLagP99.Microseconds())/1000, s.Errors)
	if d.bar != nil {
		d.bar.Describe(desc)
		_ = d.bar.Set64(int64(min(s.Elapsed, d.total) / time.Millisecond))
		return
	}
	if time.Since(d.lastLine) >= 5*time.Second {
		d.lastLine = time.Now()
		fmt.Fprintf(d.out, "%5.0fs  %s\n", s.Elapsed.Seconds(), desc)
	}
}

func (d *liveDisplay) finish() {
	if d.bar != nil {
		_ = d.bar.Finish()
	}
}
