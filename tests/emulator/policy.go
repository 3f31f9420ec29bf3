package emulator

// policy.go owns the emulator's policy 403s: models whose every request
// OpenRouter refuses for moderation, a guardrail, a provider's Terms of
// Service, a region, or a provider that requires the user's own key and
// names other models; and a 403 whose wording no one knows. Each body is
// internal/openrouter's builder, in the captured or documented form.

import (
	"net/http"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Models that answer with a policy 403, after the account and key were
// found able to pay.
const (
	// ModelModerationFlagged: the moderation 403 as captured, flagged for
	// harassment and violence, "No credits were charged.".
	ModelModerationFlagged = "emulator/moderation-403"
	// ModelGuardrailPatterns: a guardrail's prompt-injection block, with
	// metadata.patterns.
	ModelGuardrailPatterns = "emulator/guardrail-403"
	// ModelGuardrailBudget: a guardrail's spent budget (unverified form).
	ModelGuardrailBudget = "emulator/guardrail-budget-403"
	// ModelProviderToS: "prohibited due to a violation of provider Terms
	// Of Service".
	ModelProviderToS = "emulator/terms-403"
	// ModelRegionRestricted: not available in the caller's region, in the
	// documented availability form.
	ModelRegionRestricted = "emulator/region-403"
	// ModelBYOKRequiredOr: OpenAI requires the user's own key and
	// OpenRouter names two models to switch to.
	ModelBYOKRequiredOr = "emulator/byok-required-or-403"
	// ModelForbiddenUnknown: a 403 in wording the gateway does not know.
	ModelForbiddenUnknown = "emulator/unknown-403"
)

// policyFailure is the policy 403 a model is refused with, if any.
func policyFailure(model string) (openrouter.FailureBody, bool) {
	switch model {
	case ModelModerationFlagged:
		return openrouter.ModerationFlagged(model, "OpenAI", []string{"harassment", "violence"}, "…"), true
	case ModelGuardrailPatterns:
		return openrouter.GuardrailPatternsBlocked([]string{"ignore_previous_instructions"}), true
	case ModelGuardrailBudget:
		return openrouter.GuardrailBudgetExceeded(), true
	case ModelProviderToS:
		return openrouter.ProviderToS(), true
	case ModelRegionRestricted:
		return openrouter.RegionRestricted(model), true
	case ModelBYOKRequiredOr:
		return openrouter.BYOKRequiredOr("OpenAI", "gpt-5-chat", "gpt-5-mini"), true
	case ModelForbiddenUnknown:
		return openrouter.FailureBody{Status: http.StatusForbidden, Message: openrouter.MessageInsufficientPermissions}, true
	}
	return openrouter.FailureBody{}, false
}
