package service

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opentrack/opentrack/internal/options"
	"github.com/opentrack/opentrack/protocol"
)

// ErrInvalidConfig is wrapped by constructors and Validate with the list
// of problems.
var ErrInvalidConfig = errors.New("service: invalid config")

// Options tune the protocol handlers. The zero value of a field means its
// default; EnsureDefaults fills them in and Validate checks them.
type Options struct {
	// IdleTimeout is how long a track stream may sit between requests
	// before the server resets it. Default: protocol.StreamIdleTimeout
	// (60s).
	IdleTimeout time.Duration `toml:"idle_timeout"`

	// RequestTimeout bounds reading one request once its first byte has
	// arrived, and the store lookups that answer it. It also bounds a
	// whole info exchange. Default: protocol.RequestTimeout (10s).
	RequestTimeout time.Duration `toml:"request_timeout"`

	// WriteTimeout bounds writing one response, so a peer that stops
	// reading cannot hold a handler. Default: 10s.
	WriteTimeout time.Duration `toml:"write_timeout"`

	// MaxEventsPerResult caps the events of one track result, where a
	// longer history is paged with more=true, and of one watch update,
	// which then keeps the newest. At most, and by default,
	// protocol.MaxEventsPerResult (1000).
	MaxEventsPerResult int `toml:"max_events_per_result"`

	// WatchBuffer is how many update frames a watch subscription queues
	// for its subscriber. Default: 256 frames.
	WatchBuffer int `toml:"watch_buffer"`

	// WatchStall is how long a full watch queue may go without the
	// subscriber taking a frame before the server gives up on it: it
	// sends catchup and ends the stream, and the subscriber resumes from
	// the durable feed. A queue that is full but draining (a burst, a
	// replay) is waited on. It must be below WriteTimeout, so that a
	// subscriber that reads again still gets the catchup. Default: 2s.
	WatchStall time.Duration `toml:"watch_stall"`

	// Heartbeat is how long a watch stream may go without a frame before
	// the server sends a heartbeat. At most, and by default,
	// protocol.HeartbeatInterval (15s), which the spec makes a MUST.
	Heartbeat time.Duration `toml:"heartbeat"`

	// FeedBatch is how many change-feed entries the watch service's feed
	// tailer, and a subscription catching up on its own, read from the
	// store at a time, and how many a subscription's inbox holds before
	// the tailer leaves it to catch up alone. Default: 256 entries.
	FeedBatch int `toml:"feed_batch"`
}

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else.
var defaults = Options{
	IdleTimeout:        protocol.StreamIdleTimeout,
	RequestTimeout:     protocol.RequestTimeout,
	WriteTimeout:       10 * time.Second,
	MaxEventsPerResult: protocol.MaxEventsPerResult,
	WatchBuffer:        256,
	WatchStall:         2 * time.Second,
	Heartbeat:          protocol.HeartbeatInterval,
	FeedBatch:          256,
}

// maxWatchBuffer and maxFeedBatch keep a typo from costing memory.
const (
	maxWatchBuffer = 1 << 16
	maxFeedBatch   = 1 << 14
)

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	options.Default(&o.IdleTimeout, defaults.IdleTimeout)
	options.Default(&o.RequestTimeout, defaults.RequestTimeout)
	options.Default(&o.WriteTimeout, defaults.WriteTimeout)
	options.Default(&o.MaxEventsPerResult, defaults.MaxEventsPerResult)
	options.Default(&o.WatchBuffer, defaults.WatchBuffer)
	options.Default(&o.WatchStall, defaults.WatchStall)
	options.Default(&o.Heartbeat, defaults.Heartbeat)
	options.Default(&o.FeedBatch, defaults.FeedBatch)
	return o
}

// Validate checks o after EnsureDefaults and reports every problem at once.
func (o *Options) Validate() error {
	var p []string
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"idle_timeout", o.IdleTimeout}, {"request_timeout", o.RequestTimeout}, {"write_timeout", o.WriteTimeout},
		{"watch_stall", o.WatchStall}, {"heartbeat", o.Heartbeat}} {
		if d.v <= 0 {
			p = append(p, fmt.Sprintf("%s (%s) must be positive", d.name, d.v))
		}
	}
	if o.MaxEventsPerResult <= 0 || o.MaxEventsPerResult > protocol.MaxEventsPerResult {
		p = append(p, fmt.Sprintf("max_events_per_result (%d) must be 1 to %d", o.MaxEventsPerResult, protocol.MaxEventsPerResult))
	}
	if o.WatchBuffer <= 0 || o.WatchBuffer > maxWatchBuffer {
		p = append(p, fmt.Sprintf("watch_buffer (%d) must be 1 to %d", o.WatchBuffer, maxWatchBuffer))
	}
	if o.WatchStall >= o.WriteTimeout && o.WriteTimeout > 0 {
		p = append(p, fmt.Sprintf("watch_stall (%s) must be below write_timeout (%s)", o.WatchStall, o.WriteTimeout))
	}
	if o.Heartbeat > protocol.HeartbeatInterval {
		p = append(p, fmt.Sprintf("heartbeat (%s) must be at most %s", o.Heartbeat, protocol.HeartbeatInterval))
	}
	if o.FeedBatch <= 0 || o.FeedBatch > maxFeedBatch {
		p = append(p, fmt.Sprintf("feed_batch (%d) must be 1 to %d", o.FeedBatch, maxFeedBatch))
	}
	return problems(p)
}

// problems turns a list of problems into one ErrInvalidConfig, or nil.
func problems(p []string) error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(p, "; "))
}

// resolve copies opts, fills in defaults and validates the copy, so that a
// caller's Options are never modified.
func resolve(opts *Options) (Options, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.EnsureDefaults()
	return o, o.Validate()
}
