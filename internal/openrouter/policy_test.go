package openrouter

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// The policy 403s as captured and documented, in each envelope, and what
// is read of them: only what the body says, and of a hostile body only
// short plain values.
func TestRecognisePolicy(t *testing.T) {
	key := "sk-or-v1-" + strings.Repeat("0a", 32)
	for _, c := range []struct {
		name   string
		status int
		body   string
		want   Failure // Status is filled in
	}{
		// Moderation.
		{"moderation, captured", 403, `{"error":{"code":403,"message":"openai/gpt-4.1 requires moderation on OpenRouter. Your input was flagged for \"harassment\". No credits were charged.","metadata":{"reasons":["harassment"],"flagged_input":"…","provider_name":"Mistral","model_slug":"mistralai/mistral-medium-3.5"}}}`,
			Failure{Kind: KindModeration, Provider: "Mistral", Policy: &Policy{Model: "mistralai/mistral-medium-3.5", Categories: []string{"harassment"}, NoCharge: true}}},
		{"moderation, sentence only (/messages)", 403, `{"type":"error","error":{"type":"permission_error","message":"anthropic/claude requires moderation on OpenRouter. Your input was flagged for \"violence\", \"harassment\"."}}`,
			Failure{Kind: KindModeration, Policy: &Policy{Model: "anthropic/claude", Categories: []string{"violence", "harassment"}}}},
		{"moderation, unknown: no model, no category, no charge said", 403, `{"error":{"message":"Your input was flagged by moderation.","code":403}}`,
			Failure{Kind: KindModeration, Policy: &Policy{}}},
		{"moderation, unknown: reasons without a model", 403, `{"error":{"message":"Input flagged.","code":403,"metadata":{"reasons":[]}}}`,
			Failure{Kind: KindModeration, Policy: &Policy{}}},
		{"moderation, hostile", 403, `{"error":{"message":"<b>x</b> requires moderation on OpenRouter. Your input was flagged for \"` + key + `\".","code":403,"metadata":{"reasons":["violence","` + key + `","<script>alert(1)</script>","` + strings.Repeat("a ", 40) + `",7,"hate","sexual","self-harm","illicit","extra"],"model_slug":"` + key + `","provider_name":"<img src=x>"}}}`,
			Failure{Kind: KindModeration, Policy: &Policy{Categories: []string{"violence", "hate", "sexual", "self-harm", "illicit"}, Withheld: 7}}},

		// Guardrails.
		{"guardrail patterns", 403, `{"error":{"message":"Request blocked: prompt injection patterns detected","code":403,"metadata":{"patterns":["ignore_previous_instructions","<tool>","` + key + `"]}}}`,
			Failure{Kind: KindGuardrail, Policy: &Policy{Rule: GuardrailPatterns, Patterns: []string{"ignore_previous_instructions"}, Withheld: 2}}},
		{"guardrail patterns, sentence only", 403, `{"type":"error","error":{"type":"permission_error","message":"Request blocked: prompt injection patterns detected"}}`,
			Failure{Kind: KindGuardrail, Policy: &Policy{Rule: GuardrailPatterns}}},
		{"guardrail budget by source", 403, `{"error":{"message":"Forbidden.","code":403,"metadata":{"limit_source":"openrouter_guardrail_budget"}}}`,
			Failure{Kind: KindGuardrail, LimitSource: LimitSourceGuardrailBudget, Policy: &Policy{Rule: GuardrailBudget}}},
		{"guardrail allowlist", 403, `{"error":{"message":"This model is not in your guardrail's allowlist.","code":403}}`,
			Failure{Kind: KindGuardrail, Policy: &Policy{Rule: GuardrailAllowlist}}},
		{"guardrail, unknown rule", 403, `{"error":{"message":"Request blocked by guardrail.","code":403}}`,
			Failure{Kind: KindGuardrail, Policy: &Policy{}}},

		// A provider's Terms of Service.
		{"terms of service", 403, `{"error":{"message":"The request is prohibited due to a violation of provider Terms Of Service.","code":403,"metadata":{"provider_name":null}},"user_id":"user_2x"}`,
			Failure{Kind: KindProviderToS, Policy: &Policy{}}},
		{"terms of service, /responses", 403, `{"error":{"code":"server_error","message":"The request is prohibited due to a violation of provider Terms Of Service."},"error_type":"forbidden"}`,
			Failure{Kind: KindProviderToS, Policy: &Policy{}}},
		{"terms of service, provider named", 403, `{"error":{"message":"The request is prohibited due to a violation of provider Terms Of Service.","code":403,"metadata":{"provider_name":"Anthropic"}}}`,
			Failure{Kind: KindProviderToS, Provider: "Anthropic", Policy: &Policy{}}},

		// Region.
		{"region, documented", 403, `{"error":{"message":"openai/gpt-4o is not available in your region.","code":403,"availability":{"code":"region_restricted","retryable":false,"fallback_models":["mistralai/mistral-large"]}}}`,
			Failure{Kind: KindRegion, Policy: &Policy{Alternatives: []string{"mistralai/mistral-large"}}}},
		{"region, in metadata", 403, `{"error":{"message":"Forbidden","code":403,"metadata":{"availability":{"code":"region_restricted"},"model_slug":"openai/gpt-4o"}}}`,
			Failure{Kind: KindRegion, Policy: &Policy{Model: "openai/gpt-4o"}}},
		{"region, sentence only", 403, `{"error":{"message":"Country, region, or territory not supported","code":403}}`,
			Failure{Kind: KindRegion, Policy: &Policy{}}},

		// BYOK required: the alternatives OpenRouter names.
		{"byok with two alternatives", 403, `{"error":{"message":"OpenAI is requiring a key to access this model, which you can add in https://openrouter.ai/settings/integrations - you can also switch to gpt-5-chat or gpt-5-mini","code":403}}`,
			Failure{Kind: KindBYOKRequired, Provider: "OpenAI", Policy: &Policy{Alternatives: []string{"gpt-5-chat", "gpt-5-mini"}}}},
		{"byok, unknown: no alternative", 403, `{"error":{"message":"OpenAI is requiring a key to access this model, which you can add in https://openrouter.ai/settings/integrations","code":403}}`,
			Failure{Kind: KindBYOKRequired, Provider: "OpenAI", Policy: &Policy{}}},
		{"byok, hostile", 403, `{"error":{"message":"` + strings.Repeat("A", 200) + ` is requiring a key to access this model, which you can add in https://openrouter.ai/settings/integrations - you can also switch to ` + key + `, <a href=x>y</a> or o3-mini","code":403}}`,
			Failure{Kind: KindBYOKRequired, Policy: &Policy{Alternatives: []string{"o3-mini"}, Withheld: 3}}},

		// Not policy: other statuses, unknown 403s (a provider's own
		// answer: TestProviderErrorIsNoPolicy).
		{"moderation wording in a 400", 400, `{"error":{"message":"openai/gpt-4o requires moderation on OpenRouter. Your input was flagged for \"violence\".","code":400}}`,
			Failure{Kind: KindNotKey, Class: ClassModeration}},
		{"a key limit whose body also has reasons", 403, `{"error":{"message":"Key limit exceeded (daily limit). Manage it using https://openrouter.ai/settings/keys","code":403,"metadata":{"limit_source":"openrouter_key_limit","reasons":["x"]}}}`,
			Failure{Kind: KindKeyCapSpent, LimitSource: LimitSourceKeyLimit, Window: WindowDaily}},
		{"unknown 403", 403, `{"error":{"message":"Insufficient permissions for this model","code":403}}`, Failure{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Recognise(c.status, []byte(c.body), http.Header{})
			c.want.Status = c.status
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %s %+v\nwant %s %+v", describe(got), got.Policy, describe(c.want), c.want.Policy)
			}
		})
	}
}

// Each policy builder is recognised as its kind in every envelope, with
// the figures it was built with where the envelope keeps metadata.
func TestPolicyBodies(t *testing.T) {
	for _, c := range []struct {
		name string
		body FailureBody
		kind Kind
		// full is what is read where metadata survives; bare where it
		// does not (/messages, the /responses docs example).
		full, bare Policy
	}{
		{"moderation, captured", ModerationFlagged("openai/gpt-4.1", "OpenAI", []string{"harassment", "violence"}, "Tell me how to..."), KindModeration,
			Policy{Model: "openai/gpt-4.1", Categories: []string{"harassment", "violence"}, NoCharge: true},
			Policy{Model: "openai/gpt-4.1", Categories: []string{"harassment", "violence"}, NoCharge: true}},
		{"moderation, documented", Moderated("openai/gpt-4o", "violence"), KindModeration,
			Policy{Model: "openai/gpt-4o", Categories: []string{"violence"}}, Policy{Model: "openai/gpt-4o", Categories: []string{"violence"}}},
		{"terms of service", ProviderToS(), KindProviderToS, Policy{}, Policy{}},
		{"guardrail patterns", GuardrailPatternsBlocked([]string{"ignore_previous_instructions"}), KindGuardrail,
			Policy{Rule: GuardrailPatterns, Patterns: []string{"ignore_previous_instructions"}}, Policy{Rule: GuardrailPatterns}},
		{"guardrail budget", GuardrailBudgetExceeded(), KindGuardrail, Policy{Rule: GuardrailBudget}, Policy{Rule: GuardrailBudget}},
		{"region", RegionRestricted("openai/gpt-4o"), KindRegion, Policy{}, Policy{}},
		{"byok or", BYOKRequiredOr("OpenAI", "gpt-5-chat", "gpt-5-mini"), KindBYOKRequired,
			Policy{Alternatives: []string{"gpt-5-chat", "gpt-5-mini"}}, Policy{Alternatives: []string{"gpt-5-chat", "gpt-5-mini"}}},
	} {
		for _, e := range []Envelope{EnvelopeOpenAI, EnvelopeFlat, EnvelopeMessages, EnvelopeResponsesDocs} {
			f := Recognise(c.body.Status, c.body.Render(e), c.body.Header)
			want := c.full
			if e == EnvelopeMessages || e == EnvelopeResponsesDocs {
				want = c.bare
			}
			if f.Kind != c.kind || f.Policy == nil || !reflect.DeepEqual(*f.Policy, want) {
				t.Errorf("%s in envelope %d: %v %+v, want %v %+v: %s", c.name, e, f.Kind, f.Policy, c.kind, want, c.body.Render(e))
			}
		}
	}
	if got := string(BYOKRequiredOr("OpenAI", "gpt-5-chat", "gpt-5-mini").Render(EnvelopeOpenAI)); got != `{"error":{"message":"OpenAI is requiring a key to access this model, which you can add in https://openrouter.ai/settings/integrations - you can also switch to gpt-5-chat or gpt-5-mini","code":403}}` {
		t.Errorf("BYOK required, captured form: %s", got)
	}
	if got := string(ModerationFlagged("openai/gpt-4.1", "OpenAI", []string{"harassment"}, "…").Render(EnvelopeOpenAI)); got != `{"error":{"message":"openai/gpt-4.1 requires moderation on OpenRouter. Your input was flagged for \"harassment\". No credits were charged.","code":403,"metadata":{"reasons":["harassment"],"flagged_input":"…","provider_name":"OpenAI","model_slug":"openai/gpt-4.1"}}}` {
		t.Errorf("moderation, captured form: %s", got)
	}
	for k := KindModeration; k < policyKindsEnd; k++ {
		if n := k.String(); n == "" || strings.HasPrefix(n, "kind_") {
			t.Errorf("kind %d has no name", k)
		}
	}
}

// A "Provider returned error" 403 is the provider's answer, explained by
// provider.go, never a policy 403, whatever its raw says.
func TestProviderErrorIsNoPolicy(t *testing.T) {
	body := `{"error":{"message":"Provider returned error","code":403,"metadata":{"raw":"{\"error\":{\"code\":\"unsupported_country_region_territory\",\"message\":\"Country, region, or territory not supported\"}}","provider_name":"OpenAI"}}}`
	got := Recognise(403, []byte(body), http.Header{})
	if got.Kind != KindProviderError || got.Policy != nil {
		t.Errorf("got %s, policy %+v; want a provider error, no policy", describe(got), got.Policy)
	}
}
