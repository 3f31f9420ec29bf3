package caddymodule

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`openrouter_keys {
		upstream          https://example.test/api/v1
		management_key    {env.OPENROUTER_MANAGEMENT_KEY}
		cache_size        5000
		cache_ttl         2m
		lookup_timeout    3s
		lookup_rate       7.5
		edge_answers      malformed
		expiry_skew       10s
		edge_disabled_for 1m
		warn_before       72h
		shared_storage
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Handler{
		UpstreamOptions: UpstreamOptions{Upstream: "https://example.test/api/v1", ManagementKey: "{env.OPENROUTER_MANAGEMENT_KEY}",
			LookupTimeout: caddy.Duration(3 * time.Second)},
		CacheSize: 5000, CacheTTL: caddy.Duration(2 * time.Minute),
		LookupRate: 7.5, EdgeAnswers: "malformed", ExpirySkew: caddy.Duration(10 * time.Second),
		EdgeDisabledFor: caddy.Duration(time.Minute), WarnBefore: caddy.Duration(72 * time.Hour), SharedStorage: true,
	}
	got, _ := json.Marshal(h)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("got  %s\nwant %s", got, exp)
	}

	var empty Handler
	if err := empty.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`openrouter_keys`)); err != nil {
		t.Errorf("bare directive: %v", err)
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for input, want := range map[string]string{
		`openrouter_keys { cache_size -1 }`:          "cache_size",
		`openrouter_keys { cache_size lots }`:        "cache_size",
		`openrouter_keys { cache_ttl soon }`:         "cache_ttl",
		`openrouter_keys { lookup_timeout -5s }`:     "lookup_timeout",
		`openrouter_keys { lookup_rate fast }`:       "lookup_rate",
		`openrouter_keys { edge_answers sometimes }`: "edge_answers",
		`openrouter_keys { expiry_skew }`:            "expiry_skew",
		`openrouter_keys { upstream a b }`:           "upstream",
		`openrouter_keys { colour blue }`:            "colour",
		`openrouter_keys extra`:                      "argument",
		`openrouter_keys { shared_storage redis }`:   "shared_storage",
		`openrouter_keys { warn_before often }`:      "warn_before",
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v does not name %q", input, err, want)
		}
	}
}

func provision(t *testing.T, h *Handler) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	err := h.Provision(ctx)
	if err == nil {
		t.Cleanup(func() { h.Cleanup() })
	}
	return err
}

func TestProvisionRejectsBadValues(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"cache_size":-1}`:                 "cache_size",
		`{"cache_ttl":-1}`:                  "cache_ttl",
		`{"lookup_timeout":"-1s"}`:          "lookup_timeout",
		`{"lookup_rate":-2}`:                "lookup_rate",
		`{"upstream":"ftp://example.test"}`: "upstream",
		`{"upstream":"example.test/api"}`:   "upstream",
		`{"upstream":"http://"}`:            "upstream",
		`{"edge_answers":"maybe"}`:          "edge_answers",
		`{"management_key":"{nope.x}"}`:     "management_key",
		`{"expiry_skew":"-3s"}`:             "expiry_skew",
		`{"edge_disabled_for":-5}`:          "edge_disabled_for",
		`{"warn_before":"-1h"}`:             "warn_before",
	} {
		var h Handler
		if err := json.Unmarshal([]byte(cfg), &h); err != nil {
			t.Fatalf("%s: %v", cfg, err)
		}
		err := provision(t, &h)
		if err == nil || !strings.HasPrefix(err.Error(), want+":") {
			t.Errorf("%s: error %v does not name %q", cfg, err, want)
		}
	}
}

func TestManagementKeyFromPlaceholders(t *testing.T) {
	mk := "sk-or-v1-" + strings.Repeat("9", 64)
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	file := t.TempDir() + "/mk"
	os.WriteFile(file, []byte(mk+"\n"), 0o600)

	for _, placeholder := range []string{"{env.OPENROUTER_KEYS_TEST_MK}", "{file." + file + "}"} {
		h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: placeholder}}
		if err := provision(t, &h); err != nil {
			t.Fatal(err)
		}
		if h.knowledge.client.managementKey != mk {
			t.Errorf("%s: resolved to a %d-byte value", placeholder, len(h.knowledge.client.managementKey))
		}
	}
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_UNSET}"}}
	if err := provision(t, &h); err != nil || h.knowledge.client.managementKey != "" {
		t.Errorf("an unset variable must mean no management key: %v", err)
	}
	h = Handler{UpstreamOptions: UpstreamOptions{ManagementKey: mk + " trailing words"}}
	if err := provision(t, &h); err == nil || strings.Contains(err.Error(), mk) {
		t.Errorf("a bad management key is refused without echoing it: %v", err)
	}
}

func TestProvisionDefaults(t *testing.T) {
	var h Handler
	if err := provision(t, &h); err != nil {
		t.Fatal(err)
	}
	k := h.knowledge
	if k.client.base != DefaultUpstream || k.cache.capacity != DefaultCacheSize || k.ttl != DefaultCacheTTL ||
		k.client.timeout != DefaultLookupTimeout || !h.edge.dead || h.edge.malformed || h.edge.skew != DefaultExpirySkew {
		t.Errorf("defaults: %+v %+v", k.client, h.edge)
	}
}

// The example config must adapt, and the directive must find its place
// without an order option even inside handle.
func TestCaddyfileExampleAdapts(t *testing.T) {
	src, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	gw, rp := strings.Index(s, `"handler":"openrouter_keys"`), strings.Index(s, `"handler":"reverse_proxy"`)
	if gw < 0 || rp < 0 || gw > rp {
		t.Errorf("openrouter_keys must come before reverse_proxy: %s", s)
	}
	if !strings.Contains(s, `{env.OPENROUTER_MANAGEMENT_KEY}`) {
		t.Error("the management key placeholder must stay a placeholder until provisioning")
	}
}

func TestDirectiveOrderedAfterEncode(t *testing.T) {
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(`:8080 {
		reverse_proxy localhost:9
		openrouter_keys
		encode
		respond /x 200
	}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	enc, gw, rp := strings.Index(s, `"handler":"encode"`), strings.Index(s, `"handler":"openrouter_keys"`), strings.Index(s, `"handler":"reverse_proxy"`)
	if !(enc >= 0 && enc < gw && gw < rp) {
		t.Errorf("want encode, openrouter_keys, reverse_proxy in that order: %s", s)
	}
}

// FuzzUnmarshalCaddyfile: any tokens give a config or an error, never a
// panic; a config that parses provisions or fails with the option's name.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, s := range []string{
		"openrouter_keys",
		"openrouter_keys {\n cache_size 10\n cache_ttl 1m\n}",
		"openrouter_keys {\n upstream http://127.0.0.1:1/api/v1\n edge_answers malformed\n shared_storage\n}",
		"openrouter_keys {\n lookup_rate 0.5\n warn_before 72h\n expiry_skew 0s\n}",
		"openrouter_keys {\n management_key {env.X}\n edge_disabled_for 1h\n}",
		"openrouter_keys {\n cache_size\n}", "openrouter_keys {", "openrouter_keys { } }", "openrouter_keys {\n upstream \"a b\"\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		h.SharedStorage = false // needs a running Caddy's storage
		if err := provision(t, &h); err != nil {
			name, _, _ := strings.Cut(err.Error(), ":")
			if !strings.Contains(input, name) {
				t.Fatalf("error %q names no option of %q", err, input)
			}
		}
	})
}
