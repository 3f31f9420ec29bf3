package caddymodule

// classify.go owns the reasons: which 401 messages the gateway recognises,
// the table that turns a message, a credential and what is known of it into
// a reason, and the sentence each reason says.

import (
	"strings"
	"time"
)

// reason is the machine-readable cause of a key failure, sent as
// metadata.reason and X-OpenRouter-Key-Status.
type reason string

// The reasons this gateway can give.
const (
	reasonNone             reason = ""
	reasonMalformed        reason = "key_malformed"
	reasonExpired          reason = "key_expired"
	reasonDisabled         reason = "key_disabled"
	reasonNotFound         reason = "key_not_found"
	reasonManagementKey    reason = "management_key"
	reasonTokenExpired     reason = "token_expired"
	reasonNotOpenRouterKey reason = "not_openrouter_key"
	reasonProviderRejected reason = "provider_key_rejected"
	reasonValidRetry       reason = "key_valid_retry"
)

// verdict is what the gateway can truthfully say about a failed request.
type verdict struct {
	reason reason
	// at is when the key or token expired (key_expired, token_expired).
	at time.Time
	// byLabel: the fact comes from the account's records that share the
	// key's label, not from a record matched by hash. Said so in the
	// message and in metadata.matched_by; never stored, never answered at
	// the edge.
	byLabel   bool
	malformed malformation // key_malformed: what is wrong
	provider  uint8        // not_openrouter_key: index in foreignKeys
	// workspaces is how many workspaces the listing behind key_not_found
	// searched.
	workspaces int
}

func (v verdict) known() bool { return v.reason != reasonNone }

// authMessage is which of OpenRouter's 401 messages a response carries.
type authMessage uint8

const (
	msgOther authMessage = iota
	// msgUserNotFound: "User not found.": expired, deleted, disabled, or a
	// management key used for inference. The message this gateway exists
	// to explain.
	msgUserNotFound
	// msgMissingAuth: sent when a bearer token lacks the "sk-or-" prefix
	// (misleading: the header was there).
	msgMissingAuth
	// msgNoCredentials: "no credentials" although the request sent one
	// (misleading then; accurate without one).
	msgNoCredentials
	// msgProviderError: OpenRouter accepted the key and a provider refused
	// its own credentials (BYOK).
	msgProviderError
)

// authMessageOf recognises OpenRouter's 401 messages, the current wordings
// and the older ones still seen.
func authMessageOf(message string) authMessage {
	switch message {
	case "User not found.":
		return msgUserNotFound
	case "Missing Authentication header", "Missing Authentication header or invalid API key":
		return msgMissingAuth
	case "No cookie auth credentials found", "No auth credentials found":
		return msgNoCredentials
	case "Provider returned error":
		return msgProviderError
	}
	return msgOther
}

// refusesCredential reports whether msg is OpenRouter refusing the
// credential the request sent.
func (m authMessage) refusesCredential() bool {
	return m == msgUserNotFound || m == msgMissingAuth || m == msgNoCredentials
}

// classifyToken decides what a refusal means from the credential alone,
// before anything is looked up:
//
//	credential                          | message                        | reason
//	------------------------------------|--------------------------------|--------------------
//	certainly malformed                 | any refusal                    | key_malformed
//	another provider's key              | any refusal                    | not_openrouter_key
//	JWT whose exp is past               | any refusal                    | token_expired
//	JWT otherwise, sk-or- of another    | any                            | (none)
//	version, unknown token              |                                |
//	OpenRouter key                      | User not found., no credentials| needs evidence (explainKey)
//
// needsEvidence is true for the last row.
func classifyRefusal(msg authMessage, c credential, now time.Time) (v verdict, needsEvidence bool) {
	if !msg.refusesCredential() {
		return verdict{}, false
	}
	switch c.kind {
	case credMalformed:
		return verdict{reason: reasonMalformed, malformed: c.malformed}, false
	case credForeign:
		return verdict{reason: reasonNotOpenRouterKey, provider: c.provider}, false
	case credJWT:
		if exp, ok := jwtExpiry(c.token); ok && !now.Before(exp) {
			return verdict{reason: reasonTokenExpired, at: exp}, false
		}
	case credKey:
		return verdict{}, msg == msgUserNotFound || msg == msgNoCredentials
	}
	return verdict{}, false
}

// managementPaths are the endpoints a management key may call, as opposed
// to inference.
func isManagementPath(path string) bool {
	path = strings.TrimSuffix(path, "/")
	return strings.HasSuffix(path, "/key") || strings.HasSuffix(path, "/credits") ||
		strings.HasSuffix(path, "/keys") || strings.Contains(path, "/keys/") ||
		strings.HasSuffix(path, "/workspaces") || strings.Contains(path, "/workspaces/")
}

// malformationText completes "this one ..." in key_malformed's message.
var malformationText = map[malformation]string{
	malformedLength:      "has the wrong length",
	malformedUpperCase:   "has upper-case letters",
	malformedDigits:      "has characters other than 0-9 and a-f after the prefix",
	malformedSpace:       "contains whitespace, control or invisible characters",
	malformedQuotes:      "is wrapped in quotes",
	malformedBearerTwice: `says "Bearer" twice`,
	malformedPlaceholder: "is a placeholder or an unexpanded variable, not a key",
}

// message is the sentence that replaces OpenRouter's. It states what is
// known and what to do, and never includes the key. provider_key_rejected
// keeps the upstream's own message and has none.
func (v verdict) message() string {
	const labelNote = " (matched by label only: the account's records that share this key's label all say so, but a label is not unique)"
	switch v.reason {
	case reasonMalformed:
		return `Key malformed: an OpenRouter key is "sk-or-v1-" followed by 64 lowercase hexadecimal digits (73 characters); this one ` +
			malformationText[v.malformed] + "."
	case reasonExpired:
		if v.byLabel {
			return "Key expired at " + v.at.UTC().Format(time.RFC3339) + labelNote + ". An expiry cannot be extended: create a new key."
		}
		return "Key expired. It expired at " + v.at.UTC().Format(time.RFC3339) + "; an expiry cannot be extended, create a new key."
	case reasonDisabled:
		if v.byLabel {
			return "Key disabled" + labelNote + ". Re-enable it in the key settings or use another key."
		}
		return "Key disabled. Re-enable it in the key settings or use another key."
	case reasonManagementKey:
		return "Management keys cannot be used for inference. Use an API key; a management key only manages keys and credits."
	case reasonNotFound:
		return "Key not found in any workspace of the account of the gateway's management key: it was deleted, never issued, or belongs to another account."
	case reasonTokenExpired:
		return "Token expired. It expired at " + v.at.UTC().Format(time.RFC3339) + "; get a new access token."
	case reasonNotOpenRouterKey:
		return "Not an OpenRouter key: this looks like a key of " + foreignKeys[v.provider].name +
			`. OpenRouter keys start with "sk-or-v1-"; create one at https://openrouter.ai/settings/keys (a provider's own key can be added there as a BYOK key).`
	case reasonValidRetry:
		return "OpenRouter did not recognise the key on this request, but the key works: retry."
	}
	return ""
}
