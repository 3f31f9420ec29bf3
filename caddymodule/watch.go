package caddymodule

// watch.go owns watch_keys: reading every key of the account at an
// interval and exporting each key's health (expiry, limit, disabled, last
// use by this gateway) on Caddy's /metrics, so that alert rules can warn
// before keys in use expire or run dry.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// maxUsedKeys bounds the keys whose last use is remembered.
const maxUsedKeys = 100_000

// usageLog remembers when keys were last used, by usedID of their record
// hash, so that a use can be tied to the account's record of the key. It is
// told at most once a minute per key (knowledge.observe).
type usageLog struct {
	mu   sync.Mutex
	last map[string]int64 // usedID(record hash) -> unix seconds
}

func newUsageLog() *usageLog { return &usageLog{last: make(map[string]int64)} }

func (u *usageLog) used(key string, now time.Time) {
	id := usedID(recordHash(key))
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.last[id]; !ok && len(u.last) >= maxUsedKeys {
		return // a flood of random keys; real keys were seen before it
	}
	u.last[id] = now.Unix()
}

// forKeys is the last use of each of the account's keys (ids: the usedIDs
// of a listing read at readAt). A use of a key the listing does not have is
// forgotten, unless it came after the listing was read: the key may be
// newer than the listing.
func (u *usageLog) forKeys(ids map[string]bool, readAt time.Time) map[string]int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[string]int64)
	for id, at := range u.last {
		switch {
		case ids[id]:
			out[id] = at
		case at < readAt.Unix():
			delete(u.last, id)
		}
	}
	return out
}

// usedID names a record in shared usage: a hash of its hash, so that
// storage never holds a record hash (sha256 of a key).
func usedID(recordHash string) string {
	sum := sha256.Sum256([]byte("openrouter_keys/used/v1:" + recordHash))
	return hex.EncodeToString(sum[:16])
}

// watchSnapshot is the account's keys as read at one time: what is
// exported, and what replicas share.
type watchSnapshot struct {
	ReadAt   time.Time    `json:"read_at"`
	Duration float64      `json:"duration_seconds"`
	Keys     []watchedKey `json:"keys"`
}

// watchedKey is one key's health. It holds no key material: the label is
// OpenRouter's public masked form.
type watchedKey struct {
	Workspace      string     `json:"workspace"`
	Name           string     `json:"name"`
	Label          string     `json:"label"`
	Disabled       bool       `json:"disabled"`
	ExpiresAt      *time.Time `json:"expires_at,omitempty"`
	Limit          *float64   `json:"limit,omitempty"`
	LimitRemaining *float64   `json:"limit_remaining,omitempty"`
	LastUsed       int64      `json:"last_used,omitempty"` // unix seconds
	// UsedID is usedID of the key's record hash, so that the key check
	// can find the key's last use.
	UsedID string `json:"used_id,omitempty"`
}

// keyWatch reads the account at an interval, for the config's lifetime.
type keyWatch struct {
	k        *knowledge
	interval time.Duration
	logger   *zap.Logger

	mu       sync.Mutex
	snapshot *watchSnapshot
}

// startKeyWatch starts the watch; it stops with ctx.
func startKeyWatch(ctx context.Context, k *knowledge, interval time.Duration, logger *zap.Logger) *keyWatch {
	w := &keyWatch{k: k, interval: interval, logger: logger}
	k.acct.watch.Store(w)
	go func() {
		w.run(ctx)
		k.acct.watch.CompareAndSwap(w, nil)
	}()
	return w
}

func (w *keyWatch) run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			if err := w.tick(ctx); err != nil && ctx.Err() == nil {
				w.logger.Warn("key watch: the account's keys could not be read", zap.Error(err))
			}
			timer.Reset(w.interval)
		}
	}
}

// tick reads the account (or, with shared storage, lets the replica that
// holds the lock do it and reads its result) and publishes this replica's
// uses.
func (w *keyWatch) tick(ctx context.Context) error {
	s := w.k.shared
	if s == nil {
		snap, err := w.read(ctx, nil)
		if err != nil {
			return err
		}
		w.publish(snap)
		return nil
	}
	w.shareUses(ctx)
	lctx, cancel := context.WithTimeout(ctx, min(w.interval/2, 30*time.Second))
	unlock, err := s.lock(lctx, sharedWatchLock)
	cancel()
	if err != nil {
		// Another replica is reading the account (or the storage is
		// down): what it published last serves while it is recent.
		if snap, ok := s.loadWatchSnapshot(ctx); ok && w.k.now().Sub(snap.ReadAt) < 3*w.interval {
			w.publish(snap)
			return nil
		}
		return err
	}
	defer unlock()
	if snap, ok := s.loadWatchSnapshot(ctx); ok && w.k.now().Sub(snap.ReadAt) < w.interval/2 {
		w.publish(snap) // another replica just read the account
		return nil
	}
	snap, err := w.read(ctx, s)
	if err != nil {
		return err
	}
	s.storeWatchSnapshot(ctx, snap)
	w.publish(snap)
	return nil
}

// read lists the account and builds a snapshot, with the uses of every
// replica when s is not nil.
func (w *keyWatch) read(ctx context.Context, s *sharedStore) (*watchSnapshot, error) {
	begin := w.k.now()
	l, err := w.k.acct.refreshListing(ctx)
	if err != nil {
		return nil, err
	}
	if !l.complete {
		// Published anyway: every key read is real; absence of a key is
		// not claimed by the metrics.
		w.logger.Warn("key watch: the listing is not complete (workspaces could not be listed, or keys changed while it was read); exporting what was read")
	}
	end := w.k.now()
	snap := &watchSnapshot{ReadAt: end.UTC(), Duration: end.Sub(begin).Seconds()}
	seen := make(map[[3]string]int)
	ids := make(map[string]bool, len(l.records))
	for i := range l.records {
		r := &l.records[i]
		k := watchedKey{Workspace: l.workspaceName(r.WorkspaceID), Name: r.Name, Label: r.Label, Disabled: r.Disabled,
			ExpiresAt: r.ExpiresAt, Limit: r.Limit, LimitRemaining: r.LimitRemaining}
		if r.Hash != "" {
			k.UsedID = usedID(r.Hash)
			ids[k.UsedID] = true
		}
		// Two keys of one workspace with one name and one label would be
		// one series: the second is told apart.
		id := [3]string{k.Workspace, k.Name, k.Label}
		if n := seen[id]; n > 0 {
			k.Name += " (" + strconv.Itoa(n+1) + ")"
		}
		seen[id]++
		snap.Keys = append(snap.Keys, k)
	}
	used := w.k.usage.forKeys(ids, l.readAt)
	if s != nil {
		for id, at := range s.loadUses(ctx) {
			used[id] = max(used[id], at)
		}
	}
	for i := range snap.Keys {
		if id := snap.Keys[i].UsedID; id != "" {
			snap.Keys[i].LastUsed = used[id]
		}
	}
	return snap, nil
}

// publish makes snap the exported one; its ReadAt, the last success, is
// when the account was read, by whichever replica.
func (w *keyWatch) publish(snap *watchSnapshot) {
	w.mu.Lock()
	w.snapshot = snap
	w.mu.Unlock()
}

// shareUses publishes this replica's uses of the account's keys, as of
// the last snapshot it exported: the replica that reads the snapshot
// another one listed has no listing of its own.
func (w *keyWatch) shareUses(ctx context.Context) {
	w.mu.Lock()
	snap := w.snapshot
	w.mu.Unlock()
	if snap == nil {
		return
	}
	ids := make(map[string]bool, len(snap.Keys))
	for _, k := range snap.Keys {
		if k.UsedID != "" {
			ids[k.UsedID] = true
		}
	}
	w.k.shared.storeUses(ctx, w.k.usage.forKeys(ids, snap.ReadAt))
}

// watchMetrics exports a watch's last snapshot. Series of keys that are
// gone disappear with the next snapshot.
type watchMetrics struct{ w *keyWatch }

var (
	watchLabels   = []string{"workspace", "name", "label"}
	descKeyExpiry = prometheus.NewDesc(metricName("key_expiry_timestamp_seconds"),
		"When the key expires (unix seconds); only keys with an expiry.", watchLabels, nil)
	descKeyLimit = prometheus.NewDesc(metricName("key_limit"),
		"The key's credit limit; only keys with a limit.", watchLabels, nil)
	descKeyLimitRemaining = prometheus.NewDesc(metricName("key_limit_remaining"),
		"Credits left of the key's limit; only keys with a limit.", watchLabels, nil)
	descKeyDisabled = prometheus.NewDesc(metricName("key_disabled"),
		"1 when the key is disabled.", watchLabels, nil)
	descKeyLastUsed = prometheus.NewDesc(metricName("key_last_used_timestamp_seconds"),
		"When the gateway (any replica) last proxied a request with the key, to the minute; absent for keys it has not seen.", watchLabels, nil)
	descWatchSuccess = prometheus.NewDesc(metricName("watch_last_success_timestamp_seconds"),
		"When the key watch last read the account's keys.", nil, nil)
	descWatchDuration = prometheus.NewDesc(metricName("watch_duration_seconds"),
		"How long the last read of the account's keys took.", nil, nil)
	descWatchInterval = prometheus.NewDesc(metricName("watch_interval_seconds"),
		"The key watch's configured interval.", nil, nil)
	descWatchKeys = prometheus.NewDesc(metricName("watch_keys"),
		"Keys in the last read of the account.", nil, nil)
)

func metricName(name string) string {
	return prometheus.BuildFQName(metricsNamespace, metricsSubsystem, name)
}

func (m watchMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descKeyExpiry, descKeyLimit, descKeyLimitRemaining, descKeyDisabled,
		descKeyLastUsed, descWatchSuccess, descWatchDuration, descWatchInterval, descWatchKeys} {
		ch <- d
	}
}

func (m watchMetrics) Collect(ch chan<- prometheus.Metric) {
	m.w.mu.Lock()
	snap := m.w.snapshot
	m.w.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descWatchInterval, prometheus.GaugeValue, m.w.interval.Seconds())
	if snap == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descWatchSuccess, prometheus.GaugeValue, float64(snap.ReadAt.Unix()))
	ch <- prometheus.MustNewConstMetric(descWatchDuration, prometheus.GaugeValue, snap.Duration)
	ch <- prometheus.MustNewConstMetric(descWatchKeys, prometheus.GaugeValue, float64(len(snap.Keys)))
	for _, k := range snap.Keys {
		labels := []string{k.Workspace, k.Name, k.Label}
		disabled := 0.0
		if k.Disabled {
			disabled = 1
		}
		ch <- prometheus.MustNewConstMetric(descKeyDisabled, prometheus.GaugeValue, disabled, labels...)
		if k.ExpiresAt != nil {
			ch <- prometheus.MustNewConstMetric(descKeyExpiry, prometheus.GaugeValue, float64(k.ExpiresAt.Unix()), labels...)
		}
		if k.Limit != nil {
			ch <- prometheus.MustNewConstMetric(descKeyLimit, prometheus.GaugeValue, *k.Limit, labels...)
			if k.LimitRemaining != nil {
				ch <- prometheus.MustNewConstMetric(descKeyLimitRemaining, prometheus.GaugeValue, *k.LimitRemaining, labels...)
			}
		}
		if k.LastUsed != 0 {
			ch <- prometheus.MustNewConstMetric(descKeyLastUsed, prometheus.GaugeValue, float64(k.LastUsed), labels...)
		}
	}
}

// register adds the watch's metrics to a config's registry. Only one watch
// per config can export: the series of two would collide, and Prometheus
// refuses the second with an AlreadyRegisteredError (each config has a
// registry of its own, so a reload never meets its predecessor's).
func (w *keyWatch) register(reg *prometheus.Registry) {
	if reg == nil {
		return
	}
	if err := reg.Register(watchMetrics{w}); errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		w.logger.Warn("watch_keys is configured in more than one handler of this config; only the first exports metrics")
	} else if err != nil {
		w.logger.Warn("the key watch's metrics could not be registered", zap.Error(err))
	}
}

// lastUsed is when the watch last saw a key of the account used, for the
// key check.
func (w *keyWatch) lastUsed(recordHashOf string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.snapshot == nil {
		return time.Time{}, false
	}
	id := usedID(recordHashOf)
	for _, k := range w.snapshot.Keys {
		if k.UsedID == id && k.LastUsed != 0 {
			return time.Unix(k.LastUsed, 0).UTC(), true
		}
	}
	return time.Time{}, false
}
