package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
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

// What the failure alone decides, and when evidence is needed.
func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	expiredJWT := jwtWith(`{"iss":"openrouter.ai","exp":` + itoa(now.Add(-time.Hour).Unix()) + `}`)
	liveJWT := jwtWith(`{"iss":"openrouter.ai","exp":` + itoa(now.Add(time.Hour).Unix()) + `}`)
	anthropic := "sk-ant-api03-" + strings.Repeat("k", 40)
	for _, c := range []struct {
		name          string
		msg           openrouter.AuthMessage
		token         string
		want          reason
		needsEvidence bool
	}{
		{"malformed key, User not found.", openrouter.AuthUserNotFound, goodKey[:40], reasonMalformed, false},
		{"malformed key, Missing Authentication header", openrouter.AuthMissingHeader, `"` + goodKey + `"`, reasonMalformed, false},
		{"malformed key, no credentials (older wording)", openrouter.AuthNoCredentials, "undefined", reasonMalformed, false},
		{"another provider's key", openrouter.AuthMissingHeader, anthropic, reasonNotOpenRouterKey, false},
		{"expired JWT", openrouter.AuthUserNotFound, expiredJWT, reasonTokenExpired, false},
		{"live JWT refused: nothing claimed", openrouter.AuthUserNotFound, liveJWT, reasonNone, false},
		{"JWT without exp", openrouter.AuthUserNotFound, jwtWith(`{"iss":"openrouter.ai"}`), reasonNone, false},
		{"another key version", openrouter.AuthUserNotFound, "sk-or-v2-" + strings.Repeat("a", 64), reasonNone, false},
		{"unknown token, Missing Authentication header", openrouter.AuthMissingHeader, "hello", reasonNotAccepted, false},
		{"unknown token, User not found.", openrouter.AuthUserNotFound, "hello", reasonNone, false},
		{"placeholder variable name", openrouter.AuthMissingHeader, "OPENROUTER_API_KEY", reasonMalformed, false},
		{"today's key, User not found.", openrouter.AuthUserNotFound, goodKey, reasonNone, true},
		{"today's key, no credentials", openrouter.AuthNoCredentials, goodKey, reasonNone, true},
		{"today's key, Missing Authentication header", openrouter.AuthMissingHeader, goodKey, reasonNotAccepted, false},
		{"another message", openrouter.AuthOther, goodKey[:40], reasonNone, false},
		{"provider error is not a refusal", openrouter.AuthProviderError, goodKey[:40], reasonNone, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, needs, _ := decide(refusal{status: 401, msg: c.msg, cred: classifyToken(c.token), now: now})
			if v.reason != c.want || needs != c.needsEvidence {
				t.Errorf("got %q (evidence %v), want %q (%v)", v.reason, needs, c.want, c.needsEvidence)
			}
		})
	}
}

func TestReasonMessages(t *testing.T) {
	exp := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		v    verdict
		want []string
	}{
		{verdict{reason: reasonExpired, at: exp}, []string{"Key expired. It expired at 2026-11-20T10:00:00Z"}},
		{verdict{reason: reasonExpired, at: exp, byLabel: true}, []string{"2026-11-20T10:00:00Z", "matched by label only"}},
		{verdict{reason: reasonDisabled}, []string{"Key disabled."}},
		{verdict{reason: reasonDisabled, byLabel: true}, []string{"Key disabled", "matched by label only"}},
		{verdict{reason: reasonMalformed, malformed: malformedLength}, []string{`"sk-or-v1-" followed by 64 lowercase hexadecimal digits`, "wrong length"}},
		{verdict{reason: reasonMalformed, malformed: malformedQuotes}, []string{"quotes"}},
		{verdict{reason: reasonManagementKey}, []string{"Management keys cannot be used for inference."}},
		{verdict{reason: reasonNotFound}, []string{"deleted, never issued, or belongs to another account"}},
		{verdict{reason: reasonTokenExpired, at: exp}, []string{"Token expired", "2026-11-20T10:00:00Z"}},
		{verdict{reason: reasonNotOpenRouterKey}, []string{"Not an OpenRouter key", foreignKeys[0].name}},
		{verdict{reason: reasonValidRetry}, []string{"the key works: retry"}},
	} {
		got := c.v.message()
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", c.v.reason, got, w)
			}
		}
	}
	for m := malformedLength; m <= malformedPlaceholder; m++ {
		if malformationText[m] == "" {
			t.Errorf("malformation %d has no text", m)
		}
	}
}

// Every reason is one complete entry, and some input produces it through
// the handler. A reason added to the table without a way to reach it here
// fails this test.
func TestReasonTable(t *testing.T) {
	emu, api := startEmulator(t)
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}"}, EdgeAnswers: EdgeAnswersOff}
	newHandler(t, &h, api)
	json := http.Header{"Content-Type": {"application/json"}}
	answer := func(body string) caddyhttp.Handler { return upstreamAnswer(401, json, []byte(body)) }
	missing := answer(`{"error":{"message":"Missing Authentication header","code":401}}`)
	past := time.Now().Add(-time.Hour)
	deleted := emu.NewKey(emulator.KeyOptions{})
	emu.Delete(deleted)
	reach := map[reason]struct {
		next  caddyhttp.Handler
		path  string
		token string
	}{
		reasonProviderRejected: {answer(`{"error":{"message":"Provider returned error","code":401,"metadata":{"provider_name":"OpenAI"}}}`), "/api/v1/chat/completions", emu.NewKey(emulator.KeyOptions{})},
		reasonMalformed:        {refused, "/api/v1/chat/completions", goodKey[:40]},
		reasonNotOpenRouterKey: {missing, "/api/v1/chat/completions", "sk-ant-api03-" + strings.Repeat("a", 60)},
		reasonTokenExpired:     {refused, "/api/v1/chat/completions", jwtWith(`{"exp":` + itoa(past.Unix()) + `}`)},
		reasonNotAccepted:      {missing, "/api/v1/chat/completions", "hello-token"},
		reasonExpired:          {toEmulator(emu), "/api/v1/chat/completions", emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})},
		reasonManagementKey:    {toEmulator(emu), "/api/v1/chat/completions", mk},
		reasonDisabled:         {toEmulator(emu), "/api/v1/chat/completions", emu.NewKey(emulator.KeyOptions{Disabled: true})},
		reasonNotFound:         {toEmulator(emu), "/api/v1/chat/completions", deleted},
		reasonValidRetry:       {refused, "/api/v1/chat/completions", emu.NewKey(emulator.KeyOptions{})},
	}
	limitKey := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "daily"})
	hash := strings.Repeat("ab", 32)
	for r, fb := range map[reason]openrouter.FailureBody{
		reasonCreditsInsufficient:   openrouter.BalanceAfford(900, 840, openrouter.WordingCurrent),
		reasonKeyLimitInsufficient:  openrouter.KeyCapAfford(900, 840, openrouter.WindowDaily, openrouter.WordingCurrent),
		reasonRequestUnaffordable:   unscopedAfford(900, 840),
		reasonInFlightBudget:        openrouter.InFlight(3, openrouter.WordingCurrent),
		reasonKeyLimitReached:       openrouter.KeyLimitExceeded(openrouter.WindowDaily, "default", hash, openrouter.WordingCurrent),
		reasonWorkspaceBudget:       openrouter.WorkspaceBudgetExceeded("monthly", 500, openrouter.WordingCurrent),
		reasonProviderKeyRequired:   openrouter.BYOKRequired("OpenAI"),
		reasonFreeDailyLimitReached: openrouter.FreeDaily(false, time.Time{}, openrouter.WordingCurrent),
		reasonFreeRateLimited:       openrouter.FreePerMinute429(time.Now().Add(20 * time.Second)),
		reasonProviderRateLimited:   openrouter.ProviderPool("openai/gpt-4o", "OpenAI", false, openrouter.WordingCurrent),
		reasonProviderKeyRateLimit:  openrouter.ProviderPool("openai/gpt-4o", "OpenAI", true, openrouter.WordingCurrent),
		reasonProvidersAtCapacity:   openrouter.ProvidersAtCapacity("openai/gpt-4o", 40),
	} {
		token := limitKey
		if r == reasonRequestUnaffordable {
			// No GET /key for a token that is not a key: nothing decides
			// whose the shortfall is.
			token = emu.NewJWT(time.Now().Add(time.Hour))
		}
		reach[r] = struct {
			next  caddyhttp.Handler
			path  string
			token string
		}{failureAnswer(fb, openrouter.EnvelopeOpenAI, nil), "/api/v1/chat/completions", token}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[reason]bool{}
	for i := range reasonTable {
		e := &reasonTable[i]
		t.Run(string(e.code), func(t *testing.T) {
			if seen[e.code] || e.code == reasonNone || entryOf(e.code) != e {
				t.Fatal("listed twice, empty, or not found by its code")
			}
			seen[e.code] = true
			if e.status < 400 || e.message == nil || e.headline == "" || e.advice == "" || e.metric == "" ||
				(e.decide == nil) != (e.evidence || e.limit) {
				t.Errorf("incomplete entry: %+v", *e)
			}
			if !strings.Contains(string(readme), "| `"+string(e.code)+"` |") {
				t.Error("not in the README's reason table")
			}
			in, ok := reach[e.code]
			if !ok {
				t.Fatal("no input that produces it: add one to reach")
			}
			rec := serve(t, &h, in.next, "POST", in.path, in.token)
			if got := reasonOf(t, rec); got != string(e.code) || rec.Code != e.status {
				t.Errorf("got %d %q: %s", rec.Code, got, rec.Body.String())
			}
			for _, m := range e.members {
				if !fromEvidence(m) && !strings.Contains(rec.Body.String(), `"`+m.name()+`":`) {
					t.Errorf("metadata.%s is missing: %s", m.name(), rec.Body.String())
				}
			}
			if msg := e.message(verdict{reason: e.code}); msg != "" && !strings.Contains(rec.Body.String(), msg[:12]) {
				t.Errorf("the entry's sentence is not in the body: %s", rec.Body.String())
			}
		})
	}
}

// fromEvidence reports whether the member is there only when the body or
// the evidence shows it (matched_by and the 402, 403 and 429 figures), so
// that a reachable input need not produce it.
func fromEvidence(m metaMember) bool { return m == metaMatchedBy || m >= metaScope }
