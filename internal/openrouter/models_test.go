package openrouter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// Every model failure's body, as captured and in the documented form, in
// every envelope: its kind, slug and filter as a user reading it would
// name them.
func TestReadModelFailure(t *testing.T) {
	for _, c := range []struct {
		name   string
		status int
		body   string
		want   ModelFailure
	}{
		{"captured 400", 400, `{"error":{"message":"claude-sonnet-4-6 is not a valid model ID","code":400}}`,
			ModelFailure{Kind: KindModelNotFound, Model: "claude-sonnet-4-6"}},
		{"400 with user_id", 400, `{"error":{"message":"openrouter/anthropic/claude-3.5-sonnet is not a valid model ID","code":400},"user_id":"user_2x"}`,
			ModelFailure{Kind: KindModelNotFound, Model: "openrouter/anthropic/claude-3.5-sonnet"}},
		{"older 500", 500, `{"error":{"message":"GPT-4o is not a valid model ID","code":500}}`,
			ModelFailure{Kind: KindModelNotFound, Model: "GPT-4o"}},
		{"documented 400", 400, `{"error":{"message":"Model not found","code":400,"metadata":{"availability":{"code":"model_not_found","retryable":false,"requested_models":["gpt4o"],"fallback_models":["openai/gpt-4o","sk-or-v1-` + strings.Repeat("a", 64) + `"],"docs_url":"x"}}}}`,
			ModelFailure{Kind: KindModelNotFound, Code: "model_not_found", Model: "gpt4o", Fallbacks: []string{"openai/gpt-4o"}}},
		{"availability beside the message", 400, `{"error":{"message":"nope","code":400,"availability":{"code":"model_not_found","requested_models":["x/y"]}}}`,
			ModelFailure{Kind: KindModelNotFound, Code: "model_not_found", Model: "x/y"}},
		{"no endpoints for", 404, `{"error":{"message":"No endpoints found for deepseek/deepseek-chat-v3.1:free.","code":404}}`,
			ModelFailure{Kind: KindNoEndpoints, Model: "deepseek/deepseek-chat-v3.1:free"}},
		{"tools", 404, `{"error":{"message":"No endpoints found that support tool use. Try disabling \"question\". To learn more about provider routing, visit: https://openrouter.ai/docs/guides/routing/provider-selection","code":404}}`,
			ModelFailure{Kind: KindNoEndpoints, Filter: FilterTools}},
		{"tool_choice", 404, `{"error":{"message":"No endpoints found that support the provided 'tool_choice' value. To learn more","code":404}}`,
			ModelFailure{Kind: KindNoEndpoints, Filter: FilterToolChoice}},
		{"cache control", 404, `{"error":{"message":"No endpoints found that support cache control","code":404}}`,
			ModelFailure{Kind: KindNoEndpoints, Filter: FilterCacheControl}},
		{"training", 404, `{"error":{"message":"No endpoints found matching your data policy (Paid model training). Configure: https://openrouter.ai/settings/privacy","code":404}}`,
			ModelFailure{Kind: KindNoEndpoints, Filter: FilterTraining}},
		{"zdr", 404, `{"error":{"message":"No endpoints for openai/gpt-5.2 match your data policy (zero data retention). Adjust at https://openrouter.ai/settings/privacy.","code":404}}`,
			ModelFailure{Kind: KindNoEndpoints, Filter: FilterZDR, Model: "openai/gpt-5.2"}},
		{"allowed providers", 404, `{"error":{"message":"No allowed providers are available for the selected model.","code":404,"metadata":{"available_providers":["OpenAI","Azure"],"requested_providers":["Groq"]}}}`,
			ModelFailure{Kind: KindNoEndpoints, Filter: FilterAllowedProviders, AvailableProviders: []string{"OpenAI", "Azure"}, RequestedProviders: []string{"Groq"}, RequestedSent: true}},
		{"privacy_restricted", 404, `{"error":{"message":"No endpoints found for a/b.","code":404,"metadata":{"availability":{"code":"privacy_restricted","excluded_by":"data_policy:zdr"}}}}`,
			ModelFailure{Kind: KindNoEndpoints, Code: "privacy_restricted", Filter: FilterZDR, Model: "a/b"}},
		{"unknown excluded_by dropped", 404, `{"error":{"message":"No endpoints found for a/b.","code":404,"metadata":{"availability":{"code":"constraint_filtered","excluded_by":"<script>"}}}}`,
			ModelFailure{Kind: KindNoEndpoints, Code: "constraint_filtered", Model: "a/b"}},
		{"wrong endpoint", 404, `{"error":{"message":"Not here","code":404,"metadata":{"availability":{"code":"wrong_endpoint","requested_models":["a/b"]}}}}`,
			ModelFailure{Kind: KindNoEndpoints, Code: "wrong_endpoint", Filter: FilterEndpoint, Model: "a/b"}},
		{"deprecated", 404, `{"error":{"message":"No endpoints found for a/old.","code":404,"metadata":{"availability":{"code":"model_deprecated","fallback_models":["a/new"]}}}}`,
			ModelFailure{Kind: KindModelRetired, Code: "model_deprecated", Model: "a/old", Fallbacks: []string{"a/new"}}},
		{"stealth", 404, `{"error":{"message":"Healer Alpha was a stealth model revealed on March 18th as MiMo V2 Omni. Find it here: https://openrouter.ai/xiaomi/mimo-v2-omni","code":404}}`,
			ModelFailure{Kind: KindModelRetired, RevealedAs: "xiaomi/mimo-v2-omni"}},
		{"free ended", 404, `{"error":{"message":"The free Molmo2 8B period has ended. To continue using this model, please migrate to the paid slug: allenai/molmo-2-8b","code":404}}`,
			ModelFailure{Kind: KindFreeVariantEnded, PaidModel: "allenai/molmo-2-8b"}},
		{"free ended documented", 404, `{"error":{"message":"gone","code":404,"metadata":{"availability":{"code":"free_variant_ended","requested_models":["a/m:free"],"fallback_models":["a/m"]}}}}`,
			ModelFailure{Kind: KindFreeVariantEnded, Code: "free_variant_ended", Model: "a/m:free", PaidModel: "a/m", Fallbacks: []string{"a/m"}}},
		{"messages envelope", 404, `{"type":"error","error":{"type":"not_found_error","message":"No endpoints found for a/b."}}`,
			ModelFailure{Kind: KindNoEndpoints, Model: "a/b"}},

		// Not model failures, or not readable: nothing.
		{"other 404", 404, `{"error":{"message":"Not Found","code":404}}`, ModelFailure{}},
		{"400 on another status", 403, `{"error":{"message":"x is not a valid model ID","code":403}}`, ModelFailure{}},
		{"not json", 400, `claude is not a valid model ID`, ModelFailure{}},
		{"key-shaped slug", 400, `{"error":{"message":"sk-or-v1-` + strings.Repeat("b", 64) + ` is not a valid model ID","code":400}}`,
			ModelFailure{Kind: KindModelNotFound}},
		{"long slug", 400, `{"error":{"message":"` + strings.Repeat("a-", 90) + ` is not a valid model ID","code":400}}`,
			ModelFailure{Kind: KindModelNotFound}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := ReadModelFailure(c.status, []byte(c.body))
			if ok != (c.want.Kind != KindUnrecognised) {
				t.Fatalf("ok %v", ok)
			}
			if ok {
				c.want.Status = c.status
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
			if f := Recognise(c.status, []byte(c.body), nil); ok && f.Kind != c.want.Kind {
				t.Errorf("Recognise says %v", f.Kind)
			}
		})
	}
}

// The builders send what ReadModelFailure reads, in every envelope that
// carries a message.
func TestModelBuildersRoundTrip(t *testing.T) {
	for _, c := range []struct {
		b      FailureBody
		kind   Kind
		filter Filter
	}{
		{UnknownModel("gpt4o", false), KindModelNotFound, FilterNone},
		{UnknownModel("gpt4o", true), KindModelNotFound, FilterNone},
		{UnknownModelAvailability("gpt4o", "openai/gpt-4o"), KindModelNotFound, FilterNone},
		{NoEndpointsFor("a/b"), KindNoEndpoints, FilterNone},
		{NoEndpointsFiltered(FilterTools, "a/b", nil, nil), KindNoEndpoints, FilterTools},
		{NoEndpointsFiltered(FilterToolChoice, "a/b", nil, nil), KindNoEndpoints, FilterToolChoice},
		{NoEndpointsFiltered(FilterCacheControl, "a/b", nil, nil), KindNoEndpoints, FilterCacheControl},
		{NoEndpointsFiltered(FilterTraining, "a/b", nil, nil), KindNoEndpoints, FilterTraining},
		{NoEndpointsFiltered(FilterZDR, "a/b", nil, nil), KindNoEndpoints, FilterZDR},
		{NoEndpointsFiltered(FilterAllowedProviders, "a/b", []string{"X"}, []string{"Y"}), KindNoEndpoints, FilterAllowedProviders},
		{NoEndpointsAvailability(AvailabilityPrivacyRestricted, "a/b", FilterGeo), KindNoEndpoints, FilterGeo},
		{NoEndpointsAvailability(AvailabilityModelDeprecated, "a/b", FilterNone, "a/c"), KindModelRetired, FilterNone},
		{NoEndpointsAvailability(AvailabilityFreeVariantEnded, "a/b:free", FilterNone, "a/b"), KindFreeVariantEnded, FilterNone},
		{StealthRevealed("Healer Alpha", "March 18th", "xiaomi/mimo-v2-omni"), KindModelRetired, FilterNone},
		{FreePeriodEnded("Molmo2 8B", "allenai/molmo-2-8b"), KindFreeVariantEnded, FilterNone},
	} {
		for _, e := range []Envelope{EnvelopeOpenAI, EnvelopeFlat, EnvelopeMessages} {
			if e == EnvelopeMessages && c.b.Metadata != nil {
				// The envelope drops metadata: the documented forms'
				// availability goes with it.
				continue
			}
			got, ok := ReadModelFailure(c.b.Status, c.b.Render(e))
			if !ok || got.Kind != c.kind || got.Filter != c.filter {
				t.Errorf("%q in envelope %d: %+v", c.b.Message, e, got)
			}
		}
	}
}

// GET /models/user is asked with the client's own key and read like the
// public list.
func TestModelsForKey(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != PathModelsUser || r.Header.Get("Authorization") != "Bearer k1" {
			w.WriteHeader(401)
			return
		}
		_, _ = w.Write([]byte(`{"data":[{"id":"a/b"},{"id":"c/d"}]}`))
	}))
	defer srv.Close()
	c := NewClient(srv.URL, nil)
	defer c.Close()
	ids, res := c.ModelsForKey(context.Background(), "k1")
	if res.Err != nil || !reflect.DeepEqual(ids, []string{"a/b", "c/d"}) {
		t.Errorf("%v %v", ids, res.Err)
	}
	if _, res := c.ModelsForKey(context.Background(), "k2"); res.Err == nil {
		t.Error("a refused key read a list")
	}
}
