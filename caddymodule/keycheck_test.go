package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

func TestKeyCheckReports(t *testing.T) {
	emu, api := startEmulator(t)
	limit := 10.0
	future, past := time.Now().Add(30*24*time.Hour), time.Now().Add(-time.Hour)
	valid := emu.NewKey(emulator.KeyOptions{Limit: &limit, ExpiresAt: &future})
	expired := emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
	disabled := emu.NewKey(emulator.KeyOptions{Disabled: true})
	deleted := emu.NewKey(emulator.KeyOptions{})
	emu.Delete(deleted)
	mgmt := emu.NewKey(emulator.KeyOptions{Management: true})

	otherAccount, otherAPI := startEmulator(t)

	for _, withManagement := range []bool{true, false} {
		mk := ""
		if withManagement {
			mk = mgmt
		}
		kc := newKeyCheck(t, api, mk)
		for _, c := range []struct {
			key, status     string
			credits, keyRep bool
		}{
			{valid, "valid", withManagement, true},
			{mgmt, "management_key", true, true},
			{"sk-or-v1-abc", "key_malformed", false, false},
			// Dead keys of the management key's own account still see its balance.
			{expired, map[bool]string{true: "key_expired", false: "unknown"}[withManagement], withManagement, true},
			{disabled, map[bool]string{true: "key_disabled", false: "unknown"}[withManagement], withManagement, true},
			{deleted, map[bool]string{true: "key_not_found", false: "unknown"}[withManagement], false, true},
		} {
			rep, rec := checkKey(t, kc, c.key)
			// Advice only where there is something to do: a valid key with
			// limit left and a month to live needs nothing.
			if rec.Code != 200 || rep.Status != c.status || rep.Headline == "" || rep.Message == "" || (len(rep.Advice) == 0) != (c.status == "valid") {
				t.Errorf("management %v, %s: %d %s", withManagement, c.status, rec.Code, rec.Body.String())
				continue
			}
			if (rep.Credits != nil) != c.credits || (rep.Credits == nil) == (rep.CreditsUnavailable == "") {
				t.Errorf("management %v, %s: credits %+v (%q)", withManagement, c.status, rep.Credits, rep.CreditsUnavailable)
			}
			if (rep.Key != nil) != c.keyRep {
				t.Errorf("management %v, %s: key %+v", withManagement, c.status, rep.Key)
			}
			if rep.Models == nil || rep.Models.Count != len(emu.ListedModelIDs()) || len(rep.Models.Sample) == 0 {
				t.Errorf("models: %+v %q", rep.Models, rep.ModelsUnavailable)
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Error("report may be cached")
			}
		}
		rep, _ := checkKey(t, kc, valid)
		if k := rep.Key; k == nil || *k.Limit != 10 || k.LimitRemaining == nil || k.ExpiresAt == nil || *k.ExpiresInSeconds < 29*24*3600 || k.Label != valid[:12]+"..."+valid[70:] {
			t.Errorf("valid key details: %+v", rep.Key)
		}
		if withManagement && (rep.Credits == nil || rep.Credits.Remaining != 13.5) {
			t.Errorf("credits of the account's own key: %+v", rep.Credits)
		}
		rep, _ = checkKey(t, kc, expired)
		if withManagement && (rep.Key.ExpiresAt == nil || !rep.Key.ExpiresAt.Equal(past.Truncate(time.Second))) {
			t.Errorf("expired key: %+v", rep.Key)
		}
	}

	// A key of another account never sees this account's balance.
	foreign := otherAccount.NewKey(emulator.KeyOptions{})
	kcOther := newKeyCheck(t, otherAPI, mgmt) // mgmt is not of that account
	rep, _ := checkKey(t, kcOther, foreign)
	if rep.Status != "valid" || rep.Credits != nil || rep.CreditsUnavailable == "" {
		t.Errorf("foreign key: %+v", rep)
	}
}

// A check reads what a gateway of the account learned of a key and never
// writes it; what it learns of the account (its records' hash scheme) is
// the account's, as anyone's lookup would be.
func TestKeyCheckReadsButNeverWritesWhatTheGatewayKnows(t *testing.T) {
	emu, api := startEmulator(t)
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}"}}
	newHandler(t, &h, api)
	kc := newKeyCheck(t, api, mk)
	if kc.checker.acct != h.acct {
		t.Fatal("the check and the gateway do not share the account")
	}
	key, disabled := emu.NewKey(emulator.KeyOptions{}), emu.NewKey(emulator.KeyOptions{Disabled: true})
	if rep, _ := checkKey(t, kc, key); rep.Status != "valid" {
		t.Fatal(rep.Status)
	}
	if rep, _ := checkKey(t, kc, disabled); rep.Status != "key_disabled" {
		t.Fatal(rep.Status)
	}
	for _, k := range []string{key, disabled} {
		if _, found := h.knowledge.cache.get(fingerprintOf(k)); found {
			t.Error("the key check added a checked key to the gateway's knowledge")
		}
	}
	if !h.acct.schemeProven.Load() {
		t.Error("a record the check matched by hash did not prove the account's hash scheme")
	}
	// It reads it: an expiry only the gateway learned explains a key
	// whose record is gone.
	now := time.Now()
	h.knowledge.cache.update(fingerprintOf(key), now, func(st *keyState, _ bool) bool {
		st.alive(expiringAt(now.Add(-time.Minute)), now.Add(-time.Hour))
		return true
	})
	emu.Delete(key)
	if rep, _ := checkKey(t, kc, key); rep.Status != "key_expired" {
		t.Errorf("with the gateway's knowledge: %q", rep.Status)
	}
}

func TestKeyCheckBadInput(t *testing.T) {
	kc := newKeyCheck(t, "http://127.0.0.1:1/api/v1", "")
	for name, c := range map[string]struct {
		contentType, body string
		status            int
	}{
		"empty body":         {"application/json", "", 400},
		"not JSON":           {"application/json", "sk-or-v1-abc", 400},
		"JSON without key":   {"application/json", `{"token":"x"}`, 400},
		"empty key":          {"application/json", `{"key":""}`, 400},
		"wrong content type": {"text/plain", `{"key":"x"}`, 415},
		"no content type":    {"", `{"key":"x"}`, 415},
		"1 MB body":          {"application/json", `{"key":"` + strings.Repeat("a", 1<<20) + `"}`, 413},
		"form without key":   {"application/x-www-form-urlencoded", "token=x", 400},
	} {
		rec := checkRequest(t, kc, c.contentType, c.body, "192.0.2.9")
		var e struct {
			Error struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if rec.Code != c.status || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Code != c.status || e.Error.Message == "" {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body.String())
		}
	}
}

// TestKeyCheckRefusesKeysInTheURL tries every way of putting a key in a URL
// that a log would keep: each is refused with 400 and kept out of the
// access log, and no answer repeats the key.
func TestKeyCheckRefusesKeysInTheURL(t *testing.T) {
	kc := newKeyCheck(t, "http://127.0.0.1:1/api/v1", "")
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
	encoded := strings.NewReplacer("-", "%2D", "s", "%73").Replace(goodKey)
	for name, target := range map[string]string{
		"key=":                                 "/keycheck?key=" + goodKey,
		"after a ; pair (ParseQuery drops it)": "/keycheck?x=1;key=" + goodKey,
		"; alone":                              "/keycheck?;" + goodKey,
		"token=":                               "/keycheck?token=" + goodKey,
		"any name":                             "/keycheck?q=" + goodKey + "&page=2",
		"bare":                                 "/keycheck?" + goodKey,
		"as the name":                          "/keycheck?" + goodKey + "=1",
		"percent-encoded":                      "/keycheck?k=" + encoded,
		"percent-encoded name":                 "/keycheck?" + encoded,
		"encoded twice":                        "/keycheck?k=" + strings.ReplaceAll(encoded, "%", "%25"),
		"with Bearer":                          "/keycheck?auth=Bearer%20" + goodKey,
		"with Bearer, plus":                    "/keycheck?auth=Bearer+" + goodKey,
		"quoted":                               "/keycheck?k=%22" + goodKey + "%22",
		"in JSON":                              "/keycheck?q=%7B%22key%22%3A%22" + goodKey + "%22%7D",
		"malformed sk-or-v1":                   "/keycheck?key=sk-or-v1-abc",
		"upper case":                           "/keycheck?key=" + strings.ToUpper(goodKey),
		"another version":                      "/keycheck?key=sk-or-v2-0123456789abcdef",
		"JWT":                                  "/keycheck?access_token=" + jwt,
		"OpenAI key":                           "/keycheck?key=sk-proj-" + strings.Repeat("A1b2", 10),
		"Anthropic key":                        "/keycheck?x-api-key=sk-ant-api03-" + strings.Repeat("Zz9_", 10),
		"Google key":                           "/keycheck?key=AIza" + strings.Repeat("x", 35),
		"in the path":                          "/keycheck/" + goodKey,
		"encoded in the path":                  "/keycheck/" + encoded,
		"fragment of a path, semicolon":        "/keycheck;key=" + goodKey,
	} {
		vars := map[string]any{}
		req := httptest.NewRequest("GET", target, nil)
		req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, vars))
		rec := httptest.NewRecorder()
		if err := kc.ServeHTTP(rec, req, nil); err != nil {
			t.Fatal(err)
		}
		if rec.Code != 400 || vars[caddyhttp.LogSkipVar] != true {
			t.Errorf("%s (%s): %d, log skip %v", name, target, rec.Code, vars[caddyhttp.LogSkipVar])
		}
		if strings.Contains(rec.Body.String(), "sk-or-v1-0") || strings.Contains(rec.Body.String(), "0123456789abcdef") {
			t.Errorf("%s: the answer repeats the key", name)
		}
	}
	// A rewrite before the check does not hide the URL the client sent,
	// which is the one the access log writes down.
	vars := map[string]any{}
	req := httptest.NewRequest("GET", "/keycheck?key="+goodKey, nil)
	orig := *req
	orig.URL = &url.URL{Path: req.URL.Path, RawQuery: req.URL.RawQuery}
	req.URL.RawQuery = ""
	ctx := context.WithValue(req.Context(), caddyhttp.VarsCtxKey, vars)
	req = req.WithContext(context.WithValue(ctx, caddyhttp.OriginalRequestCtxKey, orig))
	rec := httptest.NewRecorder()
	kc.ServeHTTP(rec, req, nil)
	if rec.Code != 400 || vars[caddyhttp.LogSkipVar] != true {
		t.Errorf("key in the URL before a rewrite: %d, log skip %v", rec.Code, vars[caddyhttp.LogSkipVar])
	}

	// URLs without keys are served, and logged.
	for _, target := range []string{"/keycheck", "/keycheck?", "/keycheck?lang=en&theme=dark", "/keycheck?q=task-or-not", "/keycheck?utm_source=newsletter;x=1", "/keycheck?next=%2Fhome"} {
		vars := map[string]any{}
		req := httptest.NewRequest("GET", target, nil)
		req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, vars))
		rec := httptest.NewRecorder()
		kc.ServeHTTP(rec, req, nil)
		if rec.Code != 200 || vars[caddyhttp.LogSkipVar] != nil {
			t.Errorf("%s: %d, log skip %v", target, rec.Code, vars[caddyhttp.LogSkipVar])
		}
	}
	// A browser that opened such a URL gets the page, saying why.
	req = httptest.NewRequest("GET", "/keycheck?key="+goodKey, nil)
	req.Header.Set("Accept", "text/html")
	rec = httptest.NewRecorder()
	kc.ServeHTTP(rec, req, nil)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "Never put a key in a URL") || strings.Contains(rec.Body.String(), goodKey) {
		t.Errorf("browser: %d %s", rec.Code, rec.Body.String())
	}
}

// TestKeyCheckUpstreamErrorsSayWhatNotWhere: a visitor learns that
// OpenRouter could not be reached, never an address, a host name, a
// resolver or a Go error; the debug log has the detail.
func TestKeyCheckUpstreamErrorsSayWhatNotWhere(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close() // nothing listens there any more
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	for _, c := range []struct {
		name, upstream string
		status         int
		say            string
		detail         string // in the debug log
	}{
		{"closed port", closedURL + "/api/v1", 502, "OpenRouter could not be reached", "connection refused"},
		// .onion names are never sent to DNS (RFC 7686): unresolvable
		// without a query leaving the machine.
		{"unresolvable host", "http://openrouter.onion/api/v1", 502, "OpenRouter could not be reached", "openrouter.onion"},
		{"no answer in time", hang.URL + "/api/v1", 504, "OpenRouter did not answer in time", "key lookup"},
	} {
		kc := newKeyCheck(t, c.upstream, "")
		kc.timeout = 500 * time.Millisecond
		core, logs := observer.New(zapcore.DebugLevel)
		kc.logger = zap.New(core)
		for _, accept := range []string{"application/json", "text/html"} {
			req := httptest.NewRequest("POST", "/keycheck", strings.NewReader("key="+goodKey))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Accept", accept)
			rec := httptest.NewRecorder()
			kc.ServeHTTP(rec, req, nil)
			body := rec.Body.String()
			if rec.Code != c.status || !strings.Contains(body, c.say) {
				t.Errorf("%s, %s: %d %s", c.name, accept, rec.Code, body)
			}
			host := strings.TrimPrefix(strings.TrimSuffix(c.upstream, "/api/v1"), "http://")
			for _, where := range []string{host, "127.0.0.1", "onion", "dial", "tcp", "lookup", "refused", "context deadline", ":53", "no such host", "no suitable address"} {
				if strings.Contains(body, where) {
					t.Errorf("%s, %s: the visitor is told %q: %s", c.name, accept, where, body)
				}
			}
		}
		entries := logs.FilterMessage("key check could not ask OpenRouter").All()
		if len(entries) == 0 || !strings.Contains(fmt.Sprint(entries[0].ContextMap()["error"]), c.detail) {
			t.Errorf("%s: debug log %v, want the detail %q", c.name, entries, c.detail)
		}
		for _, e := range logs.All() {
			if strings.Contains(fmt.Sprint(e.ContextMap()), goodKey) || strings.Contains(fmt.Sprint(e.ContextMap()), "/api/v1/key") {
				t.Errorf("%s: the log has the key or the URL: %v", c.name, e.ContextMap())
			}
		}
	}
}

// TestKeyCheckRefusesOtherSites: another site's page cannot make its
// visitors' browsers check keys here; this page and programs can.
func TestKeyCheckRefusesOtherSites(t *testing.T) {
	kc := newKeyCheck(t, "http://127.0.0.1:1/api/v1", "")
	for _, c := range []struct {
		name   string
		header []string
		status int
	}{
		{"a program", nil, 200},
		{"this page", []string{"Sec-Fetch-Site", "same-origin", "Origin", "http://example.com"}, 200},
		{"another site", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, 403},
		{"a sibling site", []string{"Sec-Fetch-Site", "same-site"}, 403},
		{"another site, older browser", []string{"Origin", "https://evil.example"}, 403},
	} {
		req := httptest.NewRequest("POST", "http://example.com/keycheck", strings.NewReader(`{"key":"sk-or-v1-x"}`))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(c.header); i += 2 {
			req.Header.Set(c.header[i], c.header[i+1])
		}
		rec := httptest.NewRecorder()
		kc.ServeHTTP(rec, req, nil)
		if rec.Code != c.status {
			t.Errorf("%s: %d %s", c.name, rec.Code, rec.Body.String())
		}
	}
}

func TestKeyCheckTimesOut(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	kc := newKeyCheck(t, hang.URL+"/api/v1", "")
	kc.timeout = 300 * time.Millisecond
	// The upstream never answers: a check that returns gave up at its
	// timeout.
	rec := checkRequest(t, kc, "application/json", `{"key":"`+goodKey+`"}`, "192.0.2.7")
	if rec.Code != http.StatusGatewayTimeout {
		t.Errorf("%d: %s", rec.Code, rec.Body.String())
	}
}

func TestKeyCheckRateLimit(t *testing.T) {
	kc := newKeyCheck(t, "http://127.0.0.1:1/api/v1", "")
	kc.limiter = newClientLimiter(3, time.Minute, 100)
	for i := 0; i < 3; i++ {
		if rec := checkRequest(t, kc, "application/json", `{"key":"sk-or-v1-x"}`, "192.0.2.50"); rec.Code != 200 {
			t.Fatalf("request %d: %d", i, rec.Code)
		}
	}
	rec := checkRequest(t, kc, "application/json", `{"key":"sk-or-v1-x"}`, "192.0.2.50")
	// One token every 20s: Retry-After is when the next one comes.
	if ra, _ := strconv.Atoi(rec.Header().Get("Retry-After")); rec.Code != 429 || ra < 19 || ra > 20 {
		t.Errorf("4th request: %d %v", rec.Code, rec.Header())
	}
	if rec := checkRequest(t, kc, "application/json", `{"key":"sk-or-v1-x"}`, "192.0.2.51"); rec.Code != 200 {
		t.Errorf("another client was limited: %d", rec.Code)
	}
	if rec := checkRequest(t, kc, "application/json", `{"key":"sk-or-v1-x"}`, "2001:db8::1"); rec.Code != 200 {
		t.Errorf("an IPv6 client was limited: %d", rec.Code)
	}
}

// pageRequest sends a browser's request to the key check.
func pageRequest(t *testing.T, kc *KeyCheck, method, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, "/keycheck", strings.NewReader(body))
	if method == "POST" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	rec := httptest.NewRecorder()
	if err := kc.ServeHTTP(rec, req, nil); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestKeyCheckPage(t *testing.T) {
	kc := newKeyCheck(t, "http://127.0.0.1:1/api/v1", "")
	rec := pageRequest(t, kc, "GET", "")
	page := rec.Body.String()
	csp := rec.Header().Get("Content-Security-Policy")
	if rec.Code != 200 || !strings.Contains(page, `type="password"`) || !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("%d %s", rec.Code, csp)
	}
	// Self-contained: nothing loaded from elsewhere; the inline script and
	// style are exactly what the policy's hashes allow.
	if regexp.MustCompile(`(?i)(src|href)=`).MatchString(page) || strings.Count(page, "<script") != 1 || strings.Count(page, "<style") != 1 {
		t.Error("the page loads something, or has more than one script or style")
	}
	script := page[strings.Index(page, "<script>")+8 : strings.Index(page, "</script>")]
	style := page[strings.Index(page, "<style>")+7 : strings.Index(page, "</style>")]
	if !strings.Contains(csp, cspHash(script)) || !strings.Contains(csp, cspHash(style)) {
		t.Error("the inline script or style does not match the policy's hashes")
	}
	// For keyboards and screen readers: a real label, a named button, a
	// live result region.
	for _, want := range []string{`<label for="key">`, `<input id="key"`, `>Check key</button>`, `<section id="result" aria-live="polite"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page has no %s", want)
		}
	}

	// Without JavaScript: the form posts and gets the page with the result.
	rec = pageRequest(t, kc, "POST", "key=sk-or-v1-short")
	result := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(rec.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(result, `<span id="headline">Key malformed</span> <code class="reason" title="Status code">key_malformed</code>`) ||
		!strings.Contains(result, "<h3>What to do</h3><ol><li>Copy the key again") {
		t.Errorf("form post: %d %s", rec.Code, result)
	}
	// A key-less post says so, in words.
	rec = pageRequest(t, kc, "POST", "key=")
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), `tabindex="-1">No key</h2><p>Paste a key into the field, then choose &#34;Check key&#34;.</p>`) {
		t.Errorf("empty form post: %d %s", rec.Code, rec.Body.String())
	}
	// The script's own message for an empty field is the same, rendered by
	// the same template.
	if !strings.Contains(page, `<template id="empty-key">`+"\n"+`<div class="card bad"><h2 id="status" class="status" tabindex="-1">No key</h2><p>Paste a key into the field`) {
		t.Errorf("the empty-field message is not in the page:\n%s", page)
	}
	// A browser that is rate limited gets the page too, saying when to
	// come back.
	kc.limiter = newClientLimiter(1, time.Hour, 10)
	pageRequest(t, kc, "POST", "key=sk-or-v1-short")
	rec = pageRequest(t, kc, "POST", "key=sk-or-v1-short")
	if rec.Code != 429 || !strings.Contains(rec.Body.String(), "try again in 60 minutes") || rec.Header().Get("Retry-After") != "3600" {
		t.Errorf("rate limited browser: %d %s", rec.Code, rec.Body.String())
	}
}

// fullReport is a report with every field set, as of now.
func fullReport(now time.Time) *report {
	limit, left, reset := 10.0, 0.0012, "monthly"
	mgmt, free := false, true
	exp, used := now.Add(20*24*time.Hour+time.Minute), now.Add(-2*24*time.Hour)
	y, m, d := now.UTC().Date()
	monthEnd, dayEnd := time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC), time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
	in := int64(exp.Sub(now) / time.Second)
	rep := &report{Status: "valid", Headline: "Key works", Message: "The key is valid: OpenRouter accepts it.",
		Key: &keyReport{Label: "sk-or-v1-012...def", Workspace: "Production", Name: "CI <bot>", IsManagementKey: &mgmt, IsFreeTier: &free,
			Limit: &limit, LimitRemaining: &left, LimitReset: &reset, ResetsAt: &monthEnd,
			FreeModelRequests: &freeModelRequestsReport{Limit: 1000, Remaining: 988, Used: 12, ResetsAt: dayEnd},
			Usage:             &usageReport{Total: 9.9988, Daily: 0, Weekly: 1.5, Monthly: 9.9988},
			ExpiresAt:         &exp, ExpiresInSeconds: &in, LastUsedAt: &used},
		Credits: &creditsReport{TotalCredits: 25, TotalUsage: 11.5, Remaining: 13.5},
		Models:  &modelsReport{Count: 337, Sample: []string{"openai/gpt-4o", "anthropic/claude-3.5-sonnet"}},
	}
	rep.Advice = adviceFor(rep, now)
	return rep
}

func TestKeyCheckViewInWords(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	v := viewOf(fullReport(now), now)
	got := map[string]string{}
	for _, f := range append(v.Key, v.Account...) {
		got[f.Name] = f.text()
	}
	for name, want := range map[string]string{
		"Key":            "sk-or-v1-012...def",
		"Name":           "CI <bot>",
		"Workspace":      "Production",
		"Type":           "API key, free tier",
		"Spending limit": "$10.00, resets monthly",
		"Limit left":     "$0.0012",
		"Limit resets":   "2026-12-01 00:00 UTC (in 7 days)",
		"Free models":    "988 of 1000 requests left today (12 used), for the whole account; back at 00:00 UTC (in 10 hours)",
		"Usage":          "$9.9988 in total: $0.00 today, $1.50 this week, $9.9988 this month",
		"Expires":        "2026-12-13 14:01 UTC (in 20 days)",
		"Request rate":   "no limit per key (OpenRouter governs capacity as a whole); :free models 20 requests a minute for the whole account",
		"Last used":      "2026-11-21 14:00 UTC (2 days ago)",
		"Credits":        "$13.50 left of $25.00 ($11.50 used)",
		"Models":         "337 available, such as openai/gpt-4o, anthropic/claude-3.5-sonnet",
	} {
		if got[name] != want {
			t.Errorf("%s: %q, want %q", name, got[name], want)
		}
	}
	// $0.0012 left of a monthly limit spent at $10 in 22 days and 14
	// hours runs out within minutes: the one piece of advice.
	if v.Headline != "Key works" || v.Tone != "ok" || len(v.Advice) != 1 || !strings.Contains(v.Advice[0], "runs out in 3 minutes") {
		t.Errorf("headline %q, tone %q, advice %q", v.Headline, v.Tone, v.Advice)
	}
	// No limit, no expiry: said, not left out; booleans that are false
	// are left out.
	k := &keyReport{Label: "x", IsFreeTier: new(bool), IsManagementKey: new(bool), Usage: &usageReport{}}
	got = map[string]string{}
	for _, f := range keyFacts(k, now) {
		got[f.Name] = f.text()
	}
	if got["Spending limit"] != "no limit" || got["Expires"] != "never" || got["Type"] != "API key" || got["Request rate"] != requestRateText {
		t.Errorf("no limit, no expiry: %v", got)
	}
	// A refused key: only what is known.
	got = map[string]string{}
	for _, f := range keyFacts(&keyReport{Label: "x"}, now) {
		got[f.Name] = f.text()
	}
	if len(got) != 1 {
		t.Errorf("refused key: %v", got)
	}
	for in, want := range map[time.Duration]string{
		30 * time.Second: "in less than a minute", -5 * time.Minute: "5 minutes ago", 2 * time.Hour: "in 2 hours",
		-36 * time.Hour: "2 days ago", 24*time.Hour + time.Minute: "in 24 hours", -time.Minute: "1 minute ago", 59 * time.Minute: "in 59 minutes", -60 * time.Minute: "1 hour ago",
	} {
		if got := relativeTime(now.Add(in), now); got != want {
			t.Errorf("relativeTime(%v) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]string{0: "$0.00", 13.5: "$13.50", 0.00004: "$0.00004", 0.000042: "$0.000042", 0.0000999: "$0.0001", 0.00016: "$0.0002", 0.0012: "$0.0012", 1234.56789: "$1234.5679", -2: "-$2.00", -0.00001: "-$0.00001"} {
		if got := money(in); got != want {
			t.Errorf("money(%g) = %q, want %q", in, got, want)
		}
	}
}

// TestKeyCheckPageAndCLISayTheSame renders one report on the page and in
// the CLI: every fact, the headline, the message and the advice read the
// same, and dates carry their UTC time on hover.
func TestKeyCheckPageAndCLISayTheSame(t *testing.T) {
	now := time.Now()
	rep := fullReport(now)
	exp := now.Add(3 * 24 * time.Hour)
	rep.Key.ExpiresAt = &exp // soon: advice
	rep.Advice = adviceFor(rep, now)
	v := viewOf(rep, now)
	var page, cli bytes.Buffer
	if err := pageTemplate.Execute(&page, pageData{Result: v}); err != nil {
		t.Fatal(err)
	}
	printReport(&cli, v)
	html := page.String()
	esc := template.HTMLEscapeString
	if !strings.Contains(cli.String(), "Key works (valid)\nThe key is valid") || !strings.Contains(html, `<span id="headline">Key works</span>`) {
		t.Errorf("headline: page or CLI\n%s", cli.String())
	}
	if len(v.Advice) != 2 || !strings.Contains(v.Advice[1], "expires in 3 days") {
		t.Fatalf("advice: %q", v.Advice)
	}
	for i, a := range v.Advice {
		if !strings.Contains(html, "<li>"+esc(a)+"</li>") || !strings.Contains(cli.String(), fmt.Sprintf("%d. %s", i+1, a)) {
			t.Errorf("advice %q: not on both", a)
		}
	}
	for _, f := range append(v.Key, v.Account...) {
		if !strings.Contains(cli.String(), fmt.Sprintf("  %-15s %s\n", f.Name, f.text())) {
			t.Errorf("CLI has no %s: %s", f.Name, f.text())
		}
		want := "<dt>" + esc(f.Name) + "</dt><dd>" + esc(f.Value) + "</dd>"
		if f.When != nil {
			want = fmt.Sprintf(`<dt>%s</dt><dd><time datetime="%s" title="%s">%s</time> (%s)</dd>`, f.Name, f.When.ISO, f.When.UTC, f.When.UTC, f.When.Relative)
			if !strings.HasSuffix(f.When.UTC, " UTC") {
				t.Errorf("%s: %q is not UTC", f.Name, f.When.UTC)
			}
		}
		if !strings.Contains(html, want) {
			t.Errorf("page has no %s", want)
		}
	}
	if !strings.Contains(html, "CI &lt;bot&gt;") {
		t.Error("a key name is not escaped")
	}
}

// runCmd runs the subcommand's body with args, the key on stdin, and the
// environment as set by the test.
func runCmd(t *testing.T, upstream, stdin string, asJSON bool, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	run := keyCheckRun{args: args, asJSON: asJSON, upstream: upstream, timeout: 2 * time.Second,
		stdin: strings.NewReader(stdin), stdout: &out, stderr: &errOut}
	code = run.run()
	return code, out.String(), errOut.String()
}

func TestKeyCheckCmd(t *testing.T) {
	emu, api := startEmulator(t)
	valid := emu.NewKey(emulator.KeyOptions{})
	past := time.Now().Add(-time.Hour)
	expired := emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
	mgmt := emu.NewKey(emulator.KeyOptions{Management: true})
	t.Setenv("OPENROUTER_API_KEY", "")
	t.Setenv("OPENROUTER_MANAGEMENT_KEY", mgmt)

	// A key as an argument is refused, and not sent anywhere.
	before := emu.Count("key")
	code, out, errOut := runCmd(t, api, "", false, valid)
	if code != exitUsage || out != "" || !strings.Contains(errOut, "refusing a key given as an argument: it lands in shell history and in the process list") ||
		strings.Contains(errOut, valid) || emu.Count("key") != before {
		t.Errorf("key as an argument: exit %d, %q, %q", code, out, errOut)
	}
	if code, _, errOut = runCmd(t, api, valid+"\n", false, "please"); code != exitUsage || !strings.Contains(errOut, "takes no arguments") {
		t.Errorf("another argument: exit %d, %q", code, errOut)
	}
	if code, _, errOut = runCmd(t, api, "", false); code != exitUsage || !strings.Contains(errOut, "no key: set OPENROUTER_API_KEY") {
		t.Errorf("no key: exit %d, %q", code, errOut)
	}
	if code, _, errOut = runCmd(t, "ftp://example.com", valid+"\n", false); code != exitUsage || !strings.Contains(errOut, "upstream:") {
		t.Errorf("bad upstream: exit %d, %q", code, errOut)
	}

	// A normal result: the report on stdout, nothing on stderr.
	code, out, errOut = runCmd(t, api, expired+"\r\n", false)
	if code != exitNotValid || errOut != "" || !strings.HasPrefix(out, "Key expired (key_expired)\nKey expired.") ||
		!strings.Contains(out, "\nWhat to do:\n  1. Create a new key") || !strings.Contains(out, "  Expires         ") || !strings.Contains(out, "UTC (1 hour ago)") {
		t.Errorf("expired key on stdin: exit %d, stderr %q\n%s", code, errOut, out)
	}
	t.Setenv("OPENROUTER_API_KEY", valid)
	code, out, errOut = runCmd(t, api, "", false)
	if code != exitValid || errOut != "" || !strings.HasPrefix(out, "Key works (valid)\n") || strings.Contains(out, "What to do") || !strings.Contains(out, "  Request rate    no limit per key") {
		t.Errorf("valid key from the environment: exit %d, stderr %q\n%s", code, errOut, out)
	}
	code, out, errOut = runCmd(t, api, "", true)
	var rep report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitValid || errOut != "" || rep.Status != "valid" || rep.Advice == nil {
		t.Errorf("--json: exit %d, %v, stderr %q\n%s", code, err, errOut, out)
	}

	// No answer from OpenRouter: exit 2, saying what.
	code, out, errOut = runCmd(t, "http://127.0.0.1:1/api/v1", "", false)
	if code != exitUsage || out != "" || !strings.Contains(errOut, "the key could not be checked: OpenRouter could not be reached.") {
		t.Errorf("unreachable: exit %d, %q, %q", code, out, errOut)
	}
}

func TestKeyCheckCmdHelpAndFlags(t *testing.T) {
	newCmd := func(args ...string) (*cobra.Command, *bytes.Buffer, *bytes.Buffer) {
		cmd := &cobra.Command{Use: keyCheckCommandName + " [--json] [--upstream <url>] [--timeout <duration>]", Long: keyCheckLong}
		setupKeyCheckCommand(cmd)
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(args)
		return cmd, &out, &errOut
	}
	cmd, out, _ := newCmd("--help")
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, want := range []string{
		"A key given as an argument is\nrefused",
		"Exit status:\n  0  the key works\n  1  the key was checked and does not work (any other status)\n  2  usage error, or OpenRouter could not be asked",
		"Examples:\n", "OPENROUTER_API_KEY=... caddy openrouter-keycheck", "caddy openrouter-keycheck < key.txt",
		"caddy openrouter-keycheck --json < key.txt", "--upstream http://127.0.0.1:8080/api/v1",
		"Flags:\n", "--json ", "--timeout duration", "--upstream string",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help has no %q:\n%s", want, help)
		}
	}
	// A flag that is not there: the reason on stderr, and an exit error.
	cmd, out, errOut := newCmd("--key", "x")
	if err := cmd.Execute(); err == nil || out.Len() != 0 || !strings.Contains(errOut.String(), "openrouter-keycheck: unknown flag: --key\nSee: caddy openrouter-keycheck --help") {
		t.Errorf("unknown flag: %v, %q, %q", err, out, errOut)
	}
}

// A config reload that changes the key check (here its management_rate)
// provisions the new gateway and check before the old ones are cleaned up,
// and the new gateway keeps the old one's cache: the check still reads what
// the gateway proved, and reads nothing of the account for a key the
// gateway has just proven deleted.
func TestKeyCheckReadsTheGatewayAcrossAReload(t *testing.T) {
	emu, api := startEmulator(t)
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	options := func(rate float64) UpstreamOptions {
		return UpstreamOptions{Upstream: api, ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}", ManagementRate: rate}
	}
	// load provisions a config's gateway and key check, as Caddy does, and
	// returns its cleanup.
	load := func(checkRate float64) (*Handler, *KeyCheck, func()) {
		t.Helper()
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		h := &Handler{UpstreamOptions: options(0)}
		kc := &KeyCheck{UpstreamOptions: options(checkRate)}
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		if err := kc.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return h, kc, func() {
			_ = h.Cleanup()
			_ = kc.Cleanup()
			cancel()
		}
	}
	old, _, unloadOld := load(0)
	deleted := emu.NewKey(emulator.KeyOptions{})
	emu.Delete(deleted)
	if got := reasonOf(t, serve(t, old, refused, "POST", "/api/v1/chat/completions", deleted)); got != "key_not_found" {
		t.Fatalf("the gateway: %q", got)
	}
	h, kc, unload := load(2)
	defer unload()
	unloadOld()
	if h.acct != old.acct || kc.checker.acct != h.acct {
		t.Fatal("the reloaded config does not share the account")
	}
	waitProbe(h.acct)
	read := func() int { return emu.Count("/workspaces") + emu.Count("/keys") }
	before := read()
	rep, _ := checkKey(t, kc, deleted)
	waitProbe(h.acct)
	if rep.Status != "key_not_found" {
		t.Errorf("after the reload the check says %q", rep.Status)
	}
	if n := read() - before; n != 0 {
		t.Errorf("the check read the account again: %d requests", n)
	}
}

// Two gateways of one account that trust facts for different times
// (cache_ttl): the key check says what both would, never what one picked by
// chance would.
func TestKeyCheckWeighsEveryGateway(t *testing.T) {
	emu, api := startEmulator(t)
	short := Handler{CacheTTL: caddy.Duration(time.Minute), CacheSize: 1000}
	long := Handler{CacheTTL: caddy.Duration(10 * time.Minute), CacheSize: 2000}
	newHandler(t, &short, api)
	newHandler(t, &long, api)
	kc := newKeyCheck(t, api, "")
	if short.acct != long.acct || kc.checker.acct != short.acct {
		t.Fatal("the gateways and the check do not share the account")
	}
	key := emu.NewKey(emulator.KeyOptions{Disabled: true})
	// Both learned, five minutes ago, that the key is disabled: still
	// fresh for one, stale for the other.
	now := time.Now()
	for _, h := range []*Handler{&short, &long} {
		h.knowledge.cache.update(fingerprintOf(key), now, func(st *keyState, _ bool) bool {
			st.applyRecord(&keyRecord{Disabled: true}, now.Add(-5*time.Minute))
			return true
		})
	}
	for i := 0; i < 8; i++ {
		if rep, _ := checkKey(t, kc, key); rep.Status != statusUnknown {
			t.Fatalf("check %d: %q, though the gateways disagree", i, rep.Status)
		}
	}
}

// A key whose own limit is spent is its own status, in words for people,
// with its reset by the UTC calendar; any key shows its limit's reset and
// the account's free-model requests left today; a key that works but
// expires or runs out within a week says so in its headline. The clock is
// fixed across a week's and a year's end, for the emulator and the check.
func TestKeyCheckLimits(t *testing.T) {
	sunday := time.Date(2026, 12, 6, 22, 30, 0, 0, time.UTC) // a week ends at midnight
	newYearsEve := time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)
	monday := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	limit := func(v float64) *float64 { return &v }
	for _, c := range []struct {
		name     string
		now      time.Time
		key      emulator.KeyOptions
		account  *emulator.AccountOptions
		status   string
		headline string
		message  []string
		resetsAt time.Time // zero: none
		never    bool
		advice   []string // each in some piece of advice
	}{
		{
			name: "daily limit spent", now: sunday, key: emulator.KeyOptions{Limit: limit(5), LimitReset: "daily", Usage: 5},
			status: "key_limit_reached", headline: "Key limit reached",
			message:  []string{"This key's own daily limit is spent: $5.00 of $5.00 spent, $0.00 left.", "It resets at 2026-12-07T00:00:00Z.", "adding credits or creating keys does not lift it"},
			resetsAt: monday, advice: []string{"Raise the key's limit", "or wait until it resets", "Adding credits to the account does not help"},
		},
		{
			name: "weekly limit spent", now: sunday, key: emulator.KeyOptions{Limit: limit(20), LimitReset: "weekly", Usage: 20.5},
			status: "key_limit_reached", headline: "Key limit reached",
			message: []string{"This key's own weekly limit is spent: $20.50 of $20.00 spent, $0.00 left.", "It resets at 2026-12-07T00:00:00Z."}, resetsAt: monday,
		},
		{
			name: "monthly limit spent at the year's end", now: newYearsEve, key: emulator.KeyOptions{Limit: limit(100), LimitReset: "monthly", Usage: 100},
			status: "key_limit_reached", headline: "Key limit reached",
			message:  []string{"This key's own monthly limit is spent", "It resets at 2027-01-01T00:00:00Z."},
			resetsAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		},
		{
			name: "total limit spent", now: sunday, key: emulator.KeyOptions{Limit: limit(2), Usage: 2},
			status: "key_limit_reached", headline: "Key limit reached", never: true,
			message: []string{"This key's own limit is spent: $2.00 of $2.00 spent, $0.00 left.", "It never resets (a total limit)."}, advice: []string{"(a total limit never does)"},
		},
		{
			name: "limit with room", now: sunday, key: emulator.KeyOptions{Limit: limit(10), LimitReset: "daily", Usage: 1},
			status: "valid", headline: "Key works", resetsAt: monday,
		},
		{
			// 9 of 10 spent in the 5 days and 22.5 hours since the 1st:
			// the last 1 goes in about 16 hours, long before January.
			name: "monthly limit running out", now: sunday, key: emulator.KeyOptions{Limit: limit(10), LimitReset: "monthly", Usage: 9},
			status: "valid", headline: "Key works, but its limit runs out in 16 hours",
			message:  []string{"At this month's pace, its monthly limit ($1.00 left of $10.00) runs out in 16 hours, before it resets."},
			resetsAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), advice: []string{"At this month's pace the key's limit runs out in 16 hours"},
		},
		{
			name: "expires in two days", now: sunday, key: emulator.KeyOptions{ExpiresAt: func() *time.Time { t := sunday.Add(48 * time.Hour); return &t }()},
			status: "valid", headline: "Key works, but expires in 2 days", advice: []string{"The key expires in 2 days"},
		},
		{
			name: "free-model requests used up", now: sunday, account: &emulator.AccountOptions{Credits: 5, Usage: 1, FreeRequestsUsed: 50},
			status: "valid", headline: "Key works; free-model allowance used up",
			message: []string{"The key is valid: OpenRouter accepts it. The account's free-model allowance for today is used up (50 requests a day; 1000 once the account has bought 10 credits in all).",
				"switching to another free model does not help", "It resets at 2026-12-07T00:00:00Z."},
			advice: []string{"Free-model allowance used up: wait until 00:00 UTC, or use a paid model; every :free model shares the one allowance."},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			emu, api := startEmulator(t)
			emu.Clock = func() time.Time { return c.now }
			if c.account != nil {
				c.key.Account = emu.NewAccount(*c.account)
			}
			key := emu.NewKey(c.key)
			kc := newKeyCheck(t, api, "")
			rep, err := kc.checker.check(context.Background(), key, c.now)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Status != c.status || rep.Headline != c.headline {
				t.Errorf("status %q, headline %q; want %q, %q", rep.Status, rep.Headline, c.status, c.headline)
			}
			for _, s := range c.message {
				if !strings.Contains(rep.Message, s) {
					t.Errorf("message %q does not say %q", rep.Message, s)
				}
			}
			for _, s := range c.advice {
				if !strings.Contains(strings.Join(rep.Advice, "\n"), s) {
					t.Errorf("advice %q does not say %q", rep.Advice, s)
				}
			}
			k := rep.Key
			if (k.ResetsAt == nil) != c.resetsAt.IsZero() || (k.ResetsAt != nil && !k.ResetsAt.Equal(c.resetsAt)) || k.NeverResets != c.never {
				t.Errorf("resets_at %v, never_resets %v; want %v, %v", k.ResetsAt, k.NeverResets, c.resetsAt, c.never)
			}
			free := k.FreeModelRequests
			wantUsed := 0
			if c.account != nil {
				wantUsed = c.account.FreeRequestsUsed
			}
			dayEnd := c.now.Truncate(24 * time.Hour).Add(24 * time.Hour)
			if free == nil || free.Used != wantUsed || free.Remaining != max(free.Limit-wantUsed, 0) || !free.ResetsAt.Equal(dayEnd) {
				t.Errorf("free-model requests %+v; want %d used, back at %v", free, wantUsed, dayEnd)
			}
			// The JSON says the same.
			b, _ := json.Marshal(rep)
			if !strings.Contains(string(b), `"free_model_requests":{"limit":`) || !strings.Contains(string(b), `"resets_at":`) {
				t.Errorf("JSON: %s", b)
			}
		})
	}
}

// Without a management key, the key check says that none is configured,
// not that a record was not found.
func TestKeyCheckCreditsWithoutManagementKey(t *testing.T) {
	emu, api := startEmulator(t)
	kc := newKeyCheck(t, api, "")
	rep, _ := checkKey(t, kc, emu.NewKey(emulator.KeyOptions{}))
	if rep.Status != "valid" || rep.Credits != nil || strings.Contains(rep.CreditsUnavailable, "not found") ||
		!strings.Contains(rep.CreditsUnavailable, "no management key") {
		t.Errorf("credits_unavailable %q", rep.CreditsUnavailable)
	}
	mgmt := emu.NewKey(emulator.KeyOptions{Management: true})
	other, otherAPI := startEmulator(t)
	kc = newKeyCheck(t, otherAPI, mgmt) // mgmt is not of that account
	rep, _ = checkKey(t, kc, other.NewKey(emulator.KeyOptions{}))
	if !strings.Contains(rep.CreditsUnavailable, "not found in the account of the configured management key") {
		t.Errorf("with a management key of another account: %q", rep.CreditsUnavailable)
	}
}
