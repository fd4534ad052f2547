package bench

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/opentrack/opentrack/internal/options"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// ErrInvalidOptions wraps every problem Validate finds.
var ErrInvalidOptions = errors.New("bench: invalid options")

// Options size a benchmark run. Every zero field means its default.
type Options struct {
	// Parcels is how many parcels the store holds. Default: 125000.
	Parcels int
	// EventsPerParcel is how many events each parcel gets, one per
	// ingest round; Parcels x EventsPerParcel is the store's size.
	// Default: 8, the 1M events DESIGN section 8 measures against.
	EventsPerParcel int
	// Batch is the events per ingest request. Default: 1000.
	Batch int
	// Posters is how many connections post ingest batches at once.
	// Default: 4.
	Posters int

	// Concurrency lists the concurrent single-number lookups measured on
	// every transport. Default: 1, 16, 64.
	Concurrency []int
	// BatchConcurrency is the concurrent 100-number requests of batched
	// track. Default: 16.
	BatchConcurrency int
	// Rounds is how many times each lookup figure is measured; the
	// median is reported. Default: 3.
	Rounds int
	// Round is how long one round of lookups runs. Default: 3s.
	Round time.Duration

	// Settle is how long the restarted node runs before its idle RSS is
	// read, so that start-up work (opening the store, joining the DHT) is
	// over. Default: 5s.
	Settle time.Duration

	// WatchRate is the ingest rate, events/s, while watch lag is measured.
	// Default: 10000.
	WatchRate int
	// WatchParcels is how many parcels one subscription watches; the
	// events of the watch phase go to them. Default: 10000
	// (protocol.MaxWatchNumbers).
	WatchParcels int
	// WatchDuration is how long the watch phase ingests. Default: 10s.
	WatchDuration time.Duration

	// TestnetCarriers and TestnetPlatforms size the testnet whose
	// start-up is timed. Default: 50 and 20.
	TestnetCarriers, TestnetPlatforms int
	// SkipTestnet leaves the testnet start-up out. Default: false.
	SkipTestnet bool

	// CacheMB, when positive, sets the node's block cache ([store]
	// cache_mb), to weigh memory against lookups. Default: 0, the node's
	// own default.
	CacheMB int

	// Only, when not empty, runs just these phases (see Phases), for
	// iterating on one figure. Without "ingest" the store that an earlier
	// run left in Dir is reused. Default: every phase.
	Only []string

	// Dir holds the repos, stores and logs. Default: a temporary
	// directory, removed at the end.
	Dir string
	// Command builds the command that runs `opentrack` with args: the
	// node and the HTTPS baseline run as their own processes. Default:
	// this executable, which is right for the opentrack binary.
	Command testnet.CommandFunc
	// Logger receives progress lines and the harness's own logs.
	// Default: discard.
	Logger *slog.Logger
	// Progress, when set, is called as a long phase advances.
	Progress func(phase string, done, total int64)
}

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else.
var defaults = Options{
	Parcels:          125_000,
	EventsPerParcel:  8,
	Batch:            1000,
	Posters:          4,
	Concurrency:      []int{1, 16, 64},
	BatchConcurrency: 16,
	Rounds:           3,
	Round:            3 * time.Second,
	Settle:           5 * time.Second,
	WatchRate:        10_000,
	WatchParcels:     protocol.MaxWatchNumbers,
	WatchDuration:    10 * time.Second,
	TestnetCarriers:  50,
	TestnetPlatforms: 20,
	Logger:           slog.New(slog.DiscardHandler),
}

// Phases are the harness's phases, in the order they run.
var Phases = []string{"ingest", "put", "lookups", "baseline", "watch", "testnet"}

// runs reports whether phase is to run.
func (o *Options) runs(phase string) bool {
	if phase == "testnet" && o.SkipTestnet {
		return false
	}
	return len(o.Only) == 0 || slices.Contains(o.Only, phase)
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	options.Default(&o.Parcels, defaults.Parcels)
	options.Default(&o.EventsPerParcel, defaults.EventsPerParcel)
	options.Default(&o.Batch, defaults.Batch)
	options.Default(&o.Posters, defaults.Posters)
	options.DefaultSlice(&o.Concurrency, defaults.Concurrency)
	options.Default(&o.BatchConcurrency, defaults.BatchConcurrency)
	options.Default(&o.Rounds, defaults.Rounds)
	options.Default(&o.Round, defaults.Round)
	options.Default(&o.Settle, defaults.Settle)
	options.Default(&o.WatchRate, defaults.WatchRate)
	options.Default(&o.WatchParcels, defaults.WatchParcels)
	options.Default(&o.WatchDuration, defaults.WatchDuration)
	options.Default(&o.TestnetCarriers, defaults.TestnetCarriers)
	options.Default(&o.TestnetPlatforms, defaults.TestnetPlatforms)
	options.Default(&o.Logger, defaults.Logger)
	return o
}

// Validate reports every problem at once.
func (o *Options) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if o.Parcels < 1 || o.EventsPerParcel < 1 || o.Batch < 1 || o.Posters < 1 {
		bad("parcels, events per parcel, batch and posters must be positive")
	}
	if o.Batch > 10_000 {
		bad("batch %d: at most 10000 events a request", o.Batch)
	}
	for _, c := range o.Concurrency {
		if c < 1 {
			bad("concurrency %d: must be positive", c)
		}
	}
	if o.BatchConcurrency < 1 || o.Rounds < 1 || o.Round <= 0 || o.Settle < 0 {
		bad("batch concurrency, rounds and round must be positive, settle not negative")
	}
	if o.WatchRate < 100 || o.WatchDuration <= 0 {
		bad("watch rate %d: at least 100 events/s, for a positive duration", o.WatchRate)
	}
	if o.WatchParcels < 1 || o.WatchParcels > min(o.Parcels, protocol.MaxWatchNumbers) {
		bad("watch parcels %d: between 1 and min(parcels, %d)", o.WatchParcels, protocol.MaxWatchNumbers)
	}
	if per := o.WatchRate * int(watchTick) / int(time.Second); o.WatchParcels < per {
		bad("watch parcels %d: at least the %d events posted every %s, so that a batch names a parcel once", o.WatchParcels, per, watchTick)
	}
	if o.TestnetCarriers < 1 || o.TestnetPlatforms < 1 {
		bad("testnet carriers and platforms must be positive")
	}
	if o.CacheMB < 0 {
		bad("cache %d MB: must not be negative", o.CacheMB)
	}
	for _, p := range o.Only {
		if !slices.Contains(Phases, p) {
			bad("phase %q: not one of %s", p, strings.Join(Phases, ", "))
		}
	}
	if len(o.Only) > 0 && !o.runs("ingest") && o.Dir == "" {
		bad("without the ingest phase, dir must name an earlier run's directory, whose store is reused")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
	}
	return nil
}
