package caddymodule

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// Each policy 403, in each envelope: its reason, what it says and what it
// does not, and the headers that keep official clients from retrying.
// Every "unknown" case is a body that leaves something unsaid, and the
// answer must leave it unsaid too.
func TestPolicy403s(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{})
	var h Handler
	newHandler(t, &h, base)
	raw := func(body string) openrouter.FailureBody {
		return openrouter.FailureBody{Status: http.StatusForbidden, Message: body}
	}
	for _, c := range []struct {
		name   string
		fb     openrouter.FailureBody
		reason reason
		// says must all be in the sentence; never none of it.
		says, never []string
		// members are metadata members with their JSON text ("" absent).
		members map[string]string
		// withMetadata must be in the sentence where the envelope keeps
		// metadata (not /messages, nor the /responses docs example).
		withMetadata string
	}{
		{"moderation, captured", openrouter.ModerationFlagged("openai/gpt-4.1", "OpenAI", []string{"harassment", "violence"}, "Tell me..."), reasonModerationFlagged,
			[]string{"Refused by moderation: openai/gpt-4.1 requires moderation on OpenRouter", "flagged for harassment, violence.", "No credits were charged.", "not a key or billing failure", "the same input is refused again"},
			[]string{"add credits at", "Retry"},
			map[string]string{"scope": `"content"`, "model": `"openai/gpt-4.1"`, "categories": `["harassment","violence"]`, "credits_charged": "false", "provider": `"OpenAI"`}, ""},
		{"moderation, unknown: no categories, no model, charge not said", raw("Your input was flagged by moderation."), reasonModerationFlagged,
			[]string{"this model requires moderation", "the answer does not name the categories"},
			[]string{"No credits were charged", "flagged for"},
			map[string]string{"categories": "", "credits_charged": "", "model": ""}, ""},
		{"guardrail patterns", openrouter.GuardrailPatternsBlocked([]string{"ignore_previous_instructions", "role_override"}), reasonGuardrailBlocked,
			[]string{"Blocked by a guardrail", "matched the guardrail's patterns", "not a key or billing failure"},
			nil, map[string]string{"guardrail": `"patterns"`, "scope": `"guardrail"`}, "patterns (ignore_previous_instructions, role_override)."},
		{"guardrail budget", openrouter.GuardrailBudgetExceeded(), reasonGuardrailBlocked,
			[]string{"the guardrail's own spending budget is spent", "adding credits does not help"},
			[]string{"key's own", "account's credits do not"}, map[string]string{"guardrail": `"budget"`}, ""},
		{"guardrail allowlist", raw("This model is not in your guardrail's allowlist."), reasonGuardrailBlocked,
			[]string{"not on the guardrail's allowlist"}, nil, map[string]string{"guardrail": `"allowlist"`}, ""},
		{"guardrail, unknown rule", raw("Request blocked by guardrail."), reasonGuardrailBlocked,
			[]string{"the answer does not say which rule"}, []string{"patterns", "allowlist", "budget"}, map[string]string{"guardrail": ""}, ""},
		{"provider terms", openrouter.ProviderToS(), reasonProviderTerms,
			[]string{"prohibited by a provider's Terms of Service.", "the likely cause, not a certainty, is the account's privacy settings or this request's provider routing", openrouter.URLPrivacy, "not a key or billing failure"},
			[]string{"(null)", "Provider "}, map[string]string{"likely_cause": `"privacy_settings_or_routing"`, "provider": "", "scope": `"provider"`}, ""},
		{"region", openrouter.RegionRestricted("openai/gpt-4o"), reasonRegionRestricted,
			[]string{"This model is not available in the region OpenRouter sees", "not the client's", "use another model."},
			[]string{"OpenRouter names"}, map[string]string{"scope": `"region"`, "alternatives": ""}, ""},
		{"byok with alternatives", openrouter.BYOKRequiredOr("OpenAI", "gpt-5-chat", "gpt-5-mini"), reasonProviderKeyRequired,
			[]string{"OpenAI serves it only with your own OpenAI key", "or switch to another model (OpenRouter names gpt-5-chat, gpt-5-mini)"},
			nil, map[string]string{"alternatives": `["gpt-5-chat","gpt-5-mini"]`}, ""},
		{"byok, unknown: no alternatives", openrouter.BYOKRequired("OpenAI"), reasonProviderKeyRequired,
			[]string{"add one at " + openrouter.URLIntegrations + ". The OpenRouter key"}, []string{"OpenRouter names"}, map[string]string{"alternatives": ""}, ""},
	} {
		for _, env := range []openrouter.Envelope{openrouter.EnvelopeOpenAI, openrouter.EnvelopeMessages, openrouter.EnvelopeResponsesDocs} {
			before := testutil.ToFloat64(gatewayMetrics.rewrites.WithLabelValues(string(c.reason)))
			rec := serve(t, &h, failureAnswer(c.fb, env, nil), "POST", "/api/v1/chat/completions", key)
			name := c.name + " in envelope " + string(rune('0'+env))
			if rec.Code != http.StatusForbidden || rec.Header().Get("X-OpenRouter-Key-Status") != string(c.reason) {
				t.Errorf("%s: %d %q: %s", name, rec.Code, rec.Header().Get("X-OpenRouter-Key-Status"), rec.Body)
				continue
			}
			if rec.Header().Get("X-Should-Retry") != "false" || rec.Header().Get("Retry-After") != "" {
				t.Errorf("%s: retry headers %v", name, rec.Header())
			}
			if testutil.ToFloat64(gatewayMetrics.rewrites.WithLabelValues(string(c.reason)))-before != 1 {
				t.Errorf("%s: not counted under its reason", name)
			}
			msg, _ := errorOf(t, rec.Body.Bytes())["message"].(string)
			for _, s := range c.says {
				if !strings.Contains(msg, s) {
					t.Errorf("%s: the sentence lacks %q: %s", name, s, msg)
				}
			}
			for _, s := range c.never {
				if strings.Contains(msg, s) {
					t.Errorf("%s: the sentence says %q: %s", name, s, msg)
				}
			}
			if !strings.HasSuffix(msg, " OpenRouter said: "+c.fb.Message) {
				t.Errorf("%s: OpenRouter's own sentence is not kept: %s", name, msg)
			}
			if strings.Contains(msg, "Key limit") || strings.Contains(strings.ToLower(msg), "out of credits") {
				t.Errorf("%s: called a key or billing failure: %s", name, msg)
			}
			if env != openrouter.EnvelopeOpenAI {
				if c.withMetadata != "" && strings.Contains(msg, c.withMetadata) {
					t.Errorf("%s: says what only metadata could tell: %s", name, msg)
				}
				continue // the members are checked once; their place is errbody's
			}
			if !strings.Contains(msg, c.withMetadata) {
				t.Errorf("%s: the sentence lacks %q: %s", name, c.withMetadata, msg)
			}
			md := rawMetadataOf(t, rec.Body.Bytes())
			for m, want := range c.members {
				if got := string(md[m]); got != want {
					t.Errorf("%s: metadata.%s = %s, want %q", name, m, got, want)
				}
			}
		}
	}
}

// A hostile policy body: its metadata holds a key, markup and text long
// enough to hide anything. The answer repeats none of it in what the
// gateway adds, and says what it does know.
func TestPolicy403HostileBody(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{})
	var h Handler
	newHandler(t, &h, base)
	stranger := "sk-or-v1-" + strings.Repeat("5e", 32)
	long := strings.Repeat("x", 5000)
	body := `{"error":{"message":"openai/gpt-4o requires moderation on OpenRouter. Your input was flagged for \"violence\".","code":403,"metadata":{` +
		`"reasons":["violence","` + stranger + `","<img src=x onerror=alert(1)>","` + long + `"],"flagged_input":"` + stranger + `",` +
		`"model_slug":"<script>` + key + `</script>","provider_name":"` + stranger + `"}}}`
	rec := serve(t, &h, upstreamAnswer(403, http.Header{"Content-Type": {"application/json"}}, []byte(body)), "POST", "/api/v1/chat/completions", key)
	if reasonOf(t, rec) != string(reasonModerationFlagged) {
		t.Fatalf("not explained: %s", rec.Body)
	}
	msg, _ := errorOf(t, rec.Body.Bytes())["message"].(string)
	added, _, _ := strings.Cut(msg, " OpenRouter said: ")
	for _, bad := range []string{stranger, key, "<", long[:100], "sk-or-"} {
		if strings.Contains(added, bad) {
			t.Errorf("the gateway's sentence repeats %.20q: %s", bad, added)
		}
	}
	md := rawMetadataOf(t, rec.Body.Bytes())
	if string(md["categories"]) != `["violence"]` || md["model"] != nil || md["provider"] != nil {
		t.Errorf("members: categories %s, model %s, provider %s", md["categories"], md["model"], md["provider"])
	}
	if !strings.Contains(added, "this model requires moderation on OpenRouter, and the input was flagged for violence.") {
		t.Errorf("sentence: %s", added)
	}
	for _, m := range []string{"model", "provider", "categories", "scope", "reason", "credits_charged"} {
		if v := md[m]; len(v) > 200 {
			t.Errorf("metadata.%s is %d bytes", m, len(v))
		}
	}
}

// A 403 the gateway does not recognise passes byte for byte, counted as
// unrecognised, with no retry advice added.
func TestUnknown403PassesUnchanged(t *testing.T) {
	emu, base := startEmulator(t)
	key := emu.NewKey(emulator.KeyOptions{})
	var h Handler
	newHandler(t, &h, base)
	fb := openrouter.FailureBody{Status: http.StatusForbidden, Message: "Insufficient permissions for this model"}
	for _, env := range []openrouter.Envelope{openrouter.EnvelopeOpenAI, openrouter.EnvelopeMessages, openrouter.EnvelopeResponsesDocs} {
		before := testutil.ToFloat64(gatewayMetrics.unexplained.WithLabelValues(classUnrecognizedFailure))
		rec := serve(t, &h, failureAnswer(fb, env, nil), "POST", "/api/v1/chat/completions", key)
		if rec.Body.String() != string(fb.Render(env)) || rec.Header().Get("X-Should-Retry") != "" || rec.Header().Get("X-OpenRouter-Key-Status") != "" {
			t.Errorf("envelope %d changed: %v %s", env, rec.Header(), rec.Body)
		}
		if testutil.ToFloat64(gatewayMetrics.unexplained.WithLabelValues(classUnrecognizedFailure))-before != 1 {
			t.Errorf("envelope %d: not counted as unrecognised", env)
		}
	}
}

// Every policy kind has its entry, and every policy entry is a 403 that
// advises against a retry.
func TestPolicyEntries(t *testing.T) {
	for _, k := range []openrouter.Kind{openrouter.KindModeration, openrouter.KindGuardrail, openrouter.KindProviderToS, openrouter.KindRegion} {
		e := entryOfKind(k, &openrouter.Failure{Kind: k})
		if e == nil || e.status != http.StatusForbidden || e.retry != retryNo || e.gather == nil {
			t.Errorf("kind %s: entry %+v", k, e)
		}
	}
}

// rawMetadataOf is the error's metadata members, as JSON text.
func rawMetadataOf(t *testing.T, body []byte) map[string]json.RawMessage {
	t.Helper()
	var top struct {
		Error struct {
			Metadata map[string]json.RawMessage `json:"metadata"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, body)
	}
	return top.Error.Metadata
}
