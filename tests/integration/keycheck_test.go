package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/chromedp/chromedp"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "refresh tests/keycheck-{valid,expired,malformed}.png from the browser test")

var keycheckURL = strings.TrimSuffix(gatewayBase, "/api/v1") + "/keycheck"

type checkReport struct {
	Status   string `json:"status"`
	Headline string `json:"headline"`
	Message  string `json:"message"`
	Key      *struct {
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
		// Advice only where there is something to do.
		if err := json.Unmarshal(body, &rep); err != nil || resp.StatusCode != 200 || rep.Status != want || rep.Headline == "" ||
			rep.Models == nil || rep.Advice == nil || (len(rep.Advice) == 0) != (want == "valid") {
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

	// A key anywhere in the URL is refused and stays out of the access log,
	// whatever the separator or encoding.
	encoded := strings.NewReplacer("-", "%2D", "s", "%73").Replace(valid)
	for _, query := range []string{"?key=" + valid, "?x=1;key=" + valid, "?" + valid, "?k=" + encoded, "?token=Bearer+" + valid} {
		resp, body := raw(t, "GET", keycheckURL+query, "", "")
		if resp.StatusCode != 400 || bytes.Contains(body, []byte(valid)) {
			t.Errorf("key in the URL (%s...): %d", query[:min(len(query), 12)], resp.StatusCode)
		}
	}
	raw(t, "GET", keycheckURL+"?lang=en", "", "") // a URL without a key is logged
	time.Sleep(100 * time.Millisecond)
	logs, _ := os.ReadFile(logPath)
	for _, leak := range []string{"/keycheck?key=", "/keycheck?x=1", valid[9:], "%2Dor%2Dv1"} {
		if bytes.Contains(logs, []byte(leak)) {
			t.Errorf("the access log has %q", leak)
		}
	}
	if !bytes.Contains(logs, []byte(`"uri":"/keycheck?lang=en"`)) {
		t.Error("the access log has no key check entry at all: the check above proves nothing")
	}
}

// TestKeyCheckRateLimitThroughCaddy: the limit counts the client as Caddy
// sees it. A client cannot dodge it with X-Forwarded-For unless the server
// trusts its proxy (trusted_proxies), and then every address of one IPv6
// /64 shares one bucket.
func TestKeyCheckRateLimitThroughCaddy(t *testing.T) {
	emu := emulator.New()
	upstream := newUpstream(t, emu)
	tester := caddytest.NewTester(t)
	loadConfig(t, tester, fmt.Sprintf(`{
	admin localhost:2999
	http_port %[1]d
	https_port 9443
	auto_https off
	skip_install_trust
	log {
		output file %[3]q
		level DEBUG
	}
	servers :%[2]d {
		trusted_proxies static 127.0.0.1/32 ::1/128
	}
}

http://localhost:%[1]d, http://localhost:%[2]d {
	log
	handle /keycheck {
		openrouter_keycheck {
			upstream http://%[4]s/api/v1
			lookup_timeout 2s
			rate_limit 3 1m
		}
	}
}
`, gatewayPort, plainPort, logPath, upstream))

	direct := fmt.Sprintf("http://localhost:%d/keycheck", gatewayPort)
	behindProxy := fmt.Sprintf("http://localhost:%d/keycheck", plainPort)
	check := func(url string, header ...string) int {
		t.Helper()
		resp, body := raw(t, "POST", url, "", `{"key":"sk-or-v1-0123"}`, header...)
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "20" {
			t.Errorf("429 with Retry-After %q, want 20 (one token every 20s)", resp.Header.Get("Retry-After"))
		}
		if resp.StatusCode != 200 && resp.StatusCode != 429 {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
		return resp.StatusCode
	}

	// Not behind a trusted proxy: forged headers change nothing.
	for i := range 3 {
		if code := check(direct, "X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i), "X-Real-IP", fmt.Sprintf("198.51.100.%d", i)); code != 200 {
			t.Fatalf("request %d: %d", i+1, code)
		}
	}
	if code := check(direct, "X-Forwarded-For", "203.0.113.99", "X-Real-IP", "198.51.100.99", "Forwarded", "for=192.0.2.99"); code != 429 {
		t.Errorf("a 4th request with a forged X-Forwarded-For: %d, want 429", code)
	}

	// Behind a trusted proxy: X-Forwarded-For is the client.
	for i := range 3 {
		if code := check(behindProxy, "X-Forwarded-For", "203.0.113.1"); code != 200 {
			t.Fatalf("client 203.0.113.1, request %d: %d", i+1, code)
		}
	}
	if code := check(behindProxy, "X-Forwarded-For", "203.0.113.1"); code != 429 {
		t.Errorf("client 203.0.113.1, 4th request: %d, want 429", code)
	}
	if code := check(behindProxy, "X-Forwarded-For", "203.0.113.2"); code != 200 {
		t.Errorf("client 203.0.113.2 was limited with 203.0.113.1: %d", code)
	}
	for i := range 3 {
		if code := check(behindProxy, "X-Forwarded-For", fmt.Sprintf("2001:db8:7:8::%x", i+1)); code != 200 {
			t.Fatalf("IPv6 client, request %d: %d", i+1, code)
		}
	}
	if code := check(behindProxy, "X-Forwarded-For", "2001:db8:7:8:ffff:ffff:ffff:fffe"); code != 429 {
		t.Errorf("a 4th address of the same /64: %d, want 429", code)
	}
	if code := check(behindProxy, "X-Forwarded-For", "2001:db8:7:9::1"); code != 200 {
		t.Errorf("the next /64 was limited: %d", code)
	}
}

func TestKeyCheckCommand(t *testing.T) {
	emu := emulator.New()
	upstream := "http://" + newUpstream(t, emu) + "/api/v1"
	valid := emu.NewKey(emulator.KeyOptions{})
	past := time.Now().Add(-time.Hour)
	expired := emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
	mgmt := emu.NewKey(emulator.KeyOptions{Management: true})
	clean := []string{"OPENROUTER_API_KEY=", "OPENROUTER_MANAGEMENT_KEY="}

	// Normal results: the report on stdout, not a line on stderr, and the
	// exit status says which.
	out, errOut, code := caddyCommand(t, "", append(clean, "OPENROUTER_API_KEY="+valid), "openrouter-keycheck", "--json", "--upstream", upstream)
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || rep.Status != "valid" || errOut != "" {
		t.Errorf("valid key, --json: exit %d, %s\nstderr: %s", code, out, errOut)
	}
	out, errOut, code = caddyCommand(t, expired+"\n", append(clean, "OPENROUTER_MANAGEMENT_KEY="+mgmt), "openrouter-keycheck", "--upstream", upstream)
	if code != 1 || errOut != "" || !strings.HasPrefix(out, "Key expired (key_expired)\n") || !strings.Contains(out, "What to do:\n  1. Create a new key") {
		t.Errorf("expired key on stdin, text: exit %d\n%s\nstderr: %s", code, out, errOut)
	}
	out, errOut, code = caddyCommand(t, expired+"\n", clean, "openrouter-keycheck", "--upstream", upstream)
	if code != 1 || errOut != "" || !strings.HasPrefix(out, "Key refused (unknown)\n") {
		t.Errorf("expired key without management key: exit %d\n%s\nstderr: %s", code, out, errOut)
	}

	// Usage and network errors: exit 2, the reason in words on stderr.
	for _, c := range []struct {
		name, stdin string
		args        []string
		say         string
	}{
		{"key as an argument", "", []string{valid}, "refusing a key given as an argument: it lands in shell history and in the process list"},
		{"unknown flag", valid + "\n", []string{"--key", "x"}, "unknown flag: --key"},
		{"no key", "", nil, "no key: set OPENROUTER_API_KEY"},
		{"unreachable upstream", valid + "\n", []string{"--upstream", "http://127.0.0.1:1/api/v1", "--timeout", "2s"}, "OpenRouter could not be reached"},
	} {
		out, errOut, code = caddyCommand(t, c.stdin, clean, append([]string{"openrouter-keycheck"}, c.args...)...)
		if code != 2 || out != "" || !strings.Contains(errOut, c.say) || strings.Contains(errOut, valid) || strings.Contains(errOut, `"level"`) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", c.name, code, out, errOut)
		}
	}

	// Its own help: what it does, where the key comes from, examples, exit
	// statuses; not Caddy's.
	out, errOut, code = caddyCommand(t, "", clean, "openrouter-keycheck", "--help")
	for _, want := range []string{"Usage:\n  caddy openrouter-keycheck [--json]", "Exit status:", "Examples:", "OPENROUTER_API_KEY=... caddy openrouter-keycheck", "--upstream string"} {
		if !strings.Contains(out, want) {
			t.Errorf("help has no %q", want)
		}
	}
	if code != 0 || errOut != "" || strings.Contains(out, "caddyserver.com") {
		t.Errorf("help: exit %d, stderr %q\n%s", code, errOut, out)
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

// pageState is what a person sees and what a screen reader is told.
type pageState struct {
	Headline  string `json:"headline"`
	Code      string `json:"code"`
	Focused   string `json:"focused"`
	Live      string `json:"live"`
	Result    string `json:"result"` // the live region's text
	TimeTitle string `json:"timeTitle"`
	TimeText  string `json:"timeText"`
	Invalid   string `json:"invalid"`
}

const pageStateJS = `(() => {
  const r = document.getElementById("result"), h = document.getElementById("headline"),
        c = r.querySelector(".reason"), tm = r.querySelector("time"), a = document.activeElement;
  return {headline: h ? h.textContent : "", code: c ? c.textContent : "", focused: a ? a.id : "",
    live: r.getAttribute("aria-live") || "", result: r.innerText,
    timeTitle: tm ? tm.title : "", timeText: tm ? tm.textContent : "",
    invalid: document.getElementById("key").getAttribute("aria-invalid") || ""};
})()`

// lowContrastJS lists the text on the page whose colour has a contrast
// below 4.5:1 (WCAG AA) with the background it is drawn on.
const lowContrastJS = `(() => {
  const rgb = s => s.match(/[\d.]+/g).map(Number);
  const lum = c => c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
    .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const st = getComputedStyle(el);
    if (st.display === "none" || st.visibility === "hidden") continue;
    const [hi, lo] = [lum(rgb(st.color)), lum(background(el))].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    if (ratio < 4.5) low.push(el.tagName + " '" + el.textContent.trim().slice(0, 30) + "': " + ratio.toFixed(2));
  }
  return low;
})()`

func TestKeyCheckPageInBrowser(t *testing.T) {
	chrome := chromiumPath()
	if chrome == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed, and CI must run the browser test (.ci/run installs it)")
		}
		t.Skip("chromium is not installed (apt-get install chromium); skipping the browser test")
	}
	e := start(t, options{management: true})
	past := time.Now().Add(-2*24*time.Hour - time.Hour)
	future := time.Now().Add(20*24*time.Hour + time.Hour)
	limit := 10.0
	expired := e.emu.NewKey(emulator.KeyOptions{Name: "Nightly batch", ExpiresAt: &past})
	valid := e.emu.NewKey(emulator.KeyOptions{Name: "CI deploy", Limit: &limit, ExpiresAt: &future})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("lang", "en-US"), chromedp.Flag("hide-scrollbars", true), chromedp.WindowSize(860, 1000))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	state := func() pageState {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](pageStateJS))
		if err != nil {
			t.Fatalf("browser: %v", err)
		}
		return s
	}
	screenshot := func(name string) {
		t.Helper()
		if !*updateScreenshot {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(`main`)))
		if err == nil {
			err = os.WriteFile(filepath.Join("..", "keycheck-"+name+".png"), png, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// check types the key and presses Enter, as a keyboard user would, and
	// waits until focus is on the result's heading.
	check := func(key string) pageState {
		t.Helper()
		err := chromedp.Do(ctx,
			chromedp.Navigate(keycheckURL),
			chromedp.WaitVisible(chromedp.CSS(`label[for="key"]`)),
			chromedp.Focus(chromedp.CSS(`#key`)),
			chromedp.SendKeys(chromedp.CSS(`#key`), key),
			chromedp.KeyEvent("\r"),
		)
		if err == nil {
			_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.activeElement && document.activeElement.id === "status"`, chromedp.WithPollingTimeout(20*time.Second)))
		}
		if err != nil {
			t.Fatalf("browser: %v", err)
		}
		s := state()
		if strings.Contains(s.Result, key) {
			t.Error("the page shows the key")
		}
		if s.Live != "polite" || !strings.Contains(s.Result, s.Headline) {
			t.Errorf("the live region (aria-live %q) does not say the headline %q: %q", s.Live, s.Headline, s.Result)
		}
		if low, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](lowContrastJS)); err != nil || len(low) > 0 {
			t.Errorf("text below 4.5:1 contrast: %v %v", low, err)
		}
		return s
	}

	// An empty field: the page says so, and focus stays on the field.
	err := chromedp.Do(ctx, chromedp.Navigate(keycheckURL), chromedp.Click(chromedp.CSS(`#submit`)))
	if err == nil {
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("result").innerText.includes("Paste a key")`, chromedp.WithPollingTimeout(10*time.Second)))
	}
	if err != nil {
		t.Fatalf("empty submit: %v", err)
	}
	if s := state(); !strings.Contains(s.Result, "No key") || !strings.Contains(s.Result, `Paste a key into the field, then choose "Check key".`) || s.Focused != "key" || s.Invalid != "true" {
		t.Errorf("empty submit: %+v", s)
	}

	s := check(valid)
	if s.Headline != "Key works" || s.Code != "valid" ||
		!strings.Contains(s.Result, "CI deploy") || !strings.Contains(s.Result, "$10.00") || !strings.Contains(s.Result, "(in 20 days)") ||
		!strings.Contains(s.Result, "no limit per key") || strings.Contains(s.Result, "unlimited") || strings.Contains(s.Result, "What to do") {
		t.Errorf("valid key: %+v", s)
	}
	// Dates in the reader's locale, with the UTC time on hover.
	if !strings.Contains(s.TimeTitle, future.UTC().Format("2006-01-02 15:04")) || !strings.HasSuffix(s.TimeTitle, " UTC") || s.TimeText == s.TimeTitle || s.TimeText == "" {
		t.Errorf("expiry date: shown %q, title %q", s.TimeText, s.TimeTitle)
	}
	screenshot("valid")
	// The list of common failures is folded, and opens as any details
	// element does: the 403s say what moderation and guardrails are.
	hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!document.getElementById("common").innerText.includes("Refused by moderation")`))
	if err == nil {
		_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`[...document.querySelectorAll("#common summary")].find(s => s.textContent.startsWith("Forbidden (403)")).click() === undefined`))
	}
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	opened, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("common").innerText`))
	if err != nil || !hidden || !strings.Contains(opened, "Refused by moderation") || !strings.Contains(opened, "Blocked by a guardrail") {
		t.Errorf("the folded list: hidden at first %v, opened: %.300q %v", hidden, opened, err)
	}
	if low, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](lowContrastJS)); err != nil || len(low) > 0 {
		t.Errorf("text below 4.5:1 contrast in the opened list: %v %v", low, err)
	}

	s = check(expired)
	if s.Headline != "Key expired" || s.Code != "key_expired" || !strings.Contains(s.Result, "Create a new key") ||
		!strings.Contains(s.Result, "(2 days ago)") || !strings.Contains(s.Result, "Nightly batch") || !strings.HasSuffix(s.TimeTitle, " UTC") {
		t.Errorf("expired key: %+v", s)
	}
	screenshot("expired")

	s = check("sk-or-v1-0123456789abcdef")
	if s.Headline != "Key malformed" || s.Code != "key_malformed" || !strings.Contains(s.Result, "64 lowercase hexadecimal digits") {
		t.Errorf("malformed key: %+v", s)
	}
	screenshot("malformed")
}

// A key whose daily limit is spent is "Key limit reached" on the page and
// in JSON, with what it spent of what and when it resets, after the
// gateway met its 403 as well as before; its record hash, which that 403
// carries, is nowhere in the check's answers.
func TestKeyCheckCappedKeyThroughCaddy(t *testing.T) {
	e := start(t, options{management: true})
	limit := 5.0
	capped := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "daily", Usage: 5})
	free := e.emu.NewKey(emulator.KeyOptions{Account: e.emu.NewAccount(emulator.AccountOptions{Credits: 5, FreeRequestsUsed: 50})})
	remember(capped, free)
	check := func(key, accept string) (int, []byte) {
		b, _ := json.Marshal(map[string]string{"key": key})
		form := []string{"Accept", accept}
		if accept == "text/html" { // as the page's form posts it
			b = []byte("key=" + url.QueryEscape(key))
			form = append(form, "Content-Type", "application/x-www-form-urlencoded")
		}
		resp, body := raw(t, "POST", keycheckURL, "", string(b), form...)
		if bytes.Contains(body, []byte(recordHashOf(key))) {
			t.Errorf("the key check's answer has the key's record hash")
		}
		return resp.StatusCode, body
	}
	midnight := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	for _, after403 := range []bool{false, true} {
		if after403 {
			limitChat(t, capped, "openai/gpt-4o", 0)
		}
		status, body := check(capped, "application/json")
		var rep struct {
			checkReport
			Key struct {
				ResetsAt *time.Time `json:"resets_at"`
			} `json:"key"`
		}
		if err := json.Unmarshal(body, &rep); err != nil || status != 200 || rep.Status != "key_limit_reached" || rep.Headline != "Key limit reached" ||
			!strings.Contains(rep.Message, "$5.00 of $5.00 spent") || rep.Key.ResetsAt == nil || !rep.Key.ResetsAt.Equal(midnight) || len(rep.Advice) == 0 {
			t.Errorf("after the gateway's 403 %v: %d %s", after403, status, body)
		}
		status, body = check(capped, "text/html")
		if status != 200 || !bytes.Contains(body, []byte(`<span id="headline">Key limit reached</span>`)) || !bytes.Contains(body, []byte("Limit resets")) || !bytes.Contains(body, []byte("Free models")) {
			t.Errorf("page, after the gateway's 403 %v: %d %s", after403, status, body)
		}
	}
	status, body := check(free, "application/json")
	var rep struct {
		checkReport
		Key struct {
			Free *struct{ Limit, Remaining, Used int } `json:"free_model_requests"`
		} `json:"key"`
	}
	if err := json.Unmarshal(body, &rep); err != nil || status != 200 || rep.Status != "valid" || rep.Key.Free == nil ||
		rep.Key.Free.Remaining != 0 || rep.Key.Free.Limit != 50 || rep.Headline != "Key works; free-model allowance used up" ||
		!strings.Contains(rep.Message, "The account's free-model allowance for today is used up (50 requests a day") ||
		!strings.Contains(strings.Join(rep.Advice, " "), "Free-model allowance used up: wait until 00:00 UTC") {
		t.Errorf("free-model allowance used up: %d %s", status, body)
	}
}
