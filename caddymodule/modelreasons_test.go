package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// What each failure and its evidence decide, and above all what they do
// not: every case the evidence cannot settle is no_endpoints_unknown,
// with the candidates it leaves.
func TestModelVerdict(t *testing.T) {
	listed := catalogueFacts{known: true, listed: true, supported: []string{"max_tokens", "temperature"}}
	lastSeen := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	expired := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	gone := catalogueFacts{known: true, lastListed: lastSeen, expiration: expired}
	noTools := analyseRequest([]byte(`{"model":"a/b","tools":[{"type":"function"}]}`), listed.supported)
	toolsMaybe := analyseRequest([]byte(`{"model":"a/b","tools":[{"type":"function"}]}`), nil)
	deny := analyseRequest([]byte(`{"provider":{"data_collection":"deny"}}`), nil)
	zdr := analyseRequest([]byte(`{"provider":{"zdr":true}}`), nil)
	only := analyseRequest([]byte(`{"provider":{"only":["Groq"]}}`), nil)
	plain := analyseRequest([]byte(`{"model":"a/b","messages":[]}`), nil)
	noEndpoints := func(filter openrouter.Filter) *openrouter.ModelFailure {
		return &openrouter.ModelFailure{Kind: openrouter.KindNoEndpoints, Model: "a/b", Filter: filter}
	}
	for _, c := range []struct {
		name    string
		f       *openrouter.ModelFailure
		ev      modelEvidence
		want    reason
		setting string
		// candidates the unknown answer must list, and must not.
		has, hasNot []string
	}{
		// Decided.
		{name: "tools the body sends, the model does not support", f: noEndpoints(""), ev: modelEvidence{asked: listed, req: &noTools},
			want: reasonNoEndpointsRequest, setting: memberTools},
		{name: "the tools sentence", f: noEndpoints(openrouter.FilterTools), want: reasonNoEndpointsRequest, setting: memberTools},
		{name: "training: the request denies data collection", f: noEndpoints(openrouter.FilterTraining), ev: modelEvidence{req: &deny},
			want: reasonNoEndpointsRequest, setting: memberDataCollection},
		{name: "training: the request does not", f: noEndpoints(openrouter.FilterTraining), ev: modelEvidence{req: &plain},
			want: reasonNoEndpointsAccount, setting: settingTraining},
		{name: "zdr: the request asks", f: noEndpoints(openrouter.FilterZDR), ev: modelEvidence{req: &zdr},
			want: reasonNoEndpointsRequest, setting: memberZDR},
		{name: "allowed providers: provider.only", f: noEndpoints(openrouter.FilterAllowedProviders), ev: modelEvidence{req: &only},
			want: reasonNoEndpointsRequest, setting: memberOnly},
		{name: "allowed providers: the account", f: noEndpoints(openrouter.FilterAllowedProviders), ev: modelEvidence{req: &plain},
			want: reasonNoEndpointsAccount, setting: settingProviders},
		{name: "guardrail excludes", f: noEndpoints(""), ev: modelEvidence{asked: listed, req: &plain, guardrail: guardrailExcludes},
			want: reasonNoEndpointsGuardrail, setting: settingGuardrail},
		{name: "no longer listed", f: noEndpoints(""), ev: modelEvidence{asked: gone, req: &plain}, want: reasonModelRetired},
		{name: "free variant gone, paid listed", f: &openrouter.ModelFailure{Kind: openrouter.KindNoEndpoints, Model: "a/b:free"},
			ev:   modelEvidence{asked: gone, paid: catalogueFacts{known: true, listed: true, prompt: "0.000001", completion: "0.000002"}, req: &plain},
			want: reasonFreeVariantEnded},

		// Unknown: the evidence does not show which.
		{name: "training, body not read", f: noEndpoints(openrouter.FilterTraining), want: reasonNoEndpointsUnknown,
			has: []string{memberDataCollection, settingTraining}},
		{name: "zdr, body not read", f: noEndpoints(openrouter.FilterZDR), want: reasonNoEndpointsUnknown,
			has: []string{memberZDR, settingZDR}},
		{name: "allowed providers, body not read", f: noEndpoints(openrouter.FilterAllowedProviders), want: reasonNoEndpointsUnknown,
			has: []string{memberOnly, settingProviders}},
		{name: "max_price named, the request sends none", f: noEndpoints(openrouter.FilterMaxPrice), ev: modelEvidence{req: &plain},
			want: reasonNoEndpointsUnknown, has: []string{memberMaxPrice}},
		{name: "geo", f: noEndpoints(openrouter.FilterGeo), ev: modelEvidence{req: &plain}, want: reasonNoEndpointsUnknown,
			has: []string{"region"}},
		{name: "tools sent, supported parameters not known", f: noEndpoints(""), ev: modelEvidence{req: &toolsMaybe},
			want: reasonNoEndpointsUnknown, has: []string{"the request's tools", "guardrail", "account's data policy"}},
		{name: "guardrail not answered", f: noEndpoints(""), ev: modelEvidence{asked: listed, req: &plain},
			want: reasonNoEndpointsUnknown, has: []string{"guardrail", "account's data policy", "no provider"}},
		{name: "guardrail allows", f: noEndpoints(""), ev: modelEvidence{asked: listed, req: &plain, guardrail: guardrailAllows},
			want: reasonNoEndpointsUnknown, has: []string{"account's data policy"}, hasNot: []string{"guardrail"}},
		{name: "body not read, nothing else", f: noEndpoints(""), want: reasonNoEndpointsUnknown,
			has: []string{"did not read it", "guardrail"}},
		{name: "a model the catalogue never listed", f: noEndpoints(""), ev: modelEvidence{req: &plain},
			want: reasonNoEndpointsUnknown, has: []string{"no provider"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := modelVerdict(c.f, "", c.ev)
			if v.reason != c.want || v.model.setting != c.setting {
				t.Fatalf("got %s (%q), want %s (%q)", v.reason, v.model.setting, c.want, c.setting)
			}
			all := strings.Join(v.model.candidates, "\n")
			for _, w := range c.has {
				if !strings.Contains(all, w) {
					t.Errorf("candidates lack %q: %v", w, v.model.candidates)
				}
			}
			for _, w := range c.hasNot {
				if strings.Contains(all, w) {
					t.Errorf("candidates name %q: %v", w, v.model.candidates)
				}
			}
			if msg := v.message(); msg == "" || v.reason == reasonNoEndpointsUnknown && !strings.Contains(msg, "does not show") {
				t.Errorf("sentence %q", msg)
			}
		})
	}
	// A slug seen listed before says when, and its expiration date.
	v := modelVerdict(&openrouter.ModelFailure{Kind: openrouter.KindModelNotFound, Model: "a/b"}, "", modelEvidence{asked: gone})
	if msg := v.message(); !strings.Contains(msg, "last listed on 2026-11-02, with expiration_date 2026-11-01") {
		t.Errorf("unknown model seen before: %q", msg)
	}
	v = modelVerdict(&openrouter.ModelFailure{Kind: openrouter.KindNoEndpoints, Model: "a/b:free"},
		"", modelEvidence{asked: gone, paid: catalogueFacts{known: true, listed: true, prompt: "0.000001", completion: "0.000002"}, req: &plain})
	if msg := v.message(); !strings.Contains(msg, `"a/b"`) || !strings.Contains(msg, "$1.00 per million prompt tokens and $2.00") {
		t.Errorf("free variant ended: %q", msg)
	}
}

// analyseRequest names what a request asks that can exclude endpoints,
// and is certain only where supported_parameters prove it.
func TestAnalyseRequest(t *testing.T) {
	body := `{"model":"a/b","tools":[{"type":"function"}],"tool_choice":"required","response_format":{"type":"json_schema"},
	"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],
	"provider":{"only":["Groq"],"order":["A"],"allow_fallbacks":false,"ignore":["B"],"require_parameters":true,"data_collection":"deny","zdr":true,"max_price":{"prompt":1},"quantizations":["fp8"]}}`
	r := analyseRequest([]byte(body), []string{"tools"})
	var got []string
	for _, m := range r.members {
		got = append(got, m.path)
	}
	want := []string{memberTools, memberToolChoice, memberResponseFormat, memberCacheControl, memberImageParts, memberOnly, memberOrder,
		memberIgnore, memberRequireParameters, memberDataCollection, memberZDR, memberMaxPrice, memberQuantizations}
	if !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	if m, ok := r.certain(); !ok || m.path != memberToolChoice {
		t.Errorf("certain: %v %v (tool_choice is not supported, tools are)", m, ok)
	}
	for _, b := range []string{`{"tools":[]}`, `{"tools":null,"provider":{"allow_fallbacks":false}}`, `not json`, ``, `{"provider":{"order":["A"]}}`} {
		if r := analyseRequest([]byte(b), nil); len(r.members) != 0 {
			t.Errorf("%s: %v", b, r.members)
		}
	}
}

// Through the handler and the emulator, in the three envelopes: each
// failure is explained with its reason, X-Should-Retry false and no
// Retry-After; the older 500 keeps its status.
func TestModelFailuresThroughHandler(t *testing.T) {
	emu, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	h.edge = edgeRule{}
	key := emu.NewKey(emulator.KeyOptions{})
	guarded := emu.NewKey(emulator.KeyOptions{})
	emu.SetGuardrail(guarded, "openai/gpt-4o-mini")
	for _, c := range []struct {
		name, key, body string
		status          int
		want            reason
		says            string
	}{
		{"mistyped", key, `{"model":"` + emulator.ModelMistyped + `","messages":[]}`, 400, reasonModelNotFound, `Did you mean "openai/gpt-4o"`},
		{"older 500", key, `{"model":"` + emulator.ModelMistypedLegacy + `","messages":[]}`, 500, reasonModelNotFound, "not a valid model ID"},
		{"documented 400", key, `{"model":"` + emulator.ModelUnknownDocumented + `"}`, 400, reasonModelNotFound, `"anthropic/claude-3.5-sonnet"`},
		{"tools to a model without tools", key, `{"model":"` + emulator.ModelNoTools + `","tools":[{"type":"function","function":{"name":"f"}}]}`, 404, reasonNoEndpointsRequest, "Remove tools"},
		{"training, the request denies", key, `{"model":"` + emulator.ModelTrainingPolicy + `","provider":{"data_collection":"deny"}}`, 404, reasonNoEndpointsRequest, "provider.data_collection"},
		{"training, the account", key, `{"model":"` + emulator.ModelTrainingPolicy + `"}`, 404, reasonNoEndpointsAccount, openrouter.URLPrivacy},
		{"allowed providers", key, `{"model":"` + emulator.ModelNoAllowedProviders + `"}`, 404, reasonNoEndpointsAccount, "allowed and ignored providers"},
		{"zdr documented", key, `{"model":"` + emulator.ModelAvailZDR + `","provider":{"zdr":true}}`, 404, reasonNoEndpointsRequest, "provider.zdr"},
		{"max price documented, not in the request", key, `{"model":"` + emulator.ModelAvailMaxPrice + `"}`, 404, reasonNoEndpointsUnknown, "max_price"},
		{"wrong endpoint documented", key, `{"model":"` + emulator.ModelAvailWrongPath + `"}`, 404, reasonNoEndpointsRequest, "not served on this endpoint"},
		{"stealth", key, `{"model":"` + emulator.ModelStealth + `"}`, 404, reasonModelRetired, `"` + emulator.StealthSuccessor + `"`},
		{"deprecated documented", key, `{"model":"` + emulator.ModelAvailDeprecated + `"}`, 404, reasonModelRetired, `"` + emulator.StealthSuccessor + `"`},
		{"free ended", key, `{"model":"` + emulator.ModelFreeEnded + `"}`, 404, reasonFreeVariantEnded, `"` + emulator.ModelFreeEndedPaid + `"`},
		{"free ended documented", key, `{"model":"` + emulator.ModelAvailFreeEnded + `"}`, 404, reasonFreeVariantEnded, `"` + emulator.ModelFreeEndedPaid + `"`},
		{"no endpoints, model never listed", key, `{"model":"` + emulator.ModelNoEndpoints + `"}`, 404, reasonNoEndpointsUnknown, "does not show"},
	} {
		for _, path := range []string{openrouter.PathChatCompletions, openrouter.PathMessages, openrouter.PathResponses} {
			t.Run(c.name+path, func(t *testing.T) {
				if path != openrouter.PathChatCompletions && strings.Contains(c.name, "documented") {
					t.Skip("the /messages and /responses envelopes carry no metadata: the documented form's availability is lost")
				}
				rec := httptest.NewRecorder()
				req := httptest.NewRequest("POST", "/api/v1"+path, strings.NewReader(c.body))
				req.Header.Set("Authorization", "Bearer "+c.key)
				if err := h.ServeHTTP(rec, req, toEmulator(emu)); err != nil {
					t.Fatal(err)
				}
				if rec.Code != c.status || rec.Header().Get("X-OpenRouter-Key-Status") != string(c.want) ||
					rec.Header().Get("X-Should-Retry") != "false" || rec.Header().Get("Retry-After") != "" {
					t.Fatalf("%d %q retry %q: %s", rec.Code, rec.Header().Get("X-OpenRouter-Key-Status"), rec.Header().Get("X-Should-Retry"), rec.Body)
				}
				if msg, _ := errorOf(t, rec.Body.Bytes())["message"].(string); !strings.Contains(msg, c.says) {
					t.Errorf("message lacks %q: %s", c.says, msg)
				}
			})
		}
	}
	// The key's guardrail, asked with the key's own GET /models/user.
	before := emu.Count(openrouter.PathModelsUser)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/api/v1/chat/completions", strings.NewReader(`{"model":"openai/gpt-4o"}`))
	req.Header.Set("Authorization", "Bearer "+guarded)
	if err := h.ServeHTTP(rec, req, failureAnswer(openrouter.NoEndpointsFor("openai/gpt-4o"), openrouter.EnvelopeOpenAI, nil)); err != nil {
		t.Fatal(err)
	}
	if got := rec.Header().Get("X-OpenRouter-Key-Status"); got != string(reasonNoEndpointsGuardrail) || emu.Count(openrouter.PathModelsUser) != before+1 {
		t.Errorf("guardrail: %q after %d lookups: %s", got, emu.Count(openrouter.PathModelsUser)-before, rec.Body)
	}
}

// Only inference requests' 400, 404 and 500 are held: a 404 of GET
// /models/xyz, and an inference 400 that is no model failure, pass byte
// for byte.
func TestModelFailuresOnlyForInference(t *testing.T) {
	_, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	body := openrouter.NoEndpointsFor("a/b").Render(openrouter.EnvelopeOpenAI)
	json := http.Header{"Content-Type": {"application/json"}}
	if holdsFailure(http.StatusNotFound, false) || holdsFailure(http.StatusBadRequest, false) || holdsFailure(http.StatusInternalServerError, false) {
		t.Error("a 400, 404 or 500 of a request that is not inference is held")
	}
	rec := serve(t, &h, upstreamAnswer(404, json, body), "GET", "/api/v1/models/a/b", goodKey)
	if rec.Code != 404 || rec.Body.String() != string(body) || rec.Header().Get("X-OpenRouter-Key-Status") != "" {
		t.Errorf("GET /models/a/b: %d %s", rec.Code, rec.Body)
	}
	other := []byte(`{"error":{"message":"Invalid JSON","code":400}}`)
	rec = serve(t, &h, upstreamAnswer(400, json, other), "POST", "/api/v1/chat/completions", goodKey)
	if rec.Code != 400 || rec.Body.String() != string(other) || rec.Header().Get("X-Should-Retry") != "" {
		t.Errorf("another 400: %d %s", rec.Code, rec.Body)
	}
	// A slug shaped like a key is never repeated.
	keyModel := "sk-or-v1-" + strings.Repeat("c", 64)
	leak := openrouter.UnknownModel(keyModel, false)
	rec = serve(t, &h, failureAnswer(leak, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", goodKey)
	if strings.Contains(rec.Body.String(), keyModel) && rec.Header().Get("X-OpenRouter-Key-Status") != "" {
		t.Errorf("a key-shaped slug repeated: %s", rec.Body)
	}
}
