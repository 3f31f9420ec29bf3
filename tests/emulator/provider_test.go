package emulator

import (
	"testing"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Each provider model answers with its builder's body, which the shared
// recogniser reads as the failure it stands for; admission control fails
// a key's first request only.
func TestProviderModels(t *testing.T) {
	s, base := start(t)
	key := s.NewKey(KeyOptions{})
	for _, c := range []struct {
		model  string
		status int
		kind   openrouter.Kind
		cause  openrouter.Cause
	}{
		{ModelProviderInvalidRequest, 400, openrouter.KindProviderError, openrouter.CauseRequest},
		{ModelProviderInvalidRequestObject, 400, openrouter.KindProviderError, openrouter.CauseRequest},
		{ModelProviderNoWorkers, 503, openrouter.KindProviderError, openrouter.CauseProvider},
		{ModelProviderRegion, 403, openrouter.KindProviderError, openrouter.CauseRegion},
		{ModelProviderOwnKeyRefused, 403, openrouter.KindProviderError, openrouter.CauseOwnKey},
		{ModelProviderQuotaSpent, 429, openrouter.KindProviderError, openrouter.CauseOwnKey},
		{ModelProviderNoRaw, 400, openrouter.KindProviderError, openrouter.CauseUnknown},
		{ModelProviderMalformedRaw, 400, openrouter.KindProviderError, openrouter.CauseUnknown},
		{ModelProviderNotFound, 404, openrouter.KindProviderError, openrouter.CauseUnknown},
		{ModelFreePerMinuteSourced, 429, openrouter.KindFreePerMinute, 0},
		{ModelProviderAccount, 429, openrouter.KindProviderPool, 0},
		{ModelCapacityLong, 429, openrouter.KindProvidersAtCapacity, 0},
	} {
		r := chat(t, base, key, c.model)
		f := r.failure()
		if r.status != c.status || f.Kind != c.kind || (f.ProviderError != nil && f.ProviderError.Cause != c.cause) ||
			(c.kind == openrouter.KindProviderError) != (f.ProviderError != nil) {
			t.Errorf("%s: %d %s %+v: %s", c.model, r.status, f.Kind, f.ProviderError, r.body)
		}
	}
	if r := chat(t, base, key, ModelCapacityLong); r.failure().RetryAfter.Seconds() != capacityLongWait {
		t.Errorf("long capacity: %s", r.body)
	}
	other := s.NewKey(KeyOptions{})
	for _, k := range []string{key, other} {
		r := chat(t, base, k, ModelAdmissionControl)
		if f := r.failure(); r.status != 429 || f.Kind != openrouter.KindAdmissionControl || r.header.Get("Retry-After") != "10" {
			t.Errorf("first request: %d %s %v", r.status, r.body, r.header)
		}
		if r := chat(t, base, k, ModelAdmissionControl); r.status != 200 {
			t.Errorf("second request: %d %s", r.status, r.body)
		}
	}
}
