package integration

// Failures inside an HTTP 200 (issue 26, item 4), seen from where users
// and operators see them: the bytes a client gets through the gateway and
// through plain reverse_proxy, the official openai-go client with
// status_from_inband_error, Caddy's /metrics, and a real Prometheus firing
// OpenRouterInbandFailuresRising.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// inbandSeries is the count of in-200 failures on Caddy's /metrics.
func inbandSeries(t *testing.T, form, errorType string) float64 {
	t.Helper()
	s := `caddy_openrouter_keys_inband_failures_total{error_type="` + errorType + `",form="` + form + `",provider="Nvidia"}`
	return samples(t, scrape(t), s)[s]
}

func inbandRequest(model string, stream bool) string {
	s := "false"
	if stream {
		s = "true"
	}
	return `{"model":"` + model + `","stream":` + s + `,"messages":[{"role":"user","content":"hi"}]}`
}

// TestInbandFailuresPassAndCount: each form reaches the client byte for
// byte as through plain reverse_proxy, with its 200, and is counted once
// by form, provider and error type.
func TestInbandFailuresPassAndCount(t *testing.T) {
	e := start(t, options{emulator: func(emu *emulator.Server) { emu.EventGap = 5 * time.Millisecond }})
	key := e.emu.NewKey(emulator.KeyOptions{})
	for _, c := range []struct {
		model           string
		stream          bool
		form, errorType string
	}{
		{emulator.ModelIn200StreamError, true, "stream_error", "rate_limit_exceeded"},
		{emulator.ModelIn200NoChoices, true, "stream_error_no_choices", "provider_error"},
		{emulator.ModelIn200NativeError, true, "native_finish_error", "none"},
		{emulator.ModelIn200NativeError, false, "native_finish_error", "none"},
		{emulator.ModelIn200Body, false, "body_error", "provider_overloaded"},
	} {
		before := inbandSeries(t, c.form, c.errorType)
		gwResp, gw := raw(t, "POST", gatewayBase+"/chat/completions", key, inbandRequest(c.model, c.stream), "Accept-Encoding", "identity")
		plResp, pl := raw(t, "POST", plainBase+"/chat/completions", key, inbandRequest(c.model, c.stream), "Accept-Encoding", "identity")
		if gwResp.StatusCode != http.StatusOK || plResp.StatusCode != http.StatusOK || !bytes.Equal(gw, pl) {
			t.Errorf("%s: gateway %d %q, plain reverse_proxy %d %q", c.model, gwResp.StatusCode, gw, plResp.StatusCode, pl)
		}
		if got := inbandSeries(t, c.form, c.errorType) - before; got != 1 {
			t.Errorf("%s (stream %v): counted %v under form %s, error type %s; want 1", c.model, c.stream, got, c.form, c.errorType)
		}
	}
	// The log names the generation, and no key.
	noKeyMaterial(t, "/metrics", scrape(t), e.emu.Secrets())
}

// TestStatusFromInbandErrorWithOpenAIClient: the official client takes a
// 200 whose body is an error for a completion without choices; with
// status_from_inband_error it raises the 503 the body states.
func TestStatusFromInbandErrorWithOpenAIClient(t *testing.T) {
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{})
	ask := func() (*openai.ChatCompletion, error) {
		c := client(gatewayBase, key)
		return c.Chat.Completions.New(context.Background(), chatParams(emulator.ModelIn200Body))
	}
	got, err := ask()
	if err != nil || len(got.Choices) != 0 {
		t.Fatalf("without the option the client should see a 200 without choices: %v, %v", got, err)
	}
	e.reload("status_from_inband_error")
	_, err = ask()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable || !strings.Contains(apiErr.Message, "Service temporarily overloaded") {
		t.Fatalf("with status_from_inband_error: %v, want the client to raise a 503 with the upstream's message", err)
	}
	// A success is untouched, streamed or not.
	if _, err := chat(gatewayBase, key); err != nil {
		t.Errorf("a success with the option: %v", err)
	}
	if text, err := streamChat(gatewayBase, key); err != nil || text != emulator.Reply {
		t.Errorf("a stream with the option: %q, %v", text, err)
	}
}

// TestInbandAlertInPrometheus: streams failing inside their 200 through
// Caddy make a real Prometheus, loading monitoring/alerts.yml, fire
// OpenRouterInbandFailuresRising for the provider. Its `for: 10m` is
// shortened to 2s in the test's copy of the rules (shortenedRules); the
// expression itself, rate over 5m above 3 a minute and twice the hour's,
// is the real one: 40 failures within a minute of a quiet start are both.
func TestInbandAlertInPrometheus(t *testing.T) {
	e := start(t, options{emulator: func(emu *emulator.Server) { emu.EventGap = 0 }})
	key := e.emu.NewKey(emulator.KeyOptions{})
	fail := func() {
		resp, _ := raw(t, "POST", gatewayBase+"/chat/completions", key, inbandRequest(emulator.ModelIn200StreamError, true))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("a stream failing inside its 200 came with %d", resp.StatusCode)
		}
	}
	fail() // the series exists before Prometheus's first scrape
	byKey, promLog := startPrometheus(t)
	const rising = "OpenRouterInbandFailuresRising/warning"
	// Prometheus has the count at 1 before the rise, so that the rise is
	// an increase it sees.
	eventually(t, 30*time.Second, "Prometheus to scrape the first failure", func() bool {
		return strings.Contains(promQuery(promLog(), "caddy_openrouter_keys_inband_failures_total"), `"1"]`)
	})
	if byKey()[""][rising] != "" {
		t.Fatalf("%s before the rise: %v", rising, byKey())
	}
	for range 40 {
		fail()
	}
	var alerts map[string]map[string]string
	if !poll(45*time.Second, func() bool {
		alerts = byKey()
		return alerts[""][rising] == "firing"
	}) {
		t.Fatalf("after 45s, alerts: %v\nrules: %s\nprometheus:\n%s", alerts, promQuery(promLog(), "openrouter_keys:inband_failures:rate5m or openrouter_keys:inband_failures:rate1h or caddy_openrouter_keys_inband_failures_total"), promLog())
	}
}

// promQuery is what the Prometheus whose log is promLog answers to expr,
// for a failure's message.
func promQuery(promLog, expr string) string {
	m := regexp.MustCompile(`Start listening for connections" address=(\S+)`).FindStringSubmatch(promLog)
	if m == nil {
		return "(no address in the log)"
	}
	resp, err := http.Get("http://" + m[1] + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
