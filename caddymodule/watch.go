package caddymodule

// watch.go owns watch_keys: reading every key of the account at an
// interval, page by page within the management budget, and exporting the
// health (expiry, limit and its reset, disabled, last use by this gateway)
// of the keys that matter on Caddy's /metrics, with counts of all, so that
// alert rules can warn before keys in use expire or run dry.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
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
	id := usedID(openrouter.RecordHashOf(key))
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.last[id]; !ok && len(u.last) >= maxUsedKeys {
		return // a flood of random keys; real keys were seen before it
	}
	u.last[id] = now.Unix()
}

// lastOf is when the key with this usedID was last used, 0 if not seen.
func (u *usageLog) lastOf(id string) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last[id]
}

// all is every use remembered, to share with other replicas.
func (u *usageLog) all() map[string]int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return maps.Clone(u.last)
}

// forget drops the uses, before a time, of keys a complete read of the
// account did not have (kept: the uses of the keys it had): a key used
// after it may be newer than the read.
func (u *usageLog) forget(kept map[string]int64, before time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for id, at := range u.last {
		if _, ok := kept[id]; !ok && at < before.Unix() {
			delete(u.last, id)
		}
	}
}

// usedID names a record in shared usage: a hash of its hash, so that
// storage never holds a record hash (sha256 of a key).
func usedID(recordHash string) string {
	sum := sha256.Sum256([]byte("openrouter_keys/used/v1:" + recordHash))
	return hex.EncodeToString(sum[:16])
}

// watchSnapshot is one full read of the account: what is exported, and
// what replicas share. It holds the keys to export (at most
// watch_max_keys), counts of all, and the last use of every key of the
// account seen used: never the whole account.
type watchSnapshot struct {
	Started  time.Time `json:"started"`
	ReadAt   time.Time `json:"read_at"`
	Duration float64   `json:"duration_seconds"`
	// Complete: every workspace was read and no page shifted.
	Complete bool `json:"complete"`
	watchSelection
	// Uses is the last use (unix seconds) of each key of the account any
	// replica saw used, by usedID of its record hash.
	Uses map[string]int64 `json:"uses,omitempty"`
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
	// LimitWindow is the limit's reset window (daily, weekly, monthly)
	// and LimitResetAt when the window whose figures were read resets.
	LimitWindow  string     `json:"limit_window,omitempty"`
	LimitResetAt *time.Time `json:"limit_reset_at,omitempty"`
	LastUsed     int64      `json:"last_used,omitempty"` // unix seconds
}

// Limits of the watch's reading.
const (
	// maxWatchPages bounds one read (about 20 million keys), against an
	// upstream whose pages never end.
	maxWatchPages = 200_000
	// watchRetry is the longest wait before a failed read resumes.
	watchRetry = time.Minute
	// maxPageFailures is how many times in a row a page may fail before
	// the read leaves the rest of its workspace out.
	maxPageFailures = 3
)

// keyWatch reads the account at an interval, for the config's lifetime.
type keyWatch struct {
	k        *knowledge
	interval time.Duration
	maxKeys  int
	logger   *zap.Logger
	now      func() time.Time
	// pace spaces the watch's management requests: half of
	// management_rate of its own, then the account's shared budget, so
	// that a large account's reading leaves room for explanations.
	pace *rate.Limiter

	// reading is the read in progress, resumed after an error. Only the
	// watch's goroutine touches it.
	reading *accountRead

	mu       sync.Mutex
	snapshot *watchSnapshot
}

// accountRead is a read of the account in progress: where it stopped and
// what it gathered.
type accountRead struct {
	started    time.Time
	workspaces []workspace         // nil until listed
	ws         int                 // the workspace being read
	walk       openrouter.KeysWalk // through its pages
	pages      int
	failures   int // in a row, of the next page
	complete   bool
	sel        *keySelection
	uses       map[string]int64 // uses of the keys read
	shared     map[string]int64 // every replica's uses, as of the start
}

// startKeyWatch starts the watch; it stops with ctx.
func startKeyWatch(ctx context.Context, k *knowledge, interval time.Duration, maxKeys int, logger *zap.Logger) *keyWatch {
	w := newKeyWatch(k, interval, maxKeys, logger)
	go w.run(ctx)
	return w
}

func newKeyWatch(k *knowledge, interval time.Duration, maxKeys int, logger *zap.Logger) *keyWatch {
	shared := k.acct.management
	return &keyWatch{k: k, interval: interval, maxKeys: maxKeys, logger: logger, now: k.now,
		pace: rate.NewLimiter(shared.Limit()/2, max(1, shared.Burst()/2))}
}

// run reads the account at once, then an interval after each read began.
// Its waits are timed by the account's clock, which tests step.
func (w *keyWatch) run(ctx context.Context) {
	clock := &w.k.acct.clock
	next := clock.after(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-next:
			begin := w.now()
			if err := w.tick(ctx); err != nil && ctx.Err() == nil {
				w.logger.Warn("key watch: the account's keys could not be read; the read resumes where it stopped", zap.Error(err))
				next = clock.after(min(w.interval, watchRetry))
				continue
			}
			// A read longer than the interval is followed by the next at
			// once.
			next = clock.after(max(0, w.interval-w.now().Sub(begin)))
		}
	}
}

// tick reads the account (or, with shared storage, lets the replica that
// holds the lock do it and reads its result) and publishes this replica's
// uses.
func (w *keyWatch) tick(ctx context.Context) error {
	s := w.k.shared
	if s == nil {
		snap, err := w.read(ctx)
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
		if snap, ok := s.loadWatchSnapshot(ctx); ok && w.now().Sub(snap.ReadAt) < 3*w.period(snap) {
			w.publishShared(snap)
			return nil
		}
		return err
	}
	defer unlock()
	if snap, ok := s.loadWatchSnapshot(ctx); ok && w.now().Sub(snap.ReadAt) < w.interval/2 {
		w.publishShared(snap) // another replica just read the account
		return nil
	}
	snap, err := w.read(ctx)
	if err != nil {
		return err
	}
	s.storeWatchSnapshot(ctx, snap)
	w.publish(snap)
	return nil
}

// period is how often a snapshot can be expected: the interval, or the
// time a full read takes when that is longer.
func (w *keyWatch) period(snap *watchSnapshot) time.Duration {
	return max(w.interval, time.Duration(snap.Duration*float64(time.Second)))
}

// read reads the account page by page within the management budget,
// resuming the read an error stopped, into the keys to export and the
// counts of all; with shared storage, the uses every replica saw.
func (w *keyWatch) read(ctx context.Context) (*watchSnapshot, error) {
	a := w.k.acct
	r := w.reading
	if r == nil {
		now := w.now()
		r = &accountRead{started: now, complete: true, sel: newKeySelection(w.maxKeys, now), uses: make(map[string]int64)}
		if w.k.shared != nil {
			r.shared = w.k.shared.loadUses(ctx)
		}
		w.reading = r
	}
	if r.workspaces == nil {
		if err := w.wait(ctx); err != nil {
			return nil, err
		}
		wss, err := a.client.Workspaces(ctx, a.managementKey, maxWorkspaces)
		if err != nil {
			if failureOf(err) == failCancelled {
				return nil, err
			}
			// Without the workspaces, the default one is all that can be
			// read.
			r.complete = false
			wss = []workspace{{}}
		}
		r.workspaces = wss
	}
	for r.ws < len(r.workspaces) {
		if r.pages >= maxWatchPages {
			r.complete = false
			break
		}
		if err := w.wait(ctx); err != nil {
			return nil, err
		}
		ws := r.workspaces[r.ws]
		page, err := a.client.KeysPage(ctx, a.managementKey, ws.ID, r.walk.Next())
		if err != nil {
			if r.failures++; r.failures < maxPageFailures || failureOf(err) == failCancelled {
				return nil, err
			}
			// A page that keeps failing does not stop the watch: the
			// rest of its workspace is left out of this read.
			w.logger.Warn("key watch: a page of a workspace's keys keeps failing; this read goes on without the rest of the workspace", zap.Error(err))
			r.complete = false
			r.ws, r.walk, r.failures = r.ws+1, openrouter.KeysWalk{}, 0
			continue
		}
		r.failures = 0
		r.pages++
		w.addPage(r, ws, page)
	}
	if !r.complete {
		// Published anyway: every key read is real; absence of a key is
		// not claimed by the metrics.
		w.logger.Warn("key watch: the read of the account is not complete (workspaces could not be listed, or keys changed while it was read); exporting what was read")
	}
	w.reading = nil
	done := w.now()
	snap := &watchSnapshot{Started: r.started, ReadAt: done.UTC(), Duration: done.Sub(r.started).Seconds(),
		Complete: r.complete, watchSelection: r.sel.result(), Uses: r.uses}
	if r.complete {
		w.k.usage.forget(r.uses, r.started)
	}
	return snap, nil
}

// addPage adds one page of a workspace's keys to a read. Pages overlap by
// one record (openrouter.KeysWalk). When a page does not begin with the
// record that ended the page before, keys were created or deleted
// meanwhile: the records already read are skipped (created: they moved
// down) or some may be missed (deleted: they moved up), and the read is
// not complete.
func (w *keyWatch) addPage(r *accountRead, ws workspace, page []keyRecord) {
	fresh, ok := r.walk.Take(page)
	if !ok {
		r.complete = false
	}
	wsName := openrouter.WorkspaceName(r.workspaces, ws.ID)
	now := w.now()
	for i := range fresh {
		rec := &fresh[i]
		k := watchedKey{Workspace: wsName, Name: rec.Name, Label: rec.Label, Disabled: rec.Disabled,
			ExpiresAt: rec.ExpiresAt, Limit: rec.Limit, LimitRemaining: rec.LimitRemaining}
		if rec.Limit != nil {
			window := openrouter.WindowOfLimitReset(rec.LimitReset)
			if at, ok := window.ResetsAt(now); ok {
				k.LimitWindow, k.LimitResetAt = window.String(), &at
			}
		}
		if rec.Hash != "" {
			id := usedID(rec.Hash)
			if at := max(w.k.usage.lastOf(id), r.shared[id]); at != 0 {
				k.LastUsed, r.uses[id] = at, at
			}
		}
		r.sel.add(k)
	}
	if r.walk.Ended() {
		r.ws, r.walk = r.ws+1, openrouter.KeysWalk{}
	}
}

// wait spaces the watch's management requests.
func (w *keyWatch) wait(ctx context.Context) error {
	if err := w.pace.Wait(ctx); err != nil {
		return openrouter.ContextError(ctx, endpointKeysList, err)
	}
	if err := w.k.acct.management.Wait(ctx); err != nil {
		return openrouter.ContextError(ctx, endpointKeysList, err)
	}
	return nil
}

// publish makes snap the exported one; its ReadAt, the last success, is
// when the account was read, by whichever replica.
func (w *keyWatch) publish(snap *watchSnapshot) {
	w.mu.Lock()
	w.snapshot = snap
	w.mu.Unlock()
}

// publishShared publishes another replica's read, which makes a read of
// this replica's that began before it pointless, and forgets the uses
// that read proves are of no key of the account. A use is published at
// most an interval (and a lock's wait) after it happened: uses older than
// that before the read began are in the read, if their key is.
func (w *keyWatch) publishShared(snap *watchSnapshot) {
	if w.reading != nil && snap.Started.After(w.reading.started) {
		w.reading = nil
	}
	if snap.Complete {
		w.k.usage.forget(snap.Uses, snap.Started.Add(-2*w.interval))
	}
	w.publish(snap)
}

// shareUses publishes this replica's uses (at most maxUsedKeys), for the
// replica that reads the account.
func (w *keyWatch) shareUses(ctx context.Context) {
	w.k.shared.storeUses(ctx, w.k.usage.all())
}

// watchMetrics exports a watch's last snapshot. Series of keys that are
// gone, or no longer among the keys exported, disappear with the next
// snapshot.
type watchMetrics struct{ w *keyWatch }

var (
	watchLabels   = []string{"workspace", "name", "label"}
	descKeyExpiry = prometheus.NewDesc(metricName("key_expiry_timestamp_seconds"),
		"When the key expires (unix seconds); only keys with an expiry.", watchLabels, nil)
	descKeyLimit = prometheus.NewDesc(metricName("key_limit"),
		"The key's credit limit; only keys with a limit.", watchLabels, nil)
	descKeyLimitRemaining = prometheus.NewDesc(metricName("key_limit_remaining"),
		"Credits left of the key's limit (of its current window, for a limit that resets); only keys with a limit.", watchLabels, nil)
	descKeyLimitReset = prometheus.NewDesc(metricName("key_limit_reset_timestamp_seconds"),
		"When the window of the key's limit that limit_remaining is of resets (unix seconds): 00:00 UTC, Mondays, the 1st; only limits that reset.",
		append(slices.Clone(watchLabels), "window"), nil)
	descKeyDisabled = prometheus.NewDesc(metricName("key_disabled"),
		"1 when the key is disabled.", watchLabels, nil)
	descKeyLastUsed = prometheus.NewDesc(metricName("key_last_used_timestamp_seconds"),
		"When the gateway (any replica) last proxied a request with the key, to the minute; absent for keys it has not seen.", watchLabels, nil)
	descWatchSuccess = prometheus.NewDesc(metricName("watch_last_success_timestamp_seconds"),
		"When the key watch last finished reading the account's keys.", nil, nil)
	descWatchDuration = prometheus.NewDesc(metricName("watch_duration_seconds"),
		"How long the last full read of the account's keys took, pauses for the management budget and errors included.", nil, nil)
	descWatchInterval = prometheus.NewDesc(metricName("watch_interval_seconds"),
		"The key watch's configured interval.", nil, nil)
	descWatchKeys = prometheus.NewDesc(metricName("watch_keys"),
		"Keys in the last read of the account.", nil, nil)
	descWatchExported = prometheus.NewDesc(metricName("watch_keys_exported"),
		"Keys of the last read with series of their own (at most watch_max_keys, the most urgent).", nil, nil)
	descWatchDropped = prometheus.NewDesc(metricName("watch_keys_dropped"),
		"Keys that matter (in use, expiring within 14 days, limit mostly spent) without series of their own for want of room under watch_max_keys; counted only in account_keys*.", nil, nil)
	accountLabels   = []string{"state", "used", "named"}
	descAccountKeys = prometheus.NewDesc(metricName("account_keys"),
		"Keys of the account by state (active, disabled, expired), last use through the gateway (1h: within the hour, 7d: within 7 days but not the hour, no) and whether they have series of their own (named yes or no).",
		accountLabels, nil)
	descAccountExpiring = prometheus.NewDesc(metricName("account_keys_expiring"),
		"Active keys of the account expiring within 24h, 72h or 14d, by last use and whether they have series of their own.",
		[]string{"within", "used", "named"}, nil)
	descAccountLimitSpent = prometheus.NewDesc(metricName("account_keys_limit_spent"),
		"Active keys of the account with under 10% of their limit (of its window) left, by last use and whether they have series of their own.",
		[]string{"used", "named"}, nil)
)

func metricName(name string) string {
	return prometheus.BuildFQName(metricsNamespace, metricsSubsystem, name)
}

func (m watchMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descKeyExpiry, descKeyLimit, descKeyLimitRemaining, descKeyLimitReset, descKeyDisabled,
		descKeyLastUsed, descWatchSuccess, descWatchDuration, descWatchInterval, descWatchKeys, descWatchExported, descWatchDropped,
		descAccountKeys, descAccountExpiring, descAccountLimitSpent} {
		ch <- d
	}
}

func (m watchMetrics) Collect(ch chan<- prometheus.Metric) {
	m.w.mu.Lock()
	snap := m.w.snapshot
	m.w.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descWatchInterval, m.w.interval.Seconds())
	if snap == nil {
		return
	}
	gauge(descWatchSuccess, float64(snap.ReadAt.Unix()))
	gauge(descWatchDuration, snap.Duration)
	gauge(descWatchKeys, float64(snap.Total))
	gauge(descWatchExported, float64(len(snap.Keys)))
	gauge(descWatchDropped, float64(snap.Dropped))
	for _, k := range snap.Keys {
		labels := []string{k.Workspace, k.Name, k.Label}
		disabled := 0.0
		if k.Disabled {
			disabled = 1
		}
		gauge(descKeyDisabled, disabled, labels...)
		if k.ExpiresAt != nil {
			gauge(descKeyExpiry, float64(k.ExpiresAt.Unix()), labels...)
		}
		if k.Limit != nil {
			gauge(descKeyLimit, *k.Limit, labels...)
			if k.LimitRemaining != nil {
				gauge(descKeyLimitRemaining, *k.LimitRemaining, labels...)
			}
			if k.LimitResetAt != nil {
				gauge(descKeyLimitReset, float64(k.LimitResetAt.Unix()), append(labels, k.LimitWindow)...)
			}
		}
		if k.LastUsed != 0 {
			gauge(descKeyLastUsed, float64(k.LastUsed), labels...)
		}
	}
	named := map[string]*keyCounts{"yes": &snap.Named, "no": minus(snap.All, snap.Named)}
	for n, c := range named {
		for used, usedLabel := range useLabels {
			for cond, condLabel := range conditionLabels {
				gauge(descAccountKeys, float64(c.ByCondition[cond][used]), condLabel, usedLabel, n)
			}
			for i, win := range expiryWindows {
				gauge(descAccountExpiring, float64(c.Expiring[i][used]), win.label, usedLabel, n)
			}
			gauge(descAccountLimitSpent, float64(c.LimitSpent[used]), usedLabel, n)
		}
	}
}

// minus is the counts of a that are not in b.
func minus(a, b keyCounts) *keyCounts {
	for i := range a.ByCondition {
		for j := range a.ByCondition[i] {
			a.ByCondition[i][j] -= b.ByCondition[i][j]
		}
	}
	for i := range a.Expiring {
		for j := range a.Expiring[i] {
			a.Expiring[i][j] -= b.Expiring[i][j]
		}
	}
	for j := range a.LimitSpent {
		a.LimitSpent[j] -= b.LimitSpent[j]
	}
	return &a
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
	if at, ok := w.snapshot.Uses[usedID(recordHashOf)]; ok {
		return time.Unix(at, 0).UTC(), true
	}
	return time.Time{}, false
}
