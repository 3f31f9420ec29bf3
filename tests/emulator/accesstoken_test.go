package emulator

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// payloadOf decodes a JWT's claims.
func payloadOf(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not header.payload.signature: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err != nil || json.Unmarshal(raw, &claims) != nil {
		t.Fatalf("payload: %v %s", err, raw)
	}
	return claims
}

// Access tokens are issued as workload identity federation issues them:
// OpenRouter's issuer, scope "inference", at most 15 minutes.
func TestAccessTokenClaims(t *testing.T) {
	s, _ := start(t)
	c := payloadOf(t, s.NewAccessToken(AccessTokenOptions{Lifetime: time.Hour}))
	life := c["exp"].(float64) - c["iat"].(float64)
	if c["iss"] != "https://openrouter.ai" || c["scope"] != "inference" || c["sub"] != s.UserID() || life != 15*60 {
		t.Errorf("claims %v (lifetime %vs)", c, life)
	}
	if c := payloadOf(t, s.NewAccessToken(AccessTokenOptions{NoScope: true, Issuer: "https://clerk.openrouter.ai", Lifetime: time.Minute})); c["scope"] != nil || c["iss"] != "https://clerk.openrouter.ai" || c["exp"].(float64)-c["iat"].(float64) != 60 {
		t.Errorf("no scope, clerk: %v", c)
	}
	if c := payloadOf(t, NewForeignJWT("https://accounts.google.com", time.Now().Add(time.Hour))); c["iss"] != "https://accounts.google.com" {
		t.Errorf("foreign: %v", c)
	}
}

// OpenRouter takes its access tokens as bearers while they live and, for
// inference, with the inference scope; never in x-api-key; never another
// issuer's.
func TestAccessTokensAccepted(t *testing.T) {
	s, base := start(t)
	good := s.NewAccessToken(AccessTokenOptions{})
	for _, c := range []struct {
		name, token, method, path string
		header                    []string
		bearer                    bool
		status                    int
		message                   string
	}{
		{"live, inference", good, "POST", "/chat/completions", nil, true, 200, ""},
		{"live, /responses", good, "POST", "/responses", nil, true, 200, ""},
		{"live, GET /key", good, "GET", "/key", nil, true, 200, ""},
		{"clerk issuer", s.NewAccessToken(AccessTokenOptions{Issuer: "https://clerk.openrouter.ai"}), "POST", "/chat/completions", nil, true, 200, ""},
		{"no scope claim (a sign-in token)", s.NewAccessToken(AccessTokenOptions{NoScope: true}), "POST", "/chat/completions", nil, true, 200, ""},
		{"expired", s.NewAccessToken(AccessTokenOptions{Lifetime: -time.Second}), "POST", "/chat/completions", nil, true, 401, "User not found."},
		{"without the inference scope", s.NewAccessToken(AccessTokenOptions{Scope: "keys:read"}), "POST", "/messages", nil, true, 401, "User not found."},
		{"without the inference scope, GET /key", s.NewAccessToken(AccessTokenOptions{Scope: "keys:read"}), "GET", "/key", nil, true, 200, ""},
		{"in x-api-key", good, "POST", "/messages", []string{"X-Api-Key", good}, false, 401, "Missing Authentication header"},
		{"another issuer", NewForeignJWT("https://token.actions.githubusercontent.com", time.Now().Add(time.Hour)), "POST", "/chat/completions", nil, true, 401, "Missing Authentication header"},
		{"another issuer signed by the account", s.NewAccessToken(AccessTokenOptions{Issuer: "https://evil.example"}), "POST", "/chat/completions", nil, true, 401, "Missing Authentication header"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bearer, body := "", ""
			if c.bearer {
				bearer = c.token
			}
			if c.method == "POST" {
				body = chatBody
			}
			r := call(t, c.method, base+c.path, bearer, body, c.header...)
			if r.status != c.status || (c.message != "" && r.message() != c.message) {
				t.Errorf("%d %s", r.status, r.body)
			}
		})
	}
}

// GET /key says the key's workspace, and null once it was deleted; the
// key goes on working.
func TestGETKeyWorkspaceID(t *testing.T) {
	s, base := start(t)
	ws := s.NewWorkspace("Team")
	key := s.NewKey(KeyOptions{Workspace: ws})
	workspaceOf := func() (json.RawMessage, bool) {
		r := call(t, "GET", base+"/key", key, "")
		var v struct {
			Data map[string]json.RawMessage `json:"data"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &v) != nil {
			t.Fatalf("GET /key: %d %s", r.status, r.body)
		}
		id, ok := v.Data["workspace_id"]
		return id, ok
	}
	if id, ok := workspaceOf(); !ok || string(id) != `"`+ws+`"` {
		t.Errorf("workspace_id %s %v, want %q", id, ok, ws)
	}
	s.DeleteWorkspace(ws)
	if id, ok := workspaceOf(); !ok || string(id) != "null" {
		t.Errorf("workspace_id of a deleted workspace: %s %v", id, ok)
	}
	if r := chat(t, base, key, "openai/gpt-4o"); r.status != 200 {
		t.Errorf("the key of a deleted workspace: %d %s", r.status, r.body)
	}
}
