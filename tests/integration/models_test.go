package integration

// models_test.go drives the 400 unknown model and the 404 no endpoints
// (issue 25) through a real Caddy in front of the emulator: with the
// official openai-go client and its default retries each costs OpenRouter
// one request, with the explanation in the error the client raises; the
// same reasons in the /messages and /responses envelopes; a 404 of GET
// /models/{id} passes untouched.

import (
	"context"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

func TestModelFailuresThroughTheOfficialClient(t *testing.T) {
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{})
	tool := openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "get_weather"})
	for _, c := range []struct {
		name, model string
		tools       bool
		status      int
		reason      string
		says        []string
		members     map[string]any
		// plain is how many requests plain reverse_proxy lets the client's
		// default retries spend on the same failure.
		plain int
	}{
		{"mistyped slug", emulator.ModelMistyped, false, 400, "model_not_found",
			[]string{`Did you mean "openai/gpt-4o"`, "never changes the request's model"},
			map[string]any{"model": emulator.ModelMistyped}, 1},
		{"older 500", emulator.ModelMistypedLegacy, false, 500, "model_not_found", []string{"not a valid model ID"}, nil, 3},
		{"tools to a model without tool support", emulator.ModelNoTools, true, 404, "no_endpoints_request",
			[]string{"Remove tools"}, map[string]any{"source": "request", "setting": "tools", "filter": "tools"}, 1},
		{"free variant ended", emulator.ModelFreeEnded, false, 404, "free_variant_ended",
			[]string{`"` + emulator.ModelFreeEndedPaid + `"`, "per million prompt tokens"}, map[string]any{"paid_model": emulator.ModelFreeEndedPaid}, 1},
		{"no endpoints, unknown why", emulator.ModelNoEndpoints, false, 404, "no_endpoints_unknown",
			[]string{"does not show"}, nil, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := chatParams(c.model)
			if c.tools {
				p.Tools = []openai.ChatCompletionToolUnionParam{tool}
			}
			for _, via := range []struct {
				name, base string
				want       int
			}{{"gateway", gatewayBase, 1}, {"plain reverse_proxy", plainBase, c.plain}} {
				cl := openai.NewClient(option.WithBaseURL(via.base+"/"), option.WithAPIKey(key)) // default retries
				before := e.emu.Count(openrouter.PathChatCompletions)
				_, err := cl.Chat.Completions.New(context.Background(), p)
				le := asLimitError(t, key, err)
				if n := e.emu.Count(openrouter.PathChatCompletions) - before; n != via.want || le.status != c.status {
					t.Errorf("through %s: %d upstream requests for %v; want %d", via.name, n, le, via.want)
				}
				if via.name != "gateway" {
					continue
				}
				if le.reason() != c.reason || le.header.Get("X-Should-Retry") != "false" || le.header.Get("Retry-After") != "" {
					t.Errorf("got %v", le)
				}
				for _, s := range c.says {
					if !strings.Contains(le.message, s) {
						t.Errorf("the message lacks %q: %s", s, le.message)
					}
				}
				for k, v := range c.members {
					if le.metadata[k] != v {
						t.Errorf("metadata.%s = %v, want %v", k, le.metadata[k], v)
					}
				}
			}
		})
	}
	if got := suggestionsOf(t, e, key); len(got) == 0 || got[0] != "openai/gpt-4o" {
		t.Errorf("suggestions %v", got)
	}
}

// suggestionsOf is metadata.suggestions of a mistyped slug.
func suggestionsOf(t *testing.T, e *env, key string) []string {
	le := limitRaw(t, gatewayBase, "/chat/completions", key, `{"model":"`+emulator.ModelMistyped+`","messages":[]}`)
	raw, _ := le.metadata["suggestions"].([]any)
	var out []string
	for _, s := range raw {
		str, _ := s.(string)
		out = append(out, str)
	}
	return out
}

// The same reasons in the /messages and /responses envelopes, and a 404
// of a request that is not inference untouched.
func TestModelFailuresInEveryEnvelope(t *testing.T) {
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{})
	for _, c := range []struct{ path, body, reason string }{
		{"/messages", `{"model":"` + emulator.ModelMistyped + `","max_tokens":5,"messages":[]}`, "model_not_found"},
		{"/responses", `{"model":"` + emulator.ModelMistyped + `","input":"hi"}`, "model_not_found"},
		{"/messages", `{"model":"` + emulator.ModelNoTools + `","max_tokens":5,"tools":[{"name":"f","input_schema":{}}],"messages":[]}`, "no_endpoints_request"},
		{"/responses", `{"model":"` + emulator.ModelStealth + `","input":"hi"}`, "model_retired"},
	} {
		le := limitRaw(t, gatewayBase, c.path, key, c.body)
		if le.header.Get("X-OpenRouter-Key-Status") != c.reason || le.header.Get("X-Should-Retry") != "false" || le.message == "" {
			t.Errorf("%s %s: %v", c.path, c.reason, le)
		}
		if c.path == "/messages" && le.errorType != "not_found_error" && le.errorType != "invalid_request_error" {
			t.Errorf("%s: error.type %q is not the envelope's", c.path, le.errorType)
		}
	}
	gw, gwBody := raw(t, "GET", gatewayBase+"/models/nobody/nothing", key, "")
	pl, plBody := raw(t, "GET", plainBase+"/models/nobody/nothing", key, "")
	if gw.StatusCode != pl.StatusCode || string(gwBody) != string(plBody) || gw.Header.Get("X-OpenRouter-Key-Status") != "" {
		t.Errorf("GET /models/nobody/nothing: gateway %d %s, plain %d %s", gw.StatusCode, gwBody, pl.StatusCode, plBody)
	}
}
