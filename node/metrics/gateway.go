package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Gateway holds the collectors of a platform node's HTTP gateway.
type Gateway struct {
	Requests    *prometheus.CounterVec   // by route and status code
	Latency     *prometheus.HistogramVec // seconds per request, by route; SSE streams excluded
	SSEStreams  prometheus.Gauge         // open Server-Sent Events streams
	RateLimited prometheus.Counter       // requests refused by the per-client rate limit
}

// NewGateway creates the gateway's collectors and registers them on m's
// registry. It fails if a gateway's collectors are registered there
// already: one node serves one gateway.
func (m *Metrics) NewGateway() (*Gateway, error) {
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
		if err := m.Registry.Register(c); err != nil {
			return nil, err
		}
	}
	return g, nil
}
