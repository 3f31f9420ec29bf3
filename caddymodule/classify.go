package caddymodule

import (
	"strings"
	"time"
)

// reason is the machine-readable cause of a key failure, sent as
// metadata.reason and X-OpenRouter-Key-Status.
type reason string

// The reasons this gateway can give. The rules that choose one are in
// classify and explainState; the sentences are in reasonMessage.
const (
	reasonNone          reason = ""
	reasonMalformed     reason = "key_malformed"
	reasonExpired       reason = "key_expired"
	reasonDisabled      reason = "key_disabled"
	reasonManagementKey reason = "management_key"
	reasonNotFound      reason = "key_not_found"
)

// verdict is what the gateway can truthfully say about a failed key.
type verdict struct {
	reason    reason
	expiresAt time.Time // with reasonExpired
}

func (v verdict) known() bool { return v.reason != reasonNone }

// authMessage is which of OpenRouter's 401 messages a response carries.
type authMessage uint8

const (
	msgOther authMessage = iota
	// msgUserNotFound is "User not found.": expired, deleted, disabled, or
	// a management key used for inference. The message this gateway exists
	// to explain.
	msgUserNotFound
	// msgMissingAuthHeader is sent when a bearer token lacks the "sk-or-"
	// prefix: misleading, since the header was there.
	msgMissingAuthHeader
)

func authMessageOf(message string) authMessage {
	switch message {
	case "User not found.":
		return msgUserNotFound
	case "Missing Authentication header":
		return msgMissingAuthHeader
	}
	// "No cookie auth credentials found" (no Authorization header at all)
	// is accurate and, like every other message, stays untouched.
	return msgOther
}

// classify decides what a 401 with message msg means for a request that
// presented cred, given what is known about the key. It never guesses:
// without evidence it returns reasonNone and the upstream body stands.
//
//	message                       | condition                                  | reason
//	------------------------------|--------------------------------------------|---------------
//	Missing Authentication header | a bearer token was sent, not well formed   | key_malformed
//	User not found.               | the token is not sk-or-v1- + 64 hex        | key_malformed
//	User not found.               | known expires_at is in the past            | key_expired
//	User not found.               | GET /key said is_management_key, inference | management_key
//	User not found.               | management record says disabled            | key_disabled
//	User not found.               | complete management listing has no record  | key_not_found
//	anything else                 |                                            | (none)
func classify(msg authMessage, cred credential, known keyState, now time.Time, inference bool, freshFor time.Duration) verdict {
	switch msg {
	case msgMissingAuthHeader:
		if cred.bearer && !wellFormedKey(cred.key) {
			return verdict{reason: reasonMalformed}
		}
	case msgUserNotFound:
		if cred.key == "" {
			return verdict{}
		}
		if !wellFormedKey(cred.key) {
			return verdict{reason: reasonMalformed}
		}
		return explainState(known, now, inference, freshFor)
	}
	return verdict{}
}

// explainState is what the knowledge about a well-formed key says about
// why OpenRouter did not find its user. Facts that can change (disabled,
// not found) count only while younger than freshFor; an expiry never
// changes.
func explainState(st keyState, now time.Time, inference bool, freshFor time.Duration) verdict {
	fresh := now.UnixNano()-st.verdictAt < int64(freshFor)
	switch {
	case st.expired(now):
		return verdict{reason: reasonExpired, expiresAt: st.expiry()}
	case st.has(flagManagement) && inference:
		return verdict{reason: reasonManagementKey}
	case st.has(flagDisabled) && fresh:
		return verdict{reason: reasonDisabled}
	case st.has(flagNotFound) && fresh:
		return verdict{reason: reasonNotFound}
	}
	return verdict{}
}

// reasonMessage is the sentence that replaces "User not found.". It states
// what is known and what to do, and never includes the key.
func reasonMessage(v verdict) string {
	switch v.reason {
	case reasonMalformed:
		return `Key malformed: an OpenRouter key is "sk-or-v1-" followed by 64 lowercase hexadecimal digits (73 characters). Check for whitespace, quotes or a truncated paste.`
	case reasonExpired:
		return "Key expired. It expired at " + v.expiresAt.UTC().Format(time.RFC3339) + "; an expiry cannot be extended, create a new key."
	case reasonDisabled:
		return "Key disabled. Re-enable it in the key settings or use another key."
	case reasonManagementKey:
		return "Management keys cannot be used for inference. Use an API key; a management key only manages keys and credits."
	case reasonNotFound:
		return "Key not found in the account of the gateway's management key: it was deleted, never issued, or belongs to another account."
	}
	return ""
}

// messageJSON holds each fixed message as a JSON string, encoded once.
var messageJSON = func() map[reason][]byte {
	m := make(map[reason][]byte)
	for _, r := range []reason{reasonMalformed, reasonDisabled, reasonManagementKey, reasonNotFound} {
		m[r] = quoteJSON(reasonMessage(verdict{reason: r}))
	}
	return m
}()

// reasonMessageJSON is reasonMessage as a JSON string.
func reasonMessageJSON(v verdict) []byte {
	if b, ok := messageJSON[v.reason]; ok {
		return b
	}
	return quoteJSON(reasonMessage(v))
}

// isManagementPath reports whether path is one of the endpoints a
// management key may call (GET /key, /auth/key, /keys..., /credits), as
// opposed to inference.
func isManagementPath(path string) bool {
	path = strings.TrimSuffix(path, "/")
	return strings.HasSuffix(path, "/key") || strings.HasSuffix(path, "/credits") ||
		strings.HasSuffix(path, "/keys") || strings.Contains(path, "/keys/")
}
