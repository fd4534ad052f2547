package metrics

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/opentrack/opentrack/node/version"
)

// Gateway holds the collectors of a platform node's HTTP gateway.
type Gateway struct {
	Requests    *prometheus.CounterVec   // by route and status code
	Latency     *prometheus.HistogramVec // seconds per request, by route; SSE streams excluded
	SSEStreams  prometheus.Gauge         // open Server-Sent Events streams
	RateLimited prometheus.Counter       // requests refused by the per-client rate limit
}

// NewGatewayRegistry is the registry a gateway's /metrics serves by
// default: the Go and process collectors and opentrack_build_info. It
// holds none of the node's collectors: a platform node never sets the
// carrier's, and its host's libp2p series (hundreds) are not the
// gateway's to publish.
func NewGatewayRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		BuildInfo(),
	)
	return reg
}

// BuildInfo is opentrack_build_info: always 1, with the version, the
// VCS revision ("unknown" when the build recorded none) and the Go
// version as labels, so that dashboards can tell builds apart.
func BuildInfo() prometheus.Collector {
	commit := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				commit = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "opentrack_build_info", Help: "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version.Version, "commit": commit, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// NewGateway creates the gateway's collectors and registers them on reg.
// It fails if a gateway's collectors are registered there already.
func NewGateway(reg prometheus.Registerer) (*Gateway, error) {
	g := &Gateway{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opentrack_gateway_requests_total", Help: "HTTP requests to the gateway, by route and status code.",
		}, []string{"route", "code"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "opentrack_gateway_request_seconds", Help: "Time to answer a gateway request, by route (SSE streams excluded).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		SSEStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "opentrack_gateway_sse_streams", Help: "Open Server-Sent Events streams.",
		}),
		RateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opentrack_gateway_rate_limited_total", Help: "Requests refused by the per-client rate limit.",
		}),
	}
	for _, c := range []prometheus.Collector{g.Requests, g.Latency, g.SSEStreams, g.RateLimited} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return g, nil
}
