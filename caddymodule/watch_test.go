package caddymodule

import (
	"context"
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

func TestWatchExportsEveryKey(t *testing.T) {
	f := newFakeAccount("w-default", "w-research")
	f.workspaces[0].Name, f.workspaces[1].Name = "Default", "Research"
	inUse := goodKey
	exp := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	limit, left := 10.0, 0.5
	f.keys["w-default"] = []keyRecord{
		{Hash: recordHash(inUse), Name: "prod", Label: openrouter.Label(inUse), ExpiresAt: &exp, Limit: &limit, LimitRemaining: &left},
		{Hash: "h2", Name: "old", Label: "sk-or-v1-aaa...bbb", Disabled: true},
	}
	f.keys["w-research"] = []keyRecord{{Hash: "h3", Name: "notebook", Label: "sk-or-v1-ccc...ddd"}}
	srv := httptest.NewServer(f)
	defer srv.Close()

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	t.Setenv("OPENROUTER_KEYS_TEST_WATCH_MK", "sk-or-v1-"+strings.Repeat("e", 64))
	h := Handler{UpstreamOptions: UpstreamOptions{Upstream: srv.URL + "/api/v1", ManagementKey: "{env.OPENROUTER_KEYS_TEST_WATCH_MK}"},
		WatchKeys: caddy.Duration(time.Second)}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	// A request with the key in use, before the watch reads the account
	// again.
	serve(t, &h, upstreamAnswer(200, nil, []byte(`{}`)), "POST", "/api/v1/chat/completions", inUse)
	reg := ctx.GetMetricsRegistry()
	var got map[string]float64
	waitFor(t, "the watch to see the key used", func() bool {
		got = series(t, reg)
		return got["caddy_openrouter_keys_key_last_used_timestamp_seconds{sk-or-v1-012...def,prod,Default}"] > 0
	})
	want := map[string]float64{
		"caddy_openrouter_keys_key_expiry_timestamp_seconds{sk-or-v1-012...def,prod,Default}": float64(exp.Unix()),
		"caddy_openrouter_keys_key_limit{sk-or-v1-012...def,prod,Default}":                    10,
		"caddy_openrouter_keys_key_limit_remaining{sk-or-v1-012...def,prod,Default}":          0.5,
		"caddy_openrouter_keys_key_disabled{sk-or-v1-012...def,prod,Default}":                 0,
		"caddy_openrouter_keys_key_disabled{sk-or-v1-aaa...bbb,old,Default}":                  1,
		"caddy_openrouter_keys_key_disabled{sk-or-v1-ccc...ddd,notebook,Research}":            0,
		"caddy_openrouter_keys_watch_interval_seconds{}":                                      1,
		"caddy_openrouter_keys_watch_keys{}":                                                  3,
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
	if got["caddy_openrouter_keys_watch_last_success_timestamp_seconds{}"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Error("no recent success")
	}
	// A key deleted between reads disappears with the next read.
	f.mu.Lock()
	f.keys["w-research"] = nil
	f.mu.Unlock()
	waitFor(t, "the deleted key's series to vanish", func() bool {
		_, ok := series(t, reg)["caddy_openrouter_keys_key_disabled{sk-or-v1-ccc...ddd,notebook,Research}"]
		return !ok
	})
}
