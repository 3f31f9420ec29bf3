package caddymodule

// metrics.go owns the gateway's Prometheus metrics. Every label value comes
// from a fixed set or from the account's own key records (watch_keys):
// nothing from a request, and never key material, reaches a label.

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// gatewayMetrics are process-wide, like Caddy's own: made once when the
// package loads (so that code counting into them never meets a nil
// collector, in a config or in the subcommand) and registered again in the
// registry of every config load.
var gatewayMetrics = newGatewayMetrics()

type metricSet struct {
	rewrites         *prometheus.CounterVec
	edgeAnswers      *prometheus.CounterVec
	unexplained      *prometheus.CounterVec
	lookups          *prometheus.CounterVec
	lookupDuration   *prometheus.HistogramVec
	cacheEntries     prometheus.Gauge
	cacheHits        prometheus.Counter
	cacheMisses      prometheus.Counter
	storageOps       *prometheus.CounterVec
	storageAvailable prometheus.Gauge
	// Failures inside a 200 (inband.go), by form, provider and error type:
	// each label from a fixed set, "other" for anything else.
	inbandFailures *prometheus.CounterVec
	// Models about to retire (issue 25; retirement.go): requests and
	// expiration dates, by model.
	retiringModelRequests *prometheus.CounterVec
	retiringModelExpiry   *prometheus.GaugeVec
}

const metricsNamespace, metricsSubsystem = "caddy", "openrouter_keys"

func newGatewayMetrics() *metricSet {
	const ns, sub = metricsNamespace, metricsSubsystem
	return &metricSet{
		rewrites: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rewrites_total", Help: "Misleading 401 responses and key or account failures (402, 403, 429) explained, by reason."}, []string{"reason"}),
		edgeAnswers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "edge_answers_total", Help: "Requests answered by the gateway without the upstream, by reason."}, []string{"reason"}),
		unexplained: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "unexplained_total", Help: "401 responses, and 402, 403 and 429 responses held for explanation, passed unchanged, by why the gateway could not explain them."}, []string{"class"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "lookups_total", Help: "Key metadata lookups, by endpoint and outcome."}, []string{"endpoint", "outcome"}),
		lookupDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "lookup_duration_seconds", Help: "Duration of key metadata lookups sent upstream.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"endpoint"}),
		cacheEntries: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "cache_entries", Help: "Keys in the gateways' caches."}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "cache_hits_total", Help: "Requests whose key the cache knew."}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "cache_misses_total", Help: "Requests whose key the cache did not know."}),
		storageOps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "storage_operations_total", Help: "Shared storage operations, by operation and outcome."}, []string{"op", "outcome"}),
		storageAvailable: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "storage_available", Help: "1 while shared storage answers, 0 while it is paused after errors."}),
		inbandFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "inband_failures_total", Help: "Failures that arrived inside an HTTP 200 (an error event in a stream, an empty success whose provider failed, a body that is an error), by form, provider and error type."},
			[]string{"form", "provider", "error_type"}),
		retiringModelRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "retiring_model_requests_total",
			Help: "Successful requests on models whose expiration_date is within warn_model_retirement, by model (at most 100 models; \"other\" beyond)."}, []string{"model"}),
		retiringModelExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "retiring_model_expiry_timestamp_seconds",
			Help: "The expiration_date (Unix time, 00:00 UTC of that day) of each retiring model that requests used, by model."}, []string{"model"}),
	}
}

func (m *metricSet) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.rewrites, m.edgeAnswers, m.unexplained, m.lookups, m.lookupDuration,
		m.cacheEntries, m.cacheHits, m.cacheMisses, m.storageOps, m.storageAvailable,
		m.inbandFailures, m.retiringModelRequests, m.retiringModelExpiry}
}

// registerMetrics adds the gateway's metrics to a config's registry. Several
// handlers share one registry, so a collector already there is fine.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range gatewayMetrics.collectors() {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	return nil
}
