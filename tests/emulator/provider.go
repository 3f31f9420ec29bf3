package emulator

// provider.go owns the models that fail as a provider's error or as the
// fourth round's 429s do (issue 26): "Provider returned error" with
// metadata.raw in its captured form (a JSON string) and its documented one
// (an object), the unknown cases (no raw, malformed raw, no type), and
// OpenRouter's admission control, the sourced free-model minute, the
// user's own provider account and a long capacity wait. Bodies come from
// package openrouter's builders.

import (
	"net/http"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Models that fail as a provider does, after the account and key were
// found able to pay.
const (
	// ModelProviderInvalidRequest: Crucible's 400 invalid_request_error,
	// raw a JSON string (the captured form): the request's fault.
	ModelProviderInvalidRequest = "emulator/provider-invalid-request-400"
	// ModelProviderInvalidRequestObject: the same, raw an object (the
	// documented form).
	ModelProviderInvalidRequestObject = "emulator/provider-invalid-request-object-400"
	// ModelProviderNoWorkers: Morph's 503 no_available_workers.
	ModelProviderNoWorkers = "emulator/provider-no-workers-503"
	// ModelProviderRegion: OpenAI's 403 for a country or region.
	ModelProviderRegion = "emulator/provider-region-403"
	// ModelProviderOwnKeyRefused: a 403 refusing the user's own provider
	// key (is_byok), raw an object.
	ModelProviderOwnKeyRefused = "emulator/provider-byok-refused-403"
	// ModelProviderQuotaSpent: OpenAI's 429 insufficient_quota to the
	// user's own provider key (is_byok): no rate limit, the key's quota.
	ModelProviderQuotaSpent = "emulator/provider-quota-spent-429"
	// ModelProviderNoRaw: a 400 without metadata.raw (cause unknown).
	ModelProviderNoRaw = "emulator/provider-no-raw-400"
	// ModelProviderMalformedRaw: a 400 whose raw is cut-off JSON (cause
	// unknown).
	ModelProviderMalformedRaw = "emulator/provider-malformed-raw-400"
	// ModelProviderNotFound: a provider's 404 with {"detail":"Not Found"}
	// (cause unknown).
	ModelProviderNotFound = "emulator/provider-404"
	// ModelAdmissionControl: each key's first request gets the admission
	// control 429 with Retry-After: 10 (as captured); the next ones pass.
	ModelAdmissionControl = "emulator/admission-control-429"
	// ModelFreePerMinuteSourced: the free-model minute's 429 with
	// limit_source, resetting at the next minute.
	ModelFreePerMinuteSourced = "emulator/free-per-minute-sourced-429"
	// ModelProviderAccount: the provider limits the user's own key
	// (limit_source upstream_provider_account).
	ModelProviderAccount = "emulator/provider-account-429"
	// ModelCapacityLong: all providers at capacity for 300 seconds, the
	// wait in availability.retry_after and Retry-After.
	ModelCapacityLong = "emulator/capacity-long-429"
)

// Fixed figures of the provider models.
const (
	// CrucibleSays is Crucible's invalid_request_error message.
	CrucibleSays = "Model 'moonshotai/kimi-k2.6' supports at most 1 image per prompt."
	// AdmissionRetryAfter is the admission-control 429's Retry-After, in
	// seconds, as captured.
	AdmissionRetryAfter = 10
	capacityLongWait    = 300
)

// admissionControl remembers the keys past admission control.
type admissionControl struct{ admitted map[string]bool }

// providerFailure is the failure a provider model answers with; ok is
// false for any other model.
func (s *Server) providerFailure(k *Key, model string) (openrouter.FailureBody, bool) {
	switch model {
	case ModelProviderInvalidRequest:
		return openrouter.ProviderReturned(http.StatusBadRequest, "Crucible", openrouter.RawInvalidRequest(CrucibleSays), false, openrouter.RawString), true
	case ModelProviderInvalidRequestObject:
		return openrouter.ProviderReturned(http.StatusBadRequest, "Crucible", openrouter.RawInvalidRequest(CrucibleSays), false, openrouter.RawObject), true
	case ModelProviderNoWorkers:
		return openrouter.ProviderReturned(http.StatusServiceUnavailable, "Morph", openrouter.RawNoWorkers(), false, openrouter.RawString), true
	case ModelProviderRegion:
		return openrouter.ProviderReturned(http.StatusForbidden, "OpenAI", openrouter.RawRegion(), false, openrouter.RawString), true
	case ModelProviderOwnKeyRefused:
		return openrouter.ProviderReturned(http.StatusForbidden, "Anthropic", openrouter.RawKeyPermission(), true, openrouter.RawObject), true
	case ModelProviderQuotaSpent:
		return openrouter.ProviderReturned(http.StatusTooManyRequests, "OpenAI", openrouter.RawQuotaSpent(), true, openrouter.RawString), true
	case ModelProviderNoRaw:
		return openrouter.ProviderReturned(http.StatusBadRequest, "Crucible", nil, false, openrouter.RawString), true
	case ModelProviderMalformedRaw:
		return openrouter.ProviderReturned(http.StatusBadRequest, "Crucible", `{"error":{"type":"invalid_request_error","message":"Model`, false, openrouter.RawString), true
	case ModelProviderNotFound:
		return openrouter.ProviderReturned(http.StatusNotFound, "DeepInfra", openrouter.Members{{Name: "detail", Value: "Not Found"}}, false, openrouter.RawObject), true
	case ModelFreePerMinuteSourced:
		return openrouter.FreePerMinuteSourced(s.now().Truncate(time.Minute).Add(time.Minute)), true
	case ModelProviderAccount:
		return openrouter.ProviderAccount("OpenAI", "Rate limit reached for requests per minute on your organization"), true
	case ModelCapacityLong:
		return openrouter.ProvidersAtCapacity(model, capacityLongWait), true
	case ModelAdmissionControl:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.admission.admitted == nil {
			s.admission.admitted = make(map[string]bool)
		}
		if !s.admission.admitted[k.Secret] {
			s.admission.admitted[k.Secret] = true
			return openrouter.AdmissionControl(AdmissionRetryAfter), true
		}
	}
	return openrouter.FailureBody{}, false
}

// provider answers a provider model's failure and reports whether it did.
func (s *Server) provider(w http.ResponseWriter, r *http.Request, k *Key, model string) bool {
	fail, ok := s.providerFailure(k, model)
	if ok {
		s.writeFailure(w, r, fail)
	}
	return ok
}
