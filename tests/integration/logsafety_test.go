package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// keyFilterLine is the filter the README and Caddyfile.example tell users
// to put in their logs.
const keyFilterLine = "request>headers>X-Api-Key replace REDACTED"

// shippedKeyFilter returns the `format filter` block of Caddyfile.example,
// after checking that the example filters both the default log and the
// site's access log, with the same block, and that the README gives the
// line: the test below runs exactly what users copy.
func shippedKeyFilter(t *testing.T) string {
	t.Helper()
	example, err := os.ReadFile("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	// Each block, its lines trimmed: from `format filter {` to its `}`.
	var blocks []string
	var block []string
	for l := range strings.Lines(string(example)) {
		l = strings.TrimSpace(l)
		switch {
		case l == "format filter {":
			block = []string{l}
		case block != nil:
			block = append(block, l)
			if l == "}" {
				blocks = append(blocks, strings.Join(block, "\n"))
				block = nil
			}
		}
	}
	if len(blocks) != 2 {
		t.Fatalf("Caddyfile.example has %d `format filter` blocks, want 2 (global log default, site log)", len(blocks))
	}
	if blocks[0] != blocks[1] {
		t.Fatalf("the two filters of Caddyfile.example differ:\n%s\n%s", blocks[0], blocks[1])
	}
	if !strings.Contains(blocks[0], keyFilterLine) {
		t.Fatalf("Caddyfile.example's filter lacks %q:\n%s", keyFilterLine, blocks[0])
	}
	if readme, err := os.ReadFile("../../README.md"); err != nil || !bytes.Contains(readme, []byte(keyFilterLine)) {
		t.Fatalf("README.md does not give %q (%v)", keyFilterLine, err)
	}
	return blocks[0]
}

// headerRecorder stands in front of the emulator and keeps the key headers
// of every inference request that reaches it.
type headerRecorder struct {
	next http.Handler
	mu   sync.Mutex
	seen []http.Header // X-Api-Key, Authorization and Anthropic-Version of each POST
}

func (h *headerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		kept := http.Header{}
		for _, k := range []string{"X-Api-Key", "Authorization", "Anthropic-Version"} {
			if v, ok := r.Header[k]; ok {
				kept[k] = slices.Clone(v)
			}
		}
		h.mu.Lock()
		h.seen = append(h.seen, kept)
		h.mu.Unlock()
	}
	h.next.ServeHTTP(w, r)
}

func (h *headerRecorder) received(header, value string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.seen {
		if v := s[header]; len(v) == 1 && v[0] == value {
			return true
		}
	}
	return false
}

// anthropicMessage sends POST /messages as Anthropic's Go SDK sends it to
// an Anthropic-compatible base URL: the key in x-api-key, no Authorization.
func anthropicMessage(t *testing.T, base, key string) (*http.Response, []byte) {
	t.Helper()
	return raw(t, http.MethodPost, base+"/messages", "",
		`{"model":"anthropic/claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"Say hello."}]}`,
		"X-Api-Key", key, "Anthropic-Version", "2023-06-01", "Accept", "application/json",
		"User-Agent", "Anthropic/Go 1.84.0", "X-Stainless-Lang", "go", "X-Stainless-Retry-Count", "0")
}

// logsafetyConfig is a gateway with access logs on, Caddy's default log at
// DEBUG, both written to files in dir, and filter (a `format filter` block,
// or "") in both logs. /unreachable/ proxies to a closed port, so that a
// request there fails with 502 and goes to Caddy's error log.
func logsafetyConfig(dir, upstream, filter string) string {
	return fmt.Sprintf(`{
	admin localhost:2999
	http_port %[1]d
	https_port 9443
	auto_https off
	skip_install_trust
	log {
		output file %[2]q
		level DEBUG
		%[5]s
	}
}

http://localhost:%[1]d {
	log {
		output file %[3]q
		%[5]s
	}
	handle /api/v1/* {
		openrouter_keys {
			upstream http://%[4]s/api/v1
			lookup_timeout 2s
		}
		reverse_proxy %[4]s
	}
	handle /unreachable/* {
		reverse_proxy 127.0.0.1:1
	}
}
`, gatewayPort, filepath.Join(dir, "default.log"), filepath.Join(dir, "access.log"), upstream, filter)
}

// logsafetyEnv runs the emulator behind a header recorder and a Caddy with
// logsafetyConfig; the logs go to dir/default.log and dir/access.log.
type logsafetyEnv struct {
	emu      *emulator.Server
	recorder *headerRecorder
	dir      string
}

func startLogsafety(t *testing.T, dir, filter string) *logsafetyEnv {
	t.Helper()
	emu := emulator.New()
	rec := &headerRecorder{next: emu}
	up := httptest.NewServer(rec)
	t.Cleanup(up.Close)
	t.Cleanup(func() { remember(emu.Secrets()...) })
	loadConfig(t, caddytest.NewTester(t), logsafetyConfig(dir, strings.TrimPrefix(up.URL, "http://"), filter))
	return &logsafetyEnv{emu: emu, recorder: rec, dir: dir}
}

// logs waits until every file holds all of its wanted strings, and returns
// the files' contents.
func (e *logsafetyEnv) logs(t *testing.T, want map[string][]string) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	waitFor(t, fmt.Sprintf("log lines %v", want), func() bool {
		for name, subs := range want {
			b, _ := os.ReadFile(filepath.Join(e.dir, name))
			got[name] = b
			for _, s := range subs {
				if !bytes.Contains(b, []byte(s)) {
					return false
				}
			}
		}
		return true
	})
	return got
}

const keysWarning = `"msg":"Caddy's logs will write API keys in full`

// TestAccessAndDebugLogsKeepKeysOut runs real access logs and Caddy's
// debug log with Anthropic-style (x-api-key) and OpenAI-style
// (Authorization) requests: with the filter of Caddyfile.example no form of
// any key is written and the headers still reach the upstream; without it
// the module warns at provision, naming the server, and the key is indeed
// written.
func TestAccessAndDebugLogsKeepKeysOut(t *testing.T) {
	filter := shippedKeyFilter(t)

	// Without the filter, the key is logged by design: these logs go to a
	// directory of the test's own, which the suite's sweep (TestMain, which
	// reads the directory of logPath) does not read. Their keys are still
	// remembered, so the sweep checks that they reach no other log.
	t.Run("unfiltered", func(t *testing.T) {
		e := startLogsafety(t, t.TempDir(), "")
		key := e.emu.NewKey(emulator.KeyOptions{Name: "anthropic-unfiltered"})
		anthropicMessage(t, gatewayBase, key)
		logs := e.logs(t, map[string][]string{
			"default.log": {keysWarning, `"msg":"upstream roundtrip"`},
			"access.log":  {`"msg":"handled request"`},
		})
		var warning string
		for l := range bytes.Lines(logs["default.log"]) {
			if bytes.Contains(l, []byte(keysWarning)) {
				if warning != "" {
					t.Errorf("more than one warning for one server:\n%s%s", warning, l)
				}
				warning = string(l)
			}
		}
		for _, want := range []string{
			`"logger":"http.handlers.openrouter_keys"`, `"level":"warn"`, `"server":"srv0"`,
			// The site's host logs to log0; any other Host the server is
			// sent logs to the default access logger, here unfiltered too.
			`"loggers":["http.log.access","http.log.access.log0","http.log.error","http.log.error.log0","http.handlers.reverse_proxy"]`,
			`"filter_lines":["` + keyFilterLine + `"]`,
		} {
			if !strings.Contains(warning, want) {
				t.Errorf("the warning lacks %s:\n%s", want, warning)
			}
		}
		// What the warning is about: the same request, the same logs, and
		// the key is in both. The probe, which ran its marshaler through
		// these very encoders, wrote nothing.
		for _, name := range []string{"access.log", "default.log"} {
			if !bytes.Contains(logs[name], []byte(`"X-Api-Key":["`+key+`"]`)) {
				t.Errorf("%s: without the filter the key should be there in full; the filtered case would prove nothing", name)
			}
			if bytes.Contains(logs[name], []byte("openrouter_keys log probe")) {
				t.Errorf("%s: the provision-time probe reached the log", name)
			}
		}
	})

	// With the filter the logs live beside logPath, so the suite's sweep
	// reads them too.
	t.Run("filtered", func(t *testing.T) {
		dir := filepath.Join(filepath.Dir(logPath), "logsafety")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		e := startLogsafety(t, dir, filter)
		anthropicKey := e.emu.NewKey(emulator.KeyOptions{Name: "anthropic"})
		openaiKey := e.emu.NewKey(emulator.KeyOptions{Name: "openai"})
		unreachableKey := e.emu.NewKey(emulator.KeyOptions{Name: "unreachable"})

		anthropicMessage(t, gatewayBase, anthropicKey)
		if _, err := chat(gatewayBase, openaiKey); err != nil {
			t.Fatalf("OpenAI-style request through the gateway: %v", err)
		}
		if resp, _ := anthropicMessage(t, fmt.Sprintf("http://localhost:%d/unreachable/api/v1", gatewayPort), unreachableKey); resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("request to an unreachable upstream: status %d, want 502", resp.StatusCode)
		}

		// Proxied unchanged: the upstream got each key as the client sent it.
		if !e.recorder.received("X-Api-Key", anthropicKey) || !e.recorder.received("Anthropic-Version", "2023-06-01") {
			t.Errorf("x-api-key or anthropic-version did not reach the upstream intact: %v", e.recorder.seen)
		}
		if !e.recorder.received("Authorization", "Bearer "+openaiKey) {
			t.Errorf("Authorization did not reach the upstream intact")
		}

		// The lines that would hold the key are there, with the header
		// replaced: the access line of each request, reverse_proxy's debug
		// line and the error line of the 502.
		logs := e.logs(t, map[string][]string{
			"access.log": {`"uri":"/api/v1/messages"`, `"uri":"/api/v1/chat/completions"`, `"uri":"/unreachable/api/v1/messages"`,
				`"X-Api-Key":"REDACTED"`, `"Authorization":["REDACTED"]`},
			"default.log": {`"msg":"upstream roundtrip"`, `"logger":"http.log.error.log0"`, `"X-Api-Key":"REDACTED"`},
		})
		for name, b := range logs {
			for _, key := range []string{anthropicKey, openaiKey, unreachableKey} {
				for _, m := range keyMaterial(key) {
					if bytes.Contains(b, []byte(m)) {
						t.Errorf("%s holds a form of key %q... (%d bytes)", name, key[:12], len(m))
					}
				}
			}
			if bytes.Contains(b, []byte(keysWarning)) {
				t.Errorf("%s: the module warns although every log is filtered", name)
			}
			if bytes.Contains(b, []byte("openrouter_keys log probe")) {
				t.Errorf("%s: the provision-time probe reached the log", name)
			}
		}
	})
}
