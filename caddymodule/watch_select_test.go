package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// watchClock is the tests' settable clock.
var watchClock = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

// testKey is a key of a fake account with its record.
func testKey(i int) (string, keyRecord) {
	key := fmt.Sprintf("sk-or-v1-%064x", 1_000_000+i)
	return key, keyRecord{Hash: recordHash(key), Name: "k" + strconv.Itoa(i), Label: openrouter.Label(key)}
}

// testWatch is a watch of the fake account behind h, with a settable
// clock, driven by calling read (no goroutine, no sleeping).
func testWatch(t *testing.T, h http.Handler, maxKeys int) (*keyWatch, *time.Time) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	acct := newAccount(upstreamSettings{base: srv.URL + "/api/v1", managementKey: "mk", managementRate: 1e6})
	t.Cleanup(func() { _ = acct.Destruct() })
	k := &knowledge{acct: acct, usage: newUsageLog()}
	now := watchClock
	w := newKeyWatch(k, time.Minute, maxKeys, zap.NewNop())
	w.now = func() time.Time { return now }
	return w, &now
}

// readOnce runs one read and publishes it, as the watch's loop does.
func readOnce(t *testing.T, w *keyWatch) *watchSnapshot {
	t.Helper()
	snap, err := w.read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.publish(snap)
	return snap
}

// gathered is the watch's metrics: "name{label values}" -> value.
func gathered(t *testing.T, w *keyWatch) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(watchMetrics{w})
	return series(t, reg)
}

// keySeriesCount is how many keys have a key_disabled series.
func keySeriesCount(got map[string]float64) int {
	n := 0
	for s := range got {
		if strings.HasPrefix(s, "caddy_openrouter_keys_key_disabled{") {
			n++
		}
	}
	return n
}

// keysWithSeries are the names of keys with a key_disabled series.
func keysWithSeries(got map[string]float64) map[string]bool {
	out := map[string]bool{}
	for s := range got {
		if rest, ok := strings.CutPrefix(s, "caddy_openrouter_keys_key_disabled{"); ok {
			out[strings.Split(rest, ",")[1]] = true
		}
	}
	return out
}

func TestWatchSelectsTheMostUrgentKeys(t *testing.T) {
	f := newFakeAccount("a", "b")
	now := watchClock
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	credits := func(v float64) *float64 { return &v }
	used := map[string]time.Duration{} // name -> how long ago it was sent
	keyOf := map[string]string{}
	add := func(ws string, name string, edit func(r *keyRecord), ago time.Duration) {
		key, rec := testKey(len(keyOf))
		keyOf[name] = key
		rec.Name = name
		if edit != nil {
			edit(&rec)
		}
		f.keys[ws] = append(f.keys[ws], rec)
		if ago >= 0 {
			used[key] = ago
		}
	}
	// 400 keys that do not matter, around the ones that do.
	for i := range 400 {
		add([]string{"a", "b"}[i%2], "idle"+strconv.Itoa(i), nil, -1)
		switch i {
		case 50: // disabled, sent 10 minutes ago: most urgent
			add("a", "dead-sent", func(r *keyRecord) { r.Disabled = true }, 10*time.Minute)
		case 120: // in use, expires in 3 h
			add("b", "expiring-3h", func(r *keyRecord) { r.ExpiresAt = at(3 * time.Hour) }, 2*time.Hour)
		case 130: // in use, expires in 20 h: before the one above
			add("a", "expiring-20h", func(r *keyRecord) { r.ExpiresAt = at(20 * time.Hour) }, 2*24*time.Hour)
		case 200: // in use, 5 % of its daily limit left
			add("b", "spent", func(r *keyRecord) {
				r.Limit, r.LimitRemaining = credits(100), credits(5)
				daily := "daily"
				r.LimitReset = &daily
			}, time.Hour*3)
		case 250: // in use, nothing wrong
			add("a", "busy", nil, time.Minute)
		case 300: // not in use, expires in 10 days
			add("b", "unused-10d", func(r *keyRecord) { r.ExpiresAt = at(10 * 24 * time.Hour) }, -1)
		case 310: // used 8 days ago: not in use; expired
			add("b", "expired-old", func(r *keyRecord) { r.ExpiresAt = at(-time.Hour) }, 8*24*time.Hour)
		}
	}
	w, _ := testWatch(t, f, 4)
	for key, ago := range used { // told to the gateway's usage log, as requests are
		w.k.usage.used(key, now.Add(-ago))
	}
	readOnce(t, w)
	got := gathered(t, w)

	// The four most urgent: the dead key still sent, the keys in use that
	// fail soonest (20 h, 3 h, a spent limit). Not: the busy key, the
	// unused key expiring in 10 days, the long expired one, the idle ones.
	want := map[string]bool{"dead-sent": true, "expiring-20h": true, "expiring-3h": true, "spent": true}
	if named := keysWithSeries(got); fmt.Sprint(named) != fmt.Sprint(want) {
		t.Errorf("keys with series: %v, want %v", named, want)
	}
	// Labels in the order /metrics sorts them.
	counts := func(metric string, labels ...string) string {
		return "caddy_openrouter_keys_" + metric + "{" + strings.Join(labels, ",") + "}"
	}
	for s, v := range map[string]float64{
		"caddy_openrouter_keys_watch_keys{}":          407,
		"caddy_openrouter_keys_watch_keys_exported{}": 4,
		// busy and unused-10d matter and have no series; expired-old
		// does not matter (an expired key not sent this week).
		"caddy_openrouter_keys_watch_keys_dropped{}": 2,
		// The spent daily limit resets at the next 00:00 UTC.
		counts("key_limit_reset_timestamp_seconds", openrouter.Label(keyOf["spent"]), "spent", "daily", "ws b"): float64(time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC).Unix()),
		counts("key_last_used_timestamp_seconds", openrouter.Label(keyOf["dead-sent"]), "dead-sent", "ws a"):    float64(now.Add(-10 * time.Minute).Unix()),
		// Counts (named, state, used), with series of their own or not.
		counts("account_keys", "no", "active", "no"):        401, // idle, unused-10d
		counts("account_keys", "no", "active", "1h"):        1,   // busy
		counts("account_keys", "yes", "active", "7d"):       3,
		counts("account_keys", "yes", "disabled", "1h"):     1,
		counts("account_keys", "no", "expired", "no"):       1,
		counts("account_keys", "yes", "expired", "no"):      0,
		counts("account_keys_expiring", "yes", "7d", "24h"): 2,
		counts("account_keys_expiring", "yes", "7d", "72h"): 2,
		counts("account_keys_expiring", "yes", "7d", "14d"): 2,
		counts("account_keys_expiring", "no", "no", "14d"):  1, // unused-10d
		counts("account_keys_expiring", "no", "no", "24h"):  0,
		counts("account_keys_limit_spent", "yes", "7d"):     1,
		counts("account_keys_limit_spent", "no", "7d"):      0,
	} {
		if got[s] != v {
			t.Errorf("%s = %v, want %v", s, got[s], v)
		}
	}
	var total float64
	for s, v := range got {
		if strings.HasPrefix(s, "caddy_openrouter_keys_account_keys{") {
			total += v
		}
	}
	if total != 407 {
		t.Errorf("account_keys add up to %v, want every key (407)", total)
	}

	// Room for one more: the busy key, most recently used of the rest.
	w.maxKeys = 5
	readOnce(t, w)
	if named := keysWithSeries(gathered(t, w)); !named["busy"] || len(named) != 5 {
		t.Errorf("with 5 series: %v", named)
	}
}

func TestWatchExportsEveryKeyOfASmallAccount(t *testing.T) {
	f := newFakeAccount("a")
	f.add("a", 100)
	w, _ := testWatch(t, f, 100)
	readOnce(t, w)
	got := gathered(t, w)
	if n := keySeriesCount(got); n != 100 {
		t.Errorf("%d of 100 keys have series with watch_max_keys 100", n)
	}
	if got["caddy_openrouter_keys_watch_keys_dropped{}"] != 0 || got["caddy_openrouter_keys_account_keys{yes,active,no}"] != 100 {
		t.Errorf("dropped %v, named active %v", got["caddy_openrouter_keys_watch_keys_dropped{}"], got["caddy_openrouter_keys_account_keys{yes,active,no}"])
	}
	// One key more than the cap: keys that do not matter have no series.
	f.add("a", 1)
	readOnce(t, w)
	got = gathered(t, w)
	if n := keySeriesCount(got); n != 0 || got["caddy_openrouter_keys_account_keys{no,active,no}"] != 101 {
		t.Errorf("101 idle keys, cap 100: %d with series, %v counted", n, got["caddy_openrouter_keys_account_keys{no,active,no}"])
	}
}

// failingPages fails the listed GET /keys offsets once each.
type failingPages struct {
	http.Handler
	mu      sync.Mutex
	fail    map[string]bool // "workspace/offset"
	offsets []string        // every page asked for
}

func (f *failingPages) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/api/v1/keys" {
		page := r.URL.Query().Get("workspace_id") + "/" + r.URL.Query().Get("offset")
		f.mu.Lock()
		f.offsets = append(f.offsets, page)
		fail := f.fail[page]
		delete(f.fail, page)
		f.mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
	}
	f.Handler.ServeHTTP(w, r)
}

func TestWatchResumesAReadAfterAnError(t *testing.T) {
	f := newFakeAccount("a", "b")
	f.add("a", 450)
	f.add("b", 120)
	h := &failingPages{Handler: f, fail: map[string]bool{"a/297": true, "b/99": true}}
	w, clock := testWatch(t, h, 10)
	started := *clock
	for i, wantLast := range []string{"a/297", "b/99"} {
		if _, err := w.read(context.Background()); err == nil {
			t.Fatalf("read %d: no error from a failing page", i)
		}
		if last := h.offsets[len(h.offsets)-1]; last != wantLast {
			t.Fatalf("read %d stopped after %s, want %s", i, last, wantLast)
		}
		*clock = clock.Add(time.Minute)
	}
	snap := readOnce(t, w)
	// Every page read once, the two failing ones twice: no page before an
	// error was read again.
	want := "a/0 a/99 a/198 a/297 a/297 a/396 b/0 b/99 b/99"
	if got := strings.Join(h.offsets, " "); got != want {
		t.Errorf("pages read: %s\nwant        %s", got, want)
	}
	if snap.Total != 570 || !snap.Complete {
		t.Errorf("%d keys read (complete %v), want 570", snap.Total, snap.Complete)
	}
	// A full read's duration spans the errors.
	if got := gathered(t, w)["caddy_openrouter_keys_watch_duration_seconds{}"]; got != clock.Sub(started).Seconds() {
		t.Errorf("watch_duration_seconds = %v, want %v", got, clock.Sub(started).Seconds())
	}
	// The next read starts over.
	h.offsets = nil
	readOnce(t, w)
	if h.offsets[0] != "a/0" {
		t.Errorf("the read after a complete one began at %s", h.offsets[0])
	}
}

func TestWatchReadsKeysCreatedAndDeletedMeanwhile(t *testing.T) {
	f := newFakeAccount("a")
	f.add("a", 350)
	created := false
	f.afterPage = func(_ string, offset int) {
		if offset == 99 && !created { // a key created at the top: pages move down
			created = true
			f.add("a", 1)
		}
	}
	w, _ := testWatch(t, f, 1000)
	snap := readOnce(t, w)
	names := map[string]bool{}
	for _, k := range snap.Keys {
		if names[k.Label] {
			t.Errorf("%s read twice", k.Label)
		}
		names[k.Label] = true
	}
	if snap.Total != 350 || snap.Complete {
		t.Errorf("created meanwhile: %d keys (complete %v), want the 350 there when the read began, not complete", snap.Total, snap.Complete)
	}
	// Deleted: the read goes on, and says it may have missed keys.
	f.afterPage = func(_ string, offset int) {
		if offset == 99 {
			f.mu.Lock()
			f.keys["a"] = f.keys["a"][1:]
			f.mu.Unlock()
		}
	}
	if snap := readOnce(t, w); snap.Complete || snap.Total < 340 {
		t.Errorf("deleted meanwhile: %d keys, complete %v", snap.Total, snap.Complete)
	}
}

// BenchmarkWatchScrape prints what the watch adds to /metrics: bytes per
// exported key (every series a key can have) and for watch_max_keys at its
// default, and the time of a scrape.
func BenchmarkWatchScrape(b *testing.B) {
	for _, n := range []int{100, DefaultWatchMaxKeys, 10_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			w := &keyWatch{interval: time.Minute}
			exp, limit, left := watchClock.Add(48*time.Hour), 100.0, 42.5
			snap := &watchSnapshot{ReadAt: watchClock, Duration: 12.5}
			for i := range n {
				key, _ := testKey(i)
				k := watchedKey{Workspace: "Production", Name: fmt.Sprintf("customer-%06d", i), Label: openrouter.Label(key),
					ExpiresAt: &exp, Limit: &limit, LimitRemaining: &left, LimitWindow: "monthly", LimitResetAt: &exp,
					LastUsed: watchClock.Unix()}
				snap.Keys = append(snap.Keys, k)
			}
			snap.Total = n
			w.publish(snap)
			reg := prometheus.NewRegistry()
			reg.MustRegister(watchMetrics{w})
			h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
			var size int
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes/scrape")
			b.ReportMetric(float64(size)/float64(n), "bytes/key")
		})
	}
}

// BenchmarkWatchRead prints the memory a read of a large account keeps
// (the snapshot: watch_max_keys keys and counts, not the account) and
// allocates per key read.
func BenchmarkWatchRead(b *testing.B) {
	const keys = 50_000
	f := newFakeAccount("a")
	f.add("a", keys)
	srv := httptest.NewServer(f)
	defer srv.Close()
	acct := newAccount(upstreamSettings{base: srv.URL + "/api/v1", managementKey: "mk", managementRate: 1e6})
	defer func() { _ = acct.Destruct() }()
	w := newKeyWatch(&knowledge{acct: acct, usage: newUsageLog()}, time.Minute, DefaultWatchMaxKeys, zap.NewNop())
	var kept uint64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		snap, err := w.read(context.Background())
		if err != nil || snap.Total != keys {
			b.Fatal(snap, err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		kept = after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
		runtime.KeepAlive(snap)
	}
	b.ReportMetric(float64(kept), "bytes-kept")
	b.ReportMetric(float64(keys), "keys")
}

// TestWatchSpendsTheManagementBudget: the watch's requests come out of the
// account's management budget (shared with explanations), and a read
// stops, to resume later, when the budget will not allow the next page
// before its deadline.
func TestWatchSpendsTheManagementBudget(t *testing.T) {
	f := newFakeAccount("a")
	f.add("a", 10)
	srv := httptest.NewServer(f)
	defer srv.Close()
	// One request now, the next in about 17 minutes.
	acct := newAccount(upstreamSettings{base: srv.URL + "/api/v1", managementKey: "mk", managementRate: 0.001})
	defer func() { _ = acct.Destruct() }()
	w := newKeyWatch(&knowledge{acct: acct, usage: newUsageLog()}, time.Minute, 10, zap.NewNop())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := w.read(ctx); err == nil {
		t.Fatal("a read of two requests within a budget of one")
	}
	f.mu.Lock()
	requests := f.requests
	f.mu.Unlock()
	if requests != 2 { // GET /workspaces, and its empty page
		t.Errorf("%d requests, want the workspaces only", requests)
	}
	if acct.management.Allow() {
		t.Error("the account's management budget is untouched by the watch")
	}
	if w.reading == nil || w.reading.workspaces == nil {
		t.Error("the read does not resume after the workspaces")
	}
}
