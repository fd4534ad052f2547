package service

import (
	"errors"
	"fmt"
	"strings"
	"time"

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

	// MaxEventsPerResult caps the events of one track result; a longer
	// history is paged with more=true. At most, and by default,
	// protocol.MaxEventsPerResult (1000).
	MaxEventsPerResult int `toml:"max_events_per_result"`
}

const defaultWriteTimeout = 10 * time.Second

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	if o == nil {
		o = &Options{}
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = protocol.StreamIdleTimeout
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = protocol.RequestTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = defaultWriteTimeout
	}
	if o.MaxEventsPerResult == 0 {
		o.MaxEventsPerResult = protocol.MaxEventsPerResult
	}
	return o
}

// Validate checks o after EnsureDefaults and reports every problem at once.
func (o *Options) Validate() error {
	var p []string
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"idle_timeout", o.IdleTimeout}, {"request_timeout", o.RequestTimeout}, {"write_timeout", o.WriteTimeout}} {
		if d.v <= 0 {
			p = append(p, fmt.Sprintf("%s (%s) must be positive", d.name, d.v))
		}
	}
	if o.MaxEventsPerResult <= 0 || o.MaxEventsPerResult > protocol.MaxEventsPerResult {
		p = append(p, fmt.Sprintf("max_events_per_result (%d) must be 1 to %d", o.MaxEventsPerResult, protocol.MaxEventsPerResult))
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
