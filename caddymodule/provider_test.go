package caddymodule

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// providerReach is a provider's error as TestReasonTable reaches its
// reason: the body, and the facts its recognition shows.
func providerReach(fb openrouter.FailureBody) struct {
	fb    openrouter.FailureBody
	facts limitFacts
} {
	f := openrouter.Recognise(fb.Status, fb.Render(openrouter.EnvelopeOpenAI), fb.Header)
	return struct {
		fb    openrouter.FailureBody
		facts limitFacts
	}{fb, limitFacts{provider: f.Provider, providerError: f.ProviderError}}
}

const crucibleSays = "Model 'moonshotai/kimi-k2.6' supports at most 1 image per prompt."

// providerCase is a provider's error and what the answer to it must say.
type providerCase struct {
	name   string
	fb     openrouter.FailureBody
	reason reason
	fault  string // metadata.fault, "" when absent
	// retry is X-Should-Retry, "" when the upstream's stays (none);
	// retryAfter is Retry-After.
	retry, retryAfter string
	says              []string
}

func providerCases() []providerCase {
	capacityInBody := openrouter.ProvidersAtCapacity("openai/gpt-4o", 30)
	capacityInBody.Header = nil
	longCapacity := openrouter.ProvidersAtCapacity("openai/gpt-4o", 300)
	return []providerCase{
		{"the request's fault", openrouter.ProviderReturned(400, "Crucible", openrouter.RawInvalidRequest(crucibleSays), false, openrouter.RawString),
			reasonProviderRequestRejected, "request", "false", "",
			[]string{"Provider Crucible refused the request itself", `"` + crucibleSays + `"`, "Change the request", "provider.order", openrouter.URLProviderRouting}},
		{"the request's fault, raw an object", openrouter.ProviderReturned(400, "Crucible", openrouter.RawInvalidRequest(crucibleSays), false, openrouter.RawObject),
			reasonProviderRequestRejected, "request", "false", "", []string{crucibleSays}},
		{"the provider's capacity", openrouter.ProviderReturned(503, "Morph", openrouter.RawNoWorkers(), false, openrouter.RawString),
			reasonProviderUnavailable, "provider", "true", "", []string{"Provider Morph failed or is over capacity", "No available workers", "Retry, or route it to another provider"}},
		{"a 502 from a named provider", openrouter.ProviderReturned(502, "Together", nil, false, openrouter.RawString),
			reasonProviderUnavailable, "provider", "true", "", []string{"Provider Together failed"}},
		{"the user's own provider key", openrouter.ProviderReturned(403, "Anthropic", openrouter.RawKeyPermission(), true, openrouter.RawObject),
			reasonProviderKeyRefused, "own_provider_key", "false", "", []string{"Provider Anthropic refused your own provider key (BYOK)", "at Anthropic", openrouter.URLIntegrations}},
		{"the user's own provider key's quota, a 429", openrouter.ProviderReturned(429, "OpenAI", openrouter.RawQuotaSpent(), true, openrouter.RawString),
			reasonProviderKeyRefused, "own_provider_key", "false", "", []string{"refused your own provider key (BYOK)", "You exceeded your current quota"}},
		{"a region block", openrouter.ProviderReturned(403, "OpenAI", openrouter.RawRegion(), false, openrouter.RawString),
			reasonProviderBlocked, "region", "false", "", []string{"Provider OpenAI does not serve requests from this region", "Country, region, or territory not supported"}},
		// Unknown: nothing in the body says whose fault it is.
		{"unknown: 400 without raw", openrouter.ProviderReturned(400, "Crucible", nil, false, openrouter.RawString),
			reasonProviderError, "unknown", "", "", []string{"Provider Crucible returned an error", "cause unknown"}},
		{"unknown: 400 with malformed raw", openrouter.ProviderReturned(400, "Crucible", `{"error":{"type":"invalid_request_error","message":"cut`, false, openrouter.RawString),
			reasonProviderError, "unknown", "", "", []string{"cause unknown"}},
		{"unknown: 404", openrouter.ProviderReturned(404, "DeepInfra", openrouter.Members{{Name: "detail", Value: "Not Found"}}, false, openrouter.RawObject),
			reasonProviderError, "unknown", "", "", []string{`Provider DeepInfra returned an error (its status 404): "Not Found"`, "cause unknown"}},
		{"unknown: 403 of OpenRouter's own provider key", openrouter.ProviderReturned(403, "OpenAI", openrouter.RawKeyPermission(), false, openrouter.RawString),
			reasonProviderError, "unknown", "", "", []string{"cause unknown"}},
		{"unknown: 429 naming no provider", openrouter.ProviderReturned(429, "", "slow down", false, openrouter.RawString),
			reasonProviderError, "unknown", "", "", []string{`The provider returned an error (its status 429): "slow down"`}},
		// The 429s told apart.
		{"shared pool", openrouter.ProviderPool("openai/gpt-4o", "Chutes", false, openrouter.WordingCurrent),
			reasonProviderRateLimited, "", "true", "", []string{"not your key or your account"}},
		{"own provider key's pool", openrouter.ProviderPool("openai/gpt-4o", "OpenAI", true, openrouter.WordingCurrent),
			reasonProviderKeyRateLimit, "", "true", "", []string{"Your own provider key (BYOK) for OpenAI"}},
		{"own provider account", openrouter.ProviderAccount("OpenAI", "Rate limit reached for requests"),
			reasonProviderKeyRateLimit, "", "true", "", []string{"Your own provider key (BYOK) for OpenAI"}},
		{"admission control", openrouter.AdmissionControl(10),
			reasonAdmissionControl, "", "true", "10", []string{"a transient check, not a spent balance or limit", "Retry in 10 seconds"}},
		{"capacity, retry_after in the body only", capacityInBody,
			reasonProvidersAtCapacity, "", "true", "30", []string{"Retry in 30 seconds"}},
		{"capacity, five minutes", longCapacity,
			reasonProvidersAtCapacity, "", "false", "300", []string{"Retry in 300 seconds"}},
	}
}

// Each provider error and fourth-round 429 through the handler: its
// reason, fault and provider, the provider's own words, retry headers
// consistent with what can succeed, the status and every member of the
// upstream's body kept.
func TestProviderErrorsExplained(t *testing.T) {
	_, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	for _, c := range providerCases() {
		t.Run(c.name, func(t *testing.T) {
			rec := serve(t, &h, failureAnswer(c.fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", goodKey)
			md := metadataOf(t, rec.Body.Bytes())
			msg, _ := errorOf(t, rec.Body.Bytes())["message"].(string)
			if rec.Code != c.fb.Status || reasonOf(t, rec) != string(c.reason) {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			if got, _ := md["fault"].(string); got != c.fault {
				t.Errorf("fault %q, want %q", got, c.fault)
			}
			if rec.Header().Get("X-Should-Retry") != c.retry || rec.Header().Get("Retry-After") != c.retryAfter {
				t.Errorf("X-Should-Retry %q Retry-After %q, want %q %q", rec.Header().Get("X-Should-Retry"), rec.Header().Get("Retry-After"), c.retry, c.retryAfter)
			}
			for _, s := range c.says {
				if !strings.Contains(msg, s) {
					t.Errorf("the message lacks %q: %s", s, msg)
				}
			}
			if !strings.HasSuffix(msg, " OpenRouter said: "+strings.TrimSpace(c.fb.Message)) {
				t.Errorf("OpenRouter's own message is not kept: %s", msg)
			}
			for _, m := range c.fb.Metadata {
				if _, ok := md[m.Name]; !ok {
					t.Errorf("member %s lost: %s", m.Name, rec.Body)
				}
			}
			if p := c.fb.Metadata; len(p) > 0 {
				for _, m := range p {
					if m.Name == "provider_name" && m.Value != "" && md["provider"] != m.Value {
						t.Errorf("provider %v, want %v", md["provider"], m.Value)
					}
				}
			}
		})
	}
}

// In the envelopes without metadata (/messages, the /responses docs
// example) a provider's error names no provider: a 5xx is still the
// provider's failure, anything else of unknown cause; the answer is in
// the envelope it came in.
func TestProviderErrorsInEveryEnvelope(t *testing.T) {
	_, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	for _, c := range []struct {
		fb     openrouter.FailureBody
		reason reason
		says   string
	}{
		{openrouter.ProviderReturned(400, "Crucible", openrouter.RawInvalidRequest(crucibleSays), false, openrouter.RawString), reasonProviderError,
			"A provider returned an error; OpenRouter's answer names neither the provider nor what it said: whose fault it is, and whether a retry helps, is unknown."},
		{openrouter.ProviderReturned(503, "Morph", openrouter.RawNoWorkers(), false, openrouter.RawString), reasonProviderUnavailable,
			"The provider failed or is over capacity: the provider's outage or load"},
		{openrouter.AdmissionControl(10), reasonAdmissionControl, "Retry in 10 seconds"},
	} {
		for _, e := range []struct {
			path string
			env  openrouter.Envelope
		}{{"/api/v1/messages", openrouter.EnvelopeMessages}, {"/api/v1/responses", openrouter.EnvelopeResponsesDocs}, {"/api/v1/responses", openrouter.EnvelopeOpenAI}} {
			rec := serve(t, &h, failureAnswer(c.fb, e.env, nil), "POST", e.path, goodKey)
			top := errorOf(t, rec.Body.Bytes())
			msg, _ := top["message"].(string)
			md, _ := top["metadata"].(map[string]any)
			if e.env == openrouter.EnvelopeOpenAI && c.reason != reasonAdmissionControl {
				continue // with metadata: TestProviderErrorsExplained
			}
			if rec.Code != c.fb.Status || rec.Header().Get("X-OpenRouter-Key-Status") != string(c.reason) || md["reason"] != string(c.reason) ||
				!strings.Contains(msg, c.says) {
				t.Errorf("%s in %d: %d %s", c.reason, e.env, rec.Code, rec.Body)
			}
			if e.env == openrouter.EnvelopeMessages && !strings.HasPrefix(rec.Body.String(), `{"type":"error"`) {
				t.Errorf("not Anthropic's envelope: %s", rec.Body)
			}
		}
	}
}

// A 400, 404 or 5xx that is not a provider's error passes byte for byte
// with the headers it came with; and so does everything with
// explain_limits off.
func TestOtherFailuresPassUnchanged(t *testing.T) {
	_, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	other := func() float64 {
		return testutil.ToFloat64(gatewayMetrics.unexplained.WithLabelValues(classOtherFailure))
	}
	unrecognised := func() float64 {
		return testutil.ToFloat64(gatewayMetrics.unexplained.WithLabelValues(classUnrecognizedFailure))
	}
	otherBefore, unrecognisedBefore := other(), unrecognised()
	for _, c := range []struct {
		status int
		body   string
	}{
		// (An unknown model's 400 and a no-endpoints 404 are the model
		// reasons': TestModelFailuresThroughHandler.)
		{400, `{"error":{"message":"Input required: specify \"prompt\" or \"messages\"","code":400}}`},
		{400, `not json at all`},
		{404, `{"error":{"message":"Not Found","code":404}}`},
		{502, `<html><body>Bad gateway</body></html>`},
		{503, `{"error":{"message":"Service temporarily unavailable","code":503}}`},
		{500, `{"error":{"message":"Internal Server Error","code":500}}`},
		{429, `{"error":{"message":"Provider returned error","code":429}}`[:20]},
	} {
		hdr := http.Header{"Content-Type": {"application/json"}, "Retry-After": {"7"}, "X-Custom": {"kept"}}
		rec := serve(t, &h, upstreamAnswer(c.status, hdr, []byte(c.body)), "POST", "/api/v1/chat/completions", goodKey)
		if rec.Code != c.status || rec.Body.String() != c.body || rec.Header().Get("X-Custom") != "kept" || rec.Header().Get("Retry-After") != "7" ||
			rec.Header().Get("X-OpenRouter-Key-Status") != "" || rec.Header().Get("X-Should-Retry") != "" {
			t.Errorf("%d changed: %d %v %s", c.status, rec.Code, rec.Header(), rec.Body)
		}
	}
	// Counted apart from the 402, 403 and 429 of unknown wording (the
	// 429 cut short is one: not JSON).
	if got := other() - otherBefore; got != 6 {
		t.Errorf("other_failure counted %v, want 6", got)
	}
	if got := unrecognised() - unrecognisedBefore; got != 0 {
		t.Errorf("unrecognized_failure counted %v for failures that are no limits", got)
	}
	var off Handler
	off.ExplainLimits = ExplainLimitsOff
	newHandler(t, &off, api)
	fb := openrouter.ProviderReturned(400, "Crucible", openrouter.RawInvalidRequest(crucibleSays), false, openrouter.RawString)
	rec := serve(t, &off, failureAnswer(fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", goodKey)
	if rec.Body.String() != string(fb.Render(openrouter.EnvelopeOpenAI)) {
		t.Errorf("explain_limits off changed the body: %s", rec.Body)
	}
}

// metadata.raw is the provider's, anyone's text: the gateway's sentence
// shows none of its key-shaped runs, control characters or markup, and
// no log line carries them.
func TestProviderRawAttack(t *testing.T) {
	_, api := startEmulator(t)
	var h Handler
	logs := newHandler(t, &h, api)
	orKey := openrouter.KeyPrefix + strings.Repeat("9c", 32)
	byokKey := "sk-ant-api03-" + strings.Repeat("Zx7", 20)
	raw := openrouter.Members{{Name: "error", Value: openrouter.Members{{Name: "type", Value: "invalid_request_error"}, {Name: "message",
		Value: "Bad key " + byokKey + " for " + orKey + "\x1b]0;pwn\x07 <img src=x onerror=alert(1)> [click](https://evil.example/" + orKey + ") \u202edesrever"}}}}
	fb := openrouter.ProviderReturned(400, "Evil<b>"+orKey, raw, true, openrouter.RawString)
	rec := serve(t, &h, failureAnswer(fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", goodKey)
	msg, _ := errorOf(t, rec.Body.Bytes())["message"].(string)
	md := metadataOf(t, rec.Body.Bytes())
	if reasonOf(t, rec) != string(reasonProviderRequestRejected) || !strings.Contains(msg, "Bad key [redacted] for [redacted]") {
		t.Fatalf("%s", rec.Body)
	}
	for _, s := range []string{msg, md["provider"].(string), rec.Header().Get("X-OpenRouter-Key-Status")} {
		if strings.Contains(s, orKey) || strings.Contains(s, byokKey) || strings.Contains(s, "Zx7Zx7") ||
			strings.ContainsAny(s, "<>\x1b\x07\u202e") || strings.Contains(s, "](") {
			t.Errorf("the gateway's words carry the attack: %q", s)
		}
	}
	// The upstream's own raw member is passed on as it came (it is the
	// upstream's answer to this client), never rewritten into the message.
	if _, ok := md["raw"].(string); !ok {
		t.Errorf("raw not kept: %s", rec.Body)
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + strings.ReplaceAll(strings.ReplaceAll(anyString(v), "\n", " "), "\t", " ")
		}
		if strings.Contains(line, orKey) || strings.Contains(line, byokKey) || strings.Contains(line, goodKey) {
			t.Errorf("a log line carries key material: %s", line)
		}
	}
}

func anyString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// The one rule for the headers the gateway sets: a Retry-After over two
// minutes, seconds or a date, is never sent without X-Should-Retry:
// false, whatever the reason advises and whoever set it.
func TestLongRetryAfterIsNeverRetried(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		retryAfter, want string
	}{
		{"120", "true"}, {"121", "false"}, {"86400", "false"}, {"99999999999999999999", "false"},
		{now.Add(time.Minute).Format(http.TimeFormat), "true"}, {now.Add(10 * time.Minute).Format(http.TimeFormat), "false"},
		{"soon", "true"}, {"", "true"},
	} {
		h := http.Header{"X-Should-Retry": {"true"}}
		if c.retryAfter != "" {
			h.Set("Retry-After", c.retryAfter)
		}
		noRetryAfterLongWait(h, now)
		if got := h.Get("X-Should-Retry"); got != c.want {
			t.Errorf("Retry-After %q: X-Should-Retry %q, want %q", c.retryAfter, got, c.want)
		}
	}
	// Through setLimitHeaders: the upstream's own long Retry-After on a
	// retryable reason, and on a reason that keeps the upstream's advice.
	for _, v := range []verdict{
		{reason: reasonAdmissionControl, limit: &limitFacts{retryAfter: 600 * time.Second, upstream: true}},
		{reason: reasonProviderError, limit: &limitFacts{}},
	} {
		h := http.Header{"Retry-After": {"600"}}
		setLimitHeaders(h, v)
		if h.Get("X-Should-Retry") != "false" || h.Get("Retry-After") != "600" {
			t.Errorf("%s: %v", v.reason, h)
		}
	}
	// A reason of unknown cause sets no X-Should-Retry of its own.
	h := http.Header{}
	setLimitHeaders(h, verdict{reason: reasonProviderError, limit: &limitFacts{}})
	if len(h) != 0 {
		t.Errorf("provider_error set %v", h)
	}
}
