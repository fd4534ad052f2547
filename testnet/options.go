package testnet

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/opentrack/opentrack/internal/options"
)

// Scenarios, as --scenario names them.
const (
	ScenarioNone      = ""
	ScenarioCrash     = "crash"     // kill -9 a carrier mid-run, then restart it
	ScenarioPartition = "partition" // cut a platform off from a carrier, then heal
	ScenarioRogue     = "rogue"     // an unregistered node impersonates a carrier
	ScenarioCutoff    = "cutoff"    // one platform disappears; the others carry on
)

// Scenarios lists every scenario name.
var Scenarios = []string{ScenarioCrash, ScenarioPartition, ScenarioRogue, ScenarioCutoff}

// ErrInvalidOptions wraps every problem Validate finds.
var ErrInvalidOptions = errors.New("testnet: invalid options")

// Options shape a testnet and its traffic. Every zero field means its
// default.
type Options struct {
	// Carriers is how many carrier nodes run. The first is a UPU S10
	// postal operator; the others cycle through other number schemes.
	// Default: 5.
	Carriers int
	// Platforms is how many platform nodes run. Default: 3.
	Platforms int
	// Parcels is how many parcels are in flight at once, spread over the
	// carriers; a delivered or returned parcel is replaced by a new one.
	// Default: 1000.
	Parcels int
	// Rate is the scan events per second over all carriers. Default:
	// Parcels/4, so that a parcel's life of about eight events takes about
	// half a minute.
	Rate float64
	// QueryRate is the track lookups per second over all platforms.
	// Default: Rate, at least 20.
	QueryRate float64
	// Duration is how long traffic runs; a final drain follows. Default:
	// 60s.
	Duration time.Duration
	// Seed makes lifecycles, bookings and queries repeatable. Default:
	// 0, which picks one from the clock; the Report shows it.
	Seed uint64
	// Scenario is one of Scenarios, or "" for traffic alone.
	Scenario string
	// Procs runs every carrier as a separate `opentrack node` process.
	// Default: false, every node in this process.
	Procs bool
	// Command builds the command that runs `opentrack node` with args,
	// for Procs. Default: this executable (os.Executable) with args,
	// which is right for the opentrack binary; tests set their own.
	Command CommandFunc
	// Dir holds the repos and logs. Default: a temporary directory,
	// removed on Close.
	Dir string
	// Drain bounds how long Run waits after traffic for every update to
	// arrive. Default: 30s.
	Drain time.Duration
	// Logger receives the testnet's own logs; nodes log to it at Warn and
	// above, or to DIR/<node>.log with Procs. Default: discard.
	Logger *slog.Logger
	// Progress, when set, is called about twice a second with the
	// counters so far, for a live display.
	Progress func(Stats)
	// Follow, when set, receives each verified event of one parcel as the
	// platform that booked it receives it: the first parcel whose whole
	// history the first platform watches. Default: nil, none followed.
	Follow func(Followed)
	// Fault plants a deliberate defect, so that the testnet's own tests
	// can show each verdict fails when it should. Default: FaultNone. No
	// command sets it.
	Fault Fault
}

// Fault is a defect planted on purpose by a test of the verdicts.
type Fault string

// Faults, each caught by the invariant named.
const (
	FaultNone Fault = ""
	// FaultAudience adds a second platform to the audience of some
	// events: audience_leaked.
	FaultAudience Fault = "audience"
	// FaultRestart makes the crash scenario's restart fail:
	// scenario_failures.
	FaultRestart Fault = "restart"
	// FaultRejectEvent sends one honest event with a status no carrier
	// knows: rejected_events.
	FaultRejectEvent Fault = "reject-event"
	// FaultStaleLookup drops the newest event from some lookups, as a
	// node serving an old copy would: stale_lookups.
	FaultStaleLookup Fault = "stale-lookup"
	// FaultNotFound turns some lookups of booked parcels into not_found:
	// lookups_refused.
	FaultNotFound Fault = "not-found"
	// FaultSilentRogue has the rogue record nothing, so it answers
	// not_found rather than offering forgeries: forged_records_rejected.
	FaultSilentRogue Fault = "silent-rogue"
)

// Faults lists every fault.
var Faults = []Fault{FaultAudience, FaultRestart, FaultRejectEvent, FaultStaleLookup, FaultNotFound, FaultSilentRogue}

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else, but for Rate and QueryRate, which
// follow Parcels and Rate.
var defaults = Options{
	Carriers:  5,
	Platforms: 3,
	Parcels:   1000,
	Duration:  60 * time.Second,
	Drain:     30 * time.Second,
	Logger:    slog.New(slog.DiscardHandler),
}

// Limits that keep a testnet inside one machine.
const (
	maxCarriers  = 200
	maxPlatforms = 100
)

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	options.Default(&o.Carriers, defaults.Carriers)
	options.Default(&o.Platforms, defaults.Platforms)
	options.Default(&o.Parcels, defaults.Parcels)
	options.Default(&o.Rate, float64(o.Parcels)/4)
	options.Default(&o.QueryRate, max(o.Rate, 20))
	options.Default(&o.Duration, defaults.Duration)
	options.Default(&o.Drain, defaults.Drain)
	options.Default(&o.Logger, defaults.Logger)
	return o
}

// Validate checks o after EnsureDefaults and reports every problem at once.
func (o *Options) Validate() error {
	var p []string
	if o.Carriers < 1 || o.Carriers > maxCarriers {
		p = append(p, fmt.Sprintf("carriers %d: want 1 to %d", o.Carriers, maxCarriers))
	}
	if o.Platforms < 1 || o.Platforms > maxPlatforms {
		p = append(p, fmt.Sprintf("platforms %d: want 1 to %d", o.Platforms, maxPlatforms))
	}
	if o.Parcels < o.Carriers {
		p = append(p, fmt.Sprintf("parcels %d: want at least one per carrier (%d)", o.Parcels, o.Carriers))
	}
	if o.Rate <= 0 || o.QueryRate < 0 {
		p = append(p, fmt.Sprintf("rate %g and query rate %g: the event rate must be positive, the query rate not negative", o.Rate, o.QueryRate))
	}
	if o.Duration <= 0 || o.Drain <= 0 {
		p = append(p, "duration and drain must be positive")
	}
	if o.Scenario != ScenarioNone && !slices.Contains(Scenarios, o.Scenario) {
		p = append(p, fmt.Sprintf("scenario %q: want one of %s", o.Scenario, strings.Join(Scenarios, ", ")))
	}
	if o.Scenario == ScenarioCutoff && o.Platforms < 2 {
		p = append(p, "cutoff needs at least 2 platforms: one disappears, the others go on")
	}
	if o.Scenario == ScenarioRogue && o.Carriers < 2 {
		p = append(p, "rogue needs at least 2 carriers: it impersonates the second")
	}
	if o.Fault != FaultNone && !slices.Contains(Faults, o.Fault) {
		p = append(p, fmt.Sprintf("fault %q: unknown", o.Fault))
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(p, "; "))
	}
	return nil
}
