package caddymodule

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric label values. Every label is from a fixed set: nothing from a
// request, and never key material, reaches a label.
const (
	endpointKey       = "key"        // GET /key
	endpointKeyRecord = "key_record" // GET /keys/{hash}
	endpointKeysList  = "keys_list"  // GET /keys (one per page)
	endpointCredits   = "credits"    // GET /credits (key check)
	endpointModels    = "models"     // GET /models (key check)

	outcomeOK           = "ok"
	outcomeUnauthorized = "unauthorized"
	outcomeNotFound     = "not_found"
	outcomeError        = "error"
	outcomeRefused      = "refused" // not sent: the lookup rate was used up
)

// gatewayMetrics are process-wide, like Caddy's own: made once when the
// package loads (so that code counting into them never meets a nil
// collector, in a config or in the subcommand) and registered again in the
// registry of every config load.
var gatewayMetrics struct {
	rewrites       *prometheus.CounterVec
	edgeAnswers    *prometheus.CounterVec
	lookups        *prometheus.CounterVec
	lookupDuration *prometheus.HistogramVec
	cacheEntries   prometheus.GaugeFunc
	cacheHits      prometheus.Counter
	cacheMisses    prometheus.Counter
	storageOps     *prometheus.CounterVec
}

// liveCaches are the key caches of the running configs, for the
// cache_entries gauge.
var liveCaches = struct {
	sync.Mutex
	set map[*keyCache]struct{}
}{set: make(map[*keyCache]struct{})}

func init() {
	const ns, sub = "caddy", "openrouter_keys"
	m := &gatewayMetrics
	m.rewrites = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "rewrites_total", Help: "Misleading 401 responses rewritten, by reason."}, []string{"reason"})
	m.edgeAnswers = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "edge_answers_total", Help: "Requests answered by the gateway without the upstream, by reason."}, []string{"reason"})
	m.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "lookups_total", Help: "Key metadata lookups, by endpoint and outcome."}, []string{"endpoint", "outcome"})
	m.lookupDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
		Name: "lookup_duration_seconds", Help: "Duration of key metadata lookups sent upstream.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"endpoint"})
	m.cacheEntries = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
		Name: "cache_entries", Help: "Keys in the gateway's cache."}, func() float64 {
		liveCaches.Lock()
		defer liveCaches.Unlock()
		n := 0
		for c := range liveCaches.set {
			n += c.len()
		}
		return float64(n)
	})
	m.cacheHits = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "cache_hits_total", Help: "Requests whose key the cache knew."})
	m.cacheMisses = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "cache_misses_total", Help: "Requests whose key the cache did not know."})
	m.storageOps = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "storage_operations_total", Help: "Shared storage operations, by operation and outcome."}, []string{"op", "outcome"})
}

// registerMetrics adds the gateway's metrics to a config's registry. Several
// handlers share one registry, so a collector already there is fine.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	m := &gatewayMetrics
	for _, c := range []prometheus.Collector{m.rewrites, m.edgeAnswers, m.lookups, m.lookupDuration,
		m.cacheEntries, m.cacheHits, m.cacheMisses, m.storageOps} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	return nil
}
