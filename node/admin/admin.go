// Package admin is the carrier node's admin HTTP API: ingest, the parcel
// view, grants and the audit log (API), health, Prometheus metrics and
// pprof on one loopback listener (DESIGN §7), and Client, which calls it.
// Every route but /healthz needs the admin bearer token, so a local
// process without it can neither post events nor read profiles.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/opentrack/opentrack/internal/options"
	"github.com/opentrack/opentrack/node/metrics"
)

// Errors of New and Start.
var (
	// ErrInvalidOptions means Options.Validate found a problem.
	ErrInvalidOptions = errors.New("admin: invalid options")
	// ErrNotLoopback means the listen address is reachable from other
	// hosts; the admin API must only be reachable from this machine.
	ErrNotLoopback = errors.New("admin: listen address is not loopback")
	// ErrNoToken means New was given an empty admin token.
	ErrNoToken = errors.New("admin: empty admin token")
	// ErrStarted means Start or ListenAndServe was called twice.
	ErrStarted = errors.New("admin: server already started")
	// ErrDegraded, wrapped by what health returns, means the node serves
	// but not fully (ingest refused for a full disk): /healthz answers 200
	// with "degraded: " and the reason, so that lookups stay in rotation
	// while monitoring sees why.
	ErrDegraded = errors.New("admin: degraded")
)

// Defaults of Options by name; the defaults table gives each to its
// field.
const (
	DefaultAddr              = "127.0.0.1:7401"
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 2 * time.Minute
	DefaultWriteTimeout      = 2 * time.Minute
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
)

// Options configure the admin server. Zero fields take their defaults.
type Options struct {
	// Addr is the listen address; its host must be a loopback IP or
	// "localhost". Default "127.0.0.1:7401".
	Addr string
	// ReadHeaderTimeout bounds reading a request's headers. Default 5s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included; an
	// ingest body may be tens of MiB. Default 2 minutes.
	ReadTimeout time.Duration
	// WriteTimeout bounds handling and answering a request. It must
	// exceed the longest pprof profile asked for (?seconds=N) and the
	// slowest durable ingest commit. Default 2 minutes.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. Default
	// 2 minutes.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers, in bytes. Default 64 KiB.
	MaxHeaderBytes int
}

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else.
var defaults = Options{
	Addr:              DefaultAddr,
	ReadHeaderTimeout: DefaultReadHeaderTimeout,
	ReadTimeout:       DefaultReadTimeout,
	WriteTimeout:      DefaultWriteTimeout,
	IdleTimeout:       DefaultIdleTimeout,
	MaxHeaderBytes:    DefaultMaxHeaderBytes,
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	options.Default(&o.Addr, defaults.Addr)
	options.Default(&o.ReadHeaderTimeout, defaults.ReadHeaderTimeout)
	options.Default(&o.ReadTimeout, defaults.ReadTimeout)
	options.Default(&o.WriteTimeout, defaults.WriteTimeout)
	options.Default(&o.IdleTimeout, defaults.IdleTimeout)
	options.Default(&o.MaxHeaderBytes, defaults.MaxHeaderBytes)
	return o
}

// Validate reports every problem at once. The error wraps
// ErrInvalidOptions, and ErrNotLoopback when the address is the problem.
func (o *Options) Validate() error {
	var p problems
	if o.Addr != "" {
		if err := checkLoopback(o.Addr); err != nil {
			p = append(p, err)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ReadHeaderTimeout", o.ReadHeaderTimeout}, {"ReadTimeout", o.ReadTimeout}, {"WriteTimeout", o.WriteTimeout}, {"IdleTimeout", o.IdleTimeout}} {
		if d.v < 0 {
			p = append(p, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	if o.MaxHeaderBytes < 0 {
		p = append(p, fmt.Errorf("MaxHeaderBytes %d is negative", o.MaxHeaderBytes))
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, p)
	}
	return nil
}

// problems is a list of errors reported together on one line, each still
// visible to errors.Is.
type problems []error

func (p problems) Error() string {
	msgs := make([]string, len(p))
	for i, err := range p {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (p problems) Unwrap() []error { return p }

// checkLoopback requires host:port with a loopback host. An empty host
// would listen on every interface.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %q: %v; use 127.0.0.1, [::1] or localhost", ErrNotLoopback, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %q; use 127.0.0.1, [::1] or localhost", ErrNotLoopback, addr)
	}
	return nil
}

// Server is the admin HTTP server.
type Server struct {
	opts Options
	srv  *http.Server

	mu      sync.Mutex
	ln      net.Listener
	serving chan struct{} // closed when Serve has returned
	err     error         // what Serve returned, if not a shutdown
}

// New builds the admin server. ingest, usually API's handler, serves
// /v1/...; m, when not nil,
// backs /metrics; health, when not nil, decides /healthz. The token
// guards every route except /healthz.
func New(opts *Options, token string, ingest http.Handler, m *metrics.Metrics, health func() error) (*Server, error) {
	o := opts.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if token == "" {
		return nil, ErrNoToken
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if health != nil {
			if err := health(); errors.Is(err, ErrDegraded) {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				_, _ = w.Write([]byte("degraded: " + err.Error() + "\n"))
				return
			} else if err != nil {
				http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	private := http.NewServeMux()
	if ingest != nil {
		private.Handle("/v1/", ingest)
	}
	if m != nil {
		private.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	}
	// Registered by hand: importing net/http/pprof also fills
	// DefaultServeMux, which this server never serves.
	private.HandleFunc("/debug/pprof/", pprof.Index)
	private.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	private.HandleFunc("/debug/pprof/profile", pprof.Profile)
	private.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	private.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", requireToken(token, private))

	s := &Server{opts: *o}
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
	}
	return s, nil
}

// requireToken lets a request through only with "Authorization: Bearer
// <token>". Both sides are hashed first, so the comparison takes the same
// time whatever the length or content of the guess.
func requireToken(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(got))
		// The scheme name is case-insensitive (RFC 9110 §11.1).
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !strings.EqualFold(scheme, "Bearer") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="opentrack-admin"`)
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"title":"Unauthorized","status":401,"detail":"missing or wrong admin token (Authorization: Bearer <token>)"}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Start serves on ln in the background. ln must listen on loopback.
func (s *Server) Start(ln net.Listener) error {
	if err := checkLoopback(ln.Addr().String()); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return ErrStarted
	}
	s.ln, s.serving = ln, make(chan struct{})
	go func() {
		err := s.srv.Serve(ln)
		s.mu.Lock()
		if !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
		s.mu.Unlock()
		close(s.serving)
	}()
	return nil
}

// ListenAndServe listens on Options.Addr and serves until Shutdown, then
// returns nil; it returns an error if it cannot listen or serving fails.
func (s *Server) ListenAndServe() error {
	s.mu.Lock()
	started := s.ln != nil
	s.mu.Unlock()
	if started {
		return ErrStarted
	}
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if err := s.Start(ln); err != nil {
		ln.Close()
		return err
	}
	<-s.serving
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// URL is the server's base URL, like http://127.0.0.1:7401, or "" before
// it listens.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return "http://" + s.ln.Addr().String()
}

// Shutdown stops accepting connections and waits, until ctx ends, for
// requests in flight to finish, so that an ingest batch being committed
// is still answered. It returns what made serving fail, if anything.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	s.mu.Lock()
	serving := s.serving
	s.mu.Unlock()
	if serving == nil {
		return nil
	}
	select {
	case <-serving:
	case <-ctx.Done():
		return fmt.Errorf("admin: shutdown: %w", ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
