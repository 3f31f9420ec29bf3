package integration

// Models about to retire (warn_model_retirement), seen where users and
// operators see them: the response header an openai-go client gets, the
// gateway's log, Caddy's /metrics, and a real Prometheus loading
// monitoring/alerts.yml.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3/option"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// chatModel sends a chat completion on model through the official client
// and returns the HTTP response it read.
func chatModel(t *testing.T, key, model string) *http.Response {
	t.Helper()
	var resp *http.Response
	c := client(gatewayBase, key)
	if _, err := c.Chat.Completions.New(context.Background(), chatParams(model), option.WithResponseInto(&resp)); err != nil {
		t.Fatalf("%s: %v", model, err)
	}
	return resp
}

// TestRetiringModelEndToEnd: a request on a model that retires within 7
// days gets its date in a header, once the catalogue read at start is in;
// a model retiring in 12 days gets it too (default window 14 days), a
// model that does not retire does not; the model is logged once, exported
// on /metrics with its date, and Prometheus fires OpenRouterModelRetiring.
func TestRetiringModelEndToEnd(t *testing.T) {
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{})
	today := time.Now().UTC()
	soonDate := today.AddDate(0, 0, emulator.RetiringSoonDays).Format(time.DateOnly)
	const header = "X-OpenRouter-Model-Expires-At"
	// The catalogue is read in the background at start: never on a
	// request's path, so the first requests may go out without it.
	eventually(t, 10*time.Second, "the header on a retiring model", func() bool {
		return chatModel(t, key, emulator.ModelRetiringSoon).Header.Get(header) == soonDate
	})
	if got, want := chatModel(t, key, emulator.ModelRetiringLater).Header.Get(header), today.AddDate(0, 0, emulator.RetiringLaterDays).Format(time.DateOnly); got != want {
		t.Errorf("model retiring in %d days: %s %q, want %q", emulator.RetiringLaterDays, header, got, want)
	}
	for _, model := range []string{emulator.ModelIDs[0], emulator.ModelIDs[1], emulator.ModelAlias} {
		if got := chatModel(t, key, model).Header.Get(header); got != "" {
			t.Errorf("%s: %s %q on a model that does not retire", model, header, got)
		}
	}
	chatModel(t, key, emulator.ModelRetiringSoon)

	all := scrape(t)
	expiry := samples(t, all, "caddy_openrouter_keys_retiring_model_expiry")
	soonDay, _ := time.Parse(time.DateOnly, soonDate)
	if s := fmt.Sprintf("caddy_openrouter_keys_retiring_model_expiry_timestamp_seconds{model=%q}", emulator.ModelRetiringSoon); expiry[s] != float64(soonDay.Unix()) {
		t.Errorf("%s = %v, want %d: %v", s, expiry[s], soonDay.Unix(), expiry)
	}
	if s := fmt.Sprintf("caddy_openrouter_keys_retiring_model_requests_total{model=%q}", emulator.ModelRetiringSoon); samples(t, all, "caddy_openrouter_keys_retiring_model_requests")[s] < 2 {
		t.Errorf("%s below 2", s)
	}
	noKeyMaterial(t, "/metrics", all, e.emu.Secrets())

	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	warned := 0
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "model in use retires soon") && strings.Contains(line, `"model":"`+emulator.ModelRetiringSoon+`"`) {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("%d log lines about %s, want 1 (once a day)", warned, emulator.ModelRetiringSoon)
	}

	// The alert reads the requests' increase over a day: a series that
	// Prometheus first scraped at its current value has none until the
	// next request, so requests go on while it is watched, as in use.
	byKey, promLog := startPrometheus(t)
	var alerts map[string]map[string]string
	if !poll(45*time.Second, func() bool {
		chatModel(t, key, emulator.ModelRetiringSoon)
		alerts = byKey()
		return alerts[""]["OpenRouterModelRetiring/warning"] == "firing"
	}) {
		t.Fatalf("after 45s, no firing OpenRouterModelRetiring: %v\nprometheus:\n%s", alerts, promLog())
	}
}
