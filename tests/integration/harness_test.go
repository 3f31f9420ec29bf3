// Package integration runs a real Caddy with openrouter_keys and
// reverse_proxy in front of the OpenRouter emulator, and drives it as
// users do. Every caddytest-based test lives in this one package: they
// share Caddy's admin port 2999 and must not run in parallel.
package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/caddyserver/caddy/v2/caddytest"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/openrouter-keys/caddy-openrouter-keys/caddymodule"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

const (
	gatewayPort = 9080 // Caddy with openrouter_keys in front of reverse_proxy
	plainPort   = 9081 // the same reverse_proxy without the module
)

var (
	gatewayBase = fmt.Sprintf("http://localhost:%d/api/v1", gatewayPort)
	plainBase   = fmt.Sprintf("http://localhost:%d/api/v1", plainPort)

	// logPath collects every log line Caddy writes during the suite, at
	// debug level, for the sweep in TestMain.
	logPath string

	secretsMu sync.Mutex
	secrets   []string // every key any test used
	responses []byte   // every response body the tests read from the gateway
)

// recordResponse adds a response body to the sweep for key material.
func recordResponse(b []byte) {
	secretsMu.Lock()
	responses = append(responses, b...)
	responses = append(responses, '\n')
	secretsMu.Unlock()
}

// remember adds keys to the sweep for key material.
func remember(keys ...string) {
	secretsMu.Lock()
	secrets = append(secrets, keys...)
	secretsMu.Unlock()
}

// runCaddyEnv makes the test binary run as Caddy (standard modules plus
// this one), so that tests can start separate Caddy processes, such as
// replicas sharing storage, without building another binary.
const runCaddyEnv = "OPENROUTER_KEYS_TEST_RUN_CADDY"

func TestMain(m *testing.M) {
	if os.Getenv(runCaddyEnv) == "1" {
		caddycmd.Main()
		return
	}
	dir, err := os.MkdirTemp("", "openrouter-keys-it")
	if err != nil {
		panic(err)
	}
	logPath = filepath.Join(dir, "caddy.log")
	code := m.Run()
	if code == 0 {
		if leaks := sweepForKeys(); len(leaks) > 0 {
			fmt.Println("FAIL: key material in Caddy's logs:")
			for _, l := range leaks {
				fmt.Println("  ", l)
			}
			code = 1
		} else {
			fmt.Printf("swept %s and %d bytes of responses: no key material\n", filepath.Dir(logPath), len(responses))
		}
	} else {
		printPanics()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// printPanics prints the handler panics Caddy logged, for a failed run on
// a machine where the log is gone afterwards (CI): a client that saw EOF
// may have met one. Runs of 24 or more hex digits are masked, since every
// form of a test key is one.
func printPanics() {
	logs, err := os.ReadFile(logPath)
	if err != nil {
		return
	}
	printed := 0
	for line := range bytes.Lines(logs) {
		if !bytes.Contains(line, []byte("http: panic serving")) {
			continue
		}
		if printed == 5 {
			fmt.Println("(more panics in the log)")
			break
		}
		printed++
		fmt.Printf("Caddy logged a handler panic:\n%s\n", longHex.ReplaceAll(line[:min(len(line), 8<<10)], []byte("[hex]")))
	}
}

var longHex = regexp.MustCompile(`[0-9a-f]{24,}`)

// keyMaterial is every form of a key that must never appear in output:
// the key, its hex part, its first 24 hex digits, and its plain SHA-256
// (OpenRouter's record hash).
func keyMaterial(key string) []string {
	sum := sha256.Sum256([]byte(key))
	out := []string{key, hex.EncodeToString(sum[:])}
	if hexPart, ok := strings.CutPrefix(key, "sk-or-v1-"); ok && len(hexPart) >= 24 {
		out = append(out, hexPart, hexPart[:24])
	}
	return out
}

// isHexString reports whether s is all lowercase hex digits.
func isHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}

func sweepForKeys() []string {
	logs, err := os.ReadFile(logPath)
	// A run of tests chosen with -run may write only logs of their own,
	// beside logPath; a full run without logPath fails the check below.
	if err != nil && !os.IsNotExist(err) {
		return []string{"cannot read the log: " + err.Error()}
	}
	// Logs and storage of separate Caddy processes are swept too.
	_ = filepath.WalkDir(filepath.Dir(logPath), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && path != logPath {
			if b, err := os.ReadFile(path); err == nil {
				logs = append(logs, b...)
			}
		}
		return nil
	})
	// The sweep of the whole suite proves something only if the module's
	// own lines, down to debug level, are in the log. (A run of a few tests
	// chosen with -run may have none.)
	if f := flag.Lookup("test.run"); f == nil || f.Value.String() == "" {
		for _, want := range []string{`"msg":"explained misleading 401"`, `"msg":"key lookup"`} {
			if !bytes.Contains(logs, []byte(want)) {
				return []string{"the log has no " + want + " line: the sweep would prove nothing"}
			}
		}
	}
	secretsMu.Lock()
	defer secretsMu.Unlock()
	if len(responses) == 0 && (flag.Lookup("test.run") == nil || flag.Lookup("test.run").Value.String() == "") {
		return []string{"no response was recorded: the sweep would prove nothing"}
	}
	// Accounts of tens of thousands of keys are swept too: the forms that
	// are 64 hex digits (a key's hex part, its SHA-256) are looked up in a
	// set, once per 64-digit window of the output; the rest (a key of
	// another shape, a JWT) are searched for one by one.
	hexForms := make(map[string]string)
	prefixes := make(map[string]string) // a key's first 24 hex digits
	var others [][2]string              // form, key
	for _, key := range secrets {
		for _, m := range keyMaterial(key) {
			switch {
			case isHex64(m):
				hexForms[m] = key
			case len(m) == 24 && isHexString(m):
				prefixes[m] = key
			case strings.HasPrefix(m, "sk-or-v1-") && isHex64(m[len("sk-or-v1-"):]):
				// Found through its hex part.
			default:
				others = append(others, [2]string{m, key})
			}
		}
	}
	var leaks []string
	reported := make(map[string]bool)
	leak := func(where, key string, n int) {
		if l := fmt.Sprintf("%s: a form of key %s... (%d bytes)", where, key[:min(len(key), 12)], n); !reported[l] {
			reported[l] = true
			leaks = append(leaks, l)
		}
	}
	for _, out := range []struct {
		where string
		data  []byte
	}{{"log", logs}, {"response", responses}} {
		for i, run := 0, 0; i <= len(out.data); i++ {
			if i < len(out.data) && isLowerHex(out.data[i]) {
				run++
				if run >= 24 {
					if key, ok := prefixes[string(out.data[i-23:i+1])]; ok {
						leak(out.where, key, 24)
					}
				}
				if run >= 64 {
					if key, ok := hexForms[string(out.data[i-63:i+1])]; ok {
						leak(out.where, key, 64)
					}
				}
				continue
			}
			run = 0
		}
		for _, o := range others {
			if bytes.Contains(out.data, []byte(o[0])) {
				leak(out.where, o[1], len(o[0]))
			}
		}
	}
	return leaks
}

func isLowerHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

func isHex64(s string) bool { return len(s) == 64 && isHexString(s) }

// env is one running Caddy in front of one emulator.
type env struct {
	t        *testing.T
	emu      *emulator.Server
	upstream *httptest.Server
	mgmtKey  string
	tester   *caddytest.Tester
	config   func(module string) string
	options  options
}

// reload loads the config again with extra subdirectives, as
// `caddy reload` does.
func (e *env) reload(module string) {
	e.t.Helper()
	loadConfig(e.t, e.tester, e.config(e.options.module+"\n"+module))
}

// options configure start.
type options struct {
	management bool   // configure a management key
	module     string // extra openrouter_keys subdirectives
	keycheck   string // extra openrouter_keycheck subdirectives
	global     string // extra global options
	emulator   func(*emulator.Server)
	// wrap, when set, serves in front of the emulator, for answers the
	// emulator does not give.
	wrap func(emu http.Handler) http.Handler
}

// start runs the emulator and a Caddy serving the gateway on gatewayPort
// and plain reverse_proxy on plainPort, both in front of the emulator.
func start(t *testing.T, o options) *env {
	t.Helper()
	emu := emulator.New()
	if o.emulator != nil {
		o.emulator(emu)
	}
	handler := http.Handler(emu)
	if o.wrap != nil {
		handler = o.wrap(emu)
	}
	upstream := httptest.NewServer(handler)
	t.Cleanup(upstream.Close)
	e := &env{t: t, emu: emu, upstream: upstream}
	t.Cleanup(func() { remember(emu.Secrets()...) })

	mgmtLine := ""
	if o.management {
		e.mgmtKey = emu.NewKey(emulator.KeyOptions{Name: "gateway", Management: true})
		t.Setenv("OPENROUTER_TEST_MANAGEMENT_KEY", e.mgmtKey)
		mgmtLine = "management_key {env.OPENROUTER_TEST_MANAGEMENT_KEY}"
	}
	hostport := strings.TrimPrefix(upstream.URL, "http://")
	e.options = o
	e.config = func(module string) string {
		return fmt.Sprintf(`{
	admin localhost:2999
	http_port %[1]d
	https_port 9443
	auto_https off
	skip_install_trust
	# As Caddyfile.example: the sites' access lines and the debug lines
	# come here, and Caddy would write x-api-key in full.
	log {
		output file %[3]q
		level DEBUG
		format filter {
			request>headers>X-Api-Key replace REDACTED
		}
	}
	%[7]s
}

http://localhost:%[1]d {
	log
	handle /api/v1/* {
		openrouter_keys {
			upstream http://%[4]s/api/v1
			lookup_timeout 2s
			%[5]s
			%[6]s
		}
		reverse_proxy %[4]s
	}
	handle /keycheck {
		openrouter_keycheck {
			upstream http://%[4]s/api/v1
			lookup_timeout 2s
			%[5]s
			%[8]s
		}
	}
	handle {
		respond "not found" 404
	}
}

http://localhost:%[2]d {
	log
	reverse_proxy %[4]s
}
`, gatewayPort, plainPort, logPath, hostport, mgmtLine, module, o.global, o.keycheck)
	}
	e.tester = caddytest.NewTester(t)
	loadConfig(t, e.tester, e.config(o.module))
	return e
}

// raw sends a request with the exact headers given and returns the
// response with its body as sent on the wire (no transparent
// decompression).
func raw(t *testing.T, method, url, key string, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	return rawVia(t, &http.Transport{DisableCompression: true}, method, url, key, body, header...)
}

// newRequest is a request as the tests send it: the key as a bearer, a
// JSON body, and header pairs set as given.
func newRequest(t *testing.T, method, url, key, body string, header ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return req
}

// rawVia is raw over the given transport (HTTP/2 without TLS, for one).
func rawVia(t *testing.T, rt http.RoundTripper, method, url, key string, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	resp, err := (&http.Client{Transport: rt}).Do(newRequest(t, method, url, key, body, header...))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	recordResponse(b)
	return resp, b
}

// comparableHeader is a response's header without the fields that differ
// between any two responses (Date).
func comparableHeader(h http.Header) http.Header {
	c := h.Clone()
	c.Del("Date")
	return c
}

// newUpstream serves emu on loopback and returns its host:port.
func newUpstream(t *testing.T, emu *emulator.Server) string {
	t.Helper()
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { remember(emu.Secrets()...) })
	return strings.TrimPrefix(srv.URL, "http://")
}

// replicaOptions configure startReplicaWith.
type replicaOptions struct {
	admin  string   // the admin endpoint's address; "": admin off
	module string   // extra openrouter_keys subdirectives
	env    []string // extra environment, e.g. for {env.*} placeholders
}

// startReplicaWith runs a Caddy gateway in front of upstream, as a
// separate process (the test binary run as Caddy), that shares storage in
// storageDir.
func startReplicaWith(t *testing.T, name, upstream, storageDir string, o replicaOptions) *replica {
	t.Helper()
	port := freePort(t)
	dir := filepath.Dir(logPath) // swept for key material after the suite
	admin := "admin off"
	if o.admin != "" {
		admin = "admin " + o.admin
	}
	config := fmt.Sprintf(`{
	%s
	auto_https off
	persist_config off
	storage file_system %q
	log {
		output file %q
		level DEBUG
	}
}

http://127.0.0.1:%d {
	openrouter_keys {
		upstream http://%s/api/v1
		shared_storage
		%s
	}
	reverse_proxy %s
}
`, admin, storageDir, filepath.Join(dir, name+".log"), port, upstream, o.module, upstream)
	file := filepath.Join(t.TempDir(), name+".Caddyfile")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "run", "--config", file, "--adapter", "caddyfile")
	home := t.TempDir()
	cmd.Env = append(os.Environ(), runCaddyEnv+"=1", "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
	cmd.Env = append(cmd.Env, o.env...)
	out, err := os.Create(filepath.Join(t.TempDir(), name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &replica{base: fmt.Sprintf("http://127.0.0.1:%d/api/v1", port), cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return r
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("replica %s did not start:\n%s", name, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrapeURL reads a Prometheus text exposition.
func scrapeURL(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// samples are the samples of an exposition whose series start with
// prefix, as "name{labels}" (as exposed: labels sorted by name) -> value.
func samples(t *testing.T, exposition, prefix string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("unreadable sample %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("unreadable sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func client(base, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(base+"/"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
	}
}

func chat(base, key string) (*openai.ChatCompletion, error) {
	c := client(base, key)
	return c.Chat.Completions.New(context.Background(), chatParams("openai/gpt-4o"))
}

// streamChat streams a completion and returns its text.
func streamChat(base, key string) (string, error) {
	c := client(base, key)
	s := c.Chat.Completions.NewStreaming(context.Background(), chatParams("openai/gpt-4o"))
	defer s.Close()
	var text strings.Builder
	for s.Next() {
		for _, ch := range s.Current().Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
	return text.String(), s.Err()
}

// keyError is a 401 as the SDK reports it, with what the gateway adds.
type keyError struct {
	status    int
	message   string
	reason    string
	matchedBy string
	expiresAt string
	header    string // X-OpenRouter-Key-Status
	edge      bool   // X-OpenRouter-Keys-Answer: edge
}

func asKeyError(t *testing.T, err error) keyError {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("want an API error, got %v", err)
	}
	var inner struct {
		Metadata struct {
			Reason    string `json:"reason"`
			MatchedBy string `json:"matched_by"`
			ExpiresAt string `json:"expires_at"`
		} `json:"metadata"`
	}
	recordResponse([]byte(apiErr.RawJSON()))
	_ = json.Unmarshal([]byte(apiErr.RawJSON()), &inner)
	return keyError{
		status: apiErr.StatusCode, message: apiErr.Message,
		reason: inner.Metadata.Reason, matchedBy: inner.Metadata.MatchedBy, expiresAt: inner.Metadata.ExpiresAt,
		header: apiErr.Response.Header.Get("X-OpenRouter-Key-Status"),
		edge:   apiErr.Response.Header.Get("X-OpenRouter-Keys-Answer") == "edge",
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sleepUntil waits until t, and a little past it.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t) + 100*time.Millisecond) }

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if strings.Join(v, "\x00") != strings.Join(b[k], "\x00") {
			return false
		}
	}
	return true
}

// caddyCommand runs the test binary as Caddy with args.
func caddyCommand(t *testing.T, stdin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), append(env, runCaddyEnv+"=1", "HOME="+t.TempDir())...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	recordResponse(out.Bytes()) // swept for key material after the suite
	recordResponse(errOut.Bytes())
	return out.String(), errOut.String(), code
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func scrape(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://localhost:2999/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metric is the value of one sample on Caddy's admin /metrics, 0 if absent.
func metric(t *testing.T, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(scrape(t), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// percentile is the p-th percentile of ds (sorted in place).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[min(len(ds)-1, int(p*float64(len(ds))))]
}

// envInt reads a size from the environment, so that CI runs the long
// checks reduced and a person can run them in full.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// unexplained reads caddy_openrouter_keys_unexplained_total by class.
func unexplained(t *testing.T, class string) float64 {
	t.Helper()
	return metric(t, `caddy_openrouter_keys_unexplained_total{class="`+class+`"}`)
}

func randomKey() string {
	var b [32]byte
	rand.Read(b[:])
	return "sk-or-v1-" + hex.EncodeToString(b[:])
}

// h2cTransport speaks HTTP/2 without TLS (prior knowledge) and leaves
// bodies compressed as sent.
func h2cTransport() *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: &p, DisableCompression: true}
}

// wire is one response as a client read it: the body as far as it came,
// the trailers, and the error that ended the body, if any.
type wire struct {
	proto   string
	status  int
	header  http.Header
	body    []byte
	trailer http.Header
	err     error
}

// fetch sends a request over rt and reads the response to its end, or to
// the error that cuts it short.
func fetch(t *testing.T, rt http.RoundTripper, method, url, key, body string, header ...string) wire {
	t.Helper()
	return fetchRecorded(t, rt, recordResponse, method, url, key, body, header...)
}

// fetchRecorded is fetch with the body handed to record, for the sweep.
func fetchRecorded(t *testing.T, rt http.RoundTripper, record func([]byte), method, url, key, body string, header ...string) wire {
	t.Helper()
	resp, err := rt.RoundTrip(newRequest(t, method, url, key, body, header...))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	record(b)
	return wire{proto: resp.Proto, status: resp.StatusCode, header: comparableHeader(resp.Header), body: b, trailer: resp.Trailer, err: err}
}

// sameWire reports how two responses differ, or "".
func sameWire(gw, pl wire) string {
	var diffs []string
	if gw.proto != pl.proto {
		diffs = append(diffs, fmt.Sprintf("protocol %s, plain %s", gw.proto, pl.proto))
	}
	if gw.status != pl.status {
		diffs = append(diffs, fmt.Sprintf("status %d, plain %d", gw.status, pl.status))
	}
	if !equalHeader(gw.header, pl.header) {
		diffs = append(diffs, fmt.Sprintf("header\n  gateway %v\n  plain   %v", gw.header, pl.header))
	}
	if !bytes.Equal(gw.body, pl.body) {
		diffs = append(diffs, fmt.Sprintf("body\n  gateway %q\n  plain   %q", gw.body, pl.body))
	}
	if !equalHeader(gw.trailer, pl.trailer) {
		diffs = append(diffs, fmt.Sprintf("trailer\n  gateway %v\n  plain   %v", gw.trailer, pl.trailer))
	}
	if (gw.err == nil) != (pl.err == nil) {
		diffs = append(diffs, fmt.Sprintf("end of body: gateway %v, plain %v", gw.err, pl.err))
	}
	return strings.Join(diffs, "; ")
}

// metricSum is the sum of the samples on Caddy's admin /metrics whose
// line starts with prefix (a metric name with the opening brace: every
// label value).
func metricSum(t *testing.T, prefix string) float64 {
	t.Helper()
	sum := 0.0
	for _, line := range strings.Split(scrape(t), "\n") {
		if strings.HasPrefix(line, prefix) {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			sum += v
		}
	}
	return sum
}
