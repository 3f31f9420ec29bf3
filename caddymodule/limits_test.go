package caddymodule

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// TestLimitFailuresSayWhatTheyAre sends every key and account failure
// through the handler, with a key whose own GET /key the emulator answers,
// and checks what a client reads: the status and code unchanged, the
// reason in the body and header, the scope and figures the evidence
// shows, the gateway's sentence before OpenRouter's own, and the retry
// advice.
func TestLimitFailuresSayWhatTheyAre(t *testing.T) {
	emu, base := startEmulator(t)
	capped := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "daily"})
	emu.SetUsage(capped, 5)
	headroom := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "weekly"})
	emu.SetUsage(headroom, 4.5)
	total := emu.NewKey(emulator.KeyOptions{Limit: f64(20), LimitReset: ""})
	emu.SetUsage(total, 20)
	uncapped := emu.NewKey(emulator.KeyOptions{})
	minuteEnd := time.Now().Add(30 * time.Second).Truncate(time.Second)

	cases := []struct {
		name       string
		key        string
		fb         openrouter.FailureBody
		reason     reason
		scope      string
		retry      string
		retryAfter string
		members    map[string]any // members that must be there, with their values
		absent     []string       // members that must not be there
		says       []string       // in the message
	}{
		{
			name: "account balance", key: uncapped, fb: openrouter.BalanceAfford(900, 840, openrouter.WordingCurrent),
			reason: reasonCreditsInsufficient, scope: "account", retry: "false",
			members: map[string]any{"requested_tokens": 900.0, "affordable_tokens": 840.0},
			absent:  []string{"balance", "resets_at"},
			says:    []string{"Lower max_tokens to 840", "OpenRouter said: This request requires more credits"},
		},
		{
			name: "key cap with headroom", key: headroom, fb: openrouter.KeyCapAfford(900, 840, openrouter.WindowWeekly, openrouter.WordingNoSource),
			reason: reasonKeyLimitInsufficient, scope: "key", retry: "false",
			members: map[string]any{"window": "weekly", "limit": 5.0, "spent": 4.5, "remaining": 0.5},
			says:    []string{"This key's own weekly limit", "$4.50 of $5.00 spent, $0.50 left", "adding credits does not help"},
		},
		{
			name: "unscoped, key without a cap", key: uncapped, fb: unscopedAfford(900, 840),
			reason: reasonCreditsInsufficient, scope: "account", retry: "false",
		},
		{
			name: "unscoped, capped key and no balance figure", key: headroom, fb: unscopedAfford(900, 840),
			reason: reasonRequestUnaffordable, retry: "false",
			absent: []string{"scope", "limit", "balance"},
			says:   []string{"is not known"},
		},
		{
			name: "in flight", key: uncapped, fb: openrouter.InFlight(3, openrouter.WordingCurrent),
			reason: reasonInFlightBudget, scope: "account", retry: "true", retryAfter: "3",
			says: []string{"Retry in 3 seconds"},
		},
		{
			name: "key cap spent, daily", key: capped, fb: openrouter.KeyLimitExceeded(openrouter.WindowDaily, "default", strings.Repeat("ab", 32), openrouter.WordingCurrent),
			reason: reasonKeyLimitReached, scope: "key", retry: "false",
			members: map[string]any{"window": "daily", "limit": 5.0, "spent": 5.0, "remaining": 0.0},
			absent:  []string{"never_resets"},
			says:    []string{"This key's own daily limit is spent: $5.00 of $5.00 spent", "It resets at ", "adding credits or creating keys does not lift it"},
		},
		{
			name: "key cap spent, total", key: total, fb: openrouter.KeyLimitExceeded(openrouter.WindowTotal, "default", strings.Repeat("cd", 32), openrouter.WordingOld),
			reason: reasonKeyLimitReached, scope: "key", retry: "false",
			members: map[string]any{"window": "total", "never_resets": true, "limit": 20.0},
			absent:  []string{"resets_at"},
			says:    []string{"It never resets"},
		},
		{
			name: "workspace budget", key: uncapped, fb: openrouter.WorkspaceBudgetExceeded("monthly", 500, openrouter.WordingCurrent),
			reason: reasonWorkspaceBudget, scope: "workspace", retry: "false",
			members: map[string]any{"limit": 500.0},
			says:    []string{"(monthly, $500.00)", "A workspace admin can raise the budget"},
		},
		{
			name: "BYOK required", key: uncapped, fb: openrouter.BYOKRequired("OpenAI"),
			reason: reasonProviderKeyRequired, scope: "provider", retry: "false",
			members: map[string]any{"provider": "OpenAI"},
			says:    []string{"OpenAI serves it only with your own OpenAI key"},
		},
		{
			name: "free daily, low tier", key: uncapped, fb: openrouter.FreeDaily(false, time.Time{}, openrouter.WordingCurrent),
			reason: reasonFreeDailyLimitReached, scope: "free_models", retry: "false",
			members: map[string]any{"limit": 50.0},
			says:    []string{"switching to another free model does not help", "1000 once the account has bought 10 credits"},
		},
		{
			name: "free per minute", key: uncapped, fb: openrouter.FreePerMinute429(minuteEnd),
			reason: reasonFreeRateLimited, scope: "free_models", retry: "true",
			says: []string{"20 requests a minute"},
		},
		{
			name: "provider pool", key: uncapped, fb: openrouter.ProviderPool("openai/gpt-4o", "OpenAI", false, openrouter.WordingCurrent),
			reason: reasonProviderRateLimited, scope: "provider", retry: "true",
			members: map[string]any{"provider": "OpenAI"},
			says:    []string{"not your key or your account"},
		},
		{
			name: "own provider key", key: uncapped, fb: openrouter.ProviderPool("openai/gpt-4o", "OpenAI", true, openrouter.WordingCurrent),
			reason: reasonProviderKeyRateLimit, scope: "provider", retry: "true",
			says: []string{"Your own provider key (BYOK) for OpenAI"},
		},
		{
			name: "providers at capacity", key: uncapped, fb: openrouter.ProvidersAtCapacity("openai/gpt-4o", 40),
			reason: reasonProvidersAtCapacity, scope: "provider", retry: "true", retryAfter: "40",
			says: []string{"Retry in 40 seconds"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			newHandler(t, &h, base)
			before := time.Now()
			rec := serve(t, &h, failureAnswer(tc.fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", tc.key)
			after := time.Now()
			if rec.Code != tc.fb.Status {
				t.Fatalf("status %d, want %d", rec.Code, tc.fb.Status)
			}
			body := rec.Body.Bytes()
			e := errorOf(t, body)
			if code, _ := e["code"].(float64); int(code) != tc.fb.Status {
				t.Errorf("code %v, want %d", e["code"], tc.fb.Status)
			}
			md := metadataOf(t, body)
			if md["reason"] != string(tc.reason) || rec.Header().Get("X-OpenRouter-Key-Status") != string(tc.reason) {
				t.Fatalf("reason %v, header %q, want %s\n%s", md["reason"], rec.Header().Get("X-OpenRouter-Key-Status"), tc.reason, body)
			}
			if tc.scope == "" && md["scope"] != nil || tc.scope != "" && md["scope"] != tc.scope {
				t.Errorf("scope %v, want %q", md["scope"], tc.scope)
			}
			if got := rec.Header().Get("X-Should-Retry"); got != tc.retry {
				t.Errorf("X-Should-Retry %q, want %q", got, tc.retry)
			}
			if tc.retryAfter != "" && rec.Header().Get("Retry-After") != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", rec.Header().Get("Retry-After"), tc.retryAfter)
			}
			if tc.retry == "false" && rec.Header().Get("Retry-After") != "" {
				t.Errorf("Retry-After %q on a failure no retry cures", rec.Header().Get("Retry-After"))
			}
			for name, want := range tc.members {
				if md[name] != want {
					t.Errorf("metadata.%s = %v, want %v", name, md[name], want)
				}
			}
			for _, name := range tc.absent {
				if v, ok := md[name]; ok {
					t.Errorf("metadata.%s = %v: the evidence does not show it", name, v)
				}
			}
			msg, _ := e["message"].(string)
			for _, s := range tc.says {
				if !strings.Contains(msg, s) {
					t.Errorf("message lacks %q:\n%s", s, msg)
				}
			}
			if !strings.HasSuffix(msg, "OpenRouter said: "+strings.TrimSpace(tc.fb.Message)) {
				t.Errorf("message does not end with OpenRouter's own sentence:\n%s", msg)
			}
			// Every member OpenRouter sent is kept.
			for _, m := range tc.fb.Metadata {
				if _, ok := md[m.Name]; !ok {
					t.Errorf("metadata.%s was dropped", m.Name)
				}
			}
			if tc.reason == reasonKeyLimitReached && md["window"] == "daily" {
				b, _ := openrouter.WindowDaily.ResetsAt(before)
				a, _ := openrouter.WindowDaily.ResetsAt(after)
				if got := md["resets_at"]; got != b.Format(time.RFC3339) && got != a.Format(time.RFC3339) {
					t.Errorf("resets_at %v, want the next 00:00 UTC (%s)", got, b.Format(time.RFC3339))
				}
			}
		})
	}
}

// TestUnscopedCreditsWithBalance: with a management key the account's
// balance decides whether the key's cap or the account's credits fall
// short, and the balance is named.
func TestUnscopedCreditsWithBalance(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "monthly"})
	emu.SetUsage(key, 4)
	for _, tc := range []struct {
		name    string
		credits float64
		want    reason
	}{
		{"cap below balance", 100, reasonKeyLimitInsufficient},
		{"balance below cap", 0.25, reasonCreditsInsufficient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			emu.SetCredits(emu.UserID(), tc.credits, 0)
			h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: emu.NewKey(emulator.KeyOptions{Management: true})}}
			newHandler(t, &h, base)
			rec := serve(t, &h, failureAnswer(unscopedAfford(900, 840), openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", key)
			md := metadataOf(t, rec.Body.Bytes())
			if md["reason"] != string(tc.want) || md["balance"] != tc.credits {
				t.Fatalf("reason %v balance %v, want %s and %v\n%s", md["reason"], md["balance"], tc.want, tc.credits, rec.Body)
			}
		})
	}
}

// TestLimitExplanationsInEveryEnvelope: the same explanation in each
// envelope OpenRouter uses, /messages and /responses included.
func TestLimitExplanationsInEveryEnvelope(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{})
	var h Handler
	newHandler(t, &h, base)
	fb := openrouter.FreeDaily(true, time.Now().Add(time.Hour).Truncate(time.Millisecond), openrouter.WordingCurrent)
	for _, e := range []openrouter.Envelope{openrouter.EnvelopeOpenAI, openrouter.EnvelopeFlat, openrouter.EnvelopeMessages, openrouter.EnvelopeResponsesDocs} {
		rec := serve(t, &h, failureAnswer(fb, e, nil), "POST", "/api/v1/messages", key)
		want, _ := errbody.Parse(fb.Render(e))
		got, ok := errbody.Parse(rec.Body.Bytes())
		if rec.Code != http.StatusTooManyRequests || !ok || got.Envelope() != want.Envelope() {
			t.Fatalf("envelope %d: status %d, body %s", e, rec.Code, rec.Body)
		}
		if r, _ := got.Metadata("reason").Text(); r != string(reasonFreeDailyLimitReached) {
			t.Errorf("envelope %d: reason %q\n%s", e, r, rec.Body)
		}
		if n, _ := got.Metadata("limit").Float(); n != 1000 {
			t.Errorf("envelope %d: limit %v, want 1000 (the high-balance tier)", e, n)
		}
		if !strings.Contains(got.Message(), "OpenRouter said: Rate limit exceeded: free-models-per-day-high-balance") {
			t.Errorf("envelope %d: message %q", e, got.Message())
		}
	}
}

// TestExplainLimitsOffIsByteForByte: with explain_limits off a 402, 403 or
// 429 reaches the client exactly as sent, headers included.
func TestExplainLimitsOffIsByteForByte(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{})
	h := Handler{ExplainLimits: ExplainLimitsOff}
	newHandler(t, &h, base)
	for _, fb := range []openrouter.FailureBody{
		openrouter.BalanceAfford(900, 840, openrouter.WordingCurrent),
		openrouter.KeyLimitExceeded(openrouter.WindowDaily, "default", strings.Repeat("ab", 32), openrouter.WordingCurrent),
		openrouter.FreeDaily(false, time.Now().Add(time.Hour), openrouter.WordingCurrent),
		openrouter.ProvidersAtCapacity("m", 40),
	} {
		plain := httptest.NewRecorder()
		if err := failureAnswer(fb, openrouter.EnvelopeOpenAI, nil).ServeHTTP(plain, httptest.NewRequest("POST", "/", nil)); err != nil {
			t.Fatal(err)
		}
		rec := serve(t, &h, failureAnswer(fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", key)
		if rec.Code != plain.Code || !bytes.Equal(rec.Body.Bytes(), plain.Body.Bytes()) {
			t.Errorf("%d changed:\n%s\nwant\n%s", fb.Status, rec.Body, plain.Body)
		}
		if len(rec.Header()) != len(plain.Header()) || rec.Header().Get("X-Should-Retry") != "" {
			t.Errorf("%d: headers %v, want %v", fb.Status, rec.Header(), plain.Header())
		}
	}
	if err := (&Handler{ExplainLimits: "maybe"}).Validate(); err == nil || !strings.Contains(err.Error(), "explain_limits") {
		t.Errorf("explain_limits maybe: %v", err)
	}
}

// slowKeyEndpoint is an upstream whose GET /key answers, with the figures
// of a key whose daily cap of 5 is spent, only once release is closed.
func slowKeyEndpoint(t *testing.T, release <-chan struct{}, calls *atomic.Int32) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/key" {
			http.NotFound(w, r)
			return
		}
		calls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":{"label":"sk-or-v1-abc...def","limit":5,"limit_remaining":0,"limit_reset":"daily","usage":5,"usage_daily":5}}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/api/v1"
}

// TestLateEvidenceServesTheNextFailure: a failure waits for GET /key at
// most limit_lookup_timeout and then says only what its body says; the
// lookup goes on, and its answer serves the next failure without another
// lookup.
func TestLateEvidenceServesTheNextFailure(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	h := Handler{LimitLookupTimeout: caddy.Duration(20 * time.Millisecond), EdgeAnswers: EdgeAnswersOff}
	newHandler(t, &h, slowKeyEndpoint(t, release, &calls))
	key := randomKey()
	fb := openrouter.KeyLimitExceeded(openrouter.WindowDaily, "default", strings.Repeat("ab", 32), openrouter.WordingCurrent)

	clk := newTestClock(time.Now())
	useClock(&h, clk)
	// The failure waits for its evidence until the clock passes
	// limit_lookup_timeout, then answers with what its body says.
	served := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		req := httptest.NewRequest("POST", "/api/v1/chat/completions", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, req, failureAnswer(fb, openrouter.EnvelopeOpenAI, nil)); err != nil {
			t.Error(err)
		}
		served <- rec
	}()
	clk.awaitTimer()
	clk.advance(20*time.Millisecond - time.Nanosecond)
	if clk.pendingTimers() != 1 {
		t.Fatal("the wait for evidence ended before limit_lookup_timeout")
	}
	clk.advance(time.Nanosecond)
	if clk.pendingTimers() != 0 {
		t.Fatal("the wait for evidence lasts past limit_lookup_timeout")
	}
	rec := <-served
	md := metadataOf(t, rec.Body.Bytes())
	if md["reason"] != string(reasonKeyLimitReached) || md["window"] != "daily" || md["resets_at"] == nil {
		t.Fatalf("the body's own facts are missing:\n%s", rec.Body)
	}
	for _, name := range []string{"limit", "spent", "remaining"} {
		if v, ok := md[name]; ok {
			t.Errorf("metadata.%s = %v without evidence", name, v)
		}
	}
	if strings.Contains(errorOf(t, rec.Body.Bytes())["message"].(string), "$") {
		t.Errorf("figures named without evidence: %s", rec.Body)
	}

	close(release)
	waitIdle(t, h.knowledge)
	rec = serve(t, &h, failureAnswer(fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", key)
	md = metadataOf(t, rec.Body.Bytes())
	if md["limit"] != 5.0 || md["spent"] != 5.0 || md["remaining"] != 0.0 {
		t.Errorf("the late answer did not serve the next failure:\n%s", rec.Body)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d GET /key for two failures of one key, want 1", n)
	}
}

// TestFailedEvidenceLeavesTheBody: GET /key failing leaves only what the
// body says, and the failures that follow do not hammer it.
func TestFailedEvidenceLeavesTheBody(t *testing.T) {
	emu, base := startEmulator(t)
	emu.SetKeyFault(emulator.FaultStatus500)
	key := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "daily"})
	emu.SetUsage(key, 5)
	h := Handler{EdgeAnswers: EdgeAnswersOff}
	newHandler(t, &h, base)
	fb := openrouter.KeyCapAfford(900, 840, openrouter.WindowDaily, openrouter.WordingCurrent)
	for range 3 {
		rec := serve(t, &h, failureAnswer(fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", key)
		waitIdle(t, h.knowledge)
		md := metadataOf(t, rec.Body.Bytes())
		if md["reason"] != string(reasonKeyLimitInsufficient) || md["affordable_tokens"] != 840.0 {
			t.Fatalf("the body's own facts are missing:\n%s", rec.Body)
		}
		if _, ok := md["limit"]; ok {
			t.Fatalf("a limit named although GET /key failed:\n%s", rec.Body)
		}
	}
	if n := emu.Count("/key"); n != 1 {
		t.Errorf("%d GET /key after three failures with GET /key failing, want 1 (backoff)", n)
	}
}

// TestCappedKeyAnsweredAtTheEdge: after a key-limit 403 the key is
// answered by the gateway, with the same body and headers, for
// edge_capped_for; with edge_answers off never.
func TestCappedKeyAnsweredAtTheEdge(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "daily"})
	emu.SetUsage(key, 5)
	fb := openrouter.KeyLimitExceeded(openrouter.WindowDaily, "default", strings.Repeat("ab", 32), openrouter.WordingCurrent)
	for _, edge := range []string{EdgeAnswersOn, EdgeAnswersOff} {
		var calls atomic.Int32
		h := Handler{EdgeAnswers: edge}
		newHandler(t, &h, base)
		clock := newTestClock(time.Now())
		useClock(&h, clock)
		first := serve(t, &h, failureAnswer(fb, openrouter.EnvelopeOpenAI, &calls), "POST", "/api/v1/chat/completions", key)
		waitIdle(t, h.knowledge)
		second := serve(t, &h, failureAnswer(fb, openrouter.EnvelopeOpenAI, &calls), "POST", "/api/v1/chat/completions", key)
		if edge == EdgeAnswersOff {
			if calls.Load() != 2 || second.Header().Get("X-OpenRouter-Keys-Answer") != "" {
				t.Errorf("edge_answers off: %d upstream calls, answer %q", calls.Load(), second.Header().Get("X-OpenRouter-Keys-Answer"))
			}
			continue
		}
		if calls.Load() != 1 || second.Code != http.StatusForbidden || second.Header().Get("X-OpenRouter-Keys-Answer") != "edge" {
			t.Fatalf("upstream called %d times, second answer %d %v", calls.Load(), second.Code, second.Header())
		}
		for _, name := range []string{"X-OpenRouter-Key-Status", "X-Should-Retry"} {
			if first.Header().Get(name) != second.Header().Get(name) {
				t.Errorf("%s: %q at the edge, %q from upstream", name, second.Header().Get(name), first.Header().Get(name))
			}
		}
		a, b := metadataOf(t, first.Body.Bytes()), metadataOf(t, second.Body.Bytes())
		for _, name := range []string{"reason", "scope", "window", "resets_at", "limit", "spent", "remaining"} {
			if a[name] != b[name] {
				t.Errorf("metadata.%s: %v at the edge, %v from upstream", name, b[name], a[name])
			}
		}
		if strings.Contains(second.Body.String(), strings.Repeat("ab", 32)) {
			t.Error("the edge answer carries a record hash")
		}
		// The key's own GET /key still works with its cap spent: never
		// answered at the edge.
		if rec := serve(t, &h, okNextCounting(&calls), "GET", "/api/v1/key", key); rec.Code != http.StatusOK || calls.Load() != 2 {
			t.Errorf("GET /key of a capped key: %d, upstream called %d times", rec.Code, calls.Load())
		}
		calls.Add(-1)
		// Past edge_capped_for the key goes upstream again: a limit can be
		// raised at any time.
		clock.advance(DefaultEdgeCappedFor)
		serve(t, &h, failureAnswer(fb, openrouter.EnvelopeOpenAI, &calls), "POST", "/api/v1/chat/completions", key)
		if calls.Load() != 2 {
			t.Errorf("a key capped %s ago was still answered at the edge", DefaultEdgeCappedFor)
		}
	}
}

// TestCappedKeyOnResponsesSaysPermissionDenied: on /responses, in the
// docs example's envelope, a key whose monthly limit is spent is refused
// by the upstream and then at the edge, both times with error_type
// permission_denied, OpenRouter's ApiErrorType for a 403, in the envelope
// the upstream used.
func TestCappedKeyOnResponsesSaysPermissionDenied(t *testing.T) {
	emu, base := startEmulator(t)
	emu.ResponsesEnvelope = openrouter.EnvelopeResponsesDocs
	key := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "monthly", Usage: 5})
	var h Handler
	newHandler(t, &h, base)
	for _, edge := range []bool{false, true} {
		rec := serve(t, &h, toEmulator(emu), "POST", "/api/v1/responses", key)
		waitIdle(t, h.knowledge)
		var body struct {
			Error struct {
				Code     string         `json:"code"`
				Metadata map[string]any `json:"metadata"`
			} `json:"error"`
			ErrorType string `json:"error_type"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusForbidden || body.Error.Metadata["reason"] != string(reasonKeyLimitReached) ||
			(rec.Header().Get("X-OpenRouter-Keys-Answer") == "edge") != edge {
			t.Fatalf("edge %v: %d %v %s", edge, rec.Code, rec.Header(), rec.Body)
		}
		if body.ErrorType != "permission_denied" || body.Error.Code != "server_error" {
			t.Errorf("edge %v: not the upstream's envelope with error_type permission_denied: %s", edge, rec.Body)
		}
	}
}

// TestSubCentFiguresAreShown: a figure under a cent reads as it is in the
// gateway's answer, in the key check's format, never as $0.00.
func TestSubCentFiguresAreShown(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "daily", Usage: 4.9988})
	var h Handler
	newHandler(t, &h, base)
	rec := serve(t, &h, failureAnswer(openrouter.KeyCapAfford(900, 840, openrouter.WindowDaily, openrouter.WordingCurrent), openrouter.EnvelopeOpenAI, nil),
		"POST", "/api/v1/chat/completions", key)
	msg, _ := errorOf(t, rec.Body.Bytes())["message"].(string)
	if !strings.Contains(msg, ": $4.9988 of $5.00 spent, $0.0012 left.") {
		t.Errorf("the figures of a key with $0.0012 left: %s", msg)
	}
}

// TestCapEndsTheEdgeAnswer: a cap seen spent is answered at the edge only
// until its reset, and a key seen working is not.
func TestCapEndsTheEdgeAnswer(t *testing.T) {
	rule := edgeRule{dead: true, cappedFor: 30 * time.Second}
	now := time.Date(2026, 12, 31, 23, 59, 50, 0, time.UTC)
	reset, _ := openrouter.WindowDaily.ResetsAt(now)
	var st keyState
	st.capReached(now, openrouter.WindowDaily, reset)
	if v := rule.verdict(st, now.Add(5*time.Second)); v.reason != reasonKeyLimitReached {
		t.Errorf("5s later, before the reset: %q", v.reason)
	}
	if v := rule.verdict(st, now.Add(10*time.Second)); v.known() {
		t.Errorf("at 00:00 UTC the daily cap has reset, yet %q", v.reason)
	}
	st.capReached(now, openrouter.WindowTotal, time.Time{})
	if v := rule.verdict(st, now.Add(29*time.Second)); v.reason != reasonKeyLimitReached || !v.limit.neverResets {
		t.Errorf("a total cap: %+v", v)
	}
	if v := rule.verdict(st, now.Add(31*time.Second)); v.known() {
		t.Errorf("past edge_capped_for: %q", v.reason)
	}
	st.capLifted()
	if v := rule.verdict(st, now); v.known() {
		t.Errorf("a lifted cap: %q", v.reason)
	}
}

// TestKeyLimitHashProvesTheScheme: a key-limit 403 whose URL holds
// sha256(key) proves the account's hash scheme; another hash does not; the
// hash reaches no log.
func TestKeyLimitHashProvesTheScheme(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "daily"})
	for _, tc := range []struct {
		hash  string
		prove bool
	}{{strings.Repeat("0f", 32), false}, {recordHash(key), true}} {
		h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "sk-or-v1-" + strings.Repeat("9", 64)}, EdgeAnswers: EdgeAnswersOff}
		logs := newHandler(t, &h, base)
		h.acct.schemeProven.Store(false)
		fb := openrouter.KeyLimitExceeded(openrouter.WindowDaily, "default", tc.hash, openrouter.WordingCurrent)
		rec := serve(t, &h, failureAnswer(fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", key)
		waitIdle(t, h.knowledge)
		if got := h.acct.schemeProven.Load(); got != tc.prove {
			t.Errorf("hash proven %v, want %v", got, tc.prove)
		}
		if !strings.Contains(rec.Body.String(), tc.hash) {
			t.Error("the client's own body lost its URL")
		}
		for _, e := range logs.All() {
			if strings.Contains(e.Message, tc.hash) || strings.Contains(fmtFields(e.ContextMap()), tc.hash) {
				t.Errorf("the record hash reached a log line: %q", e.Message)
			}
		}
	}
}

func fmtFields(m map[string]any) string {
	b, _ := json.Marshal(m)
	return string(b)
}

// TestNotKeyFailuresPassUnchanged: a routing 403 and an unknown 429
// pass byte for byte, counted by class.
func TestNotKeyFailuresPassUnchanged(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{})
	var h Handler
	newHandler(t, &h, base)
	unknown := openrouter.FailureBody{Status: http.StatusTooManyRequests, Message: "Something new happened"}
	for _, tc := range []struct {
		fb    openrouter.FailureBody
		class string
	}{
		{openrouter.FailureBody{Status: http.StatusForbidden, Message: "No endpoints found matching your data policy (Free model training)."}, "not_key_routing"},
		{unknown, classUnrecognizedFailure},
	} {
		before := testutil.ToFloat64(gatewayMetrics.unexplained.WithLabelValues(tc.class))
		rec := serve(t, &h, failureAnswer(tc.fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", key)
		if !bytes.Equal(rec.Body.Bytes(), tc.fb.Render(openrouter.EnvelopeOpenAI)) || rec.Header().Get("X-Should-Retry") != "" {
			t.Errorf("%s changed: %s", tc.class, rec.Body)
		}
		if got := testutil.ToFloat64(gatewayMetrics.unexplained.WithLabelValues(tc.class)) - before; got != 1 {
			t.Errorf("%s counted %v times", tc.class, got)
		}
	}
}

// TestStreamErrorsAfterTheFirstEventPass: an error inside a stream has
// status 200 and is never held.
func TestStreamErrorsAfterTheFirstEventPass(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{})
	var h Handler
	newHandler(t, &h, base)
	stream := "data: {\"choices\":[]}\n\n" + `data: {"error":{"code":429,"message":"Rate limit exceeded: free-models-per-day. "}}` + "\n\n"
	rec := serve(t, &h, upstreamAnswer(http.StatusOK, http.Header{"Content-Type": {"text/event-stream"}}, []byte(stream)), "POST", "/api/v1/chat/completions", key)
	if rec.Code != http.StatusOK || rec.Body.String() != stream || rec.Header().Get("X-OpenRouter-Key-Status") != "" {
		t.Errorf("stream changed: %d %q", rec.Code, rec.Body)
	}
}

// TestResetsAtAcrossCalendarBoundaries: resets_at follows OpenRouter's UTC
// calendar at the edges of days, weeks (from Monday), months and years,
// and a total cap never resets.
func TestResetsAtAcrossCalendarBoundaries(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	keyLimit := func(w openrouter.Window) openrouter.FailureBody {
		return openrouter.KeyLimitExceeded(w, "default", strings.Repeat("ab", 32), openrouter.WordingCurrent)
	}
	for _, tc := range []struct {
		name string
		fb   openrouter.FailureBody
		now  string
		want string // "" for never
	}{
		{"daily, last second of the year", keyLimit(openrouter.WindowDaily), "2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"},
		{"daily, at midnight", keyLimit(openrouter.WindowDaily), "2027-01-01T00:00:00Z", "2027-01-02T00:00:00Z"},
		{"weekly, Sunday night", keyLimit(openrouter.WindowWeekly), "2026-12-06T23:59:59Z", "2026-12-07T00:00:00Z"},
		{"weekly, Monday at midnight", keyLimit(openrouter.WindowWeekly), "2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"},
		{"weekly, across the year", keyLimit(openrouter.WindowWeekly), "2026-12-31T12:00:00Z", "2027-01-04T00:00:00Z"},
		{"monthly, end of February", keyLimit(openrouter.WindowMonthly), "2027-02-28T23:59:59Z", "2027-03-01T00:00:00Z"},
		{"monthly, across the year", keyLimit(openrouter.WindowMonthly), "2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"},
		{"total", keyLimit(openrouter.WindowTotal), "2026-12-31T23:59:59Z", ""},
		{"free daily, no X-RateLimit-Reset", openrouter.FreeDaily(false, time.Time{}, openrouter.WordingNoSource), "2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"},
		{"free daily, X-RateLimit-Reset", openrouter.FreeDaily(false, at("2027-01-01T00:00:00Z"), openrouter.WordingCurrent), "2026-12-31T18:00:00Z", "2027-01-01T00:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := at(tc.now)
			body := tc.fb.Render(openrouter.EnvelopeOpenAI)
			f := openrouter.Recognise(tc.fb.Status, body, tc.fb.Header)
			v := limitVerdict(&f, limitEvidence{}, now)
			eb, _ := errbody.Parse(body)
			v.limit.original = eb.Message()
			out, ok := rewrite(eb, v)
			if !ok {
				t.Fatal("not editable")
			}
			md := metadataOf(t, out)
			msg := errorOf(t, out)["message"].(string)
			if tc.want == "" {
				if md["never_resets"] != true || md["resets_at"] != nil || !strings.Contains(msg, "never resets") {
					t.Errorf("a total cap: %s", out)
				}
				return
			}
			if md["resets_at"] != tc.want || !strings.Contains(msg, "resets at "+tc.want) {
				t.Errorf("resets_at %v, want %s\n%s", md["resets_at"], tc.want, out)
			}
		})
	}
}

// TestRetryAfterPerReason: Retry-After only when the end is known and
// within a minute, the upstream's own kept as it is.
func TestRetryAfterPerReason(t *testing.T) {
	now := time.Date(2026, 12, 31, 23, 59, 20, 0, time.UTC)
	for _, tc := range []struct {
		name string
		fb   openrouter.FailureBody
		want string
	}{
		{"free per minute, X-RateLimit-Reset in 25s", openrouter.FreePerMinute429(now.Add(25 * time.Second)), "25"},
		{"free per minute, without a reset", openrouter.FailureBody{Status: 429, Message: openrouter.MessageFreePerMinute}, "40"},
		{"free daily", openrouter.FreeDaily(false, now.Add(40*time.Second), openrouter.WordingCurrent), ""},
		{"key cap", openrouter.KeyLimitExceeded(openrouter.WindowDaily, "d", strings.Repeat("ab", 32), openrouter.WordingCurrent), ""},
		{"in flight, upstream's", openrouter.InFlight(7, openrouter.WordingCurrent), "7"},
		{"capacity, upstream's", openrouter.ProvidersAtCapacity("m", 40), "40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.fb.Render(openrouter.EnvelopeOpenAI)
			f := openrouter.Recognise(tc.fb.Status, body, tc.fb.Header)
			v := limitVerdict(&f, limitEvidence{}, now)
			h := http.Header{}
			for k, vs := range tc.fb.Header {
				h[k] = vs
			}
			setLimitHeaders(h, v)
			if got := h.Get("Retry-After"); got != tc.want {
				t.Errorf("Retry-After %q, want %q", got, tc.want)
			}
		})
	}
}

// TestLimitEntriesInTheTable: the 402, 403 and 429 reasons are entries of
// the one reason table, with their kind, scope and retry advice; every
// kind a key or account failure is recognised as has an entry, so that
// choosing its reason is a lookup; and the edge gives only the reason
// whose entry allows it.
func TestLimitEntriesInTheTable(t *testing.T) {
	for _, e := range reasonTable {
		if e.kind == openrouter.KindUnrecognised {
			if e.retry != retryKept || e.scope != "" || e.gather != nil || e.applies != nil {
				t.Errorf("%s: a 401 reason with retry advice, a scope or figures", e.code)
			}
			continue
		}
		// A provider's error of unknown cause keeps the upstream's retry
		// headers: nothing says whether a retry helps.
		if !explainsStatus(e.status) || e.retry == retryKept && e.code != reasonProviderError || e.decide != nil || e.evidence {
			t.Errorf("%s: incomplete limit entry", e.code)
		}
		if msg := e.message(verdict{reason: e.code}); msg == "" || strings.Contains(msg, "$") {
			t.Errorf("%s: with no facts the sentence is %q (figures without evidence?)", e.code, msg)
		}
	}
	for k := openrouter.KindUnrecognised + 1; k < openrouter.KindNotKey; k++ {
		for _, byok := range []bool{false, true} {
			if e := entryOfKind(k, &openrouter.Failure{Kind: k, BYOK: byok}); e == nil || e.kind != k {
				t.Errorf("kind %s (BYOK %v): no entry", k, byok)
			}
		}
	}
	if e := entryOfKind(openrouter.KindProviderPool, &openrouter.Failure{BYOK: true}); e == nil || e.code != reasonProviderKeyRateLimit {
		t.Errorf("a provider pool limit of the user's own key: %v", e)
	}
	for _, status := range []int{401, 200, 405, 418, 501, -1, 1000} {
		if explainsStatus(status) {
			t.Errorf("status %d is held for explanation, but no reason of the table explains it", status)
		}
	}
	if v := cappedVerdict(keyState{}); v.entry().edge != edgeCappedKey {
		t.Errorf("the edge gives %s, whose entry does not allow it", v.reason)
	}
}

func okNextCounting(calls *atomic.Int32) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		calls.Add(1)
		return okNext.ServeHTTP(w, r)
	})
}

// TestCappedKeyAcrossMidnight: through the handler, with the clock a
// second before 00:00 UTC on the last day of a month, a daily cap resets
// at midnight: resets_at says so, the edge answers until then, and after
// it the key goes upstream again.
func TestCappedKeyAcrossMidnight(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "daily"})
	var h Handler
	newHandler(t, &h, base)
	clock := newTestClock(time.Date(2027, 1, 31, 23, 59, 58, 0, time.UTC))
	useClock(&h, clock)
	var calls atomic.Int32
	for _, w := range []struct {
		window openrouter.Window
		want   string
	}{
		{openrouter.WindowDaily, "2027-02-01T00:00:00Z"},
		{openrouter.WindowWeekly, "2027-02-01T00:00:00Z"}, // a Monday
		{openrouter.WindowMonthly, "2027-02-01T00:00:00Z"},
	} {
		fb := openrouter.KeyLimitExceeded(w.window, "default", strings.Repeat("ab", 32), openrouter.WordingCurrent)
		calls.Store(0)
		rec := serve(t, &h, failureAnswer(fb, openrouter.EnvelopeOpenAI, &calls), "POST", "/api/v1/chat/completions", key)
		waitIdle(t, h.knowledge)
		if got := metadataOf(t, rec.Body.Bytes())["resets_at"]; got != w.want {
			t.Fatalf("%s: resets_at %v, want %s", w.window, got, w.want)
		}
		clock.advance(time.Second) // 23:59:59
		rec = serve(t, &h, failureAnswer(fb, openrouter.EnvelopeOpenAI, &calls), "POST", "/api/v1/chat/completions", key)
		if calls.Load() != 1 || rec.Header().Get("X-OpenRouter-Keys-Answer") != "edge" || metadataOf(t, rec.Body.Bytes())["resets_at"] != w.want {
			t.Errorf("%s: before the reset, upstream called %d times: %s", w.window, calls.Load(), rec.Body)
		}
		clock.advance(time.Second) // 00:00:00: the cap has reset
		serve(t, &h, okNextCounting(&calls), "POST", "/api/v1/chat/completions", key)
		if calls.Load() != 2 {
			t.Errorf("%s: at its reset the key was still answered at the edge", w.window)
		}
		clock.advance(-2 * time.Second)
	}
}
