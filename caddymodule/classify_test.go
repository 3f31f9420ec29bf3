package caddymodule

import (
	"strings"
	"testing"
	"time"
)

// The reason table for what the credential alone can say.
func TestClassifyRefusal(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	expiredJWT := jwtWith(`{"iss":"openrouter.ai","exp":` + itoa(now.Add(-time.Hour).Unix()) + `}`)
	liveJWT := jwtWith(`{"iss":"openrouter.ai","exp":` + itoa(now.Add(time.Hour).Unix()) + `}`)
	anthropic := "sk-ant-api03-" + strings.Repeat("k", 40)
	for _, c := range []struct {
		name          string
		msg           authMessage
		token         string
		want          reason
		needsEvidence bool
	}{
		{"malformed key, User not found.", msgUserNotFound, goodKey[:40], reasonMalformed, false},
		{"malformed key, Missing Authentication header", msgMissingAuth, `"` + goodKey + `"`, reasonMalformed, false},
		{"malformed key, no credentials (older wording)", msgNoCredentials, "undefined", reasonMalformed, false},
		{"another provider's key", msgMissingAuth, anthropic, reasonNotOpenRouterKey, false},
		{"expired JWT", msgUserNotFound, expiredJWT, reasonTokenExpired, false},
		{"live JWT refused: nothing claimed", msgUserNotFound, liveJWT, reasonNone, false},
		{"JWT without exp", msgUserNotFound, jwtWith(`{"iss":"openrouter.ai"}`), reasonNone, false},
		{"another key version", msgUserNotFound, "sk-or-v2-" + strings.Repeat("a", 64), reasonNone, false},
		{"unknown token", msgMissingAuth, "hello", reasonNone, false},
		{"today's key, User not found.", msgUserNotFound, goodKey, reasonNone, true},
		{"today's key, no credentials", msgNoCredentials, goodKey, reasonNone, true},
		{"today's key, Missing Authentication header", msgMissingAuth, goodKey, reasonNone, false},
		{"another message", msgOther, goodKey[:40], reasonNone, false},
		{"provider error is not a refusal", msgProviderError, goodKey[:40], reasonNone, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, needs := classifyRefusal(c.msg, classifyToken(c.token), now)
			if v.reason != c.want || needs != c.needsEvidence {
				t.Errorf("got %q (evidence %v), want %q (%v)", v.reason, needs, c.want, c.needsEvidence)
			}
		})
	}
}

func TestReasonMessages(t *testing.T) {
	exp := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		v    verdict
		want []string
	}{
		{verdict{reason: reasonExpired, at: exp}, []string{"Key expired. It expired at 2026-11-20T10:00:00Z"}},
		{verdict{reason: reasonExpired, at: exp, byLabel: true}, []string{"2026-11-20T10:00:00Z", "matched by label only"}},
		{verdict{reason: reasonDisabled}, []string{"Key disabled."}},
		{verdict{reason: reasonDisabled, byLabel: true}, []string{"Key disabled", "matched by label only"}},
		{verdict{reason: reasonMalformed, malformed: malformedLength}, []string{`"sk-or-v1-" followed by 64 lowercase hexadecimal digits`, "wrong length"}},
		{verdict{reason: reasonMalformed, malformed: malformedQuotes}, []string{"quotes"}},
		{verdict{reason: reasonManagementKey}, []string{"Management keys cannot be used for inference."}},
		{verdict{reason: reasonNotFound}, []string{"deleted, never issued, or belongs to another account"}},
		{verdict{reason: reasonTokenExpired, at: exp}, []string{"Token expired", "2026-11-20T10:00:00Z"}},
		{verdict{reason: reasonNotOpenRouterKey}, []string{"Not an OpenRouter key", foreignKeys[0].name}},
		{verdict{reason: reasonValidRetry}, []string{"the key works: retry"}},
	} {
		got := c.v.message()
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", c.v.reason, got, w)
			}
		}
	}
	for m := malformedLength; m <= malformedPlaceholder; m++ {
		if malformationText[m] == "" {
			t.Errorf("malformation %d has no text", m)
		}
	}
}

func TestIsManagementPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/api/v1/key": true, "/api/v1/auth/key": true, "/api/v1/keys": true, "/api/v1/keys/abc": true,
		"/api/v1/credits": true, "/api/v1/workspaces": true, "/api/v1/chat/completions": false, "/api/v1/messages": false,
		"/api/v1/responses": false, "/api/v1/models": false, "/api/v1/completions": false,
	} {
		if got := isManagementPath(path); got != want {
			t.Errorf("isManagementPath(%q) = %v", path, got)
		}
	}
}
