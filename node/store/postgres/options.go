package postgres

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/opentrack/opentrack/internal/options"
)

// ErrOptions means Options failed validation.
var ErrOptions = errors.New("postgres: invalid options")

// Options configure the store. The zero value of every field but URL
// means its default, which EnsureDefaults fills in.
type Options struct {
	// URL is the connection string: a URL
	// ("postgres://user:pass@host:5432/db?sslmode=verify-full") or a
	// key=value DSN, as libpq takes them. Several hosts may be listed for
	// a replicated cluster; search_path selects a schema. Required.
	URL string

	// MaxConns is the size of the connection pool, in connections. Every
	// Append holds one for its transaction, and readers (track lookups,
	// watch feeds) share the rest. Default 8.
	MaxConns int32

	// ConnectTimeout bounds opening one connection. Default 5s.
	ConnectTimeout time.Duration

	// PollInterval is how often the store re-reads the feed tail when no
	// notification arrives: the fallback that wakes watchers for other
	// replicas' commits when LISTEN is off or its connection was lost.
	// Default 1s.
	PollInterval time.Duration

	// DisableNotify turns LISTEN/NOTIFY off: appends do not notify, and
	// watchers learn of other replicas' commits by polling only. Set it
	// on databases without LISTEN/NOTIFY (CockroachDB, YugabyteDB).
	// Default false.
	DisableNotify bool

	// SkipMigrate makes Open refuse a database whose schema is older than
	// this build's instead of migrating it, for operators who migrate
	// with `opentrack migrate` only. Default false: Open migrates.
	SkipMigrate bool
}

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else.
var defaults = Options{
	MaxConns:       8,
	ConnectTimeout: 5 * time.Second,
	PollInterval:   time.Second,
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	options.Default(&o.MaxConns, defaults.MaxConns)
	options.Default(&o.ConnectTimeout, defaults.ConnectTimeout)
	options.Default(&o.PollInterval, defaults.PollInterval)
	return o
}

// Validate reports every problem with o at once. Call it after
// EnsureDefaults; Open does both.
func (o *Options) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if strings.TrimSpace(o.URL) == "" {
		add("URL is empty")
	}
	if o.MaxConns < 2 {
		add("MaxConns %d must be at least 2 (an append and a reader)", o.MaxConns)
	}
	if o.ConnectTimeout < 0 {
		add("ConnectTimeout %s is negative", o.ConnectTimeout)
	}
	if o.PollInterval < 10*time.Millisecond {
		add("PollInterval %s must be at least 10ms", o.PollInterval)
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrOptions, strings.Join(p, "; "))
	}
	return nil
}

// Redact returns a connection string fit for logs and error messages:
// the password of a URL, or of a key=value DSN, replaced by "xxxxx".
func Redact(conn string) string {
	if u, err := url.Parse(conn); err == nil && u.Scheme != "" {
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	fields := strings.Fields(conn)
	for i, f := range fields {
		if k, _, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, "password") {
			fields[i] = k + "=xxxxx"
		}
	}
	return strings.Join(fields, " ")
}
