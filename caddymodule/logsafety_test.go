package caddymodule

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/logging"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

const probeTestKey = "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// keyFormsIn reports which forms of key a log holds: the key, its hex
// part, its SHA-256 in hex, or the 8 hex digits of that SHA-256 that
// Caddy's hash filter writes.
func keyFormsIn(log []byte, key string) []string {
	sum := sha256.Sum256([]byte(key))
	full := hex.EncodeToString(sum[:])
	var found []string
	for _, f := range []struct{ name, s string }{
		{"key", key}, {"hex part", strings.TrimPrefix(key, openrouter.KeyPrefix)},
		{"sha256", full}, {"sha256 prefix", full[:8]},
	} {
		if bytes.Contains(log, []byte(f.s)) {
			found = append(found, f.name)
		}
	}
	return found
}

// loadEncoder provisions one of Caddy's log encoder modules from its JSON,
// as a config's "encoder" does.
func loadEncoder(t *testing.T, raw string) zapcore.Encoder {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &fields); err != nil {
		t.Fatal(err)
	}
	var format string
	if err := json.Unmarshal(fields["format"], &format); err != nil {
		t.Fatal(err)
	}
	delete(fields, "format") // the module's name, inline in a config
	rest, _ := json.Marshal(fields)
	mod, err := ctx.LoadModuleByID("caddy.logging.encoders."+format, rest)
	if err != nil {
		t.Fatalf("loading encoder %s: %v", raw, err)
	}
	return mod.(zapcore.Encoder)
}

// TestProbeVerdictMatchesWhatEncoderWrites checks the probe's verdict for
// each encoder against what that encoder really writes for a request
// carrying x-api-key, logged as Caddy logs requests.
func TestProbeVerdictMatchesWhatEncoderWrites(t *testing.T) {
	filter := func(field, filterJSON string) string {
		return fmt.Sprintf(`{"format":"filter","wrap":{"format":"json"},"fields":{%q:%s}}`, field, filterJSON)
	}
	for _, c := range []struct {
		name    string
		encoder func(t *testing.T) zapcore.Encoder
		leaks   bool // the probe's verdict
		// overWarns marks the verdicts that are deliberately more cautious
		// than the output: the probe cannot see what a regexp keeps.
		overWarns bool
	}{
		{"zap json", func(*testing.T) zapcore.Encoder {
			return zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
		}, true, false},
		{"zap console", func(*testing.T) zapcore.Encoder {
			return zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
		}, true, false},
		{"caddy json", func(t *testing.T) zapcore.Encoder { return loadEncoder(t, `{"format":"json"}`) }, true, false},
		{"caddy console", func(t *testing.T) zapcore.Encoder { return loadEncoder(t, `{"format":"console"}`) }, true, false},
		{"caddy append", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, `{"format":"append","wrap":{"format":"json"},"fields":{"gateway":"eu-1"}}`)
		}, true, false},
		{"caddy journald", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, `{"format":"journald","wrap":{"format":"json"}}`)
		}, true, false},
		{"journald over filter", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, `{"format":"journald","wrap":`+filter("request>headers>X-Api-Key", `{"filter":"delete"}`)+`}`)
		}, false, false},
		{"filter replace header", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, filter("request>headers>X-Api-Key", `{"filter":"replace","value":"REDACTED"}`))
		}, false, false},
		{"filter delete header", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, filter("request>headers>X-Api-Key", `{"filter":"delete"}`))
		}, false, false},
		{"filter delete all headers", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, filter("request>headers", `{"filter":"delete"}`))
		}, false, false},
		{"filter replace request", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, filter("request", `{"filter":"replace","value":"-"}`))
		}, false, false},
		{"filter replace header, console", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, `{"format":"filter","wrap":{"format":"console"},"fields":{"request>headers>X-Api-Key":{"filter":"replace","value":"REDACTED"}}}`)
		}, false, false},
		// Writes sha256(key)[:4]: the start of OpenRouter's record hash.
		{"filter hash header", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, filter("request>headers>X-Api-Key", `{"filter":"hash"}`))
		}, true, false},
		// Caddy logs the canonical header name; a lower-case filter misses.
		{"filter on lower-case name", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, filter("request>headers>x-api-key", `{"filter":"delete"}`))
		}, true, false},
		{"filter on another header", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, filter("request>headers>Authorization", `{"filter":"delete"}`))
		}, true, false},
		{"filter regexp header", func(t *testing.T) zapcore.Encoder {
			return loadEncoder(t, filter("request>headers>X-Api-Key", `{"filter":"regexp","regexp":"sk-or-v1-[0-9a-f]+","value":"REDACTED"}`))
		}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			core := zapcore.NewCore(c.encoder(t), zapcore.AddSync(&out), zapcore.DebugLevel)

			got := headersEncodedBy(core, []string{"X-Api-Key"})
			if leaks := slices.Contains(got, "X-Api-Key"); leaks != c.leaks {
				t.Errorf("probe says leaks=%v (%v), want %v", leaks, got, c.leaks)
			}
			if out.Len() != 0 {
				t.Fatalf("the probe wrote to the log: %q", out.String())
			}

			req, _ := http.NewRequest(http.MethodPost, "http://gw/api/v1/messages", nil)
			req.Header.Set("x-api-key", probeTestKey)
			req.Header.Set("anthropic-version", "2023-06-01")
			zap.New(core).Info("handled request", zap.Object("request", caddyhttp.LoggableHTTPRequest{Request: req}))
			hidesAll := c.name == "filter delete all headers" || c.name == "filter replace request"
			if !hidesAll && !strings.Contains(out.String(), "Anthropic-Version") {
				t.Fatalf("the request's headers are not in the line at all, the test proves nothing: %s", out.String())
			}
			written := keyFormsIn(out.Bytes(), probeTestKey)
			if wrote := len(written) > 0; wrote != c.leaks && !c.overWarns {
				t.Errorf("the encoder wrote %v of the key, but the probe says leaks=%v:\n%s", written, c.leaks, out.String())
			}
			if c.overWarns && len(written) > 0 {
				t.Errorf("case marked as over-cautious, yet the key is written: %s", out.String())
			}
		})
	}
}

// TestProbeSeesEveryCoreOfATee checks that one unfiltered log among
// filtered ones is found, and that a discarded log is not.
func TestProbeSeesEveryCoreOfATee(t *testing.T) {
	filtered := loadEncoder(t, `{"format":"filter","fields":{"request>headers>X-Api-Key":{"filter":"delete"}}}`)
	var a, b bytes.Buffer
	safe := zapcore.NewCore(filtered, zapcore.AddSync(&a), zapcore.DebugLevel)
	unsafe := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&b), zapcore.InfoLevel)
	if got := headersEncodedBy(zapcore.NewTee(safe, zapcore.NewNopCore()), []string{"X-Api-Key"}); len(got) != 0 {
		t.Errorf("filtered and discarded logs: probe says %v are written", got)
	}
	if got := headersEncodedBy(zapcore.NewTee(safe, unsafe), []string{"X-Api-Key", "Authorization"}); !slices.Equal(got, []string{"X-Api-Key", "Authorization"}) {
		t.Errorf("with an unfiltered log: probe says %v are written, want both", got)
	}
	if a.Len()+b.Len() != 0 {
		t.Errorf("the probe wrote to the logs: %q %q", a.String(), b.String())
	}
}

// validateConfig runs a JSON config through caddy.Validate, which
// provisions every module (the handler's Provision included) without
// starting servers, and returns the module's warnings about logs.
func validateConfig(t *testing.T, dir, cfgJSON string) []map[string]any {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		t.Fatalf("config: %v\n%s", err, cfgJSON)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("validate: %v\n%s", err, cfgJSON)
	}
	b, err := os.ReadFile(filepath.Join(dir, "warnings.log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var warnings []map[string]any
	for line := range bytes.Lines(b) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("warnings log: %v: %s", err, line)
		}
		if strings.HasPrefix(m["msg"].(string), "Caddy's logs will write API keys") {
			warnings = append(warnings, m)
		}
	}
	return warnings
}

// logConfig is a config of one or two servers running openrouter_keys in
// front of reverse_proxy. defaultEnc and accessEnc are encoder JSON (empty
// for plain JSON); access turns on access logs of server "gateway" into a
// log of their own; warnings of the module go to warnings.log.
type logConfig struct {
	defaultLevel   string
	defaultEnc     string
	access         bool
	accessEnc      string
	logCredentials bool
	handlers       int // openrouter_keys handlers in the gateway's route
	secondServer   bool
}

func (c logConfig) json(dir string) string {
	enc := func(e string) string {
		if e == "" {
			return `{"format":"json"}`
		}
		return e
	}
	file := func(name string) string {
		return fmt.Sprintf(`{"output":"file","filename":%q}`, filepath.Join(dir, name))
	}
	logs := fmt.Sprintf(`"default":{"writer":%s,"encoder":%s,"level":%q,"exclude":["http.log.access.acc","http.handlers.openrouter_keys"]},
		"warnings":{"writer":%s,"encoder":{"format":"json"},"include":["http.handlers.openrouter_keys"]}`,
		file("default.log"), enc(c.defaultEnc), c.defaultLevel, file("warnings.log"))
	if c.access {
		logs += fmt.Sprintf(`,"acc":{"writer":%s,"encoder":%s,"include":["http.log.access.acc"]}`, file("access.log"), enc(c.accessEnc))
	}
	handler := `{"handler":"openrouter_keys","upstream":"http://127.0.0.1:9/api/v1"}`
	handlers := strings.Repeat(handler+",", max(c.handlers, 1))
	route := fmt.Sprintf(`[{"handle":[%s{"handler":"reverse_proxy","upstreams":[{"dial":"127.0.0.1:9"}]}]}]`, handlers)
	srvLogs := ""
	if c.access {
		srvLogs = fmt.Sprintf(`,"logs":{"default_logger_name":"acc","should_log_credentials":%v}`, c.logCredentials)
	}
	// Validate binds no port: the addresses only need to differ.
	servers := fmt.Sprintf(`"gateway":{"listen":[":19991"],"routes":%s%s}`, route, srvLogs)
	if c.secondServer {
		servers += fmt.Sprintf(`,"second":{"listen":[":19992"],"routes":%s}`, route)
	}
	return fmt.Sprintf(`{"admin":{"disabled":true},"logging":{"logs":{%s}},"apps":{"http":{"servers":{%s}}}}`, logs, servers)
}

const redactKey = `{"format":"filter","fields":{"request>headers>X-Api-Key":{"filter":"replace","value":"REDACTED"}}}`

// TestWarnsAtProvisionWhenALogWouldHoldKeys loads real configs through
// Caddy and checks which ones make the module warn, and what it names.
func TestWarnsAtProvisionWhenALogWouldHoldKeys(t *testing.T) {
	for _, c := range []struct {
		name    string
		cfg     logConfig
		servers []string          // servers warned about, in order
		loggers map[string]string // server -> loggers named, joined by ","
		headers string
	}{
		{name: "as Caddyfile.example: filtered site log and default log",
			cfg: logConfig{defaultLevel: "DEBUG", defaultEnc: redactKey, access: true, accessEnc: redactKey}},
		{name: "nothing filtered, debug",
			cfg:     logConfig{defaultLevel: "DEBUG", access: true},
			servers: []string{"gateway"},
			loggers: map[string]string{"gateway": "http.log.access.acc,http.log.error.acc,http.handlers.reverse_proxy"},
			headers: "X-Api-Key"},
		{name: "site log filtered, default log not, info",
			cfg:     logConfig{defaultLevel: "INFO", access: true, accessEnc: redactKey},
			servers: []string{"gateway"},
			loggers: map[string]string{"gateway": "http.log.error.acc"},
			headers: "X-Api-Key"},
		{name: "default log filtered, site log not",
			cfg:     logConfig{defaultLevel: "DEBUG", defaultEnc: redactKey, access: true},
			servers: []string{"gateway"},
			loggers: map[string]string{"gateway": "http.log.access.acc"},
			headers: "X-Api-Key"},
		// Without access logs the error log still carries the request on
		// every 5xx, at ERROR: an unreachable upstream writes the key.
		{name: "no access log, default log unfiltered",
			cfg:     logConfig{defaultLevel: "INFO", secondServer: true},
			servers: []string{"gateway", "second"},
			loggers: map[string]string{"gateway": "http.log.error", "second": "http.log.error"},
			headers: "X-Api-Key"},
		{name: "no access log, default log filtered",
			cfg: logConfig{defaultLevel: "DEBUG", defaultEnc: redactKey, secondServer: true}},
		{name: "default log above ERROR, no access log",
			cfg: logConfig{defaultLevel: "PANIC"}},
		{name: "log_credentials writes Authorization too",
			cfg:     logConfig{defaultLevel: "INFO", defaultEnc: redactKey, access: true, accessEnc: redactKey, logCredentials: true},
			servers: []string{"gateway"},
			loggers: map[string]string{"gateway": "http.log.access.acc,http.log.error.acc"},
			headers: "X-Api-Key,Authorization"},
		{name: "several handlers in one server warn once",
			cfg:     logConfig{defaultLevel: "INFO", access: true, handlers: 3},
			servers: []string{"gateway"},
			loggers: map[string]string{"gateway": "http.log.access.acc,http.log.error.acc"},
			headers: "X-Api-Key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			warnings := validateConfig(t, dir, c.cfg.json(dir))
			var servers []string
			for _, w := range warnings {
				srv, _ := w["server"].(string)
				servers = append(servers, srv)
				var loggers, headers []string
				for _, l := range w["loggers"].([]any) {
					loggers = append(loggers, l.(string))
				}
				for _, h := range w["headers"].([]any) {
					headers = append(headers, h.(string))
				}
				if got := strings.Join(loggers, ","); got != c.loggers[srv] {
					t.Errorf("server %s: loggers %s, want %s", srv, got, c.loggers[srv])
				}
				if got := strings.Join(headers, ","); got != c.headers {
					t.Errorf("server %s: headers %s, want %s", srv, got, c.headers)
				}
				lines := fmt.Sprint(w["filter_lines"])
				for _, h := range headers {
					if !strings.Contains(lines, "request>headers>"+h+" replace REDACTED") {
						t.Errorf("server %s: the warning does not give the filter line for %s: %v", srv, h, w)
					}
				}
			}
			slices.Sort(servers)
			if !slices.Equal(servers, c.servers) {
				t.Errorf("warned about servers %v, want %v", servers, c.servers)
			}
		})
	}
}
