package emulator

// models.go owns the emulator's 400 unknown-model and 404 no-endpoints
// answers, each in its captured wording and in the documented
// availability form, built by internal/openrouter: a mistyped slug, the
// older 500, a tools request to a model without tool support, every
// filter OpenRouter names, stealth and sunset models, a free variant that
// ended, and the catalogue's retired model.

import (
	"encoding/json"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// The models that fail the way a model failure does.
const (
	// ModelMistyped is a slug without its author ("openai/gpt-4o"): 400
	// "gpt-4o is not a valid model ID".
	ModelMistyped = "gpt-4o"
	// ModelMistypedLegacy answers the same as a 500, as before
	// 2026-08-19.
	ModelMistypedLegacy = "gpt-4o-legacy"
	// ModelUnknownDocumented answers the 400 in the documented form, with
	// OpenRouter's own fallback_models.
	ModelUnknownDocumented = "claude-sonnet-4-6"
	// ModelNoTools has no endpoint that supports tools: a request with
	// tools gets the captured 404, one without them succeeds.
	ModelNoTools = "emulator/no-tools"
	// The 404s of each filter in their captured wording.
	ModelNoEndpoints        = "emulator/no-endpoints"
	ModelNoToolChoice       = "emulator/no-tool-choice"
	ModelNoCacheControl     = "emulator/no-cache-control"
	ModelTrainingPolicy     = "emulator/training-policy"
	ModelZDRPolicy          = "emulator/zdr-policy"
	ModelNoAllowedProviders = "emulator/no-allowed-providers"
	ModelStealth            = "emulator/stealth-alpha"
	// The 404s in the documented availability form.
	ModelAvailNoEndpoints = "emulator/avail-no-endpoints"
	ModelAvailZDR         = "emulator/avail-privacy-zdr"
	ModelAvailMaxPrice    = "emulator/avail-constraint-max-price"
	ModelAvailWrongPath   = "emulator/avail-wrong-endpoint"
	ModelAvailDeprecated  = "emulator/avail-deprecated"
	ModelAvailFreeEnded   = "emulator/avail-free-ended:free"
)

// StealthSuccessor is what ModelStealth was revealed as.
const StealthSuccessor = "openai/gpt-4o"

// modelFailure is the model failure the request's model gives, if any.
// tools is the request's tools member.
func modelFailure(model string, tools json.RawMessage) (openrouter.FailureBody, bool) {
	none := []string(nil)
	switch model {
	case ModelMistyped:
		return openrouter.UnknownModel(model, false), true
	case ModelMistypedLegacy:
		return openrouter.UnknownModel(model, true), true
	case ModelUnknownDocumented:
		return openrouter.UnknownModelAvailability(model, "anthropic/claude-3.5-sonnet"), true
	case ModelNoTools:
		if t := string(tools); t != "" && t != "null" && t != "[]" {
			return openrouter.NoEndpointsFiltered(openrouter.FilterTools, model, none, none), true
		}
	case ModelNoEndpoints:
		return openrouter.NoEndpointsFor(model), true
	case ModelNoToolChoice:
		return openrouter.NoEndpointsFiltered(openrouter.FilterToolChoice, model, none, none), true
	case ModelNoCacheControl:
		return openrouter.NoEndpointsFiltered(openrouter.FilterCacheControl, model, none, none), true
	case ModelTrainingPolicy:
		return openrouter.NoEndpointsFiltered(openrouter.FilterTraining, model, none, none), true
	case ModelZDRPolicy:
		return openrouter.NoEndpointsFiltered(openrouter.FilterZDR, model, none, none), true
	case ModelNoAllowedProviders:
		return openrouter.NoEndpointsFiltered(openrouter.FilterAllowedProviders, model, []string{"OpenAI", "Azure"}, []string{"Groq"}), true
	case ModelStealth:
		return openrouter.StealthRevealed("Stealth Alpha", "March 18th", StealthSuccessor), true
	case ModelFreeEnded:
		return openrouter.FreePeriodEnded("Free Ended", ModelFreeEndedPaid), true
	case ModelRetired:
		return openrouter.NoEndpointsAvailability(openrouter.AvailabilityModelDeprecated, model, openrouter.FilterNone, StealthSuccessor), true
	case ModelAvailNoEndpoints:
		return openrouter.NoEndpointsAvailability(openrouter.AvailabilityNoEndpoints, model, openrouter.FilterNone), true
	case ModelAvailZDR:
		return openrouter.NoEndpointsAvailability(openrouter.AvailabilityPrivacyRestricted, model, openrouter.FilterZDR), true
	case ModelAvailMaxPrice:
		return openrouter.NoEndpointsAvailability(openrouter.AvailabilityConstraintFiltered, model, openrouter.FilterMaxPrice), true
	case ModelAvailWrongPath:
		return openrouter.NoEndpointsAvailability(openrouter.AvailabilityWrongEndpoint, model, openrouter.FilterNone), true
	case ModelAvailDeprecated:
		return openrouter.NoEndpointsAvailability(openrouter.AvailabilityModelDeprecated, model, openrouter.FilterNone, StealthSuccessor), true
	case ModelAvailFreeEnded:
		return openrouter.NoEndpointsAvailability(openrouter.AvailabilityFreeVariantEnded, model, openrouter.FilterNone, ModelFreeEndedPaid), true
	}
	return openrouter.FailureBody{}, false
}
