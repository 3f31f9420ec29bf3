package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// claimsOf is what the gateway reads of a JWT's claims.
func claimsOf(t *testing.T, tok string) *jwtClaims {
	t.Helper()
	c, ok := jwtClaimsOf(tok)
	if !ok {
		t.Fatalf("claims of %.20s... not read", tok)
	}
	return &c
}

// serveAPIKey sends a POST with the token in x-api-key through h to next.
func serveAPIKey(t testing.TB, h *Handler, next caddyhttp.Handler, path, token string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("POST", path, strings.NewReader(`{}`))
	req.Header.Set("X-Api-Key", token)
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatal(err)
	}
	return rec
}

// The claims are read as the token states them, each only when it has
// the form it should: what has another form is as if absent.
func TestJWTClaims(t *testing.T) {
	for _, c := range []struct {
		name, payload string
		ok            bool
		issuer        string
		hasIssuer     bool
		scopes        []string
		hasScope      bool
	}{
		{"access token", `{"iss":"https://openrouter.ai","exp":1,"scope":"inference"}`, true, "https://openrouter.ai", true, []string{"inference"}, true},
		{"several scopes", `{"scope":"keys:read  inference"}`, true, "", false, []string{"keys:read", "inference"}, true},
		{"scp array", `{"scp":["a","inference"]}`, true, "", false, []string{"a", "inference"}, true},
		{"scope wins over scp", `{"scope":"a","scp":["inference"]}`, true, "", false, []string{"a"}, true},
		{"empty scope", `{"scope":""}`, true, "", false, nil, true},
		{"scope not a string", `{"scope":42}`, true, "", false, nil, false},
		{"scp not strings", `{"scp":[1,2]}`, true, "", false, nil, false},
		{"iss not a string", `{"iss":{"url":"https://openrouter.ai"}}`, true, "", false, nil, false},
		{"upper-case ISS is not iss", `{"ISS":"https://evil.example"}`, true, "", false, nil, false},
		{"duplicate iss: the last, as JSON.parse reads it", `{"iss":"https://a.example","iss":"https://openrouter.ai"}`, true, "https://openrouter.ai", true, nil, false},
		{"payload an array", `["iss"]`, false, "", false, nil, false},
		{"payload null", `null`, false, "", false, nil, false},
		{"payload not JSON", `iss=x`, false, "", false, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := jwtClaimsOf(jwtWith(c.payload))
			if ok != c.ok || got.issuer != c.issuer || got.hasIssuer != c.hasIssuer || !slices.Equal(got.scopes, c.scopes) || got.hasScope != c.hasScope {
				t.Errorf("got %+v %v", got, ok)
			}
		})
	}
	if _, ok := jwtClaimsOf("eyJhbGciOiJub25lIn0." + strings.Repeat("A", maxTokenBytes) + ".c2ln"); ok {
		t.Error("a token over maxTokenBytes was read")
	}
}

// A claim is repeated only when it is short, plain, and no key material.
func TestShownClaim(t *testing.T) {
	for _, c := range []struct {
		in     string
		spaces bool
		shown  bool
	}{
		{"https://token.actions.githubusercontent.com", false, true},
		{"keys:read inference", true, true},
		{"keys:read inference", false, false},
		{"", false, false},
		{strings.Repeat("a", maxShownClaim+1), false, false},
		{`https://a"b`, false, false},
		{"https://a\x00b", false, false},
		{"https://\u00e9.example", false, false},
		{"<script>", false, false},
		{goodKey, false, false},
		{"https://x/" + goodKey, false, false},
		{jwtWith(`{}`), false, false},
		{"sk-proj-" + strings.Repeat("Ab3_", 12), false, false},
	} {
		if got, ok := shownClaim(c.in, c.spaces); ok != c.shown || (ok && got != c.in) {
			t.Errorf("shownClaim(%.30q) = %q %v, want shown %v", c.in, got, ok, c.shown)
		}
	}
}

// What a refused JWT's claims decide, from OpenRouter's answer, and each
// case where they say nothing (the token does not show it).
func TestClaimsDecide(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	past, future := itoa(now.Add(-time.Minute).Unix()), itoa(now.Add(10*time.Minute).Unix())
	body, _ := errbody.Parse([]byte(userNotFound))
	for _, c := range []struct {
		name      string
		payload   string
		raw       string // the whole token, when not jwtWith(payload)
		msg       openrouter.AuthMessage
		apiKey    bool
		inference bool
		want      reason
	}{
		{"another issuer", `{"iss":"https://token.actions.githubusercontent.com","exp":` + future + `}`, "", openrouter.AuthMissingHeader, false, true, reasonNotOpenRouterToken},
		{"another issuer, expired: the issuer first", `{"iss":"https://accounts.google.com","exp":` + past + `}`, "", openrouter.AuthUserNotFound, false, true, reasonNotOpenRouterToken},
		{"another issuer in x-api-key: the issuer first", `{"iss":"https://accounts.google.com"}`, "", openrouter.AuthMissingHeader, true, true, reasonNotOpenRouterToken},
		{"issuer that only starts like OpenRouter's", `{"iss":"https://openrouter.ai.evil.example"}`, "", openrouter.AuthUserNotFound, false, true, reasonNotOpenRouterToken},
		{"userinfo trick", `{"iss":"https://openrouter.ai@evil.example"}`, "", openrouter.AuthUserNotFound, false, true, reasonNotOpenRouterToken},
		{"access token in x-api-key", `{"iss":"https://openrouter.ai","exp":` + future + `,"scope":"inference"}`, "", openrouter.AuthMissingHeader, true, true, reasonTokenInAPIKey},
		{"JWT without iss in x-api-key", `{"exp":` + future + `}`, "", openrouter.AuthUserNotFound, true, true, reasonTokenInAPIKey},
		{"expired access token", `{"iss":"https://openrouter.ai","exp":` + past + `,"scope":"inference"}`, "", openrouter.AuthUserNotFound, false, true, reasonTokenExpired},
		{"expired sign-in token", `{"iss":"https://clerk.openrouter.ai","exp":` + past + `}`, "", openrouter.AuthUserNotFound, false, false, reasonTokenExpired},
		{"access token without the inference scope", `{"iss":"https://openrouter.ai","exp":` + future + `,"scope":"keys:read"}`, "", openrouter.AuthUserNotFound, false, true, reasonTokenScope},
		{"empty scope", `{"iss":"https://clerk.openrouter.ai","exp":` + future + `,"scope":""}`, "", openrouter.AuthUserNotFound, false, true, reasonTokenScope},

		// Unknown: nothing is claimed.
		{"unknown: no iss, not expired", `{"exp":` + future + `}`, "", openrouter.AuthUserNotFound, false, true, reasonNone},
		{"unknown: iss not a string", `{"iss":7,"exp":` + future + `}`, "", openrouter.AuthUserNotFound, false, true, reasonNone},
		{"unknown: empty iss", `{"iss":"","exp":` + future + `}`, "", openrouter.AuthUserNotFound, false, true, reasonNone},
		{"unknown: another issuer of OpenRouter's domain", `{"iss":"https://auth.openrouter.ai","exp":` + future + `,"scope":"x"}`, "", openrouter.AuthUserNotFound, false, true, reasonNone},
		{"unknown: access token with the scope, live", `{"iss":"https://openrouter.ai","exp":` + future + `,"scope":"inference"}`, "", openrouter.AuthUserNotFound, false, true, reasonNone},
		{"unknown: access token without a scope claim", `{"iss":"https://openrouter.ai","exp":` + future + `}`, "", openrouter.AuthUserNotFound, false, true, reasonNone},
		{"unknown: scope claim of another type", `{"iss":"https://openrouter.ai","exp":` + future + `,"scope":["keys"]}`, "", openrouter.AuthUserNotFound, false, true, reasonNone},
		{"unknown: scope refused off inference", `{"iss":"https://openrouter.ai","exp":` + future + `,"scope":"keys:read"}`, "", openrouter.AuthUserNotFound, false, false, reasonNone},
		{"unknown: exp not a number", `{"iss":"https://openrouter.ai","exp":"` + past + `","scope":"inference"}`, "", openrouter.AuthUserNotFound, false, true, reasonNone},
		{"unknown: payload not JSON", "", "eyJhbGciOiJub25lIn0.bm90IGpzb24.c2ln", openrouter.AuthUserNotFound, false, true, reasonNone},
		{"unknown: another issuer, but OpenRouter did not refuse the credential", `{"iss":"https://accounts.google.com"}`, "", openrouter.AuthOther, false, true, reasonNone},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := c.raw
			if tok == "" {
				tok = jwtWith(c.payload)
			}
			cred := classifyToken(tok)
			if cred.kind != credJWT {
				t.Fatalf("not a JWT: %v", cred.kind)
			}
			cred.viaAPIKey, cred.forInference = c.apiKey, c.inference
			v, needs, _ := decide(refusal{status: 401, msg: c.msg, body: body, cred: cred, now: now})
			if v.reason != c.want || needs {
				t.Fatalf("got %q (evidence %v), want %q", v.reason, needs, c.want)
			}
			if v.known() && strings.Contains(v.message(), tok) {
				t.Error("the message repeats the token")
			}
		})
	}
}

// The sentences say what the token says, as the token's word, never the
// token, and repeat no issuer that is not plain text.
func TestAccessTokenSentences(t *testing.T) {
	exp := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	gh := claimsOf(t, jwtWith(`{"iss":"https://token.actions.githubusercontent.com"}`))
	hidden := claimsOf(t, jwtWith(`{"iss":"https://x.example/`+goodKey+`"}`))
	wif := claimsOf(t, jwtWith(`{"iss":"https://openrouter.ai","scope":"inference"}`))
	signIn := claimsOf(t, jwtWith(`{"iss":"https://clerk.openrouter.ai"}`))
	scoped := claimsOf(t, jwtWith(`{"iss":"https://openrouter.ai","scope":"keys:read keys:write"}`))
	noScope := claimsOf(t, jwtWith(`{"iss":"https://openrouter.ai","scope":""}`))
	oddScope := claimsOf(t, jwtWith(`{"iss":"https://openrouter.ai","scope":"a\"b"}`))
	for _, c := range []struct {
		v        verdict
		want     []string
		wantNot  []string
		headline string
	}{
		{verdict{reason: reasonNotOpenRouterToken, claims: gh}, []string{`Not an OpenRouter access token: the token says it was issued by "https://token.actions.githubusercontent.com"`, openrouter.URLOAuthToken, openrouter.IssuerClerk}, nil, "Not an OpenRouter access token"},
		{verdict{reason: reasonNotOpenRouterToken, claims: hidden}, []string{"issued by another issuer (its iss claim is not repeated here)"}, []string{goodKey, "x.example"}, ""},
		{verdict{reason: reasonTokenInAPIKey, claims: wif}, []string{"not accept access tokens in x-api-key", `"Authorization: Bearer <token>"`}, []string{"expired"}, ""},
		{verdict{reason: reasonTokenInAPIKey, claims: wif, at: exp}, []string{"also says it expired at 2026-12-07T10:00:00Z (its exp claim)"}, nil, ""},
		{verdict{reason: reasonTokenExpired, at: exp, claims: wif}, []string{"the token says it expired at 2026-12-07T10:00:00Z (its exp claim)", "at most 15 minutes", openrouter.URLOAuthToken}, nil, "Token expired"},
		{verdict{reason: reasonTokenExpired, at: exp, claims: signIn}, []string{"the token says it expired at 2026-12-07T10:00:00Z", "Get a new access token."}, []string{"15 minutes"}, ""},
		{verdict{reason: reasonTokenExpired, at: exp}, []string{"2026-12-07T10:00:00Z"}, []string{"15 minutes"}, ""},
		{verdict{reason: reasonTokenScope, claims: scoped}, []string{`the token says its scope is "keys:read keys:write"`, `"inference" scope`}, nil, "Access token without the inference scope"},
		{verdict{reason: reasonTokenScope, claims: noScope}, []string{"the token says it has no scope"}, nil, ""},
		{verdict{reason: reasonTokenScope, claims: oddScope}, []string{"its scope claim does not include it"}, []string{`a"b`}, ""},
	} {
		got := c.v.message()
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", c.v.reason, got, w)
			}
		}
		for _, w := range c.wantNot {
			if strings.Contains(got, w) {
				t.Errorf("%s: %q has %q", c.v.reason, got, w)
			}
		}
		if c.headline != "" && c.v.entry().headline != c.headline {
			t.Errorf("%s: headline %q", c.v.reason, c.v.entry().headline)
		}
	}
}

// With edge_answers malformed, a JWT of another issuer is answered at the
// edge on inference requests only, in each endpoint's envelope; other
// requests with it, and OpenRouter's own tokens, go upstream.
func TestForeignTokenAtTheEdge(t *testing.T) {
	emu, api := startEmulator(t)
	h := Handler{EdgeAnswers: EdgeAnswersMalformed}
	newHandler(t, &h, api)
	foreign := emulator.NewForeignJWT("https://token.actions.githubusercontent.com", time.Now().Add(time.Hour))
	var upstream int
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		upstream++
		emu.ServeHTTP(w, r)
		return nil
	})
	for _, c := range []struct {
		method, path string
		edge         bool
		envelope     string // what the answer's body starts with
	}{
		{"POST", "/api/v1/chat/completions", true, `{"error":{`},
		{"POST", "/api/v1/messages", true, `{"type":"error","error":{"type":"authentication_error"`},
		{"POST", "/api/v1/responses", true, `{"error":{`},
		{"GET", "/api/v1/models", false, ""},
		{"GET", "/api/v1/key", false, ""},
		{"POST", "/api/v1/oauth/token", false, ""},
	} {
		upstream = 0
		rec := serve(t, &h, next, c.method, c.path, foreign)
		if c.edge {
			if upstream != 0 || rec.Code != 401 || rec.Header().Get("X-OpenRouter-Keys-Answer") != "edge" ||
				rec.Header().Get("X-OpenRouter-Key-Status") != string(reasonNotOpenRouterToken) ||
				!strings.HasPrefix(rec.Body.String(), c.envelope) || !strings.Contains(rec.Body.String(), "token.actions.githubusercontent.com") {
				t.Errorf("%s %s: upstream %d, %d %v %s", c.method, c.path, upstream, rec.Code, rec.Header(), rec.Body)
			}
		} else if upstream != 1 || rec.Header().Get("X-OpenRouter-Keys-Answer") == "edge" {
			t.Errorf("%s %s answered at the edge: %d %s", c.method, c.path, rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), foreign) {
			t.Errorf("%s %s: the answer repeats the token", c.method, c.path)
		}
	}
	// OpenRouter's own tokens, even expired or unscoped by their claims,
	// are OpenRouter's to judge.
	for _, tok := range []string{
		emu.NewAccessToken(emulator.AccessTokenOptions{Lifetime: -time.Minute}),
		emu.NewAccessToken(emulator.AccessTokenOptions{Scope: "keys:read"}),
		jwtWith(`{"iss":"https://auth.openrouter.ai"}`),
		jwtWith(`{"exp":1}`),
	} {
		upstream = 0
		if rec := serve(t, &h, next, "POST", "/api/v1/chat/completions", tok); upstream != 1 || rec.Header().Get("X-OpenRouter-Keys-Answer") == "edge" {
			t.Errorf("%.30s... answered at the edge: %d %s", tok, rec.Code, rec.Body)
		}
	}
	// edge_answers on (the default) leaves tokens to OpenRouter.
	var on Handler
	newHandler(t, &on, api)
	upstream = 0
	if rec := serve(t, &on, next, "POST", "/api/v1/chat/completions", foreign); upstream != 1 || reasonOf(t, rec) != string(reasonNotOpenRouterToken) {
		t.Errorf("edge_answers on: upstream %d, %d %s", upstream, rec.Code, rec.Body)
	}
}

// Against the emulator, OpenRouter's refusals of access tokens are
// explained by what the tokens say; tokens it accepts pass untouched.
func TestAccessTokensThroughTheGateway(t *testing.T) {
	emu, api := startEmulator(t)
	h := Handler{EdgeAnswers: EdgeAnswersOff}
	newHandler(t, &h, api)
	next := toEmulator(emu)
	good := emu.NewAccessToken(emulator.AccessTokenOptions{})
	for _, c := range []struct {
		name, token, path string
		apiKey            bool
		status            int
		want              reason
		says              string
	}{
		{"working access token", good, "/api/v1/chat/completions", false, 200, reasonNone, ""},
		{"working access token, /messages", good, "/api/v1/messages", false, 200, reasonNone, ""},
		{"expired", emu.NewAccessToken(emulator.AccessTokenOptions{Lifetime: -time.Second}), "/api/v1/chat/completions", false, 401, reasonTokenExpired, "the token says it expired"},
		{"without the inference scope", emu.NewAccessToken(emulator.AccessTokenOptions{Scope: "keys:read"}), "/api/v1/responses", false, 401, reasonTokenScope, `its scope is "keys:read"`},
		{"in x-api-key", good, "/api/v1/messages", true, 401, reasonTokenInAPIKey, "x-api-key"},
		{"another issuer", emulator.NewForeignJWT("https://accounts.google.com", time.Now().Add(time.Hour)), "/api/v1/chat/completions", false, 401, reasonNotOpenRouterToken, `"https://accounts.google.com"`},
		{"unknown: a token of the account's issuer OpenRouter refuses as forged", jwtWith(`{"iss":"https://openrouter.ai","scope":"inference","exp":` + itoa(time.Now().Add(time.Minute).Unix()) + `}`), "/api/v1/chat/completions", false, 401, reasonNotAccepted, "has not expired by its own claim"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var rec *httptest.ResponseRecorder
			if c.apiKey {
				rec = serveAPIKey(t, &h, next, c.path, c.token)
			} else {
				req := httptest.NewRequest("POST", c.path, strings.NewReader(`{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
				req.Header.Set("Authorization", "Bearer "+c.token)
				rec = httptest.NewRecorder()
				if err := h.ServeHTTP(rec, req, next); err != nil {
					t.Fatal(err)
				}
			}
			msg := ""
			if rec.Code != 200 {
				msg, _ = errorOf(t, rec.Body.Bytes())["message"].(string)
			}
			if rec.Code != c.status || rec.Header().Get("X-OpenRouter-Key-Status") != string(c.want) || !strings.Contains(msg, c.says) {
				t.Errorf("%d %q %s", rec.Code, rec.Header().Get("X-OpenRouter-Key-Status"), rec.Body)
			}
			if strings.Contains(rec.Body.String(), c.token) {
				t.Error("the answer repeats the token")
			}
		})
	}
}

// FuzzJWTClaims: whatever a JWT's payload holds, reading and explaining
// it never panics, and no answer repeats the token or key material.
func FuzzJWTClaims(f *testing.F) {
	for _, s := range []string{
		`{"iss":"https://openrouter.ai","exp":1,"scope":"inference"}`,
		`{"iss":"https://evil.example/` + goodKey + `"}`,
		`{"iss":["a"],"exp":1e400,"scope":{"a":1},"scp":[null]}`,
		`{"iss":"` + strings.Repeat("a", 3000) + `"}`,
		`{"scope":"` + strings.Repeat("x ", 1000) + `"}`,
		`[[[[[[[[[[]]]]]]]]]]`,
		"\xff\xfe",
	} {
		f.Add(s, false, true)
	}
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	body, _ := errbody.Parse([]byte(userNotFound))
	f.Fuzz(func(t *testing.T, payload string, apiKey, inference bool) {
		tok := jwtWith(payload)
		cred := classifyToken(tok)
		cred.viaAPIKey, cred.forInference = apiKey, inference
		for _, b := range []*errbody.Body{body, nil} {
			v, _, _ := decide(refusal{status: 401, msg: openrouter.AuthUserNotFound, body: b, cred: cred, now: now})
			if !v.known() {
				continue
			}
			msg := v.message()
			if strings.Contains(msg, tok) || (len(payload) > 20 && strings.Contains(msg, payload)) || strings.Contains(msg, goodKey) {
				t.Fatalf("%q repeats the token or key material", msg)
			}
		}
	})
}
