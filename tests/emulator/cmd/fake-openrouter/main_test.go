package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// The command prints credentials a user can paste into a shell, each
// behaving as its state says, and stops when interrupted.
func TestFakeOpenRouter(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, "127.0.0.1:0", pw); pw.Close() }()

	// Read up to the hint that starts the gateway; drain the rest.
	var printed []string
	scanner := bufio.NewScanner(pr)
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		printed = append(printed, scanner.Text())
		if strings.Contains(scanner.Text(), "go run ./cmd/caddy run --config Caddyfile.example") {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	output := strings.Join(printed, "\n")
	t.Logf("printed:\n%s", output)

	// Every export line means the same to a shell as to this test.
	exports := map[string]string{}
	exportLine := regexp.MustCompile(`^export ([A-Z_]+)=(\S+)(  # .+)?$`)
	var script strings.Builder
	for _, line := range printed {
		if m := exportLine.FindStringSubmatch(line); m != nil {
			exports[m[1]] = m[2]
			script.WriteString(line + "\n")
		} else if strings.HasPrefix(line, "export ") {
			t.Errorf("malformed export line %q", line)
		}
	}
	script.WriteString("env\n")
	env, err := exec.Command("sh", "-c", script.String()).Output()
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	for name, value := range exports {
		if !strings.Contains("\n"+string(env), "\n"+name+"="+value+"\n") {
			t.Errorf("the shell does not read %s as printed", name)
		}
	}

	origin := exports["OPENROUTER_ORIGIN"]
	if !regexp.MustCompile(`^http://127\.0\.0\.1:\d+$`).MatchString(origin) {
		t.Fatalf("OPENROUTER_ORIGIN %q", origin)
	}
	gateway := exports["OPENROUTER_MANAGEMENT_KEY"]
	hint := printed[len(printed)-1]
	if !strings.HasPrefix(hint, "OPENROUTER_ORIGIN="+origin+" OPENROUTER_MANAGEMENT_KEY="+gateway+" go run ./cmd/caddy") {
		t.Errorf("hint %q", hint)
	}
	base := origin + "/api/v1"

	keyPattern := regexp.MustCompile(`^sk-or-v1-[0-9a-f]{64}$`)
	jwtPattern := regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`)
	for _, c := range []struct {
		env       string
		jwt       bool
		inference int  // chat completion status
		keyInfo   bool // GET /key answers 200
	}{
		{"VALID_KEY", false, 200, true},
		{"EXPIRING_KEY", false, 200, true},
		{"EXPIRED_KEY", false, 401, false},
		{"DISABLED_KEY", false, 401, false},
		{"DELETED_KEY", false, 401, false},
		{"MANAGEMENT_KEY", false, 401, true},
		{"VALID_JWT", true, 200, true},
		{"EXPIRED_JWT", true, 401, false},
		{"OPENROUTER_MANAGEMENT_KEY", false, 401, true},
		{"CAPPED_KEY", false, 403, true},
		{"NO_BALANCE_KEY", false, 402, true},
		{"FREE_USED_KEY", false, 200, true},
		{"ACCESS_TOKEN", true, 200, true},
		{"UNSCOPED_ACCESS_TOKEN", true, 401, true},
	} {
		cred := exports[c.env]
		if pattern := map[bool]*regexp.Regexp{false: keyPattern, true: jwtPattern}[c.jwt]; !pattern.MatchString(cred) {
			t.Errorf("%s=%q is not well-formed", c.env, cred)
			continue
		}
		status, msg, _ := get(t, "POST", base+"/chat/completions", cred, `{"model":"openai/gpt-4o","messages":[{"role":"user","content":"Hi"}]}`)
		if status != c.inference || (status == 401 && msg != "User not found.") {
			t.Errorf("%s: chat %d %q, want %d", c.env, status, msg, c.inference)
		}
		status, msg, _ = get(t, "GET", base+"/key", cred, "")
		if c.keyInfo != (status == 200) || (status != 200 && (status != 401 || msg != "User not found.")) {
			t.Errorf("%s: GET /key %d %q", c.env, status, msg)
		}
	}

	// The limited keys fail as the facts sheet says, and GET /key agrees.
	for _, c := range []struct {
		env, model string
		kind       openrouter.Kind
	}{
		{"CAPPED_KEY", "openai/gpt-4o", openrouter.KindKeyCapSpent},
		{"NO_BALANCE_KEY", "openai/gpt-4o", openrouter.KindAccountBalance},
		{"FREE_USED_KEY", emulator.FreeModel, openrouter.KindFreeDaily},
	} {
		status, _, body := get(t, "POST", base+"/chat/completions", exports[c.env], `{"model":"`+c.model+`","messages":[{"role":"user","content":"Hi"}]}`)
		if f := openrouter.Recognise(status, body, http.Header{}); f.Kind != c.kind {
			t.Errorf("%s: %d %s is %v, want %v", c.env, status, body, f.Kind, c.kind)
		}
	}
	var limits struct {
		Data struct {
			LimitRemaining *float64                `json:"limit_remaining"`
			LimitReset     *string                 `json:"limit_reset"`
			Free           struct{ Remaining int } `json:"free_model_daily_requests"`
		} `json:"data"`
	}
	_, _, body := get(t, "GET", base+"/key", exports["CAPPED_KEY"], "")
	if err := json.Unmarshal(body, &limits); err != nil || limits.Data.LimitRemaining == nil || *limits.Data.LimitRemaining != 0 ||
		limits.Data.LimitReset == nil || *limits.Data.LimitReset != "daily" {
		t.Errorf("CAPPED_KEY's GET /key: %s", body)
	}
	_, _, body = get(t, "GET", base+"/key", exports["FREE_USED_KEY"], "")
	limits.Data.Free.Remaining = -1
	if err := json.Unmarshal(body, &limits); err != nil || limits.Data.Free.Remaining != 0 {
		t.Errorf("FREE_USED_KEY's GET /key: %s", body)
	}

	// An identity provider's own token is no credential of OpenRouter's.
	if status, msg, _ := get(t, "POST", base+"/chat/completions", exports["FOREIGN_JWT"], `{}`); status != 401 || msg != "Missing Authentication header" {
		t.Errorf("FOREIGN_JWT: %d %q", status, msg)
	}

	// The expiring key says when it expires; the gateway's management key
	// lists every key but the deleted one.
	_, _, body = get(t, "GET", base+"/key", exports["EXPIRING_KEY"], "")
	var info struct {
		Data struct {
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &info); err != nil || time.Until(info.Data.ExpiresAt) < time.Minute || time.Until(info.Data.ExpiresAt) > 2*time.Minute {
		t.Errorf("EXPIRING_KEY expires at %v (%v)", info.Data.ExpiresAt, err)
	}
	status, _, body := get(t, "GET", base+"/keys?include_disabled=true", gateway, "")
	var list struct {
		Data []struct {
			Label    string `json:"label"`
			Disabled bool   `json:"disabled"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); status != 200 || err != nil {
		t.Fatalf("GET /keys: %d %v", status, err)
	}
	listed := map[string]bool{}
	for _, rec := range list.Data {
		listed[rec.Label] = rec.Disabled
	}
	for _, env := range []string{"VALID_KEY", "EXPIRING_KEY", "EXPIRED_KEY", "DISABLED_KEY", "MANAGEMENT_KEY", "OPENROUTER_MANAGEMENT_KEY", "DELETED_KEY"} {
		disabled, ok := listed[openrouter.Label(exports[env])]
		if ok != (env != "DELETED_KEY") || disabled != (env == "DISABLED_KEY") {
			t.Errorf("%s: listed %v, disabled %v", env, ok, disabled)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after an interrupt: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop when interrupted")
	}
	if conn, err := net.Dial("tcp", strings.TrimPrefix(origin, "http://")); err == nil {
		conn.Close()
		t.Errorf("still listening after the interrupt")
	}
}

// An address in use is an error, not a hang.
func TestFakeOpenRouterAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := run(context.Background(), ln.Addr().String(), io.Discard); err == nil {
		t.Errorf("run on a taken address returned nil")
	}
}

func get(t *testing.T, method, url, bearer, body string) (status int, message string, raw []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ = io.ReadAll(resp.Body)
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e.Error.Message, raw
}
