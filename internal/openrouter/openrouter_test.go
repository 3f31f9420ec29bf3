package openrouter

import "testing"

// The bodies OpenRouter sends, byte for byte, as captured in public
// reports and documented examples.
func TestBodiesAreOpenRouters(t *testing.T) {
	for _, c := range []struct {
		name     string
		envelope Envelope
		want     string
	}{
		{"openai", EnvelopeOpenAI, `{"error":{"message":"User not found.","code":401}}`},
		{"flat", EnvelopeFlat, `{"message":"User not found.","code":401}`},
		{"messages", EnvelopeMessages, `{"type":"error","error":{"type":"authentication_error","message":"User not found."}}`},
		{"responses docs", EnvelopeResponsesDocs, `{"error":{"code":"server_error","message":"User not found."},"error_type":"authentication"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := string(c.envelope.Body(401, MessageUserNotFound, nil)); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
	got := string(EnvelopeOpenAI.Body(402, "More credits.", map[string]any{"provider_name": nil}))
	if want := `{"error":{"message":"More credits.","code":402,"metadata":{"provider_name":null}}}`; got != want {
		t.Errorf("with metadata: got %s, want %s", got, want)
	}
}

// The /responses docs envelope's error_type is OpenRouter's ApiErrorType
// for the status, never a value outside it: a spent key cap (403) is
// permission_denied, as the upstream's own answer says.
func TestResponsesErrorTypes(t *testing.T) {
	for status, want := range map[int]string{
		400: "invalid_request", 401: "authentication", 402: "payment_required", 403: "permission_denied",
		404: "not_found", 408: "timeout", 413: "payload_too_large", 422: "unprocessable", 429: "rate_limit_exceeded",
		500: "server", 502: "server", 503: "server", 418: "unmapped",
	} {
		got := string(EnvelopeResponsesDocs.Body(status, "Said.", nil))
		if w := `{"error":{"code":"server_error","message":"Said."},"error_type":"` + want + `"}`; got != w {
			t.Errorf("%d: got  %s\nwant %s", status, got, w)
		}
	}
}

func TestFamilyOf(t *testing.T) {
	for path, want := range map[string]Family{
		"/api/v1/chat/completions": FamilyOpenAI,
		"/api/v1/models":           FamilyOpenAI,
		"/api/v1/key":              FamilyOpenAI,
		"/api/v1/messages":         FamilyMessages,
		"/api/v1/messages/":        FamilyMessages,
		"/api/v1/responses":        FamilyResponses,
		"/responses":               FamilyResponses,
	} {
		if got := FamilyOf(path); got != want {
			t.Errorf("FamilyOf(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestLabel(t *testing.T) {
	key := KeyPrefix + "0fa1234567890123456789012345678901234567890123456789012345678240"
	if len(key) != KeyLen {
		t.Fatalf("test key is %d long", len(key))
	}
	if got, want := Label(key), "sk-or-v1-0fa...240"; got != want {
		t.Errorf("Label = %q, want %q", got, want)
	}
}

func TestAuthMessageOf(t *testing.T) {
	for msg, want := range map[string]AuthMessage{
		"User not found.":                                  AuthUserNotFound,
		"Missing Authentication header":                    AuthMissingHeader,
		"Missing Authentication header or invalid API key": AuthMissingHeader,
		"No auth credentials found":                        AuthNoCredentials,
		"No cookie auth credentials found":                 AuthNoCredentials,
		"Provider returned error":                          AuthProviderError,
		"User not found":                                   AuthOther,
		"Invalid credentials":                              AuthOther,
	} {
		if got := AuthMessageOf(msg); got != want {
			t.Errorf("%q: got %d, want %d", msg, got, want)
		}
	}
}

func TestIsManagementPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/api/v1/key": true, "/api/v1/auth/key": true, "/api/v1/keys": true, "/api/v1/keys/abc": true,
		"/api/v1/credits": true, "/api/v1/workspaces": true, "/api/v1/chat/completions": false, "/api/v1/messages": false,
		"/api/v1/responses": false, "/api/v1/models": false, "/api/v1/completions": false,
	} {
		if got := IsManagementPath(path); got != want {
			t.Errorf("IsManagementPath(%q) = %v", path, got)
		}
	}
}
