package emulator

import (
	"strings"
	"testing"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// The policy models refuse every request with their 403, on each inference
// endpoint in its envelope, as OpenRouter would; the bodies are those of
// the facts sheet byte for byte.
func TestPolicyModels(t *testing.T) {
	s, base := start(t)
	key := s.NewKey(KeyOptions{})
	for _, c := range []struct {
		model string
		kind  openrouter.Kind
		body  string // on /chat/completions
	}{
		{ModelModerationFlagged, openrouter.KindModeration, `{"error":{"message":"emulator/moderation-403 requires moderation on OpenRouter. Your input was flagged for \"harassment\", \"violence\". No credits were charged.","code":403,"metadata":{"reasons":["harassment","violence"],"flagged_input":"…","provider_name":"OpenAI","model_slug":"emulator/moderation-403"}}}`},
		{ModelGuardrailPatterns, openrouter.KindGuardrail, `{"error":{"message":"Request blocked: prompt injection patterns detected","code":403,"metadata":{"patterns":["ignore_previous_instructions"]}}}`},
		{ModelGuardrailBudget, openrouter.KindGuardrail, `{"error":{"message":"Guardrail budget exceeded.","code":403,"metadata":{"limit_source":"openrouter_guardrail_budget"}}}`},
		{ModelProviderToS, openrouter.KindProviderToS, `{"error":{"message":"The request is prohibited due to a violation of provider Terms Of Service.","code":403,"metadata":{"provider_name":null}}}`},
		{ModelRegionRestricted, openrouter.KindRegion, `{"error":{"message":"emulator/region-403 is not available in your region.","code":403,"metadata":{"availability":{"code":"region_restricted","retryable":false}}}}`},
		{ModelBYOKRequiredOr, openrouter.KindBYOKRequired, `{"error":{"message":"OpenAI is requiring a key to access this model, which you can add in https://openrouter.ai/settings/integrations - you can also switch to gpt-5-chat or gpt-5-mini","code":403}}`},
		{ModelForbiddenUnknown, openrouter.KindUnrecognised, `{"error":{"message":"Insufficient permissions for this model","code":403}}`},
	} {
		r := chat(t, base, key, c.model)
		if r.status != 403 || string(r.body) != c.body || r.failure().Kind != c.kind || r.header.Get("Retry-After") != "" {
			t.Errorf("%s: %d %v %s", c.model, r.status, r.failure().Kind, r.body)
		}
		for _, path := range []string{"/messages", "/responses"} {
			m := call(t, "POST", base+path, key, strings.Replace(chatBody, "openai/gpt-4o", c.model, 1))
			if m.status != 403 || m.failure().Kind != c.kind {
				t.Errorf("%s on %s: %d %v %s", c.model, path, m.status, m.failure().Kind, m.body)
			}
		}
	}
}
