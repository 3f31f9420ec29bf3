package caddymodule

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/openrouter-keys/caddy-openrouter-keys/caddymodule/openrouter"
)

// series gathers the registry into "name{workspace,name,label}" -> value.
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetValue())
			}
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

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
