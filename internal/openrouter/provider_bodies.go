package openrouter

// provider_bodies.go owns the wording of the fourth round's bodies as
// builders (issue 26): "Provider returned error" with metadata.raw in its
// captured form (a JSON string) and its documented one (an object), and
// the 429s of admission control, the free-model minute and the user's own
// provider account, so that the emulator and the tests send what
// Recognise reads (provider.go).

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// RawForm is how metadata.raw carries the provider's answer.
type RawForm uint8

// The forms.
const (
	// RawString: a JSON text in a string, as captured bodies have it.
	RawString RawForm = iota
	// RawObject: the object itself, as the docs show it.
	RawObject
)

// ProviderReturned is a "Provider returned error" at status from
// provider (provider_error_code status), raw being the provider's own
// answer (nil: no raw member) in the given form; a string raw is sent as
// it is in either form.
func ProviderReturned(status int, provider string, raw any, byok bool, form RawForm) FailureBody {
	ms := Members{}
	if raw != nil {
		v := raw
		if _, isString := raw.(string); !isString && form == RawString {
			b, err := json.Marshal(raw)
			if err != nil {
				panic("openrouter: unencodable raw: " + err.Error())
			}
			v = string(b)
		}
		ms = append(ms, Member{"raw", v})
	}
	ms = append(ms, Member{"provider_name", provider}, Member{"is_byok", byok}, Member{"provider_error_code", status})
	return FailureBody{Status: status, Message: MessageProviderError, Metadata: ms}
}

// The provider answers of the facts sheet, as raw objects.

// RawInvalidRequest is a provider's invalid_request_error (Crucible's
// 400: the request's fault).
func RawInvalidRequest(message string) Members {
	return Members{{"error", Members{{"type", "invalid_request_error"}, {"message", message}}}}
}

// RawNoWorkers is a provider with no worker free (Morph's 503:
// transient).
func RawNoWorkers() Members {
	return Members{{"error", Members{{"type", "Service Unavailable"}, {"code", "no_available_workers"},
		{"message", "No available workers to handle this request. Please try again later."}}}}
}

// RawRegion is OpenAI's refusal of a country or region (403).
func RawRegion() Members {
	return Members{{"error", Members{{"code", "unsupported_country_region_territory"},
		{"message", "Country, region, or territory not supported"}, {"param", nil}, {"type", "request_forbidden"}}}}
}

// RawKeyPermission is Anthropic's refusal of an API key's permissions
// (403), as sent to a user's own key.
func RawKeyPermission() Members {
	return Members{{"type", "error"}, {"error", Members{{"type", "permission_error"},
		{"message", "Your API key does not have permission to use the specified resource."}}}}
}

// RawQuotaSpent is OpenAI's 429 for a key whose quota is spent.
func RawQuotaSpent() Members {
	return Members{{"error", Members{{"message", "You exceeded your current quota, please check your plan and billing details."},
		{"type", "insufficient_quota"}, {"param", nil}, {"code", "insufficient_quota"}}}}
}

// AdmissionControl is the 429 of OpenRouter not verifying the account's
// credits in time, with Retry-After (10 seconds captured).
func AdmissionControl(retryAfterSeconds int) FailureBody {
	return FailureBody{
		Status:   http.StatusTooManyRequests,
		Message:  MessageAdmissionControl,
		Metadata: Members{{"limit_source", LimitSourceAdmissionControl}},
		Header:   http.Header{"Retry-After": {strconv.Itoa(retryAfterSeconds)}},
	}
}

// FreePerMinuteSourced is the free-model minute's 429 as sent since the
// fourth round, with limit_source.
func FreePerMinuteSourced(reset time.Time) FailureBody {
	return rateLimited(MessageFreePerMinute, FreePerMinute, 0, reset, Members{{"limit_source", LimitSourceFreeTierPerMinute}})
}

// ProviderAccount is the 429 of a provider limiting the user's own
// provider key (limit_source upstream_provider_account).
func ProviderAccount(provider string, raw string) FailureBody {
	return FailureBody{
		Status:  http.StatusTooManyRequests,
		Message: MessageProviderError,
		Metadata: Members{{"raw", raw}, {"provider_name", provider}, {"is_byok", true},
			{"provider_error_code", http.StatusTooManyRequests}, {"limit_source", LimitSourceProviderAccount}},
	}
}
