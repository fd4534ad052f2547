package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/protocol"
)

// Gateway is the HTTP server of a platform node. Build it with New, then
// Serve it on a listener, or mount Handler in a server of your own.
type Gateway struct {
	opts     Options
	client   *client.Client
	trust    client.Trust
	conn     client.Connector
	reg      *prometheus.Registry
	m        *metrics.Gateway
	log      *slog.Logger
	limits   *limiter
	notFound *notFoundBudget
	streams  *streams
	origins  map[string]bool // nil: same origin only
	anyOrig  bool
	routes   []route
	handler  http.Handler

	// closing ends every SSE stream when Serve shuts down.
	closing     context.Context
	stopStreams context.CancelFunc
}

// route is one endpoint. path is as the OpenAPI document writes it; the
// same string is the ServeMux pattern, but "/" which matches only itself.
type route struct {
	method string
	path   string
	name   string // the metrics label
	h      http.HandlerFunc
}

// New checks cfg and opts (nil for defaults; not modified) and returns a
// gateway that is not yet listening.
func New(cfg Config, opts *Options) (*Gateway, error) {
	var o Options
	if opts != nil {
		o = *opts
		o.CORSOrigins = slices.Clone(opts.CORSOrigins)
	}
	o.EnsureDefaults()
	p := cfg.validate()
	if err := o.Validate(); err != nil {
		p = append(p, strings.TrimPrefix(err.Error(), ErrInvalidOptions.Error()+": "))
	}
	if len(p) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(p, "; "))
	}
	g := &Gateway{
		opts: o, client: cfg.Client, trust: cfg.Trust, conn: cfg.Connector, reg: cfg.Registry, log: cfg.Logger,
		limits:   newLimiter(o.Rate, o.Burst, o.MaxClients),
		notFound: newNotFoundBudget(&o),
		streams:  newStreams(o.MaxStreams, o.MaxStreamsPerClient),
	}
	if g.reg == nil {
		g.reg = metrics.NewGatewayRegistry()
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	var err error
	if g.m, err = metrics.NewGateway(g.reg); err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	if len(o.CORSOrigins) > 0 {
		g.origins = map[string]bool{}
		for _, origin := range o.CORSOrigins {
			g.anyOrig = g.anyOrig || origin == "*"
			g.origins[strings.TrimSuffix(origin, "/")] = true
		}
	}
	g.closing, g.stopStreams = context.WithCancel(context.Background())
	g.routes = g.routeTable()
	g.handler = g.observe(secure(g.cors(g.mux())))
	return g, nil
}

// routeTable lists every endpoint; the OpenAPI document must list the
// same (TestOpenAPIMatchesRoutes).
func (g *Gateway) routeTable() []route {
	return []route{
		{http.MethodGet, "/v1/track/{number}", "track", g.getTrack},
		{http.MethodPost, "/v1/track", "track_batch", g.postTrack},
		{http.MethodGet, "/v1/watch", "watch", g.watch},
		{http.MethodGet, "/openapi.json", "openapi", noQuery(serveOpenAPI)},
		{http.MethodGet, "/metrics", "metrics", noQuery(promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{}).ServeHTTP)},
		{http.MethodGet, "/", "page", g.page},
		{http.MethodGet, "/static/{file}", "static", serveStatic},
	}
}

// noQuery answers any query parameter with bad_request, as the lookups
// do, so that a typo is an error rather than ignored.
func noQuery(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			newProblem(protocol.CodeBadRequest, r.URL.Path+" takes no query parameters").write(w)
			return
		}
		h(w, r)
	}
}

// mux routes each path to its methods, and answers a wrong method or an
// unknown path with a problem rather than ServeMux's plain text.
func (g *Gateway) mux() *http.ServeMux {
	mux := http.NewServeMux()
	byPath := map[string][]route{}
	var paths []string
	for _, rt := range g.routes {
		if byPath[rt.path] == nil {
			paths = append(paths, rt.path)
		}
		byPath[rt.path] = append(byPath[rt.path], rt)
	}
	for _, path := range paths {
		rts := byPath[path]
		pattern := path
		if path == "/" {
			pattern = "/{$}"
		}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			var allow []string
			for _, rt := range rts {
				if rt.method == r.Method {
					rt.h(w, r)
					return
				}
				allow = append(allow, rt.method)
			}
			w.Header().Set("Allow", strings.Join(allow, ", "))
			newProblem(codeMethod, fmt.Sprintf("%s takes %s", path, strings.Join(allow, ", "))).write(w)
		})
	}
	if g.opts.Pprof {
		// Debugging, not API: the OpenAPI document leaves these out.
		mux.HandleFunc(pprofIndex, pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		newProblem("not_found", "no such endpoint: see /openapi.json").write(w)
	})
	return mux
}

// pprofIndex serves the index and every named profile (heap, goroutine...).
const pprofIndex = "GET /debug/pprof/"

// Handler returns the gateway's routes with CORS, logging and metrics,
// for mounting in another server, whose timeouts and shutdown then apply
// rather than Serve's.
func (g *Gateway) Handler() http.Handler { return g.handler }

// admit takes n tokens from the client's bucket, or answers 429 and
// returns false.
func (g *Gateway) admit(w http.ResponseWriter, r *http.Request, n int) bool {
	ok, wait := g.limits.allow(clientKey(r), n, time.Now())
	if !ok {
		g.m.RateLimited.Inc()
		newProblem("rate_limited", "too many requests from this client; retry after the wait given").retryAfter(wait).write(w)
	}
	return ok
}

// cors answers preflights and labels responses to allowed origins. With
// no origins configured, cross-origin pages get nothing, and browsers
// keep them out: same origin only.
func (g *Gateway) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		origin := r.Header.Get("Origin")
		if g.origins != nil {
			h.Add("Vary", "Origin")
		}
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		if !g.allowed(origin) {
			// A plain request goes on, without CORS headers, and the
			// browser keeps the answer from the page; a preflight is
			// refused outright.
			if !preflight {
				next.ServeHTTP(w, r)
				return
			}
			newProblem(codeOrigin, "this origin may not call the gateway; see --cors-origin").write(w)
			return
		}
		if g.anyOrig {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Set("Access-Control-Allow-Origin", origin)
		}
		if !preflight {
			h.Set("Access-Control-Expose-Headers", "ETag, Retry-After, Cache-Control")
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Methods", "GET, POST")
		h.Set("Access-Control-Allow-Headers", "Content-Type, If-None-Match, Last-Event-ID")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
	})
}

func (g *Gateway) allowed(origin string) bool {
	return g.anyOrig || g.origins[origin]
}

// observe counts, times and logs every request.
func (g *Gateway) observe(next http.Handler) http.Handler {
	names := map[string]string{"/{$}": "page"}
	for _, rt := range g.routes {
		if rt.path != "/" {
			names[rt.path] = rt.name
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		name := names[r.Pattern] // set by the mux on r
		if strings.HasPrefix(r.Pattern, pprofIndex) {
			name = "pprof"
		}
		if name == "" {
			name = "other"
		}
		if r.Method == http.MethodOptions {
			name = "preflight"
		}
		took := time.Since(start)
		g.m.Requests.WithLabelValues(name, strconv.Itoa(rec.status)).Inc()
		if name != "watch" {
			g.m.Latency.WithLabelValues(name).Observe(took.Seconds())
		}
		if g.opts.LogRequests {
			g.log.Info("http", "method", r.Method, "path", r.URL.Path, "route", name, "status", rec.status,
				"bytes", rec.bytes, "ms", took.Milliseconds(), "client", clientKey(r).String())
		}
	})
}

// recorder notes the status and size of a response. Unwrap lets
// http.ResponseController reach the connection for flushes and
// deadlines.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Serve serves on ln until ctx ends, then shuts down: it ends the SSE
// streams, stops accepting connections and waits up to shutdownGrace for
// the lookups in flight. It returns nil after a clean shutdown. A
// gateway serves once: its streams stay ended afterwards.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           g.handler,
		ReadHeaderTimeout: g.opts.ReadHeaderTimeout,
		ReadTimeout:       g.opts.ReadTimeout,
		WriteTimeout:      g.opts.WriteTimeout,
		IdleTimeout:       g.opts.IdleTimeout,
		MaxHeaderBytes:    g.opts.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		g.stopStreams()
		return fmt.Errorf("gateway: %w", err)
	case <-ctx.Done():
	}
	// Streams never go idle: end them first, or Shutdown would wait for
	// them until its deadline.
	g.stopStreams()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-served // http.ErrServerClosed once Shutdown began
	if err != nil {
		return fmt.Errorf("gateway: shutdown: %w", err)
	}
	return nil
}
