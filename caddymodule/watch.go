package caddymodule

// watch.go owns watch_keys: reading every key of the account at an
// interval and exporting each key's health for alerting.
//
// TODO(lead): placeholder while the core is reworked; the watch is built
// on top of account.refreshListing.

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

type usageLog struct{}

func (*usageLog) used(string, time.Time) {}

type keyWatch struct{}

func startKeyWatch(context.Context, *knowledge, time.Duration, *zap.Logger) *keyWatch { return nil }

var watchCollector prometheus.Collector = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem,
	Name: "watch_last_success_timestamp_seconds", Help: "When the key watch last read the account's keys."})
