package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/opentrack/opentrack/internal/options"
	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/protocol"
)

// ErrInvalidOptions is wrapped by New with every problem found in its
// Config and Options.
var ErrInvalidOptions = errors.New("gateway: invalid options")

// Defaults of Options by name, for the CLI's flags and the tests; the
// defaults table gives each to its field.
const (
	// DefaultAddr is where `opentrack gateway` listens without --http.
	DefaultAddr = "127.0.0.1:8080"
	// DefaultTrackTimeout bounds one lookup, resolution and every
	// carrier's answer included: a little over the client's 5s request
	// timeout, so that one failover to a second node fits.
	DefaultTrackTimeout = 12 * time.Second
	// DefaultCacheMaxAge is the max-age of a found record. Parcels move
	// in hours, but a page polling a parcel should see a new scan soon;
	// the ETag makes revalidation cheap.
	DefaultCacheMaxAge = 10 * time.Second
	// DefaultMaxBodyBytes holds a batch of protocol.MaxNumbersPerRequest
	// numbers of protocol.MaxNumberLen characters, JSON-quoted, with room
	// for spaces.
	DefaultMaxBodyBytes = 16 << 10
	// DefaultRate and DefaultBurst: a person or a page makes a few
	// requests a minute; a script batches.
	DefaultRate  = 10.0
	DefaultBurst = protocol.MaxNumbersPerRequest
	// DefaultMaxClients bounds the per-client bucket table, about 200
	// bytes a client.
	DefaultMaxClients = 100_000
	// DefaultNotFoundRate and DefaultNotFoundBurst are a client's
	// not_found budget: 20 at once, then one every 10 s. A person mistypes
	// a number now and then; a script guessing numbers is held to six a
	// minute, far below what a carrier grants the gateway.
	DefaultNotFoundRate  = 0.1
	DefaultNotFoundBurst = 20
	// DefaultGlobalNotFoundRate and DefaultGlobalNotFoundBurst are the
	// gateway's budget over all clients: half of what a carrier gives an
	// anonymous peer by default (node/policy: 1 a second, burst 1000), so
	// that the gateway never spends the carrier's budget for it. Raise
	// them when carriers name the gateway in [policy] platforms.
	DefaultGlobalNotFoundRate  = 0.5
	DefaultGlobalNotFoundBurst = 500
	// DefaultNegativeTTL is how long a not_found answer is reused: the
	// max-age the gateway gives it.
	DefaultNegativeTTL = DefaultCacheMaxAge
	// DefaultMaxNegative bounds the negative cache, about 300 bytes a
	// number.
	DefaultMaxNegative         = 100_000
	DefaultMaxStreams          = 1000
	DefaultMaxStreamsPerClient = 8
	DefaultMaxWatchNumbers     = protocol.MaxNumbersPerRequest
	DefaultHeartbeat           = 15 * time.Second
	DefaultReadHeaderTimeout   = 5 * time.Second
	DefaultReadTimeout         = 10 * time.Second
	DefaultWriteTimeout        = 30 * time.Second
	DefaultIdleTimeout         = 2 * time.Minute
	DefaultMaxHeaderBytes      = 16 << 10
)

// Config is what a gateway serves from: a platform node's client, trust
// and router. Client, Trust and Connector are required.
type Config struct {
	// Client looks numbers up and watches them; its host's peer ID is the
	// platform's identity, the one carriers name in a parcel's audience.
	Client *client.Client
	// Trust is the platform's registry: it resolves numbers to carriers
	// and binds carrier keys to them.
	Trust client.Trust
	// Connector reaches a carrier's registry nodes (discovery.Router).
	Connector client.Connector
	// Registry receives the gateway's collectors, and /metrics serves
	// it. Default: metrics.NewGatewayRegistry(), the gateway's own series
	// and no node's.
	Registry *prometheus.Registry
	// Logger receives request logs and errors. Default: slog.Default().
	Logger *slog.Logger
}

// Options tune a gateway. The zero value of a field means its default.
type Options struct {
	// TrackTimeout bounds one GET or POST lookup. A lookup that runs out
	// answers 504 with code "timeout". Default: 12s.
	TrackTimeout time.Duration
	// CacheMaxAge is the Cache-Control max-age of a found record and of a
	// not_found answer, rounded down to whole seconds. Default: 10s.
	CacheMaxAge time.Duration
	// MaxBodyBytes bounds a POST body, in bytes. Default: 16 KiB.
	MaxBodyBytes int64
	// Rate is the steady rate of each client IP's token bucket, in
	// tokens a second. A request costs one token, a batch one per number,
	// opening a stream one. IPv6 clients are keyed by their /64. Default:
	// 10.
	Rate float64
	// Burst is the size of each client's bucket, in tokens; it must hold
	// a full batch of protocol.MaxNumbersPerRequest. Default: 100.
	Burst int
	// MaxClients bounds how many clients' buckets are kept; past it the
	// least recently seen are forgotten, so memory stays bounded however
	// many addresses a client uses. Default: 100000.
	MaxClients int
	// NotFoundRate is the steady rate of each client's not_found budget,
	// in answers a second; keyed as Rate is. While a client's budget is
	// spent, its lookups are answered 429 without asking a carrier.
	// Default: 0.1.
	NotFoundRate float64
	// NotFoundBurst is the size of each client's not_found bucket.
	// Default: 20.
	NotFoundBurst int
	// GlobalNotFoundRate is the steady rate of the gateway's not_found
	// budget over all clients, in answers a second, kept below what the
	// carriers grant the gateway's peer. While it is spent, only clients
	// whose own budget covers a request are served. Default: 0.5.
	GlobalNotFoundRate float64
	// GlobalNotFoundBurst is the size of the gateway's not_found bucket.
	// Default: 500.
	GlobalNotFoundBurst int
	// NegativeTTL is how long a number every carrier answered not_found
	// is answered from the gateway's cache. Default: 10s.
	NegativeTTL time.Duration
	// MaxNegative bounds the numbers the negative cache holds. Default:
	// 100000.
	MaxNegative int
	// CORSOrigins are the origins (scheme://host[:port]) whose pages may
	// call the API, or "*" for any. Default: none, same origin only.
	CORSOrigins []string
	// MaxStreams bounds the SSE streams open at once. Default: 1000.
	MaxStreams int
	// MaxStreamsPerClient bounds one client IP's open SSE streams.
	// Default: 8.
	MaxStreamsPerClient int
	// MaxWatchNumbers bounds the numbers one stream watches. Default:
	// 100.
	MaxWatchNumbers int
	// Heartbeat is how often a quiet SSE stream sends a comment, which
	// keeps proxies from closing it and shows a client it is alive.
	// Default: 15s.
	Heartbeat time.Duration
	// ReadHeaderTimeout bounds reading a request's headers. Default: 5s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request. Default: 10s.
	ReadTimeout time.Duration
	// WriteTimeout bounds answering a request; an SSE stream lifts it and
	// bounds each event's write by it instead. It must exceed
	// TrackTimeout. Default: 30s.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. Default:
	// 2 minutes.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers, in bytes. Default: 16 KiB.
	MaxHeaderBytes int
	// LogRequests logs every request at Info: method, route, status,
	// bytes, duration and client. Default: false.
	LogRequests bool
	// Pprof serves net/http/pprof under /debug/pprof/ on the gateway's
	// listener. Profiles show internals and cost CPU: only for
	// debugging, behind a listener you control. Default: false.
	Pprof bool
}

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else.
var defaults = Options{
	TrackTimeout:        DefaultTrackTimeout,
	CacheMaxAge:         DefaultCacheMaxAge,
	MaxBodyBytes:        DefaultMaxBodyBytes,
	Rate:                DefaultRate,
	Burst:               DefaultBurst,
	MaxClients:          DefaultMaxClients,
	NotFoundRate:        DefaultNotFoundRate,
	NotFoundBurst:       DefaultNotFoundBurst,
	GlobalNotFoundRate:  DefaultGlobalNotFoundRate,
	GlobalNotFoundBurst: DefaultGlobalNotFoundBurst,
	NegativeTTL:         DefaultNegativeTTL,
	MaxNegative:         DefaultMaxNegative,
	MaxStreams:          DefaultMaxStreams,
	MaxStreamsPerClient: DefaultMaxStreamsPerClient,
	MaxWatchNumbers:     DefaultMaxWatchNumbers,
	Heartbeat:           DefaultHeartbeat,
	ReadHeaderTimeout:   DefaultReadHeaderTimeout,
	ReadTimeout:         DefaultReadTimeout,
	WriteTimeout:        DefaultWriteTimeout,
	IdleTimeout:         DefaultIdleTimeout,
	MaxHeaderBytes:      DefaultMaxHeaderBytes,
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	options.Default(&o.TrackTimeout, defaults.TrackTimeout)
	options.Default(&o.CacheMaxAge, defaults.CacheMaxAge)
	options.Default(&o.MaxBodyBytes, defaults.MaxBodyBytes)
	options.Default(&o.Rate, defaults.Rate)
	options.Default(&o.Burst, defaults.Burst)
	options.Default(&o.MaxClients, defaults.MaxClients)
	options.Default(&o.NotFoundRate, defaults.NotFoundRate)
	options.Default(&o.NotFoundBurst, defaults.NotFoundBurst)
	options.Default(&o.GlobalNotFoundRate, defaults.GlobalNotFoundRate)
	options.Default(&o.GlobalNotFoundBurst, defaults.GlobalNotFoundBurst)
	options.Default(&o.NegativeTTL, defaults.NegativeTTL)
	options.Default(&o.MaxNegative, defaults.MaxNegative)
	options.Default(&o.MaxStreams, defaults.MaxStreams)
	options.Default(&o.MaxStreamsPerClient, defaults.MaxStreamsPerClient)
	options.Default(&o.MaxWatchNumbers, defaults.MaxWatchNumbers)
	options.Default(&o.Heartbeat, defaults.Heartbeat)
	options.Default(&o.ReadHeaderTimeout, defaults.ReadHeaderTimeout)
	options.Default(&o.ReadTimeout, defaults.ReadTimeout)
	options.Default(&o.WriteTimeout, defaults.WriteTimeout)
	options.Default(&o.IdleTimeout, defaults.IdleTimeout)
	options.Default(&o.MaxHeaderBytes, defaults.MaxHeaderBytes)
	return o
}

// Validate checks o after EnsureDefaults and reports every problem at
// once, wrapped in ErrInvalidOptions.
func (o *Options) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"TrackTimeout", o.TrackTimeout}, {"CacheMaxAge", o.CacheMaxAge}, {"Heartbeat", o.Heartbeat},
		{"ReadHeaderTimeout", o.ReadHeaderTimeout}, {"ReadTimeout", o.ReadTimeout},
		{"WriteTimeout", o.WriteTimeout}, {"IdleTimeout", o.IdleTimeout}, {"NegativeTTL", o.NegativeTTL},
	} {
		if d.v <= 0 {
			add("%s (%s) must be positive", d.name, d.v)
		}
	}
	if o.WriteTimeout <= o.TrackTimeout {
		add("WriteTimeout (%s) must exceed TrackTimeout (%s)", o.WriteTimeout, o.TrackTimeout)
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"Rate", o.Rate}, {"NotFoundRate", o.NotFoundRate}, {"GlobalNotFoundRate", o.GlobalNotFoundRate}} {
		if !(r.v > 0) { // also catches NaN
			add("%s (%v) must be positive", r.name, r.v)
		}
	}
	if o.Burst < protocol.MaxNumbersPerRequest {
		add("Burst (%d) must hold a batch of %d numbers", o.Burst, protocol.MaxNumbersPerRequest)
	}
	for _, c := range []struct {
		name string
		v    int64
	}{
		{"MaxBodyBytes", o.MaxBodyBytes}, {"MaxClients", int64(o.MaxClients)}, {"MaxStreams", int64(o.MaxStreams)},
		{"MaxStreamsPerClient", int64(o.MaxStreamsPerClient)}, {"MaxHeaderBytes", int64(o.MaxHeaderBytes)},
		{"MaxWatchNumbers", int64(o.MaxWatchNumbers)}, {"NotFoundBurst", int64(o.NotFoundBurst)},
		{"GlobalNotFoundBurst", int64(o.GlobalNotFoundBurst)}, {"MaxNegative", int64(o.MaxNegative)},
	} {
		if c.v < 1 {
			add("%s (%d) must be positive", c.name, c.v)
		}
	}
	if o.MaxWatchNumbers > protocol.MaxWatchNumbers {
		add("MaxWatchNumbers (%d) is above the protocol's %d", o.MaxWatchNumbers, protocol.MaxWatchNumbers)
	}
	for _, origin := range o.CORSOrigins {
		if err := checkOrigin(origin); err != nil {
			add("CORS origin %q: %v", origin, err)
		}
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(p, "; "))
	}
	return nil
}

// checkOrigin accepts "*" or an origin as browsers send it: a scheme and
// a host, nothing else.
func checkOrigin(origin string) error {
	if origin == "*" {
		return nil
	}
	u, err := url.Parse(origin)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("want http:// or https://")
	case u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return errors.New("want scheme://host[:port] and nothing else")
	}
	return nil
}

// validate checks the required dependencies.
func (c *Config) validate() []string {
	var p []string
	if c.Client == nil {
		p = append(p, "Config.Client is nil")
	}
	if c.Trust == nil {
		p = append(p, "Config.Trust is nil")
	}
	if c.Connector == nil {
		p = append(p, "Config.Connector is nil")
	}
	return p
}
