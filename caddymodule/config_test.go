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

// dispenser tokenizes input the way Caddy does, returning lexer errors
// (caddyfile.NewTestDispenser exits the process on them).
func dispenser(input string) (*caddyfile.Dispenser, error) {
	tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
	if err != nil {
		return nil, err
	}
	return caddyfile.NewDispenser(tokens), nil
}

func unmarshalCaddyfile(t *testing.T, input string) (Handler, error) {
	t.Helper()
	var h Handler
	d, err := dispenser(input)
	if err != nil {
		return h, err
	}
	return h, h.UnmarshalCaddyfile(d)
}

func TestUnmarshalCaddyfile(t *testing.T) {
	h, err := unmarshalCaddyfile(t, `openrouter_keys {
		upstream          https://example.test/api/v1
		management_key    {env.OPENROUTER_MANAGEMENT_KEY}
		lookup_timeout    3s
		management_rate   2.5
		cache_size        5000
		cache_ttl         2m
		lookup_rate       7.5
		edge_answers      malformed
		expiry_skew       10s
		edge_disabled_for 1m
		warn_before       72h
		shared_storage
		watch_keys        5m
		watch_max_keys    250
	}`)
	if err != nil {
		t.Fatal(err)
	}
	want := Handler{
		UpstreamOptions: UpstreamOptions{Upstream: "https://example.test/api/v1", ManagementKey: "{env.OPENROUTER_MANAGEMENT_KEY}",
			LookupTimeout: caddy.Duration(3 * time.Second), ManagementRate: 2.5},
		CacheSize: 5000, CacheTTL: caddy.Duration(2 * time.Minute),
		LookupRate: 7.5, EdgeAnswers: "malformed", ExpirySkew: caddy.Duration(10 * time.Second),
		EdgeDisabledFor: caddy.Duration(time.Minute), WarnBefore: caddy.Duration(72 * time.Hour), SharedStorage: true,
		WatchKeys: caddy.Duration(5 * time.Minute), WatchMaxKeys: 250,
	}
	got, _ := json.Marshal(h)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("got  %s\nwant %s", got, exp)
	}
	if h, err := unmarshalCaddyfile(t, "openrouter_keys {\nwatch_keys\n}"); err != nil || time.Duration(h.WatchKeys) != DefaultWatchInterval {
		t.Errorf("bare watch_keys: %v %v", h.WatchKeys, err)
	}
	if _, err := unmarshalCaddyfile(t, `openrouter_keys`); err != nil {
		t.Errorf("bare directive: %v", err)
	}
}

// The parser checks syntax and says which subdirective is wrong; values
// are Validate's.
func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for input, want := range map[string]string{
		`openrouter_keys { cache_size lots }`:        "cache_size",
		`openrouter_keys { cache_ttl soon }`:         "cache_ttl",
		`openrouter_keys { lookup_rate fast }`:       "lookup_rate",
		`openrouter_keys { management_rate x }`:      "management_rate",
		`openrouter_keys { expiry_skew }`:            "expiry_skew",
		`openrouter_keys { upstream a b }`:           "upstream",
		`openrouter_keys { colour blue }`:            "colour",
		`openrouter_keys extra`:                      "argument",
		`openrouter_keys { shared_storage redis }`:   "shared_storage",
		`openrouter_keys { warn_before often }`:      "warn_before",
		`openrouter_keys { watch_keys 1m 2m }`:       "watch_keys",
		`openrouter_keys { watch_max_keys many }`:    "watch_max_keys",
		`openrouter_keys { edge_answers on off }`:    "edge_answers",
		"openrouter_keys {\n upstream <<EOF\nabc\n}": "heredoc",
	} {
		t.Run(input, func(t *testing.T) {
			_, err := unmarshalCaddyfile(t, input)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not name %q", err, want)
			}
		})
	}
}

// Values are checked by Validate, for JSON and Caddyfile alike, and every
// error names the option.
func TestValidateRejectsBadValues(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"cache_size":-1}`:                                   "cache_size: must not be negative",
		`{"cache_ttl":"-1m"}`:                                 "cache_ttl: must not be negative",
		`{"lookup_timeout":"-1s"}`:                            "lookup_timeout: must not be negative",
		`{"lookup_rate":-2}`:                                  "lookup_rate: must not be negative",
		`{"management_rate":-1}`:                              "management_rate: must not be negative",
		`{"upstream":"ftp://example.test"}`:                   "upstream",
		`{"upstream":"example.test/api"}`:                     "upstream",
		`{"upstream":"http://"}`:                              "upstream",
		`{"edge_answers":"maybe"}`:                            "edge_answers",
		`{"management_key":"{nope.x}"}`:                       "management_key",
		`{"expiry_skew":"-3s"}`:                               "expiry_skew: must not be negative",
		`{"edge_disabled_for":-5}`:                            "edge_disabled_for: must not be negative",
		`{"warn_before":"-1h"}`:                               "warn_before: must not be negative",
		`{"watch_keys":"10m"}`:                                "watch_keys: needs management_key",
		`{"watch_max_keys":-1}`:                               "watch_max_keys: must not be negative",
		`{"watch_keys":"10ms","management_key":"sk-or-v1-x"}`: "watch_keys: an interval under 1s",
	} {
		t.Run(cfg, func(t *testing.T) {
			var h Handler
			if err := json.Unmarshal([]byte(cfg), &h); err != nil {
				t.Fatal(err)
			}
			err := h.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %v, want it to start with %q", err, want)
			}
		})
	}
}

func TestJSONErrorsNameTheOption(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"cache_ttl":"tenm"}`:       "cache_ttl:",
		`{"cache_size":"lots"}`:      "cache_size:",
		`{"shared_storage":"yes"}`:   "shared_storage:",
		`{"lookup_timeout":[1]}`:     "lookup_timeout:",
		`{"colour":"blue"}`:          "colour: unknown option",
		`[]`:                         "not a JSON object",
		`{"management_rate":"fast"}`: "management_rate:",
	} {
		t.Run(cfg, func(t *testing.T) {
			var h Handler
			err := json.Unmarshal([]byte(cfg), &h)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not name %q", err, want)
			}
		})
	}
	var kc KeyCheck
	if err := json.Unmarshal([]byte(`{"rate_limit":{"requests":"x"}}`), &kc); err == nil || !strings.HasPrefix(err.Error(), "rate_limit:") {
		t.Errorf("key check: %v", err)
	}
}

func TestManagementKeyFromPlaceholders(t *testing.T) {
	mk := "sk-or-v1-" + strings.Repeat("9", 64)
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	file := t.TempDir() + "/mk"
	if err := os.WriteFile(file, []byte(mk+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, placeholder := range []string{"{env.OPENROUTER_KEYS_TEST_MK}", "{file." + file + "}"} {
		h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: placeholder}}
		if err := provision(t, &h); err != nil {
			t.Fatal(err)
		}
		if h.acct.managementKey != mk {
			t.Errorf("%s: resolved to a %d-byte value", placeholder, len(h.acct.managementKey))
		}
	}
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_UNSET}"}}
	if err := provision(t, &h); err != nil || h.acct.managementKey != "" {
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
	if !strings.HasPrefix(h.cachePoolKey, DefaultUpstream+"|") || k.fresh.ttl != DefaultCacheTTL || k.timeout != DefaultLookupTimeout ||
		!h.edge.dead || h.edge.malformed || h.edge.skew != DefaultExpirySkew || h.edge.disabledFor != DefaultEdgeDisabledFor ||
		float64(k.lookups.Limit()) != DefaultLookupRate || float64(h.acct.management.Limit()) != DefaultManagementRate || h.watch != nil {
		t.Errorf("defaults: %+v %+v", k, h.edge)
	}
	total := 0
	for i := range k.cache.shards {
		total += k.cache.shards[i].limit
	}
	if total != DefaultCacheSize {
		t.Errorf("cache of %d entries", total)
	}
}

// Handlers of one Caddy that agree on upstream and management key share
// one account: its listing, budgets and proof of the hash scheme.
func TestHandlersShareTheAccount(t *testing.T) {
	a, b := Handler{}, Handler{CacheSize: 10}
	var kc KeyCheck
	if err := provision(t, &a); err != nil {
		t.Fatal(err)
	}
	if err := provision(t, &b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := kc.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer kc.Cleanup()
	if a.acct != b.acct || a.acct != kc.checker.acct {
		t.Error("handlers of one account do not share it")
	}
	other := Handler{UpstreamOptions: UpstreamOptions{Upstream: "http://127.0.0.1:1/api/v1"}}
	if err := provision(t, &other); err != nil {
		t.Fatal(err)
	}
	if other.acct == a.acct {
		t.Error("another upstream shares the account")
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

// FuzzUnmarshalCaddyfile: any input gives a config or an error, never a
// panic or an exit (the lexer's errors come back as errors); a config
// that parses either validates and provisions, or fails naming an option
// of the input.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, s := range []string{
		"openrouter_keys",
		"openrouter_keys {\n cache_size 10\n cache_ttl 1m\n}",
		"openrouter_keys {\n upstream http://127.0.0.1:1/api/v1\n edge_answers malformed\n shared_storage\n}",
		"openrouter_keys {\n lookup_rate 0.5\n warn_before 72h\n expiry_skew 0s\n}",
		"openrouter_keys {\n management_key {env.X}\n edge_disabled_for 1h\n watch_keys\n}",
		"openrouter_keys {\n cache_size -1\n}", "openrouter_keys {", "openrouter_keys { } }", "openrouter_keys {\n upstream \"a b\"\n}",
		"openrouter_keys {\n upstream <<EOF\nabc\n}", "openrouter_keys {\n management_rate 1e9\n lookup_timeout 1ns\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		h, err := unmarshalCaddyfile(t, input)
		if err != nil {
			return
		}
		h.SharedStorage = false // needs a running Caddy's storage
		if err := h.Validate(); err != nil {
			name, _, _ := strings.Cut(err.Error(), ":")
			if !strings.Contains(input, name) {
				t.Fatalf("error %q names no option of %q", err, input)
			}
			return
		}
		if err := provision(t, &h); err != nil {
			t.Fatalf("valid config %q does not provision: %v", input, err)
		}
	})
}
