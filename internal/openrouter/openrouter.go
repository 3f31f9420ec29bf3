// Package openrouter is OpenRouter's API as the gateway, its key check,
// its key watch and the OpenRouter emulator in tests/ know it, written
// once so that they cannot drift apart: the shape of its keys and labels
// (openrouter.go), its endpoint families and the error envelope each uses,
// its 402/403/429 failures (what each says: failures.go; builders of its
// wording: bodies.go), its UTC limit calendar (calendar.go), every
// endpoint path and query parameter and the settings URLs (paths.go), the
// wire types and the record-hash scheme (records.go, wire.go), the one
// walk through GET /keys pages and its overlap check (walk.go), and the
// client with one method per endpoint (client.go).
//
// It builds on the standard library alone: nothing of Caddy, zap or
// Prometheus; the client tells a Hook of each request instead.
package openrouter

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Every key OpenRouter issues today, inference and management keys alike:
// KeyPrefix followed by 64 lowercase hex digits, KeyLen characters.
const (
	KeyPrefix = "sk-or-v1-"
	KeyLen    = len(KeyPrefix) + 64
	// CredentialPrefix is what OpenRouter looks for in a bearer token
	// before anything else; other tokens get "Missing Authentication
	// header".
	CredentialPrefix = "sk-or-"
)

// Label is OpenRouter's masked, public form of a key: its first 12
// characters, "...", and its last 3. key must be KeyLen long.
func Label(key string) string {
	return key[:12] + "..." + key[KeyLen-3:]
}

// The 401 messages OpenRouter sends for authentication failures.
const (
	// MessageUserNotFound is the misleading one: expired, deleted and
	// disabled keys, and management keys used for inference, all get it.
	MessageUserNotFound = "User not found."
	// MessageMissingAuthHeader is sent when a bearer token lacks the
	// "sk-or-" prefix (misleading: the header was there).
	MessageMissingAuthHeader = "Missing Authentication header"
	// MessageNoCookieAuth is sent when there is no Authorization header.
	MessageNoCookieAuth = "No cookie auth credentials found"
	// MessageProviderError comes with a 401 when OpenRouter accepted the
	// key and a provider refused its own credentials (BYOK).
	MessageProviderError = "Provider returned error"

	// Older wordings, still seen.
	messageMissingAuthOrInvalid = "Missing Authentication header or invalid API key"
	messageNoAuthCredentials    = "No auth credentials found"
)

// AuthMessage is which of OpenRouter's 401 messages a response carries.
type AuthMessage uint8

// The 401 messages, whatever their wording.
const (
	// AuthOther is a message this package does not know.
	AuthOther AuthMessage = iota
	// AuthUserNotFound is MessageUserNotFound.
	AuthUserNotFound
	// AuthMissingHeader is MessageMissingAuthHeader and its older
	// wording.
	AuthMissingHeader
	// AuthNoCredentials is MessageNoCookieAuth and its older wording:
	// accurate without a credential, misleading with one.
	AuthNoCredentials
	// AuthProviderError is MessageProviderError.
	AuthProviderError
)

// AuthMessageOf recognises OpenRouter's 401 messages, the current
// wordings and the older ones still seen.
func AuthMessageOf(message string) AuthMessage {
	switch message {
	case MessageUserNotFound:
		return AuthUserNotFound
	case MessageMissingAuthHeader, messageMissingAuthOrInvalid:
		return AuthMissingHeader
	case MessageNoCookieAuth, messageNoAuthCredentials:
		return AuthNoCredentials
	case MessageProviderError:
		return AuthProviderError
	}
	return AuthOther
}

// RefusesCredential reports whether m is OpenRouter refusing the
// credential a request sent (or the lack of one).
func (m AuthMessage) RefusesCredential() bool {
	return m == AuthUserNotFound || m == AuthMissingHeader || m == AuthNoCredentials
}

// IsManagementPath reports whether an API path (with or without the
// /api/v1 prefix and a trailing slash) is one a management key may call,
// as opposed to inference: /key, /credits, /keys and /workspaces with
// what is below them.
func IsManagementPath(path string) bool {
	path = strings.TrimSuffix(path, "/")
	return strings.HasSuffix(path, PathKey) || strings.HasSuffix(path, pathCredits) ||
		strings.HasSuffix(path, pathKeys) || strings.Contains(path, pathKeys+"/") ||
		strings.HasSuffix(path, pathWorkspaces) || strings.Contains(path, pathWorkspaces+"/")
}

// Family is a group of endpoints that share an error envelope.
type Family uint8

// The endpoint families.
const (
	// FamilyOpenAI is every endpoint but the two below: chat completions,
	// completions, models, key and management endpoints.
	FamilyOpenAI Family = iota
	// FamilyMessages is the Anthropic-compatible /messages.
	FamilyMessages
	// FamilyResponses is the OpenAI Responses API, /responses.
	FamilyResponses
	familyCount
)

// Families is every family, for tables indexed by Family.
const Families = int(familyCount)

// String names the family for logs and metrics.
func (f Family) String() string {
	switch f {
	case FamilyMessages:
		return "messages"
	case FamilyResponses:
		return "responses"
	}
	return "openai"
}

// FamilyOf is the family of an API path (with or without the /api/v1
// prefix, with or without a trailing slash).
func FamilyOf(path string) Family {
	path = strings.TrimSuffix(path, "/")
	switch {
	case strings.HasSuffix(path, PathMessages):
		return FamilyMessages
	case strings.HasSuffix(path, PathResponses):
		return FamilyResponses
	}
	return FamilyOpenAI
}

// Envelope is one of the shapes OpenRouter's error bodies come in.
type Envelope uint8

// The envelopes.
const (
	// EnvelopeOpenAI is {"error":{"message":...,"code":<status>,"metadata"?:{...}}},
	// used on every endpoint but /messages, and by /responses according to
	// OpenRouter's OpenAPI spec and SDK.
	EnvelopeOpenAI Envelope = iota
	// EnvelopeFlat is {"message":...,"code":<status>}, seen in reports.
	EnvelopeFlat
	// EnvelopeMessages is Anthropic's
	// {"type":"error","error":{"type":"authentication_error","message":...}}.
	EnvelopeMessages
	// EnvelopeResponsesDocs is the /responses shape of a docs example:
	// {"error":{"code":"server_error","message":...},"error_type":"authentication"}.
	EnvelopeResponsesDocs
)

// DefaultEnvelope is the envelope a family is documented to use for a 401
// before any has been seen. For /responses the OpenAPI spec and the SDK
// generated from it win over the docs example: they are what clients
// validate against.
func DefaultEnvelope(f Family) Envelope {
	if f == FamilyMessages {
		return EnvelopeMessages
	}
	return EnvelopeOpenAI
}

// Body renders an error in the envelope, members in OpenRouter's order.
// metadata is omitted when nil.
func (e Envelope) Body(status int, message string, metadata any) []byte {
	var v any
	switch e {
	case EnvelopeFlat:
		v = errorObject{Message: message, Code: status, Metadata: metadata}
	case EnvelopeMessages:
		var m messagesError
		m.Type, m.Error.Type, m.Error.Message = "error", anthropicErrorType(status), message
		v = m
	case EnvelopeResponsesDocs:
		var r responsesDocsError
		r.Error.Code, r.Error.Message, r.ErrorType = "server_error", message, apiErrorType(status)
		v = r
	default:
		v = openAIError{errorObject{Message: message, Code: status, Metadata: metadata}}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("openrouter: unencodable error body: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// Error bodies are structs, not maps, so that members come in OpenRouter's
// order: {"error":{"message":"User not found.","code":401}} byte for byte.
type (
	errorObject struct {
		Message  string `json:"message"`
		Code     int    `json:"code"`
		Metadata any    `json:"metadata,omitempty"`
	}
	openAIError struct {
		Error errorObject `json:"error"`
	}
	messagesError struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	responsesDocsError struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		ErrorType string `json:"error_type"`
	}
)

// anthropicErrorType is Anthropic's error type for a status.
func anthropicErrorType(status int) string {
	switch status {
	case 400:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 402:
		return "billing_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 429:
		return "rate_limit_error"
	}
	return "api_error"
}

// apiErrorType is the error_type of the /responses docs envelope for a
// status: OpenRouter's ApiErrorType ("canonical OpenRouter error type,
// stable across all API formats", in its OpenAPI spec and SDKs), by the
// status each value stands for. A status with no value of its own is
// "server" at 500 and above, "unmapped" below. An answer that rewrites the
// upstream's own body keeps the error_type the upstream sent.
func apiErrorType(status int) string {
	switch status {
	case 400:
		return "invalid_request"
	case 401:
		return "authentication"
	case 402:
		return "payment_required"
	case 403:
		return "permission_denied"
	case 404:
		return "not_found"
	case 408:
		return "timeout"
	case 412:
		return "precondition_failed"
	case 413:
		return "payload_too_large"
	case 422:
		return "unprocessable"
	case 429:
		return "rate_limit_exceeded"
	}
	if status >= 500 {
		return "server"
	}
	return "unmapped"
}
