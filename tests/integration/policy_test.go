package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	oairesponses "github.com/openai/openai-go/v3/responses"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// policyCase is a policy 403 the emulator serves and what the gateway says
// of it in every envelope.
type policyCase struct {
	model string
	want  expectation
	// words are in the sentence in every envelope; wordsWithMetadata only
	// where the envelope keeps OpenRouter's metadata.
	wordsWithMetadata []string
}

func policyCases() []policyCase {
	notKey := "This is not a key or billing failure"
	return []policyCase{
		{emulator.ModelModerationFlagged, expectation{status: 403, reason: "moderation_flagged", scope: "content", retry: "false",
			inMessage:    []string{"Refused by moderation: " + emulator.ModelModerationFlagged + " requires moderation on OpenRouter", "flagged for harassment, violence.", "No credits were charged.", notKey},
			upstreamSays: emulator.ModelModerationFlagged + ` requires moderation on OpenRouter. Your input was flagged for "harassment", "violence". No credits were charged.`}, nil},
		{emulator.ModelGuardrailPatterns, expectation{status: 403, reason: "guardrail_blocked", scope: "guardrail", retry: "false",
			inMessage: []string{"Blocked by a guardrail", "matched the guardrail's patterns", notKey}, upstreamSays: openrouter.MessageGuardrailInjection},
			[]string{"(ignore_previous_instructions)"}},
		{emulator.ModelGuardrailBudget, expectation{status: 403, reason: "guardrail_blocked", scope: "guardrail", retry: "false",
			inMessage: []string{"the guardrail's own spending budget is spent"}, upstreamSays: "Guardrail budget exceeded."}, nil},
		{emulator.ModelProviderToS, expectation{status: 403, reason: "provider_terms_refused", scope: "provider", retry: "false",
			inMessage: []string{"the likely cause, not a certainty", openrouter.URLPrivacy, notKey}, upstreamSays: openrouter.MessageProviderToS}, nil},
		{emulator.ModelRegionRestricted, expectation{status: 403, reason: "region_restricted", scope: "region", retry: "false",
			inMessage: []string{"not available in the region OpenRouter sees the request come from", notKey}, upstreamSays: emulator.ModelRegionRestricted + " is not available in your region."}, nil},
		{emulator.ModelBYOKRequiredOr, expectation{status: 403, reason: "provider_key_required", scope: "provider", retry: "false", provider: "OpenAI",
			inMessage: []string{"OpenAI serves it only with your own OpenAI key", "(OpenRouter names gpt-5-chat, gpt-5-mini)"}}, nil},
	}
}

// Each policy 403 through Caddy, in the OpenAI envelope (through the
// official openai-go client, default retries), the /messages envelope and
// both /responses envelopes (through openai-go's Responses API): its reason
// and sentence, nothing that calls it a key or billing failure, no retry
// invited; and one upstream request each, as through plain reverse_proxy.
func TestPolicy403sThroughCaddy(t *testing.T) {
	for name, env := range map[string]openrouter.Envelope{
		"responses docs envelope": openrouter.EnvelopeResponsesDocs, "responses spec envelope": openrouter.EnvelopeOpenAI,
	} {
		t.Run(name, func(t *testing.T) { policyThroughCaddy(t, env) })
	}
}

func policyThroughCaddy(t *testing.T, env openrouter.Envelope) {
	e := start(t, options{emulator: func(s *emulator.Server) { s.ResponsesEnvelope = env }})
	key := e.emu.NewKey(emulator.KeyOptions{})
	ctx := context.Background()
	for _, c := range policyCases() {
		check := func(what string, le limitError, metadataKept bool) {
			t.Helper()
			x := c.want
			if metadataKept {
				x.inMessage = append(append([]string(nil), x.inMessage...), c.wordsWithMetadata...)
			}
			x.check(t, c.model+" "+what, le, time.Now(), time.Now())
			low := strings.ToLower(le.message)
			for _, wrong := range []string{"add credits at", "key limit", "raise this key's limit", "retry in", "retry shortly"} {
				if strings.Contains(low, wrong) {
					t.Errorf("%s %s: says %q: %s", c.model, what, wrong, le.message)
				}
			}
			if !metadataKept {
				for _, w := range c.wordsWithMetadata {
					if strings.Contains(le.message, w) {
						t.Errorf("%s %s: says %q, which only the metadata it lacks could tell", c.model, what, w)
					}
				}
			}
		}

		// The official client, default retries: one upstream request, as
		// plain reverse_proxy costs.
		for _, via := range []struct{ name, base string }{{"gateway", gatewayBase}, {"plain reverse_proxy", plainBase}} {
			oc := openai.NewClient(option.WithBaseURL(via.base+"/"), option.WithAPIKey(key))
			before := e.emu.Count("/chat/completions")
			_, err := oc.Chat.Completions.New(ctx, chatParams(c.model))
			le := asLimitError(t, key, err)
			if n := e.emu.Count("/chat/completions") - before; n != 1 || le.status != 403 {
				t.Errorf("%s through %s: %d upstream requests for a %d; want one", c.model, via.name, n, le.status)
			}
			if via.base == gatewayBase {
				check("chat (openai-go)", le, true)
			}
		}

		le := limitRaw(t, gatewayBase, "/messages", key, `{"model":"`+c.model+`","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`)
		check("/messages", le, false)
		if le.errorType != "permission_error" {
			t.Errorf("%s /messages: not Anthropic's envelope: %s", c.model, le.body)
		}

		oc := openai.NewClient(option.WithBaseURL(gatewayBase+"/"), option.WithAPIKey(key))
		before := e.emu.Count("/responses")
		_, err := oc.Responses.New(ctx, oairesponses.ResponseNewParams{Model: c.model, Input: oairesponses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
		if n := e.emu.Count("/responses") - before; n != 1 {
			t.Errorf("%s /responses: %d upstream requests; want one", c.model, n)
		}
		le = asLimitError(t, key, err)
		check(fmt.Sprintf("/responses (%v)", env), le, env == openrouter.EnvelopeOpenAI)
	}
}

// A 403 of a wording the gateway does not know passes byte for byte on
// every inference endpoint, as plain reverse_proxy passes it.
func TestUnknown403ThroughCaddy(t *testing.T) {
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{})
	rt := &http.Transport{DisableCompression: true}
	for _, path := range []string{"/chat/completions", "/messages", "/responses"} {
		for _, enc := range []string{"", "gzip", "br"} {
			body := `{"model":"` + emulator.ModelForbiddenUnknown + `","max_tokens":10,"messages":[]}`
			gw := fetchOwn(t, rt, "POST", key, gatewayBase+path, body, "Accept-Encoding", enc)
			pl := fetchOwn(t, rt, "POST", key, plainBase+path, body, "Accept-Encoding", enc)
			if d := sameWire(gw, pl); d != "" || gw.status != 403 {
				t.Errorf("%s (%q): %d, differs from plain reverse_proxy: %s", path, enc, gw.status, d)
			}
		}
	}
}
