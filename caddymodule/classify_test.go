package caddymodule

import (
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	ttl := 10 * time.Minute
	bearer := credential{key: goodKey, bearer: true, authorization: true}
	past := keyState{flags: flagAlive | flagHasExpiry, expiresAt: now.Add(-time.Minute).Unix()}
	future := keyState{flags: flagAlive | flagHasExpiry, expiresAt: now.Add(time.Hour).Unix()}
	recent := now.Add(-time.Minute).UnixNano()
	old := now.Add(-time.Hour).UnixNano()

	cases := []struct {
		name      string
		msg       authMessage
		cred      credential
		st        keyState
		inference bool
		want      reason
	}{
		{"malformed: truncated", msgUserNotFound, credential{key: goodKey[:40], bearer: true}, keyState{}, true, reasonMalformed},
		{"malformed: upper case", msgUserNotFound, credential{key: strings.ToUpper(goodKey), bearer: true}, keyState{}, true, reasonMalformed},
		{"malformed: missing auth header", msgMissingAuthHeader, credential{key: "abc", bearer: true}, keyState{}, true, reasonMalformed},
		{"missing auth header with a well-formed key", msgMissingAuthHeader, bearer, keyState{}, true, reasonNone},
		{"missing auth header, x-api-key", msgMissingAuthHeader, credential{key: "abc"}, keyState{}, true, reasonNone},
		{"expired", msgUserNotFound, bearer, past, true, reasonExpired},
		{"expired management key", msgUserNotFound, bearer, keyState{flags: past.flags | flagManagement, expiresAt: past.expiresAt}, true, reasonExpired},
		{"expiry in the future", msgUserNotFound, bearer, future, true, reasonNone},
		{"management key, inference", msgUserNotFound, bearer, keyState{flags: flagAlive | flagManagement}, true, reasonManagementKey},
		{"management key, management endpoint", msgUserNotFound, bearer, keyState{flags: flagAlive | flagManagement}, false, reasonNone},
		{"disabled", msgUserNotFound, bearer, keyState{flags: flagDead | flagDisabled, verdictAt: recent}, true, reasonDisabled},
		{"disabled, learned too long ago", msgUserNotFound, bearer, keyState{flags: flagDead | flagDisabled, verdictAt: old}, true, reasonNone},
		{"not found", msgUserNotFound, bearer, keyState{flags: flagDead | flagNotFound, verdictAt: recent}, true, reasonNotFound},
		{"not found, learned too long ago", msgUserNotFound, bearer, keyState{flags: flagDead | flagNotFound, verdictAt: old}, true, reasonNone},
		{"dead, nothing more known", msgUserNotFound, bearer, keyState{flags: flagDead, verdictAt: recent}, true, reasonNone},
		{"nothing known", msgUserNotFound, bearer, keyState{}, true, reasonNone},
		{"another message", msgOther, credential{key: "abc", bearer: true}, past, true, reasonNone},
		{"no key", msgUserNotFound, credential{authorization: true}, keyState{}, true, reasonNone},
	}
	for _, c := range cases {
		v := classify(c.msg, c.cred, c.st, now, c.inference, ttl)
		if v.reason != c.want {
			t.Errorf("%s: got %q, want %q", c.name, v.reason, c.want)
		}
		if v.known() && reasonMessage(v) == "" {
			t.Errorf("%s: no message for %q", c.name, v.reason)
		}
		if v.reason == reasonExpired && !v.expiresAt.Equal(time.Unix(past.expiresAt, 0)) {
			t.Errorf("%s: expires_at %v", c.name, v.expiresAt)
		}
	}
}

func TestReasonMessages(t *testing.T) {
	exp := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	for v, want := range map[verdict]string{
		{reason: reasonExpired, expiresAt: exp}: "Key expired. It expired at 2026-11-20T10:00:00Z",
		{reason: reasonDisabled}:                "Key disabled.",
		{reason: reasonMalformed}:               `"sk-or-v1-" followed by 64 lowercase hexadecimal digits`,
		{reason: reasonManagementKey}:           "Management keys cannot be used for inference.",
		{reason: reasonNotFound}:                "deleted, never issued, or belongs to another account",
	} {
		if got := reasonMessage(v); !strings.Contains(got, want) {
			t.Errorf("%s: %q lacks %q", v.reason, got, want)
		}
	}
}

func TestIsManagementPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/api/v1/key": true, "/api/v1/auth/key": true, "/api/v1/keys": true, "/api/v1/keys/abc": true,
		"/api/v1/credits": true, "/api/v1/chat/completions": false, "/api/v1/messages": false,
		"/api/v1/responses": false, "/api/v1/models": false, "/api/v1/completions": false,
	} {
		if got := isManagementPath(path); got != want {
			t.Errorf("isManagementPath(%q) = %v", path, got)
		}
	}
}
