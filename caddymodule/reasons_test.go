package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

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
		{jwtWith(`{"iss":"elsewhere","exp":` + itoa(future) + `}`), "not_openrouter_token", `issued by \"elsewhere\"`},
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

// Every reason is one complete entry, and an input produces it through
// the handler: the answer is the upstream's body with the entry's whole
// sentence, built from the facts the input shows, and exactly the members
// the entry declares that those facts have, byte for byte. A reason added
// to the table without a way to reach it here fails this test.
func TestReasonTable(t *testing.T) {
	emu, api := startEmulator(t)
	now := time.Now().UTC().Truncate(time.Second)
	emu.Clock = func() time.Time { return now }
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}"}, EdgeAnswers: EdgeAnswersOff}
	newHandler(t, &h, api)
	// The gateway's clock stands still: resets and retries are exact.
	useClock(&h, newTestClock(now))
	emu.SetCredits(emu.UserID(), 100, 0)
	emu.SetFreeRequestsUsed("", openrouter.FreeDailyHighBalance)
	midnight, _ := openrouter.WindowDaily.ResetsAt(now)

	json := http.Header{"Content-Type": {"application/json"}}
	answer := func(body string) caddyhttp.Handler { return upstreamAnswer(401, json, []byte(body)) }
	missing := answer(`{"error":{"message":"Missing Authentication header","code":401}}`)
	past := now.Add(-time.Hour)
	deleted := emu.NewKey(emulator.KeyOptions{})
	emu.Delete(deleted)
	anthropic := "sk-ant-api03-" + strings.Repeat("a", 60)
	limitKey := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "daily", Usage: 4})
	type input struct {
		next  caddyhttp.Handler
		token string
		// want is the verdict the input shows: the entry's sentence and
		// members are built from it.
		want verdict
	}
	reach := map[reason]input{
		reasonProviderRejected: {answer(`{"error":{"message":"Provider returned error","code":401,"metadata":{"provider_name":"OpenAI"}}}`), emu.NewKey(emulator.KeyOptions{}), verdict{}},
		reasonMalformed:        {refused, goodKey[:40], verdict{malformed: malformedLength}},
		reasonNotOpenRouterKey: {missing, anthropic, verdict{provider: classifyToken(anthropic).provider}},
		reasonTokenExpired:     {refused, jwtWith(`{"exp":` + itoa(past.Unix()) + `}`), verdict{at: past}},
		reasonNotAccepted:      {missing, "hello-token", verdict{token: classifyToken("hello-token").kind}},
		reasonExpired:          {toEmulator(emu), emu.NewKey(emulator.KeyOptions{ExpiresAt: &past}), verdict{at: past}},
		reasonManagementKey:    {toEmulator(emu), mk, verdict{}},
		reasonDisabled:         {toEmulator(emu), emu.NewKey(emulator.KeyOptions{Disabled: true}), verdict{}},
		reasonNotFound:         {toEmulator(emu), deleted, verdict{}},
		reasonValidRetry:       {refused, emu.NewKey(emulator.KeyOptions{}), verdict{}},
	}
	tokens := &openrouter.Tokens{Requested: 900, Affordable: 840}
	// limitKey's GET /key: 4 of its daily 5 spent.
	keyCap := limitFacts{window: openrouter.WindowDaily, limit: f64(5), spent: f64(4), remaining: f64(1), resetsAt: midnight}
	withTokens := keyCap
	withTokens.tokens = tokens
	for r, c := range map[reason]struct {
		fb    openrouter.FailureBody
		facts limitFacts
	}{
		reasonCreditsInsufficient:  {openrouter.BalanceAfford(900, 840, openrouter.WordingCurrent), limitFacts{tokens: tokens, balance: f64(100)}},
		reasonKeyLimitInsufficient: {openrouter.KeyCapAfford(900, 840, openrouter.WindowDaily, openrouter.WordingCurrent), withTokens},
		reasonRequestUnaffordable:  {unscopedAfford(900, 840), limitFacts{tokens: tokens}},
		reasonInFlightBudget:       {openrouter.InFlight(3, openrouter.WordingCurrent), limitFacts{retryAfter: 3 * time.Second}},
		reasonKeyLimitReached:      {openrouter.KeyLimitExceeded(openrouter.WindowDaily, "default", strings.Repeat("ab", 32), openrouter.WordingCurrent), keyCap},
		reasonWorkspaceBudget:      {openrouter.WorkspaceBudgetExceeded("monthly", 500, openrouter.WordingCurrent), limitFacts{budgetInterval: "monthly", limit: f64(500)}},
		reasonProviderKeyRequired: {openrouter.BYOKRequiredOr("OpenAI", "gpt-5-chat", "gpt-5-mini"),
			limitFacts{provider: "OpenAI", policy: &openrouter.Policy{Alternatives: []string{"gpt-5-chat", "gpt-5-mini"}}}},
		reasonFreeDailyLimitReached: {openrouter.FreeDaily(true, midnight, openrouter.WordingCurrent),
			limitFacts{freeTier: 1000, limit: f64(1000), spent: f64(1000), remaining: f64(0), resetsAt: midnight}},
		reasonFreeRateLimited:      {openrouter.FreePerMinute429(now.Add(20 * time.Second)), limitFacts{resetsAt: now.Add(20 * time.Second), retryAfter: 20 * time.Second}},
		reasonProviderRateLimited:  {openrouter.ProviderPool("openai/gpt-4o", "OpenAI", false, openrouter.WordingCurrent), limitFacts{provider: "OpenAI"}},
		reasonProviderKeyRateLimit: {openrouter.ProviderPool("openai/gpt-4o", "OpenAI", true, openrouter.WordingCurrent), limitFacts{provider: "OpenAI"}},
		reasonProvidersAtCapacity:  {openrouter.ProvidersAtCapacity("openai/gpt-4o", 40), limitFacts{resetsAt: now.Add(40 * time.Second), retryAfter: 40 * time.Second}},
		// Policy 403s (issue 26).
		reasonModerationFlagged: {openrouter.ModerationFlagged("openai/gpt-4.1", "OpenAI", []string{"harassment"}, "..."),
			limitFacts{provider: "OpenAI", policy: &openrouter.Policy{Model: "openai/gpt-4.1", Categories: []string{"harassment"}, NoCharge: true}}},
		reasonGuardrailBlocked: {openrouter.GuardrailPatternsBlocked([]string{"ignore_previous_instructions"}),
			limitFacts{policy: &openrouter.Policy{Rule: openrouter.GuardrailPatterns, Patterns: []string{"ignore_previous_instructions"}}}},
		reasonProviderTerms:    {openrouter.ProviderToS(), limitFacts{policy: &openrouter.Policy{}}},
		reasonRegionRestricted: {openrouter.RegionRestricted("openai/gpt-4o"), limitFacts{policy: &openrouter.Policy{}}},
		// Provider errors and admission control (issue 26).
		reasonProviderRequestRejected: providerReach(openrouter.ProviderReturned(400, "Crucible", openrouter.RawInvalidRequest("at most 1 image per prompt"), false, openrouter.RawString)),
		reasonProviderUnavailable:     providerReach(openrouter.ProviderReturned(503, "Morph", openrouter.RawNoWorkers(), false, openrouter.RawObject)),
		reasonProviderKeyRefused:      providerReach(openrouter.ProviderReturned(403, "Anthropic", openrouter.RawKeyPermission(), true, openrouter.RawString)),
		reasonProviderBlocked:         providerReach(openrouter.ProviderReturned(403, "OpenAI", openrouter.RawRegion(), false, openrouter.RawString)),
		reasonProviderError:           providerReach(openrouter.ProviderReturned(400, "", nil, false, openrouter.RawString)),
		reasonAdmissionControl:        {openrouter.AdmissionControl(10), limitFacts{retryAfter: 10 * time.Second, upstream: true}},
	} {
		token := limitKey
		if r == reasonRequestUnaffordable {
			// No GET /key for a token that is not a key: nothing decides
			// whose the shortfall is.
			token = emu.NewJWT(now.Add(time.Hour))
		}
		c.facts.scope = entryOf(r).scope
		c.facts.original = c.fb.Message
		reach[r] = input{failureAnswer(c.fb, openrouter.EnvelopeOpenAI, nil), token, verdict{limit: &c.facts}}
	}
	// Credentials: JWT access tokens (issue 26).
	foreignJWT := emulator.NewForeignJWT("https://token.actions.githubusercontent.com", now.Add(time.Hour))
	reach[reasonNotOpenRouterToken] = input{missing, foreignJWT, verdict{claims: claimsOf(t, foreignJWT)}}
	inAPIKey := emu.NewAccessToken(emulator.AccessTokenOptions{})
	reach[reasonTokenInAPIKey] = input{missing, inAPIKey, verdict{claims: claimsOf(t, inAPIKey)}}
	unscoped := emu.NewAccessToken(emulator.AccessTokenOptions{Scope: "keys:read"})
	reach[reasonTokenScope] = input{toEmulator(emu), unscoped, verdict{claims: claimsOf(t, unscoped)}}
	// The model reasons (issue 25), through the emulator's catalogue.
	guarded := emu.NewKey(emulator.KeyOptions{})
	emu.SetGuardrail(guarded, "openai/gpt-4o-mini")
	plainKey := emu.NewKey(emulator.KeyOptions{})
	for r, c := range map[reason]struct {
		fb    openrouter.FailureBody
		token string
		facts modelFacts
	}{
		reasonModelNotFound: {openrouter.UnknownModel("openai/gpt-4o-2024-08-06", false), plainKey,
			modelFacts{model: "openai/gpt-4o-2024-08-06", suggestions: []string{"openai/gpt-4o"}}},
		reasonNoEndpointsRequest: {openrouter.NoEndpointsFiltered(openrouter.FilterTools, "", nil, nil), plainKey,
			modelFacts{filter: openrouter.FilterTools, source: sourceRequest, setting: memberTools}},
		reasonNoEndpointsAccount: {openrouter.NoEndpointsFiltered(openrouter.FilterAllowedProviders, "", []string{"OpenAI"}, nil), plainKey,
			modelFacts{filter: openrouter.FilterAllowedProviders, source: sourceAccount, setting: settingProviders, available: []string{"OpenAI"}}},
		reasonNoEndpointsGuardrail: {openrouter.NoEndpointsFor("openai/gpt-4o"), guarded,
			modelFacts{model: "openai/gpt-4o", source: sourceGuardrail, setting: settingGuardrail}},
		reasonModelRetired: {openrouter.StealthRevealed("Healer Alpha", "March 18th", "xiaomi/mimo-v2-omni"), plainKey,
			modelFacts{source: sourceModel, successors: []string{"xiaomi/mimo-v2-omni"}}},
		reasonFreeVariantEnded: {openrouter.FreePeriodEnded("Free Ended", emulator.ModelFreeEndedPaid), plainKey,
			modelFacts{source: sourceModel, paid: emulator.ModelFreeEndedPaid, promptPrice: "0.0000025", completionPrice: "0.00001"}},
		reasonNoEndpointsUnknown: {openrouter.NoEndpointsFor("openai/gpt-4o-mini"), plainKey,
			modelFacts{model: "openai/gpt-4o-mini", candidates: []string{
				"the account's data policy, ZDR, allowed or ignored providers (" + openrouter.URLPrivacy + ")", "no provider serving the model now"}}},
	} {
		c.facts.original = c.fb.Message
		reach[r] = input{failureAnswer(c.fb, openrouter.EnvelopeOpenAI, nil), c.token, verdict{model: &c.facts}}
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
			if e.status < 400 || e.message == nil || e.headline == "" || e.advice == "" ||
				(e.decide != nil) == (e.evidence || e.kind != openrouter.KindUnrecognised) ||
				(e.kind != openrouter.KindUnrecognised) != (e.status != http.StatusUnauthorized) {
				t.Errorf("incomplete entry: %+v", *e)
			}
			if !strings.Contains(string(readme), "| `"+string(e.code)+"` |") {
				t.Error("not in the README's reason table")
			}
			in, ok := reach[e.code]
			if !ok {
				t.Fatal("no input that produces it: add one to reach")
			}
			var rec *httptest.ResponseRecorder
			if e.code == reasonTokenInAPIKey { // x-api-key, not a bearer
				rec = serveAPIKey(t, &h, in.next, "/api/v1/chat/completions", in.token)
			} else {
				rec = serve(t, &h, in.next, "POST", "/api/v1/chat/completions", in.token)
			}
			if got := reasonOf(t, rec); got != string(e.code) || rec.Code != e.status {
				t.Fatalf("got %d %q: %s", rec.Code, got, rec.Body.String())
			}
			// The upstream's own answer, as the gateway received it.
			plain := httptest.NewRecorder()
			req := httptest.NewRequest("POST", "/api/v1/chat/completions", nil)
			req.Header.Set("Authorization", "Bearer "+in.token)
			if err := in.next.ServeHTTP(plain, req); err != nil {
				t.Fatal(err)
			}
			upstream, ok := errbody.Parse(plain.Body.Bytes())
			if !ok {
				t.Fatalf("the upstream's body does not parse: %s", plain.Body)
			}
			want := in.want
			want.reason = e.code
			sentence := e.message(want)
			if msg, _ := errorOf(t, rec.Body.Bytes())["message"].(string); sentence != "" && msg != sentence {
				t.Errorf("the sentence:\n got  %s\n want %s", msg, sentence)
			}
			if body, _ := rewrite(upstream, want); rec.Body.String() != string(body) {
				t.Errorf("the answer:\n got  %s\n want %s", rec.Body, body)
			}
		})
	}
}
