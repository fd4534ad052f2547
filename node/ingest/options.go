package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/opentrack/opentrack/internal/options"
	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// Errors returned by New, Ingest and DecodeBatch. Callers match them with errors.Is.
var (
	// ErrInvalidOptions means Options.Validate found a problem.
	ErrInvalidOptions = errors.New("ingest: invalid options")
	// ErrInvalidConfig means a Config given to New is unusable.
	ErrInvalidConfig = errors.New("ingest: invalid config")
	// ErrTooManyEvents means a batch holds more than MaxBatchEvents events.
	ErrTooManyEvents = errors.New("ingest: too many events in one batch")
	// ErrMediaType means DecodeBatch was given a media type it does not
	// read (IsMediaType).
	ErrMediaType = errors.New("ingest: unsupported media type")
	// ErrCommit means the store commit failed, so nothing of the batch is
	// acknowledged. Posting the batch again is safe: ingest is idempotent
	// on the carrier's event id.
	ErrCommit = errors.New("ingest: store commit failed")
)

// Defaults of Options by name, for callers and tests; the defaults table
// gives each to its field.
const (
	DefaultMaxBodyBytes    = 32 << 20
	DefaultMaxBatchEvents  = 10000
	DefaultFutureSkew      = 5 * time.Minute
	DefaultConflictRetries = 3
	DefaultMaxIDLen        = 128
	DefaultGroupEvents     = 1000
)

// Options tune ingest. The zero value of every field means its default;
// EnsureDefaults fills them in and Validate reports every problem at once.
type Options struct {
	// MaxBodyBytes bounds one batch body, in bytes: node/admin refuses a
	// larger one with 413 before reading it to the end. Default 32 MiB.
	MaxBodyBytes int64
	// MaxBatchEvents bounds the events of one request (413 beyond it), and
	// so of one store batch. Default 10000.
	MaxBatchEvents int
	// FutureSkew is how far an event's time may lie ahead of the node's
	// clock, to tolerate scanner clocks that run fast. Default 5 minutes.
	FutureSkew time.Duration
	// SignWorkers is the number of goroutines that sign parcel heads of
	// one commit in parallel; Ed25519 signing dominates ingest CPU.
	// Default runtime.GOMAXPROCS(0).
	SignWorkers int
	// ConflictRetries is how many times a commit is rebuilt after the
	// store reports that another writer appended to one of its parcels
	// first (store.ErrConflict). Default 3.
	ConflictRetries int
	// MaxIDLen bounds a carrier event id, in bytes. Default 128.
	MaxIDLen int
	// GroupEvents is the size, in events, at which a group commit stops
	// merging queued requests into one store batch. Merging amortizes the
	// fsync and per-commit work over small requests; past about a thousand
	// events that work is already amortized, and merging more makes every
	// merged caller wait for the whole group instead of decoding its next
	// batch while this one commits. Default 1000.
	GroupEvents int
}

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else, but for SignWorkers, which follows
// GOMAXPROCS as it is when EnsureDefaults runs.
var defaults = Options{
	MaxBodyBytes:    DefaultMaxBodyBytes,
	MaxBatchEvents:  DefaultMaxBatchEvents,
	FutureSkew:      DefaultFutureSkew,
	ConflictRetries: DefaultConflictRetries,
	MaxIDLen:        DefaultMaxIDLen,
	GroupEvents:     DefaultGroupEvents,
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	options.Default(&o.MaxBodyBytes, defaults.MaxBodyBytes)
	options.Default(&o.MaxBatchEvents, defaults.MaxBatchEvents)
	options.Default(&o.FutureSkew, defaults.FutureSkew)
	options.Default(&o.SignWorkers, runtime.GOMAXPROCS(0))
	options.Default(&o.ConflictRetries, defaults.ConflictRetries)
	options.Default(&o.MaxIDLen, defaults.MaxIDLen)
	options.Default(&o.GroupEvents, defaults.GroupEvents)
	return o
}

// Validate reports every out-of-range field together.
func (o *Options) Validate() error {
	var p []string
	for _, f := range []struct {
		name     string
		value    any
		negative bool
	}{
		{"MaxBodyBytes", o.MaxBodyBytes, o.MaxBodyBytes < 0},
		{"MaxBatchEvents", o.MaxBatchEvents, o.MaxBatchEvents < 0},
		{"FutureSkew", o.FutureSkew, o.FutureSkew < 0},
		{"SignWorkers", o.SignWorkers, o.SignWorkers < 0},
		{"ConflictRetries", o.ConflictRetries, o.ConflictRetries < 0},
		{"MaxIDLen", o.MaxIDLen, o.MaxIDLen < 0},
		{"GroupEvents", o.GroupEvents, o.GroupEvents < 0},
	} {
		if f.negative {
			p = append(p, fmt.Sprintf("%s %v is negative", f.name, f.value))
		}
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(p, "; "))
	}
	return nil
}

// Store is what ingest needs of a store: the event log it appends to
// and reads, and the details its parcel view shows. A store that is also
// a store.HeadsReader has the heads of a batch read in one call.
type Store interface {
	store.EventLog
	store.DetailsReader
}

// Config is what an Ingester works with: whose events, how to sign them
// and where to keep them.
type Config struct {
	// Carrier is the carrier code every event is recorded under.
	Carrier string
	// Schemes are the carrier's tracking-number schemes from the registry;
	// a number must match one. Empty means protocol.DefaultScheme.
	Schemes []protocol.Scheme
	// Signer signs parcel heads with the carrier key.
	Signer *protocol.Signer
	// Store is where events are committed.
	Store Store
	// Metrics receives ingest counters; nil disables them.
	Metrics *metrics.Metrics
	// Logger receives commit failures; nil discards them.
	Logger *slog.Logger
	// Space, when set, guards the store's free space: a batch that comes
	// while it is below the reserve is refused (507 over HTTP) before
	// anything is read or written. Nil: no check (postgres, memstore).
	Space *store.Space
	// Now is the clock for the future-time check and head signing times;
	// nil means time.Now.
	Now func() time.Time
}
