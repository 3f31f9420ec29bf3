package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "refresh tests/keycheck.png from the browser test")

var keycheckURL = strings.TrimSuffix(gatewayBase, "/api/v1") + "/keycheck"

type checkReport struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Key     *struct {
		Label          string     `json:"label"`
		LimitRemaining *float64   `json:"limit_remaining"`
		ExpiresAt      *time.Time `json:"expires_at"`
	} `json:"key"`
	Credits *struct {
		Remaining float64 `json:"remaining"`
	} `json:"credits"`
	CreditsUnavailable string `json:"credits_unavailable"`
	Models             *struct {
		Count int `json:"count"`
	} `json:"models"`
	Advice []string `json:"advice"`
}

func TestKeyCheckThroughCaddy(t *testing.T) {
	e := start(t, options{management: true})
	past := time.Now().Add(-time.Hour)
	limit := 10.0
	valid := e.emu.NewKey(emulator.KeyOptions{Limit: &limit})
	expired := e.emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
	disabled := e.emu.NewKey(emulator.KeyOptions{Disabled: true})
	deleted := e.emu.NewKey(emulator.KeyOptions{})
	e.emu.Delete(deleted)
	management := e.emu.NewKey(emulator.KeyOptions{Management: true})
	for key, want := range map[string]string{
		valid: "valid", expired: "key_expired", disabled: "key_disabled", deleted: "key_not_found",
		management: "management_key", "sk-or-v1-0123": "key_malformed",
	} {
		remember(key)
		b, _ := json.Marshal(map[string]string{"key": key})
		resp, body := raw(t, "POST", keycheckURL, "", string(b))
		var rep checkReport
		if err := json.Unmarshal(body, &rep); err != nil || resp.StatusCode != 200 || rep.Status != want || rep.Models == nil || len(rep.Advice) == 0 {
			t.Errorf("%s: %d %s", want, resp.StatusCode, body)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: cacheable report", want)
		}
	}
	// The gateway's own traffic is untouched by the check.
	if _, err := chat(gatewayBase, valid); err != nil {
		t.Fatal(err)
	}

	// A key in the URL is refused and stays out of the access log.
	resp, _ := raw(t, "GET", keycheckURL+"?key="+valid, "", "")
	if resp.StatusCode != 400 {
		t.Errorf("key in the URL: %d", resp.StatusCode)
	}
	time.Sleep(100 * time.Millisecond)
	logs, _ := os.ReadFile(logPath)
	if bytes.Contains(logs, []byte("/keycheck?key=")) {
		t.Error("the access log has the URL with the key")
	}
	if !bytes.Contains(logs, []byte(`"uri":"/keycheck"`)) {
		t.Error("the access log has no key check entry at all: the check above proves nothing")
	}
}

// caddyCommand runs the test binary as Caddy with args.
func caddyCommand(t *testing.T, stdin string, env []string, args ...string) (string, int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), append(env, runCaddyEnv+"=1", "HOME="+t.TempDir())...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err = cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	recordResponse(out.Bytes()) // swept for key material after the suite
	recordResponse(stderr.Bytes())
	return out.String(), code
}

func TestKeyCheckCommand(t *testing.T) {
	emu := emulator.New()
	upstream := "http://" + newUpstream(t, emu) + "/api/v1"
	valid := emu.NewKey(emulator.KeyOptions{})
	past := time.Now().Add(-time.Hour)
	expired := emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
	mgmt := emu.NewKey(emulator.KeyOptions{Management: true})
	clean := []string{"OPENROUTER_API_KEY=", "OPENROUTER_MANAGEMENT_KEY="}

	out, code := caddyCommand(t, "", append(clean, "OPENROUTER_API_KEY="+valid), "openrouter-keycheck", "--json", "--upstream", upstream)
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || rep.Status != "valid" {
		t.Errorf("valid key, --json: exit %d, %s", code, out)
	}
	out, code = caddyCommand(t, expired+"\n", append(clean, "OPENROUTER_MANAGEMENT_KEY="+mgmt), "openrouter-keycheck", "--upstream", upstream)
	if code != 1 || !strings.Contains(out, "Status:  key_expired") || !strings.Contains(out, "Key expired.") {
		t.Errorf("expired key on stdin, text: exit %d\n%s", code, out)
	}
	out, code = caddyCommand(t, expired+"\n", clean, "openrouter-keycheck", "--upstream", upstream)
	if code != 1 || !strings.Contains(out, "Status:  unknown") {
		t.Errorf("expired key without management key: exit %d\n%s", code, out)
	}
	if _, code = caddyCommand(t, "", clean, "openrouter-keycheck", "--upstream", upstream); code != 2 {
		t.Errorf("no key: exit %d", code)
	}
	if _, code = caddyCommand(t, valid+"\n", clean, "openrouter-keycheck", "--upstream", "http://127.0.0.1:1/api/v1", "--timeout", "2s"); code != 2 {
		t.Errorf("unreachable upstream: exit %d", code)
	}
}

func chromiumPath() string {
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return ""
}

func TestKeyCheckPageInBrowser(t *testing.T) {
	chrome := chromiumPath()
	if chrome == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed, and CI must run the browser test (.ci/run installs it)")
		}
		t.Skip("chromium is not installed (apt-get install chromium); skipping the browser test")
	}
	e := start(t, options{management: true})
	past := time.Now().Add(-2 * time.Hour)
	future := time.Now().Add(20 * 24 * time.Hour)
	limit := 10.0
	expired := e.emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
	valid := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, ExpiresAt: &future})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.WindowSize(1000, 1200))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	check := func(key string) (status, result string) {
		t.Helper()
		err := chromedp.Do(ctx,
			chromedp.Navigate(keycheckURL),
			chromedp.WaitVisible(chromedp.CSS(`input[name="key"]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name="key"]`), key),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#status`)),
		)
		if err == nil {
			status, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#status`)))
		}
		if err == nil {
			result, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#result`)))
		}
		if err != nil {
			t.Fatalf("browser: %v", err)
		}
		if strings.Contains(result, key) {
			t.Error("the page shows the key")
		}
		return status, result
	}

	status, result := check(expired)
	if status != "key_expired" || !strings.Contains(result, "Key expired.") || !strings.Contains(result, "Create a new key") {
		t.Errorf("expired key: %q\n%s", status, result)
	}
	status, result = check(valid)
	if status != "Valid" || !strings.Contains(result, "Limit remaining") || !strings.Contains(result, "Expires at") || !strings.Contains(result, future.UTC().Format("2006-01-02")) {
		t.Errorf("valid key: %q\n%s", status, result)
	}
	if *updateScreenshot {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "keycheck.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
