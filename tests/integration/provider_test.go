package integration

// provider_test.go drives a provider's errors and the fourth round's 429s
// (issue 26) through a real Caddy in front of the emulator, with the
// official openai-go client and raw HTTP on /chat/completions, /messages
// and /responses: the reason, the provider and its own words, whose fault
// it is (unknown where the body does not show it), the retry headers, and
// what a client's default retries cost.

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// providerExpectation is an expectation with the fault a provider's error
// must name ("" when no fault member is expected).
type providerExpectation struct {
	expectation
	fault string
}

func (x providerExpectation) check(t *testing.T, what string, le limitError) {
	t.Helper()
	x.expectation.check(t, what, le, time.Now(), time.Now())
	if got := le.str("fault"); got != x.fault {
		t.Errorf("%s: fault %q, want %q\n  got %v", what, got, x.fault, le)
	}
}

// Every provider model through the official client (chat completions),
// with metadata: the reason by whose fault the body shows it is.
func TestProviderErrorsThroughCaddy(t *testing.T) {
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{})
	unknown := func(status int, provider string, says ...string) providerExpectation {
		return providerExpectation{expectation{status: status, reason: "provider_error", provider: provider,
			inMessage: append(says, "cause unknown"), upstreamSays: openrouter.MessageProviderError}, "unknown"}
	}
	for _, c := range []struct {
		model string
		want  providerExpectation
	}{
		{emulator.ModelProviderInvalidRequest, providerExpectation{expectation{status: 400, reason: "provider_request_rejected", retry: "false", provider: "Crucible",
			inMessage: []string{"refused the request itself", emulator.CrucibleSays, "change the request", "provider.ignore"}, upstreamSays: openrouter.MessageProviderError}, "request"}},
		{emulator.ModelProviderInvalidRequestObject, providerExpectation{expectation{status: 400, reason: "provider_request_rejected", retry: "false", provider: "Crucible",
			inMessage: []string{emulator.CrucibleSays}}, "request"}},
		{emulator.ModelProviderNoWorkers, providerExpectation{expectation{status: 503, reason: "provider_unavailable", retry: "true", provider: "Morph",
			inMessage: []string{"failed or is over capacity", "no available workers", "provider.order"}}, "provider"}},
		{emulator.ModelProviderRegion, providerExpectation{expectation{status: 403, reason: "provider_blocked", retry: "false", provider: "OpenAI",
			inMessage: []string{"does not serve requests from this region"}}, "region"}},
		{emulator.ModelProviderOwnKeyRefused, providerExpectation{expectation{status: 403, reason: "provider_key_refused", retry: "false", provider: "Anthropic",
			inMessage: []string{"your own provider key (BYOK)", openrouter.URLIntegrations}}, "own_provider_key"}},
		{emulator.ModelProviderQuotaSpent, providerExpectation{expectation{status: 429, reason: "provider_key_refused", retry: "false", provider: "OpenAI",
			inMessage: []string{"your own provider key (BYOK)", "exceeded your current quota"}}, "own_provider_key"}},
		{emulator.ModelProviderNoRaw, unknown(400, "Crucible", "Provider Crucible returned an error")},
		{emulator.ModelProviderMalformedRaw, unknown(400, "Crucible")},
		{emulator.ModelProviderNotFound, unknown(404, "DeepInfra", `"Not Found"`)},
		{emulator.ModelProviderAccount, providerExpectation{expectation{status: 429, reason: "provider_key_rate_limited", scope: "provider", retry: "true", provider: "OpenAI",
			inMessage: []string{"your own provider key (BYOK) for OpenAI"}}, ""}},
		{emulator.ModelFreePerMinuteSourced, providerExpectation{expectation{status: 429, reason: "free_rate_limited", scope: "free_models", retry: "true", resetsSoon: true}, ""}},
		{emulator.ModelCapacityLong, providerExpectation{expectation{status: 429, reason: "providers_at_capacity", scope: "provider", retry: "false", retryAfter: "300", resetsSoon: false,
			inMessage: []string{"Retry in 300 seconds"}}, ""}},
		{emulator.ModelAdmissionControl, providerExpectation{expectation{status: 429, reason: "admission_control", retry: "true", retryAfter: "10",
			inMessage: []string{"not a spent balance or limit"}, upstreamSays: openrouter.MessageAdmissionControl}, ""}},
	} {
		le := limitChat(t, key, c.model, 0)
		if c.model == emulator.ModelFreePerMinuteSourced {
			// Retry-After is the seconds to the minute's end.
			c.want.retryAfter = le.header.Get("Retry-After")
		}
		if c.model == emulator.ModelCapacityLong {
			// 300 seconds ahead: resets_at is that, not within a minute.
			delete(le.metadata, "resets_at")
		}
		c.want.check(t, c.model, le)
	}
}

// In /messages and /responses, whose envelopes carry no metadata, a
// provider's error names no provider: a 5xx is still the provider's
// failure, a 400 or 403 of unknown cause; admission control is told by
// its sentence.
func TestProviderErrorsInEveryEnvelope(t *testing.T) {
	for name, env := range map[string]openrouter.Envelope{
		"responses docs envelope": openrouter.EnvelopeResponsesDocs, "responses spec envelope": openrouter.EnvelopeOpenAI,
	} {
		t.Run(name, func(t *testing.T) {
			e := start(t, options{emulator: func(s *emulator.Server) { s.ResponsesEnvelope = env }})
			key := e.emu.NewKey(emulator.KeyOptions{})
			for _, c := range []struct {
				path, model string
				want        providerExpectation
			}{
				{"/messages", emulator.ModelProviderInvalidRequest, providerExpectation{expectation{status: 400, reason: "provider_error",
					inMessage: []string{"names neither the provider nor what it said"}}, "unknown"}},
				{"/messages", emulator.ModelProviderNoWorkers, providerExpectation{expectation{status: 503, reason: "provider_unavailable", retry: "true",
					inMessage: []string{"The provider failed or is over capacity"}}, "provider"}},
				{"/messages", emulator.ModelProviderRegion, providerExpectation{expectation{status: 403, reason: "provider_error"}, "unknown"}},
				{"/messages", emulator.ModelAdmissionControl, providerExpectation{expectation{status: 429, reason: "admission_control", retry: "true", retryAfter: "10"}, ""}},
				{"/responses", emulator.ModelProviderNoWorkers, providerExpectation{expectation{status: 503, reason: "provider_unavailable", retry: "true"}, "provider"}},
			} {
				body := `{"model":"` + c.model + `","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"input":"hi"}`
				le := limitRaw(t, gatewayBase, c.path, key, body)
				if env == openrouter.EnvelopeOpenAI && c.path == "/responses" {
					// With metadata: named, as through chat completions.
					c.want.provider = "Morph"
				}
				c.want.check(t, fmt.Sprintf("%s %s (%v)", c.path, c.model, env), le)
			}
		})
	}
}

// Figures: what the official client's default retries cost OpenRouter
// for each, through the gateway and through plain reverse_proxy.
func TestProviderErrorRetriesCost(t *testing.T) {
	e := start(t, options{})
	for _, c := range []struct {
		model         string
		gateway, want int // upstream requests through the gateway: at most want
	}{
		{emulator.ModelProviderInvalidRequest, 1, 1},
		{emulator.ModelProviderRegion, 1, 1},
		{emulator.ModelProviderNoWorkers, 3, 3},
		{emulator.ModelProviderQuotaSpent, 1, 1},
		{emulator.ModelProviderNoRaw, 1, 1},
		{emulator.ModelCapacityLong, 1, 1},
	} {
		for _, via := range []struct{ name, base string }{{"gateway", gatewayBase}, {"plain reverse_proxy", plainBase}} {
			if c.model == emulator.ModelCapacityLong && via.base == plainBase {
				continue // the client would back off three times: seconds, not the figure here
			}
			key := e.emu.NewKey(emulator.KeyOptions{})
			cl := openai.NewClient(option.WithBaseURL(via.base+"/"), option.WithAPIKey(key)) // default retries
			before := e.emu.Count("/chat/completions")
			start := time.Now()
			_, err := cl.Chat.Completions.New(context.Background(), chatParams(c.model))
			le := asLimitError(t, key, err)
			n := e.emu.Count("/chat/completions") - before
			fmt.Printf("figure: %s through %s with openai-go's default retries: %d upstream request(s), %d, %s\n",
				c.model, via.name, n, le.status, time.Since(start).Round(time.Millisecond))
			if via.base == gatewayBase && n != c.want {
				t.Errorf("%s through the gateway: %d upstream requests, want %d (%v)", c.model, n, c.want, le)
			}
		}
	}
}

// Figure: an admission-control 429 through the official client with
// default retries is retried after its Retry-After (10 seconds) and then
// succeeds.
func TestAdmissionControlRetriedThenSucceeds(t *testing.T) {
	if testing.Short() {
		t.Skip("waits the captured Retry-After, 10 seconds")
	}
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{})
	cl := openai.NewClient(option.WithBaseURL(gatewayBase+"/"), option.WithAPIKey(key)) // default retries
	before := e.emu.Count("/chat/completions")
	start := time.Now()
	var resp *http.Response
	c, err := cl.Chat.Completions.New(context.Background(), chatParams(emulator.ModelAdmissionControl), option.WithResponseInto(&resp))
	took := time.Since(start)
	n := e.emu.Count("/chat/completions") - before
	fmt.Printf("figure: admission control through the gateway with openai-go's default retries: %d upstream requests, succeeded after %s\n",
		n, took.Round(time.Millisecond))
	if err != nil || c == nil || len(c.Choices) == 0 || n != 2 || took < emulator.AdmissionRetryAfter*time.Second {
		t.Errorf("want success on the second request after %d s: %v, %d requests, %s", emulator.AdmissionRetryAfter, err, n, took)
	}
}

// A 400 or 404 that is not a provider's error passes as plain
// reverse_proxy passes it, byte for byte.
func TestOtherFailuresPassAsPlain(t *testing.T) {
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{})
	rt := http.DefaultTransport
	for _, c := range []struct{ path, body string }{
		{"/chat/completions", `{"model":`},
		{"/no-such-endpoint", `{}`},
	} {
		gw := fetch(t, rt, "POST", gatewayBase+c.path, key, c.body)
		pl := fetch(t, rt, "POST", plainBase+c.path, key, c.body)
		if gw.status < 400 {
			t.Fatalf("%s: %d, want a failure", c.path, gw.status)
		}
		if d := sameWire(gw, pl); d != "" {
			t.Errorf("%s differs from plain reverse_proxy: %s", c.path, d)
		}
	}
}
