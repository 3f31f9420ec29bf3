package openrouter

// provider.go owns what a "Provider returned error" body says, at any
// status (400, 402, 403, 404, 429, 502, 503, ...): the provider, its own
// answer unwrapped from metadata.raw (a JSON string or an object, read as
// hostile: bounded, stripped of control characters, markup and anything
// key-shaped), and whose fault it is when the body shows it (Cause); and
// the 429s of the fourth round told apart by metadata.limit_source:
// OpenRouter's admission control, the free-model minute, the user's own
// provider account. The builders of these bodies are in provider_bodies.go.

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The values of metadata.limit_source of the fourth round.
const (
	// LimitSourceAdmissionControl: OpenRouter could not verify the
	// account's credits in time; transient, sent with Retry-After.
	LimitSourceAdmissionControl = "openrouter_admission_control"
	// LimitSourceFreeTierPerMinute: the free-model rate per minute.
	LimitSourceFreeTierPerMinute = "openrouter_free_tier_per_minute"
	// LimitSourceProviderAccount: the provider limited the user's own
	// provider key (BYOK).
	LimitSourceProviderAccount = "upstream_provider_account"
)

// MessageAdmissionControl is the admission-control 429's message.
const MessageAdmissionControl = "OpenRouter could not verify available credits for this request in time. Retry shortly."

// URLProviderRouting is OpenRouter's guide to choosing providers
// (provider.order, provider.ignore, provider.only).
const URLProviderRouting = "https://openrouter.ai/docs/guides/routing/provider-selection"

// The kinds of issue 26's provider errors, after policy.go's.
const (
	// KindProviderError: "Provider returned error" at a status other than
	// 429's shared pool; Failure.ProviderError says what is known.
	KindProviderError Kind = policyKindsEnd + iota
	// KindAdmissionControl (429): OpenRouter could not verify the
	// account's credits in time; transient, the balance is not the cause.
	KindAdmissionControl
	kindsEnd
)

func init() {
	kindNames[KindProviderError] = "provider_error"
	kindNames[KindAdmissionControl] = "admission_control"
}

// Cause is whose fault a provider's error is, as far as the body shows.
type Cause uint8

// The causes.
const (
	// CauseUnknown: the body does not show whose fault it is.
	CauseUnknown Cause = iota
	// CauseRequest: the provider refused the request itself (its
	// invalid_request_error): change the request, no retry helps.
	CauseRequest
	// CauseProvider: the provider failed or is over capacity (a 5xx, an
	// overload): retry, or route to another provider.
	CauseProvider
	// CauseOwnKey: the provider refused the user's own provider key
	// (is_byok): its validity, permissions or quota at the provider.
	CauseOwnKey
	// CauseRegion: the provider does not serve the request's region.
	CauseRegion
	// CausePolicy: the provider refused the request under its own terms or
	// content policy.
	CausePolicy
)

var causeNames = [...]string{"unknown", "request", "provider", "own_provider_key", "region", "provider_policy"}

// String is the cause's name (metadata.fault).
func (c Cause) String() string {
	if int(c) < len(causeNames) {
		return causeNames[c]
	}
	return "cause_" + strconv.Itoa(int(c))
}

// ProviderError is what a "Provider returned error" body says of the
// provider's own answer. Every string is safe to show: bounded, without
// control characters, markup or key-shaped runs.
type ProviderError struct {
	// Provider is metadata.provider_name, "" when not sent.
	Provider string
	// Code is metadata.provider_error_code (or provider_code), 0 when not
	// sent.
	Code int
	// BYOK is metadata.is_byok: the request used the user's own provider
	// key.
	BYOK bool
	// Message is the provider's own message, unwrapped from metadata.raw
	// (.error.message, .message or .detail of an object, or the string
	// itself); "" when raw is missing or says nothing readable.
	Message string
	// Type is raw's error type or code ("invalid_request_error",
	// "no_available_workers"), "" when it has none.
	Type string
	// Cause is whose fault it is, CauseUnknown when the body cannot tell.
	Cause Cause
}

// Bounds on what is shown of a provider's answer.
const (
	maxProviderMessage = 300
	maxProviderName    = 60
	maxProviderType    = 60
)

// providerKind is the kind of a fourth-round 429 by its limit_source, or
// of a "Provider returned error" that the shared pool's rule (failures.go)
// does not claim; ok is false for any other body.
func (w *wire) providerKind(status int) (Kind, bool) {
	switch w.limitSource {
	case LimitSourceAdmissionControl:
		return KindAdmissionControl, true
	case LimitSourceFreeTierPerMinute:
		return KindFreePerMinute, true
	case LimitSourceProviderAccount:
		return KindProviderPool, true
	case "":
	default:
		return KindUnrecognised, false
	}
	switch {
	case status == http.StatusTooManyRequests && strings.Contains(w.lower, "could not verify available credits"):
		return KindAdmissionControl, true
	case strings.TrimSpace(w.lower) != "provider returned error" || status == http.StatusUnauthorized:
		return KindUnrecognised, false
	case status == http.StatusTooManyRequests && w.isBYOK && quotaSpent(unwrapRaw(w.metadata["raw"], 0)):
		// The user's own provider key has no quota left at the provider
		// (OpenAI's insufficient_quota comes as a 429): no rate limit, no
		// retry cures it.
		return KindProviderError, true
	case status == http.StatusTooManyRequests && (w.provider != "" || strings.Contains(strings.ToLower(w.raw), "rate-limited upstream")):
		// The shared pool's or the user's own key's rate limit.
		return KindUnrecognised, false
	}
	return KindProviderError, true
}

// providerFigures fills what a fourth-round body adds to a recognised
// failure: the user's own provider account, and a provider's error; and
// makes any provider's name safe to show.
func (w *wire) providerFigures(f *Failure) {
	// A provider's name is shown in sentences: whatever kind named it,
	// it is shown safe.
	f.Provider = SafeText(f.Provider, maxProviderName)
	if w.limitSource == LimitSourceProviderAccount {
		f.BYOK = true
	}
	if f.Kind != KindProviderError {
		return
	}
	pe := &ProviderError{Provider: SafeText(w.provider, maxProviderName), BYOK: w.isBYOK}
	f.Provider = pe.Provider
	for _, name := range []string{"provider_error_code", "provider_code"} {
		if n, ok := number(w.metadata[name]); ok && n > 0 && n < 1000 {
			pe.Code = int(n)
			break
		}
	}
	a := unwrapRaw(w.metadata["raw"], 0)
	pe.Message, pe.Type = SafeText(a.message, maxProviderMessage), SafeText(a.typ, maxProviderType)
	pe.Cause = causeOf(f.Status, pe, strings.ToLower(strings.Join(a.names, " ")), strings.ToLower(a.message))
	f.ProviderError = pe
}

// rawAnswer is what metadata.raw shows of the provider's answer: its
// message, its error type or code for people (the code first: it is the
// more specific), and every type, code and status it names, for causeOf.
type rawAnswer struct {
	message, typ string
	names        []string
}

// unwrapRaw reads metadata.raw: a JSON object, or a string that holds one
// or is the message itself.
func unwrapRaw(raw any, depth int) rawAnswer {
	if depth > 2 {
		return rawAnswer{}
	}
	switch v := raw.(type) {
	case string:
		s := strings.TrimSpace(v)
		if strings.HasPrefix(s, "{") {
			var obj map[string]any
			dec := json.NewDecoder(strings.NewReader(s))
			dec.UseNumber()
			if dec.Decode(&obj) == nil {
				return unwrapRaw(obj, depth+1)
			}
		}
		return rawAnswer{message: s}
	case map[string]any:
		var a rawAnswer
		a.names = texts(v, "code", "type", "status")
		switch e := v["error"].(type) {
		case map[string]any:
			a.message = firstText(e, "message", "detail")
			a.names = append(texts(e, "code", "type", "status"), a.names...)
		case string:
			a.message = e
		}
		if a.message == "" {
			a.message = firstText(v, "message", "detail", "error_message")
		}
		if strings.HasPrefix(strings.TrimSpace(a.message), "{") {
			if inner := unwrapRaw(a.message, depth+1); inner.message != "" {
				a.message = inner.message
				a.names = append(a.names, inner.names...)
			}
		}
		if len(a.names) > 0 {
			a.typ = a.names[0]
		}
		return a
	}
	return rawAnswer{}
}

// quotaSpent reports whether a provider's answer names its quota or
// billing as spent.
func quotaSpent(a rawAnswer) bool {
	for _, n := range a.names {
		if n = strings.ToLower(n); n == "insufficient_quota" || n == "billing_hard_limit_reached" {
			return true
		}
	}
	return false
}

// firstText is the first of the members that is a non-empty string.
func firstText(obj map[string]any, names ...string) string {
	for _, n := range names {
		if s, ok := obj[n].(string); ok && s != "" {
			return s
		}
	}
	return ""
}

// texts are the members that are non-empty strings, in the order named.
func texts(obj map[string]any, names ...string) []string {
	var out []string
	for _, n := range names {
		if s, ok := obj[n].(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

// causeOf decides whose fault a provider's error is from what the body
// shows: the provider's error types and codes (names, lower case), its
// message (lower case), its status code, the status and is_byok;
// CauseUnknown when none of them tells. The request is blamed only on the
// provider's own error type, never on words in a message.
func causeOf(status int, pe *ProviderError, names, message string) Cause {
	code := pe.Code
	if code == 0 {
		code = status
	}
	both := names + " " + message
	switch {
	case containsAny(both, "unsupported_country", "country, region, or territory", "region_restricted",
		"not available in your region", "unsupported region", "unsupported_region"):
		return CauseRegion
	case pe.BYOK && (code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusPaymentRequired ||
		containsAny(both, "invalid_api_key", "invalid api key", "incorrect api key", "authentication_error", "permission_error",
			"permission_denied", "insufficient_quota", "invalid x-api-key", "api key not valid", "unauthenticated")):
		return CauseOwnKey
	case containsAny(names, "request_forbidden", "policy_violation", "content_policy") ||
		containsAny(message, "terms of service", "content policy", "usage policy"):
		return CausePolicy
	case containsAny(names, "invalid_request_error") && code < 500:
		return CauseRequest
	case code >= 500 && code != http.StatusNotImplemented && code != http.StatusHTTPVersionNotSupported,
		containsAny(both, "overloaded", "no_available_workers", "service unavailable", "service_unavailable",
			"temporarily unavailable", "over capacity"):
		return CauseProvider
	}
	return CauseUnknown
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// SafeText is s as the gateway may show it to people and programs: no
// control or invisible formatting characters (whitespace runs become one
// space), no markup (angle brackets and Markdown links are broken), every
// key-shaped run replaced by "[redacted]", at most limit bytes (cut at a
// character, with "..." when cut). What a provider sent is anyone's text.
func SafeText(s string, limit int) string {
	var b strings.Builder
	space, scan := false, 4*limit+64
	cutShort := len(s) > scan
	for i, w := 0, 0; i < min(len(s), scan); i += w {
		r, size := utf8.DecodeRuneInString(s[i:])
		w = size
		switch {
		case r == utf8.RuneError && size <= 1:
			continue
		case unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) ||
			r == '\u2028' || r == '\u2029':
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		switch r {
		case '<':
			b.WriteString("‹")
		case '>':
			b.WriteString("›")
		default:
			b.WriteRune(r)
		}
	}
	kept := b.String()
	if cutShort {
		// The last run may be part of a key: drop it.
		kept = strings.TrimRightFunc(kept, func(r rune) bool { return r < utf8.RuneSelf && isKeyChar(byte(r)) })
	}
	out := strings.ReplaceAll(redactKeyShaped(kept), "](", "] (")
	if len(out) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = strings.TrimSpace(out[:cut]) + "..."
	}
	return out
}

// keyPrefixes start the keys of OpenRouter and of the providers behind
// it: a run starting with one is a key, however short its parts.
var keyPrefixes = []string{"sk-", "AIza", "gsk_", "xai-", "pplx-", "hf_", "r8_", "fw_", "nvapi-", "csk-", "ghp_", "Bearer."}

// redactKeyShaped replaces every run of key characters (letters, digits,
// "-", "_", ".", "+", "/", "=") that looks like a secret by
// "[redacted]": one that starts with a key prefix and is 12 characters or
// longer, or one with a part (between "-", "_", ".", "/", "+", "=") of 16
// or more letters and digits mixed, or of 32 or more of either, as keys,
// tokens and hashes have and words, model names and UUIDs do not.
func redactKeyShaped(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if !isKeyChar(s[i]) {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i
		for j < len(s) && isKeyChar(s[j]) {
			j++
		}
		if run := s[i:j]; keyShaped(run) {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(run)
		}
		i = j
	}
	return b.String()
}

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '+' || c == '/' || c == '='
}

func keyShaped(run string) bool {
	if len(run) >= 12 {
		for _, p := range keyPrefixes {
			if strings.HasPrefix(run, p) {
				return true
			}
		}
	}
	for part := range strings.FieldsFuncSeq(run, func(r rune) bool { return strings.ContainsRune("-_./+=", r) }) {
		letters, digits := 0, 0
		for i := 0; i < len(part); i++ {
			if part[i] >= '0' && part[i] <= '9' {
				digits++
			} else {
				letters++
			}
		}
		if len(part) >= 32 || len(part) >= 16 && letters > 0 && digits > 0 {
			return true
		}
	}
	return false
}
