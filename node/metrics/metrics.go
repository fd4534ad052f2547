// Package metrics defines the node's Prometheus metrics in one place, so
// that names stay consistent across ingest, the protocol services and the
// store. Each node owns its own registry: many nodes can run in one
// process (the testnet) without clashing.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector of one node.
type Metrics struct {
	Registry *prometheus.Registry

	IngestEvents   *prometheus.CounterVec // by result: accepted, duplicate, rejected
	IngestBatches  prometheus.Counter     // committed store batches
	IngestLatency  prometheus.Histogram   // seconds from request to durable commit
	TrackRequests  *prometheus.CounterVec // track results by code
	TrackLatency   prometheus.Histogram   // seconds per track request
	StreamResets   *prometheus.CounterVec // by protocol and reason
	WatchStreams   prometheus.Gauge       // open watch subscriptions
	WatchUpdates   *prometheus.CounterVec // by type: update, catchup, heartbeat, error, status
	Disclosures    *prometheus.CounterVec // audit: by result allowed, refused
	StoreEvents    prometheus.GaugeFunc   // set by the node once the store is open
	StoreDiskBytes prometheus.GaugeFunc
	IngestRefused  prometheus.Counter // batches refused for a disk below the reserve
}

// New creates the collectors and registers them, with Go and process
// collectors and opentrack_build_info, on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		IngestEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opentrack_ingest_events_total", Help: "Events posted to the admin API, by result.",
		}, []string{"result"}),
		IngestBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opentrack_ingest_batches_total", Help: "Durable store commits made by ingest.",
		}),
		IngestLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "opentrack_ingest_latency_seconds", Help: "Time from receiving an ingest request to its durable commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		TrackRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opentrack_track_results_total", Help: "Track results served, by result code.",
		}, []string{"code"}),
		TrackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "opentrack_track_request_seconds", Help: "Time to serve one track request.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		StreamResets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opentrack_stream_resets_total", Help: "Streams reset because of bad peer input or timeouts.",
		}, []string{"protocol", "reason"}),
		WatchStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "opentrack_watch_streams", Help: "Open watch subscriptions.",
		}),
		WatchUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opentrack_watch_messages_total", Help: "Watch messages sent, by type.",
		}, []string{"type"}),
		Disclosures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opentrack_details_disclosures_total", Help: "Requests for details, by result (allowed, refused).",
		}, []string{"result"}),
		IngestRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opentrack_ingest_refused_disk_full_total", Help: "Ingest batches refused because the store's free disk space was below the reserve.",
		}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		BuildInfo(),
		m.IngestEvents, m.IngestBatches, m.IngestLatency, m.TrackRequests, m.TrackLatency,
		m.StreamResets, m.WatchStreams, m.WatchUpdates, m.Disclosures, m.IngestRefused,
	)
	return m
}

// WatchSpace exports the store disk's free space, its reserve and whether
// ingest may write (1) or is refused for a full disk (0).
func (m *Metrics) WatchSpace(free, reserve, writable func() float64) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "opentrack_store_free_bytes", Help: "Free bytes on the store's filesystem at the newest reading."}, free),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "opentrack_store_reserve_bytes", Help: "Free space kept on the store's filesystem; ingest stops below it."}, reserve),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "opentrack_store_writable", Help: "1 while ingest may write, 0 while it is refused for a full disk or a read-only store."}, writable),
	)
}

// WatchStore exports store sizes through the given functions, which the
// node backs with a cached store.Stats call.
func (m *Metrics) WatchStore(events, diskBytes func() float64) {
	m.StoreEvents = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "opentrack_store_events", Help: "Events stored.",
	}, events)
	m.StoreDiskBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "opentrack_store_disk_bytes", Help: "Bytes the store occupies on disk.",
	}, diskBytes)
	m.Registry.MustRegister(m.StoreEvents, m.StoreDiskBytes)
}
