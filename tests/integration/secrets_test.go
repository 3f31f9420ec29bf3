package integration

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// Every broken answer of every metadata endpoint, while failing requests
// and key checks (API, page, command) go on: no form of any key reaches
// a sink. The suite-wide sweep (TestMain) covers the logs at debug level
// and every response; this test adds /metrics and shared storage, and
// fails on its own so that the faults are named.
func TestBrokenAnswersLeakNothing(t *testing.T) {
	storage := t.TempDir()
	e := start(t, options{management: true, module: "lookup_timeout 300ms\nshared_storage\nwatch_keys 1s",
		keycheck: "rate_limit 1000 1m\nlookup_timeout 300ms", global: "storage file_system " + storage})
	upstream := e.upstream.URL + "/api/v1"
	checkPage := strings.TrimSuffix(gatewayBase, "/api/v1") + "/keycheck"
	var keys []string
	for _, fault := range emulator.Faults {
		round := time.Now()
		for _, endpoint := range emulator.FaultEndpoints {
			e.emu.SetFault(endpoint, fault)
		}
		// A disabled key (GET /key, GET /keys/{hash}, the listing, the
		// workspaces) and a valid one (the key check's credits and models).
		disabled := e.emu.NewKey(emulator.KeyOptions{Disabled: true})
		valid := e.emu.NewKey(emulator.KeyOptions{})
		keys = append(keys, disabled, valid)
		for _, key := range []string{disabled, valid} {
			raw(t, "POST", gatewayBase+"/chat/completions", key, `{"model":"openai/gpt-4o","messages":[]}`)
			body, _ := json.Marshal(map[string]string{"key": key})
			raw(t, "POST", checkPage, "", string(body))
			raw(t, "POST", checkPage, "", url.Values{"key": {key}}.Encode(),
				"Content-Type", "application/x-www-form-urlencoded", "Accept", "text/html")
		}
		caddyCommand(t, "", []string{"OPENROUTER_API_KEY=" + disabled, "OPENROUTER_MANAGEMENT_KEY=" + e.mgmtKey},
			"openrouter-keycheck", "--json", "--timeout", "300ms", "--upstream", upstream)
		for _, endpoint := range emulator.FaultEndpoints {
			e.emu.SetFault(endpoint, emulator.FaultNone)
		}
		t.Logf("%s: %v", fault, time.Since(round))
	}
	time.Sleep(1500 * time.Millisecond) // a watch round and the storage writer
	sinks := map[string][]byte{"/metrics": []byte(scrape(t))}
	_ = filepath.WalkDir(storage, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(path)
			sinks["storage "+strings.TrimPrefix(path, storage)] = append(b, []byte(path)...)
		}
		return nil
	})
	if len(sinks) < 3 {
		t.Fatalf("shared storage holds nothing: the sweep would prove nothing")
	}
	for name, b := range sinks {
		for _, key := range append(keys, e.mgmtKey) {
			for _, m := range keyMaterial(key) {
				if bytes.Contains(b, []byte(m)) {
					t.Errorf("%s holds a form of a key (%d characters)", name, len(m))
				}
			}
		}
	}
}

// Anonymous key checks of random keys cannot make the gateway spend the
// account's management API: lookups by hash stay within management_rate,
// and one listing serves them all.
func TestKeyChecksCostTheAccountLittle(t *testing.T) {
	e := start(t, options{management: true, keycheck: "rate_limit 1000 1m\nmanagement_rate 2"})
	e.emu.NewKeys(150, emulator.KeyOptions{})
	checkURL := strings.TrimSuffix(gatewayBase, "/api/v1") + "/keycheck"
	management := func() int {
		return e.emu.Count("/keys/{hash}") + e.emu.Count("/keys") + e.emu.Count("/workspaces") + e.emu.Count("/credits")
	}
	before := management()
	begin := time.Now()
	const checks = 60
	for i := 0; i < checks; i++ {
		body, _ := json.Marshal(map[string]string{"key": randomKey()})
		if resp, b := raw(t, "POST", checkURL, "", string(body)); resp.StatusCode != 200 || !strings.Contains(string(b), `"status":"key_not_found"`) && !strings.Contains(string(b), `"status":"unknown"`) {
			t.Fatalf("check %d: %d %s", i, resp.StatusCode, b)
		}
	}
	elapsed := time.Since(begin)
	spent := management() - before
	// management_rate 2 (burst 4) for lookups by hash, plus one listing:
	// the workspaces (a page and an empty one) and the keys (2 pages, an
	// empty one, and the first again).
	budget := 4 + int(2*elapsed.Seconds()+1) + 2 + 4
	t.Logf("%d anonymous checks in %v cost %d management requests (budget %d)", checks, elapsed.Round(time.Millisecond), spent, budget)
	if spent > budget {
		t.Errorf("%d checks cost %d management requests, more than the budget of %d", checks, spent, budget)
	}
}
