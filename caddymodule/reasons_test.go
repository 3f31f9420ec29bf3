package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// toEmulator is a next handler that sends the request to the emulator, as
// reverse_proxy to OpenRouter would.
func toEmulator(emu *emulator.Server) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		emu.ServeHTTP(w, r)
		return nil
	})
}

// A placeholder sent as the key (the variable's name instead of its
// value, an example from the docs) is key_malformed, whether it comes as
// a bearer token or as x-api-key, and whatever OpenRouter answers; and
// "Missing Authentication header" is never passed on to a request that
// sent a credential.
func TestPlaceholdersAndTokensOpenRouterDidNotAccept(t *testing.T) {
	emu, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	h.edge = edgeRule{} // every request goes upstream
	future := time.Now().Add(time.Hour).Unix()
	for _, c := range []struct {
		token, want, says string
	}{
		{"OPENROUTER_API_KEY", "key_malformed", "placeholder or an unexpanded variable"},
		{"YOUR_API_KEY", "key_malformed", "placeholder or an unexpanded variable"},
		{"<your-key>", "key_malformed", "placeholder or an unexpanded variable"},
		{"sk-or-v1-...", "key_malformed", "placeholder or an unexpanded variable"},
		{"sk-or-v1-xxxxxxxx", "key_malformed", "placeholder or an unexpanded variable"},
		{"sk-or-v1-" + strings.Repeat("x", 64), "key_malformed", "placeholder or an unexpanded variable"},
		{"hello-world-token", "credential_not_accepted", "OpenRouter did not accept this token as a credential"},
		{jwtWith(`{"iss":"elsewhere","exp":` + itoa(future) + `}`), "credential_not_accepted", "JWT"},
		{"sk-ant-api03-" + strings.Repeat("a", 60), "not_openrouter_key", "Anthropic"},
	} {
		for _, via := range []struct{ path, header string }{
			{"/api/v1/chat/completions", "Authorization"},
			{"/api/v1/messages", "X-Api-Key"},
		} {
			req := httptest.NewRequest("POST", via.path, strings.NewReader(`{}`))
			if via.header == "Authorization" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			} else {
				req.Header.Set("X-Api-Key", c.token)
			}
			rec := httptest.NewRecorder()
			if err := h.ServeHTTP(rec, req, toEmulator(emu)); err != nil {
				t.Fatal(err)
			}
			body := rec.Body.String()
			if rec.Code != 401 || rec.Header().Get("X-OpenRouter-Key-Status") != c.want || !strings.Contains(body, c.says) ||
				strings.Contains(body, "Missing Authentication header") {
				t.Errorf("%.20s via %s: %d %q %s", c.token, via.header, rec.Code, rec.Header().Get("X-OpenRouter-Key-Status"), body)
			}
		}
	}
}

// Handlers that agree on upstream and management key share one account
// whatever management_rate each gives; the lowest rate applies to it.
func TestHandlersShareTheAccountWhateverTheirRates(t *testing.T) {
	a := Handler{UpstreamOptions: UpstreamOptions{ManagementRate: 5}}
	b := Handler{UpstreamOptions: UpstreamOptions{ManagementRate: 0.5}}
	if err := provision(t, &a); err != nil {
		t.Fatal(err)
	}
	if err := provision(t, &b); err != nil {
		t.Fatal(err)
	}
	if a.acct != b.acct {
		t.Fatal("two management rates made two accounts")
	}
	if got := a.acct.management.Limit(); got != 0.5 {
		t.Errorf("the account's management rate is %v, want the lowest, 0.5", got)
	}
	c := Handler{UpstreamOptions: UpstreamOptions{ManagementRate: 0.1}}
	if err := provision(t, &c); err != nil {
		t.Fatal(err)
	}
	if c.acct != a.acct || a.acct.management.Limit() != 0.1 {
		t.Errorf("a third handler with a lower rate: shared %v, rate %v", c.acct == a.acct, a.acct.management.Limit())
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

// A fingerprint covers all of its input: two management keys that agree
// on their first 73 bytes have different fingerprints.
func TestFingerprintCoversAnyLength(t *testing.T) {
	long := goodKey + "-and-more"
	if fingerprintOf(long) == fingerprintOf(goodKey) || fingerprintOf(long) == fingerprintOf(long+"!") {
		t.Error("input past 73 bytes is ignored")
	}
	if fingerprintOf("") == fingerprintOf("x") {
		t.Error("short inputs collide")
	}
}

// The logged unrecognised message is cut at a character boundary.
func TestUnrecognisedMessageCutAtACharacter(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	msg := "a" + strings.Repeat("ü", 200) // two bytes each, from an odd offset
	countUnexplained(zap.New(core), classUnrecognizedMessage, msg)
	if logs.Len() != 1 {
		t.Fatalf("logged %d", logs.Len())
	}
	text := logs.All()[0].ContextMap()["message"].(string)
	if !utf8.ValidString(text) || len(text) > maxLoggedMessageLn+len("...") {
		t.Errorf("logged %q", text)
	}
}

// Without a management key, the key check says that none is configured,
// not that a record was not found.
func TestKeyCheckCreditsWithoutManagementKey(t *testing.T) {
	emu, api := startEmulator(t)
	kc := newKeyCheck(t, api, "")
	rep, _ := checkKey(t, kc, emu.NewKey(emulator.KeyOptions{}))
	if rep.Status != "valid" || rep.Credits != nil || strings.Contains(rep.CreditsUnavailable, "not found") ||
		!strings.Contains(rep.CreditsUnavailable, "no management key") {
		t.Errorf("credits_unavailable %q", rep.CreditsUnavailable)
	}
	mgmt := emu.NewKey(emulator.KeyOptions{Management: true})
	other, otherAPI := startEmulator(t)
	kc = newKeyCheck(t, otherAPI, mgmt) // mgmt is not of that account
	rep, _ = checkKey(t, kc, other.NewKey(emulator.KeyOptions{}))
	if !strings.Contains(rep.CreditsUnavailable, "not found in the account of the configured management key") {
		t.Errorf("with a management key of another account: %q", rep.CreditsUnavailable)
	}
}
