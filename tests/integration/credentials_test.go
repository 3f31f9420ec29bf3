package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	oairesponses "github.com/openai/openai-go/v3/responses"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// envelopeOf reads an error body in any of OpenRouter's envelopes: the
// message, metadata.reason, and which envelope it is.
func envelopeOf(t *testing.T, b []byte) (message, reason string, env openrouter.Envelope) {
	t.Helper()
	var v struct {
		Type  string `json:"type"`
		Error struct {
			Type     string `json:"type"`
			Message  string `json:"message"`
			Metadata struct {
				Reason string `json:"reason"`
			} `json:"metadata"`
		} `json:"error"`
		ErrorType string `json:"error_type"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	switch {
	case v.Type == "error" && v.Error.Type == "authentication_error":
		env = openrouter.EnvelopeMessages
	case v.ErrorType != "":
		env = openrouter.EnvelopeResponsesDocs
	default:
		env = openrouter.EnvelopeOpenAI
	}
	return v.Error.Message, v.Error.Metadata.Reason, env
}

// OpenRouter's refusals of JWTs are explained by what the tokens say, in
// each endpoint's envelope, through the official client where it has one:
// another issuer's token, an expired access token, one without the
// inference scope, an access token in x-api-key. What the tokens do not
// show stays OpenRouter's answer.
func TestAccessTokens(t *testing.T) {
	e := start(t, options{})
	expired := e.emu.NewAccessToken(emulator.AccessTokenOptions{Lifetime: -time.Second})
	unscoped := e.emu.NewAccessToken(emulator.AccessTokenOptions{Scope: "keys:read"})
	live := e.emu.NewAccessToken(emulator.AccessTokenOptions{})
	foreign := emulator.NewForeignJWT("https://token.actions.githubusercontent.com", time.Now().Add(time.Hour))
	remember(foreign)

	// The OpenAI envelope, through openai-go's chat completions.
	for _, c := range []struct {
		name, token, reason, says string
	}{
		{"another issuer", foreign, "not_openrouter_token", `the token says it was issued by "https://token.actions.githubusercontent.com"`},
		{"expired", expired, "token_expired", "the token says it expired at"},
		{"without the inference scope", unscoped, "token_scope_missing", `the token says its scope is "keys:read"`},
	} {
		t.Run("chat/"+c.name, func(t *testing.T) {
			_, err := chat(gatewayBase, c.token)
			ke := asKeyError(t, err)
			if ke.status != 401 || ke.reason != c.reason || ke.header != c.reason || !strings.Contains(ke.message, c.says) || ke.edge {
				t.Errorf("%+v", ke)
			}
			if strings.Contains(ke.message, c.token) {
				t.Error("the answer repeats the token")
			}
		})
	}
	if _, err := chat(gatewayBase, live); err != nil {
		t.Errorf("a live access token: %v", err)
	}

	// The Responses API through openai-go, in the envelope the upstream
	// sends (the emulator: the docs' envelope).
	t.Run("responses", func(t *testing.T) {
		c := client(gatewayBase, unscoped)
		_, err := c.Responses.New(context.Background(), oairesponses.ResponseNewParams{Model: "openai/gpt-4o", Input: oairesponses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
		if err == nil {
			t.Fatal("no error")
		}
		resp, b := raw(t, "POST", gatewayBase+"/responses", unscoped, `{"model":"openai/gpt-4o","input":"hi"}`)
		msg, reason, env := envelopeOf(t, b)
		if resp.StatusCode != 401 || reason != "token_scope_missing" || env != openrouter.EnvelopeResponsesDocs || !strings.Contains(msg, `"keys:read"`) {
			t.Errorf("%d %s", resp.StatusCode, b)
		}
	})

	// /messages: Anthropic's envelope, and x-api-key as its clients send it.
	for _, c := range []struct {
		name, bearer, apiKey, reason, says string
	}{
		{"expired", expired, "", "token_expired", "the token says it expired at"},
		{"access token in x-api-key", "", live, "token_in_x_api_key", `send this token as "Authorization: Bearer <token>"`},
		{"expired access token in x-api-key", "", expired, "token_in_x_api_key", "also says it expired"},
		{"another issuer in x-api-key", "", foreign, "not_openrouter_token", "token.actions.githubusercontent.com"},
	} {
		t.Run("messages/"+c.name, func(t *testing.T) {
			var header []string
			if c.apiKey != "" {
				header = []string{"X-Api-Key", c.apiKey}
			}
			resp, b := raw(t, "POST", gatewayBase+"/messages", c.bearer, `{"model":"openai/gpt-4o","messages":[]}`, header...)
			msg, reason, env := envelopeOf(t, b)
			if resp.StatusCode != 401 || reason != c.reason || env != openrouter.EnvelopeMessages || !strings.Contains(msg, c.says) {
				t.Errorf("%d %s", resp.StatusCode, b)
			}
		})
	}

	// Unknown: a JWT without an issuer, refused, says nothing it does not
	// show; one of OpenRouter's domain that OpenRouter did not name is not
	// called foreign.
	enc := base64.RawURLEncoding.EncodeToString
	for _, payload := range []string{
		`{"exp":` + strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + `}`,
		`{"iss":"https://auth.openrouter.ai","exp":` + strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + `}`,
	} {
		tok := enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(payload)) + "." + enc([]byte("sig"))
		remember(tok)
		_, err := chat(gatewayBase, tok)
		ke := asKeyError(t, err)
		if ke.status != 401 || ke.reason != "credential_not_accepted" || !strings.Contains(ke.message, "has not expired by its own claim") {
			t.Errorf("%s: %+v", payload, ke)
		}
	}
}

// With edge_answers malformed, another issuer's JWT is answered by the
// gateway on inference requests, in each endpoint's envelope, without
// reaching OpenRouter; other requests with it go upstream.
func TestForeignTokenAnsweredAtTheEdge(t *testing.T) {
	e := start(t, options{module: "edge_answers malformed"})
	foreign := emulator.NewForeignJWT("https://accounts.google.com", time.Now().Add(time.Hour))
	remember(foreign)
	// Requests for this token: the catalogue's own read of /models, in
	// the background since the config loaded, is none of them.
	reached := func() int { return e.emu.Count("") - e.emu.Count("/models") }
	before := reached()
	_, err := chat(gatewayBase, foreign)
	if ke := asKeyError(t, err); ke.reason != "not_openrouter_token" || !ke.edge {
		t.Errorf("chat: %+v", ke)
	}
	for path, want := range map[string]openrouter.Envelope{"/messages": openrouter.EnvelopeMessages, "/responses": openrouter.EnvelopeOpenAI} {
		resp, b := raw(t, "POST", gatewayBase+path, foreign, `{}`)
		msg, reason, env := envelopeOf(t, b)
		if resp.Header.Get("X-OpenRouter-Keys-Answer") != "edge" || reason != "not_openrouter_token" || env != want || !strings.Contains(msg, `"https://accounts.google.com"`) {
			t.Errorf("%s: %v %s", path, resp.Header, b)
		}
	}
	if n := reached() - before; n != 0 {
		t.Errorf("%d requests reached OpenRouter", n)
	}
	// The public model list is OpenRouter's to answer, whatever the bearer.
	// (The gateway's catalogue reads /models too, in the background: the
	// count may grow by more than this request.)
	models := e.emu.Count("/models")
	if resp, b := raw(t, "GET", gatewayBase+"/models", foreign, ""); resp.Header.Get("X-OpenRouter-Keys-Answer") == "edge" || resp.StatusCode != 200 || e.emu.Count("/models") == models {
		t.Errorf("GET /models answered at the edge: %d %.200s", resp.StatusCode, b)
	}
}
