package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/opentrack/opentrack/testnet/bench"
)

func benchCmd() *cobra.Command {
	var o bench.Options
	var out string
	var quick bool
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure ingest, lookups, watch lag, memory, disk and testnet start-up against DESIGN section 8",
		Long: `bench starts a carrier node as its own process on loopback and measures,
in one run: durable ingest through the admin API and the raw store put of
the same events; disk bytes per event after compaction; the node's idle
RSS; single-number lookups over TCP and QUIC at each concurrency, and
batched track with and without verification; the same lookups through an
HTTPS+JSON server over the same store; watch delivery lag; and how long a
testnet of 50 carriers and 20 platforms takes to start.

It prints a table and writes the figures, the environment and the judged
targets as JSON (bench/README.md explains every key). The exit status is
0 even when a target is missed; it is 1 only when a figure could not be
measured.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if quick {
				o.Parcels, o.EventsPerParcel, o.Rounds, o.Round = 10_000, 4, 1, time.Second
				o.WatchDuration, o.TestnetCarriers, o.TestnetPlatforms = 3*time.Second, 10, 5
			}
			return runBench(cmd.OutOrStdout(), o, out, cpuProfile)
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "bench/results.json", "write the results as JSON to this file (empty: do not write)")
	f.IntVar(&o.Parcels, "parcels", 125_000, "parcels in the store")
	f.IntVar(&o.EventsPerParcel, "events-per-parcel", 8, "events per parcel, one per ingest round (parcels x this = store size)")
	f.IntVar(&o.Batch, "batch", 1000, "events per ingest request")
	f.IntVar(&o.Posters, "posters", 4, "concurrent ingest connections")
	f.IntSliceVar(&o.Concurrency, "concurrency", []int{1, 16, 64}, "concurrent single-number lookups measured on each transport")
	f.IntVar(&o.BatchConcurrency, "batch-concurrency", 16, "concurrent 100-number requests of batched track")
	f.IntVar(&o.Rounds, "rounds", 3, "rounds per lookup figure; the median is reported")
	f.DurationVar(&o.Round, "round", 3*time.Second, "length of one round of lookups")
	f.IntVar(&o.WatchRate, "watch-rate", 10_000, "ingest events/s while watch lag is measured")
	f.IntVar(&o.WatchParcels, "watch-parcels", 10_000, "parcels the subscription watches")
	f.DurationVar(&o.WatchDuration, "watch-duration", 10*time.Second, "how long the watch phase ingests")
	f.IntVar(&o.TestnetCarriers, "testnet-carriers", 50, "carriers of the testnet whose start-up is timed")
	f.IntVar(&o.TestnetPlatforms, "testnet-platforms", 20, "platforms of that testnet")
	f.BoolVar(&o.SkipTestnet, "skip-testnet", false, "leave the testnet start-up out")
	f.IntVar(&o.CacheMB, "cache-mb", 0, "the node's block cache in MB ([store] cache_mb; 0: the node's default)")
	f.StringSliceVar(&o.Only, "only", nil, "run only these phases ("+strings.Join(bench.Phases, ", ")+"); without ingest, the store an earlier --dir run left is reused")
	f.StringVar(&o.Dir, "dir", "", "keep the stores and logs here (default a temporary directory, removed at the end)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write the harness's own CPU profile here (the node's is on its admin API, /debug/pprof)")
	f.BoolVar(&quick, "quick", false, "a small run (10k parcels x 4, one 1 s round, 10x5 testnet) to check the harness, not to quote")
	cmd.AddCommand(benchBaselineCmd())
	return cmd
}

// runBench runs the harness with a phase bar on w, prints the table and
// writes the results to out when set.
func runBench(w io.Writer, o bench.Options, out, cpuProfile string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))
	if cpuProfile != "" {
		stopProfile, err := startCPUProfile(cpuProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	p := newPhaseBar(w)
	o.Progress = p.update
	res, err := bench.Run(ctx, o)
	p.finish()
	if err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := res.WriteTable(w); err != nil {
		return err
	}
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		if err := writeJSONFile(out, res); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nwrote %s\n", out)
	}
	if len(res.Failures) > 0 {
		return &exitError{code: 1, err: fmt.Errorf("bench: %d figure(s) could not be measured", len(res.Failures))}
	}
	return nil
}

// writeJSONFile writes v to path as indented JSON with a final newline.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// benchBaselineCmd is the HTTPS+JSON baseline server the harness runs as
// its own process over a stopped node's store.
func benchBaselineCmd() *cobra.Command {
	var dir, listen string
	cmd := &cobra.Command{
		Use:    "baseline",
		Short:  "Serve a carrier repo's store as an HTTPS+JSON tracking API (the benchmark's baseline)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return bench.ServeBaseline(ctx, dir, listen)
		},
	}
	cmd.Flags().StringVar(&dir, "repo", "", "carrier repo whose store is served (its node stopped)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "address to listen on")
	_ = cmd.MarkFlagRequired("repo")
	return cmd
}

// phaseBar shows a long phase's progress on a terminal.
type phaseBar struct {
	mu    sync.Mutex // ingest posters report concurrently
	out   io.Writer
	tty   bool
	phase string
	bar   *progressbar.ProgressBar
}

func newPhaseBar(out io.Writer) *phaseBar {
	f, ok := out.(*os.File)
	return &phaseBar{out: out, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *phaseBar) update(phase string, done, total int64) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if phase != p.phase {
		p.end()
		p.phase = phase
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(p.out), progressbar.OptionSetDescription(phase),
			progressbar.OptionSetWidth(30), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionShowCount(),
			progressbar.OptionClearOnFinish())
	}
	_ = p.bar.Set64(done)
}

func (p *phaseBar) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.end()
}

func (p *phaseBar) end() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}

// startCPUProfile profiles this process into path until the returned
// function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
