package openrouter

// bodies.go owns the wording of OpenRouter's 402, 403 and 429 bodies as
// builders, so that the emulator and the tests send exactly what
// Recognise reads. Where the facts sheet elides a sentence's tail, the
// builders end where the known text ends; recognition never depends on a
// tail.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Wording is which generation of OpenRouter's wording a body is built in.
type Wording uint8

// The wordings.
const (
	// WordingCurrent: today's sentences with metadata.limit_source.
	WordingCurrent Wording = iota
	// WordingNoSource: today's sentences without limit_source, as before
	// about August 2026.
	WordingNoSource
	// WordingOld: the older sentences (no limit_source): "upgrade to a
	// paid account", "N token capacity required, M available", the
	// settings/keys URL in key-limit 403s, "org admin".
	WordingOld
)

// FailureBody is one failure as OpenRouter sends it: status, message,
// metadata (nil: none) and the headers that come with it.
type FailureBody struct {
	Status   int
	Message  string
	Metadata Members
	Header   http.Header
}

// Render is the body in an envelope. Envelopes without metadata
// (/messages, the /responses docs example) drop it.
func (b FailureBody) Render(e Envelope) []byte {
	if b.Metadata == nil {
		return e.Body(b.Status, b.Message, nil)
	}
	return e.Body(b.Status, b.Message, b.Metadata)
}

// Members is a JSON object whose members keep their order.
type Members []Member

// Member is one member of a JSON object.
type Member struct {
	Name  string
	Value any
}

// MarshalJSON writes the members in order, HTML unescaped, as OpenRouter
// does.
func (ms Members) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	out := []byte{'{'}
	for i, m := range ms {
		if i > 0 {
			out = append(out, ',')
		}
		buf.Reset()
		if err := enc.Encode(m.Name); err != nil {
			return nil, err
		}
		out = append(out, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		out = append(out, ':')
		buf.Reset()
		if err := enc.Encode(m.Value); err != nil {
			return nil, err
		}
		out = append(out, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
	}
	return append(out, '}'), nil
}

// Without is the members but the one named; nil when none is left.
func (ms Members) Without(name string) Members {
	var out Members
	for _, m := range ms {
		if m.Name != name {
			out = append(out, m)
		}
	}
	return out
}

// withSource appends limit_source under WordingCurrent.
func withSource(ms Members, w Wording, source string) Members {
	if w == WordingCurrent {
		return append(ms, Member{"limit_source", source})
	}
	return ms
}

const affordSentence = "This request requires more credits, or fewer max_tokens. You requested up to %d tokens, but can only afford %d. "

// BalanceAfford is the 402 of an account whose balance cannot cover the
// request: "... can only afford M. To increase, visit
// https://openrouter.ai/settings/credits and add more credits" (older:
// "... and upgrade to a paid account").
func BalanceAfford(requested, affordable int64, w Wording) FailureBody {
	tail := "To increase, visit " + URLCredits + " and add more credits"
	if w == WordingOld {
		tail = "To increase, visit " + URLCredits + " and upgrade to a paid account"
	}
	return FailureBody{
		Status:   http.StatusPaymentRequired,
		Message:  fmt.Sprintf(affordSentence, requested, affordable) + tail,
		Metadata: withSource(Members{{"provider_name", nil}}, w, LimitSourceCredits),
	}
}

// CreditsUnscoped is the 402 whose sentence ends at "can only afford M.",
// without the URL that tells the key's cap from the account's balance.
func CreditsUnscoped(requested, affordable int64) FailureBody {
	return FailureBody{
		Status:   http.StatusPaymentRequired,
		Message:  strings.TrimSuffix(fmt.Sprintf(affordSentence, requested, affordable), " "),
		Metadata: Members{{"provider_name", nil}},
	}
}

// The 402 messages of an account without credits.
const (
	MessageInsufficientCredits = "Insufficient credits. Add more using " + URLCredits
	MessageNeverPurchased      = "Insufficient credits. This account never purchased credits. Make sure your key is on the correct account or org, and if so, purchase more at " + URLCredits
)

// InsufficientCredits is the 402 of an account whose balance is spent
// (or negative, even on ":free" models), or that never bought credits.
func InsufficientCredits(neverPurchased bool, w Wording) FailureBody {
	msg := MessageInsufficientCredits
	if neverPurchased {
		msg = MessageNeverPurchased
	}
	return FailureBody{Status: http.StatusPaymentRequired, Message: msg, Metadata: withSource(nil, w, LimitSourceCredits)}
}

// KeyCapAfford is the 402 of a key whose cap has headroom left, but less
// than the request could cost: "... To increase, visit
// https://openrouter.ai/settings/keys and create a key with a higher
// monthly limit"; under WordingOld the oldest "More credits are required
// to run this request. N token capacity required, M available.".
func KeyCapAfford(requested, affordable int64, window Window, w Wording) FailureBody {
	msg := fmt.Sprintf(affordSentence, requested, affordable) +
		"To increase, visit " + URLKeys + " and create a key with a higher " + window.String() + " limit"
	if w == WordingOld {
		msg = fmt.Sprintf("More credits are required to run this request. %d token capacity required, %d available.", requested, affordable)
	}
	return FailureBody{
		Status:   http.StatusPaymentRequired,
		Message:  msg,
		Metadata: withSource(Members{{"provider_name", nil}}, w, LimitSourceKeyLimit),
	}
}

// messageInFlight is the 402 of requests in flight reserving the balance.
const messageInFlight = "This request would exceed your available credits given your current in-flight requests. Retry after in-flight requests settle, or add credits."

// InFlight is the in-flight 402, with its Retry-After: the only 402 a
// retry can cure.
func InFlight(retryAfterSeconds int, w Wording) FailureBody {
	return FailureBody{
		Status:   http.StatusPaymentRequired,
		Message:  messageInFlight,
		Metadata: withSource(Members{{"reason", "in_flight_budget_exhausted"}}, w, LimitSourceInFlightBudget),
		Header:   http.Header{"Retry-After": {strconv.Itoa(retryAfterSeconds)}},
	}
}

// KeyLimitExceeded is the 403 of a key whose cap is spent: "Key limit
// exceeded (daily limit). Manage it using
// https://openrouter.ai/workspaces/<slug>/keys/<record hash>"; under
// WordingOld the URL is https://openrouter.ai/settings/keys. recordHash is
// key material: the body goes only to the client that sent the key.
func KeyLimitExceeded(window Window, workspaceSlug, recordHash string, w Wording) FailureBody {
	url := keyPageURL(workspaceSlug, recordHash)
	if w == WordingOld {
		url = URLKeys
	}
	return FailureBody{
		Status:   http.StatusForbidden,
		Message:  "Key limit exceeded (" + window.String() + " limit). Manage it using " + url,
		Metadata: withSource(nil, w, LimitSourceKeyLimit),
	}
}

// WorkspaceBudgetExceeded is the 403 of a workspace over its budget
// (the broadest exceeded interval is named): "Workspace monthly budget of
// $500.00 exceeded. Contact your workspace admin." ("org admin" under
// WordingOld). Its limit_source is an unverified claim.
func WorkspaceBudgetExceeded(interval string, usd float64, w Wording) FailureBody {
	admin := "workspace admin"
	if w == WordingOld {
		admin = "org admin"
	}
	return FailureBody{
		Status:   http.StatusForbidden,
		Message:  fmt.Sprintf("Workspace %s budget of $%.2f exceeded. Contact your %s.", interval, usd, admin),
		Metadata: withSource(nil, w, LimitSourceWorkspaceBudget),
	}
}

// BYOKRequired is the 403 of a provider that serves a model only with the
// user's own provider key.
func BYOKRequired(provider string) FailureBody {
	return FailureBody{
		Status:  http.StatusForbidden,
		Message: provider + " is requiring a key to access this model, which you can add in " + URLIntegrations,
	}
}

// The free-model 429 messages; the trailing spaces are OpenRouter's.
const (
	messageFreeDaily            = "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day"
	messageFreeDailyHighBalance = "Rate limit exceeded: free-models-per-day-high-balance. "
	MessageFreePerMinute        = "Rate limit exceeded: free-models-per-min. "
)

// rateLimited is a 429 carrying X-RateLimit-* as headers and in
// metadata.headers; reset is sent in epoch milliseconds.
func rateLimited(msg string, limit, remaining int, reset time.Time, ms Members) FailureBody {
	figures := map[string]string{
		headerRateLimitLimit:     strconv.Itoa(limit),
		headerRateLimitRemaining: strconv.Itoa(remaining),
		headerRateLimitReset:     strconv.FormatInt(reset.UnixMilli(), 10),
	}
	h := http.Header{}
	for k, v := range figures {
		h.Set(k, v)
	}
	return FailureBody{
		Status:   http.StatusTooManyRequests,
		Message:  msg,
		Metadata: append(Members{{"headers", figures}}, ms...),
		Header:   h,
	}
}

// FreeDaily is the 429 of an account whose daily free-model allowance is
// used up (50 requests, or 1000 with highBalance); reset is the next
// 00:00 UTC. No Retry-After is sent.
func FreeDaily(highBalance bool, reset time.Time, w Wording) FailureBody {
	msg, limit := messageFreeDaily, FreeDailyLow
	if highBalance {
		msg, limit = messageFreeDailyHighBalance, FreeDailyHighBalance
	}
	return rateLimited(msg, limit, 0, reset, withSource(nil, w, LimitSourceFreeTierDaily))
}

// FreePerMinute429 is the 429 of the free-model rate per minute; reset is
// when the minute ends.
func FreePerMinute429(reset time.Time) FailureBody {
	return rateLimited(MessageFreePerMinute, FreePerMinute, 0, reset, nil)
}

// ProviderPool is the 429 of a provider rate-limiting OpenRouter's shared
// pool, or with byok the user's own provider key.
func ProviderPool(model, provider string, byok bool, w Wording) FailureBody {
	raw := model + " is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: " + URLIntegrations
	return FailureBody{
		Status:  http.StatusTooManyRequests,
		Message: "Provider returned error",
		Metadata: withSource(Members{
			{"raw", raw}, {"provider_name", provider}, {"is_byok", byok}, {"provider_error_code", http.StatusTooManyRequests},
		}, w, LimitSourceSharedPool),
	}
}

// ProvidersAtCapacity is the 429 of a model whose every provider is at
// capacity, retryable after retryAfterSeconds.
func ProvidersAtCapacity(model string, retryAfterSeconds int) FailureBody {
	return FailureBody{
		Status:  http.StatusTooManyRequests,
		Message: fmt.Sprintf("All providers for %s are at capacity. Retry after %d seconds.", model, retryAfterSeconds),
		Metadata: Members{{"availability", Members{
			{"code", "capacity_exhausted"}, {"retryable", true}, {"retry_after", retryAfterSeconds},
		}}},
		Header: http.Header{"Retry-After": {strconv.Itoa(retryAfterSeconds)}},
	}
}

// Moderated is the 403 of an input flagged by moderation: not a key
// failure.
func Moderated(model, reason string) FailureBody {
	return FailureBody{
		Status:   http.StatusForbidden,
		Message:  fmt.Sprintf("%s requires moderation on OpenRouter. Your input was flagged for %q.", model, reason),
		Metadata: Members{{"reasons", []string{reason}}},
	}
}
