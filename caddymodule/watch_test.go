package caddymodule

// watch_test.go tests the key watch as a handler runs it: the series it
// exports, and its reads timed by the account's clock, which the tests
// step instead of waiting.

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// TestWatchExportsEveryKey: a handler with watch_keys exports the health
// of the account's keys on Caddy's registry, read at the interval, with
// the last use of the keys it proxied and no series of deleted keys. The
// watch is timed by the test's clock: each step is one read, done.
func TestWatchExportsEveryKey(t *testing.T) {
	f := newFakeAccount("w-default", "w-research")
	f.workspaces[0].Name, f.workspaces[1].Name = "Default", "Research"
	inUse := goodKey
	clk := newTestClock(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	exp := clk.now().Add(2 * time.Hour)
	limit, left := 10.0, 0.5
	f.keys["w-default"] = []keyRecord{
		{Hash: recordHash(inUse), Name: "prod", Label: openrouter.Label(inUse), ExpiresAt: &exp, Limit: &limit, LimitRemaining: &left},
		{Hash: "h2", Name: "old", Label: "sk-or-v1-aaa...bbb", Disabled: true},
	}
	f.keys["w-research"] = []keyRecord{{Hash: "h3", Name: "notebook", Label: "sk-or-v1-ccc...ddd"}}
	srv := httptest.NewServer(f)
	defer srv.Close()

	t.Setenv("OPENROUTER_KEYS_TEST_WATCH_MK", "sk-or-v1-"+strings.Repeat("e", 64))
	// A management_rate that never makes the watch wait for the budget in
	// real time: its pacing is not what this test is about.
	h := Handler{UpstreamOptions: UpstreamOptions{Upstream: srv.URL + "/api/v1", ManagementKey: "{env.OPENROUTER_KEYS_TEST_WATCH_MK}", ManagementRate: 1000},
		WatchKeys: caddy.Duration(time.Second)}
	ctx := provisionOnClock(t, &h, clk)
	reg := ctx.GetMetricsRegistry()
	clk.awaitTimer() // the read at start is done
	if got := series(t, reg); got["caddy_openrouter_keys_watch_keys{}"] != 3 || got["caddy_openrouter_keys_key_last_used_timestamp_seconds{sk-or-v1-012...def,prod,Default}"] != 0 {
		t.Errorf("after the first read, before any use: %v", got)
	}
	// A request with the key in use, then the next read, an interval after
	// the first began and not before.
	usedAt := clk.now()
	serve(t, &h, upstreamAnswer(200, nil, []byte(`{}`)), "POST", "/api/v1/chat/completions", inUse)
	clk.advance(time.Second - time.Nanosecond)
	if clk.pendingTimers() != 1 {
		t.Fatal("the watch read again before its interval passed")
	}
	clk.advance(time.Nanosecond)
	clk.awaitTimer()
	got := series(t, reg)
	want := map[string]float64{
		"caddy_openrouter_keys_key_expiry_timestamp_seconds{sk-or-v1-012...def,prod,Default}":    float64(exp.Unix()),
		"caddy_openrouter_keys_key_limit{sk-or-v1-012...def,prod,Default}":                       10,
		"caddy_openrouter_keys_key_limit_remaining{sk-or-v1-012...def,prod,Default}":             0.5,
		"caddy_openrouter_keys_key_disabled{sk-or-v1-012...def,prod,Default}":                    0,
		"caddy_openrouter_keys_key_disabled{sk-or-v1-aaa...bbb,old,Default}":                     1,
		"caddy_openrouter_keys_key_disabled{sk-or-v1-ccc...ddd,notebook,Research}":               0,
		"caddy_openrouter_keys_key_last_used_timestamp_seconds{sk-or-v1-012...def,prod,Default}": float64(usedAt.Unix()),
		"caddy_openrouter_keys_watch_interval_seconds{}":                                         1,
		"caddy_openrouter_keys_watch_keys{}":                                                     3,
		"caddy_openrouter_keys_watch_last_success_timestamp_seconds{}":                           float64(clk.now().Unix()),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k := range got {
		if strings.Contains(k, "notebook") && !strings.Contains(k, "key_disabled") {
			t.Errorf("a key without expiry, limit or use has %s", k)
		}
		if strings.Contains(k, recordHash(inUse)) || strings.Contains(k, inUse[9:30]) {
			t.Errorf("key material in %s", k)
		}
	}
	// A key deleted between reads disappears with the next read.
	f.mu.Lock()
	f.keys["w-research"] = []keyRecord{} // served as an empty page, as OpenRouter does
	f.mu.Unlock()
	clk.advance(time.Second)
	clk.awaitTimer()
	if _, ok := series(t, reg)["caddy_openrouter_keys_key_disabled{sk-or-v1-ccc...ddd,notebook,Research}"]; ok {
		t.Error("the deleted key's series is still exported")
	}
}

// TestWatchReadsAtItsInterval: the watch reads the account at once, then
// an interval after each read began, and not before; a failed read is
// retried after watchRetry, and a read that took longer than the interval
// is followed by the next at once.
func TestWatchReadsAtItsInterval(t *testing.T) {
	f := newFakeAccount("a")
	f.add("a", 3)
	srv := httptest.NewServer(f)
	defer srv.Close()
	acct := newAccount(upstreamSettings{base: srv.URL + "/api/v1", managementKey: "mk", managementRate: 1000})
	defer func() { _ = acct.Destruct() }()
	clk := newTestClock(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	setClock(acct, clk)
	interval := 5 * time.Minute
	w := newKeyWatch(&knowledge{acct: acct, usage: newUsageLog()}, interval, 10, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	readAt := func() time.Time {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.snapshot == nil {
			return time.Time{}
		}
		return w.snapshot.ReadAt
	}
	requests := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.requests
	}

	clk.awaitTimer()
	start, perRead := clk.now(), requests()
	if !readAt().Equal(start) {
		t.Fatalf("read at %v, want at once (%v)", readAt(), start)
	}
	clk.advance(interval - time.Nanosecond)
	if clk.pendingTimers() != 1 {
		t.Fatal("read again before the interval passed")
	}
	clk.advance(time.Nanosecond)
	clk.awaitTimer()
	if !readAt().Equal(start.Add(interval)) {
		t.Errorf("second read at %v, want %v", readAt(), start.Add(interval))
	}

	// A page that is not OpenRouter's JSON fails the read; it is retried
	// after watchRetry, sooner than the interval.
	f.mu.Lock()
	kept := f.keys["a"]
	f.keys["a"] = nil // served as null
	f.mu.Unlock()
	clk.advance(interval)
	clk.awaitTimer()
	failedAt := clk.now()
	if readAt().Equal(failedAt) {
		t.Fatal("a failed read was published")
	}
	f.mu.Lock()
	f.keys["a"] = kept
	f.mu.Unlock()
	clk.advance(watchRetry - time.Nanosecond)
	if clk.pendingTimers() != 1 {
		t.Fatal("retried before watchRetry passed")
	}
	clk.advance(time.Nanosecond)
	clk.awaitTimer()
	if !readAt().Equal(failedAt.Add(watchRetry)) {
		t.Errorf("retried read at %v, want %v", readAt(), failedAt.Add(watchRetry))
	}

	// A read during which twice the interval passes: the next follows at
	// once, and the one after it an interval later.
	var once sync.Once
	f.mu.Lock()
	f.afterPage = func(string, int) { once.Do(func() { clk.advance(2 * interval) }) }
	f.mu.Unlock()
	before := requests()
	clk.advance(interval)
	clk.awaitTimer()
	if n := requests() - before; n != 2*perRead {
		t.Errorf("%d requests after a long read, want two reads of %d", n, perRead)
	}
	if want := failedAt.Add(watchRetry + 3*interval); !readAt().Equal(want) {
		t.Errorf("read at %v, want %v", readAt(), want)
	}
}

// A second watch in one config's registry cannot export: that is said.
func TestSecondWatchInOneConfigWarns(t *testing.T) {
	reg := prometheus.NewRegistry()
	core, logs := observer.New(zapcore.WarnLevel)
	first := &keyWatch{interval: time.Minute, logger: zap.New(core)}
	second := &keyWatch{interval: time.Minute, logger: zap.New(core)}
	first.register(reg)
	if logs.Len() != 0 {
		t.Fatalf("the first watch warned: %v", logs.All())
	}
	second.register(reg)
	if logs.FilterMessageSnippet("more than one handler").Len() != 1 {
		t.Errorf("no warning for the second watch: %v", logs.All())
	}
}
