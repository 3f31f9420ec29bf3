package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

func newKeyCheck(t *testing.T, upstream, managementKey string) *KeyCheck {
	t.Helper()
	t.Setenv("OPENROUTER_KEYS_TEST_CHECK_MK", managementKey)
	kc := &KeyCheck{UpstreamOptions: UpstreamOptions{Upstream: upstream, ManagementKey: "{env.OPENROUTER_KEYS_TEST_CHECK_MK}",
		LookupTimeout: caddy.Duration(2 * time.Second)}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := kc.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kc.Cleanup() })
	return kc
}

// checkRequest posts body to the key check as a client at ip would.
func checkRequest(t *testing.T, kc *KeyCheck, contentType, body, ip string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("POST", "/keycheck", strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: ip}))
	rec := httptest.NewRecorder()
	if err := kc.ServeHTTP(rec, req, nil); err != nil {
		t.Fatal(err)
	}
	return rec
}

func checkKey(t *testing.T, kc *KeyCheck, key string) (*report, *httptest.ResponseRecorder) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"key": key})
	rec := checkRequest(t, kc, "application/json", string(b), "192.0.2.1")
	var rep report
	if rec.Code == 200 {
		if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(rec.Body.String(), key) && len(key) > 20 {
		t.Fatalf("the report echoes the key")
	}
	return &rep, rec
}

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
			if rec.Code != 200 || rep.Status != c.status || rep.Message == "" || len(rep.Advice) == 0 {
				t.Errorf("management %v, %s: %d %s", withManagement, c.status, rec.Code, rec.Body.String())
				continue
			}
			if (rep.Credits != nil) != c.credits || (rep.Credits == nil) == (rep.CreditsUnavailable == "") {
				t.Errorf("management %v, %s: credits %+v (%q)", withManagement, c.status, rep.Credits, rep.CreditsUnavailable)
			}
			if (rep.Key != nil) != c.keyRep {
				t.Errorf("management %v, %s: key %+v", withManagement, c.status, rep.Key)
			}
			if rep.Models == nil || rep.Models.Count != len(emulator.ModelIDs) || len(rep.Models.Sample) == 0 {
				t.Errorf("models: %+v %q", rep.Models, rep.ModelsUnavailable)
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Error("report may be cached")
			}
		}
		rep, _ := checkKey(t, kc, valid)
		if k := rep.Key; k == nil || *k.Limit != 10 || k.LimitRemaining == nil || k.ExpiresAt == nil || *k.ExpiresInSeconds < 29*24*3600 || k.RateLimit == nil || k.Label != valid[:12]+"..."+valid[70:] {
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

func TestKeyCheckDoesNotTeachTheGateway(t *testing.T) {
	emu, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	kc := newKeyCheck(t, api, "")
	key := emu.NewKey(emulator.KeyOptions{})
	if rep, _ := checkKey(t, kc, key); rep.Status != "valid" {
		t.Fatal(rep.Status)
	}
	if _, found := h.knowledge.cache.get(fingerprintOf(key)); found {
		t.Error("the key check added the checked key to the gateway's knowledge")
	}
	// But it reads it: an expiry the gateway learned explains a dead key.
	exp := time.Now().Add(-time.Minute)
	h.knowledge.cache.update(fingerprintOf(key), time.Now(), func(st *keyState, _ bool) bool {
		st.flags, st.expiresAt = flagExpiry, exp.UnixNano()
		return true
	})
	emu.ExpireIn(key, -time.Minute)
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
	// A key in the query string is refused and kept out of the access log.
	vars := map[string]any{}
	req := httptest.NewRequest("GET", "/keycheck?key=sk-or-v1-abc", nil)
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, vars))
	rec := httptest.NewRecorder()
	kc.ServeHTTP(rec, req, nil)
	if rec.Code != 400 || vars[caddyhttp.LogSkipVar] != true || strings.Contains(rec.Body.String(), "sk-or-v1-abc") {
		t.Errorf("key in the URL: %d %v %s", rec.Code, vars, rec.Body.String())
	}
	// An upstream that does not answer is a 502, not a verdict.
	rec = checkRequest(t, kc, "application/json", `{"key":"`+goodKey+`"}`, "192.0.2.9")
	if rec.Code != http.StatusBadGateway {
		t.Errorf("dead upstream: %d %s", rec.Code, rec.Body.String())
	}
}

func TestKeyCheckTimesOut(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	kc := newKeyCheck(t, hang.URL+"/api/v1", "")
	kc.timeout = 300 * time.Millisecond
	begin := time.Now()
	rec := checkRequest(t, kc, "application/json", `{"key":"`+goodKey+`"}`, "192.0.2.7")
	if took := time.Since(begin); rec.Code != http.StatusGatewayTimeout || took > time.Second {
		t.Errorf("%d after %v: %s", rec.Code, took, rec.Body.String())
	}
}

func TestKeyCheckRateLimit(t *testing.T) {
	kc := newKeyCheck(t, "http://127.0.0.1:1/api/v1", "")
	kc.limiter = newWindowLimiter(3, time.Minute)
	for i := 0; i < 3; i++ {
		if rec := checkRequest(t, kc, "application/json", `{"key":"sk-or-v1-x"}`, "192.0.2.50"); rec.Code != 200 {
			t.Fatalf("request %d: %d", i, rec.Code)
		}
	}
	rec := checkRequest(t, kc, "application/json", `{"key":"sk-or-v1-x"}`, "192.0.2.50")
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "60" {
		t.Errorf("4th request: %d %v", rec.Code, rec.Header())
	}
	if rec := checkRequest(t, kc, "application/json", `{"key":"sk-or-v1-x"}`, "192.0.2.51"); rec.Code != 200 {
		t.Errorf("another client was limited: %d", rec.Code)
	}
}

func TestKeyCheckPage(t *testing.T) {
	kc := newKeyCheck(t, "http://127.0.0.1:1/api/v1", "")
	rec := httptest.NewRecorder()
	kc.ServeHTTP(rec, httptest.NewRequest("GET", "/keycheck", nil), nil)
	page := rec.Body.String()
	csp := rec.Header().Get("Content-Security-Policy")
	if rec.Code != 200 || !strings.Contains(page, `type="password"`) || !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("%d %s", rec.Code, csp)
	}
	// Self-contained: nothing loaded from elsewhere; the inline script and
	// style are exactly what the policy's hashes allow.
	if regexp.MustCompile(`(?i)(src|href)=`).MatchString(page) {
		t.Error("the page loads something")
	}
	script := page[strings.Index(page, "<script>")+8 : strings.Index(page, "</script>")]
	style := page[strings.Index(page, "<style>")+7 : strings.Index(page, "</style>")]
	if !strings.Contains(csp, cspHash(script)) || !strings.Contains(csp, cspHash(style)) {
		t.Error("the inline script or style does not match the policy's hashes")
	}
	// Without JavaScript: the form posts and gets the page with the report.
	req := httptest.NewRequest("POST", "/keycheck", strings.NewReader("key=sk-or-v1-short"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	rec = httptest.NewRecorder()
	kc.ServeHTTP(rec, req, nil)
	if !strings.Contains(rec.Header().Get("Content-Type"), "text/html") || !strings.Contains(rec.Body.String(), `id="status">key_malformed</p>`) {
		t.Errorf("form post: %s", rec.Body.String())
	}
}
