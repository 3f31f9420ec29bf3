package openrouter

// failures.go owns what OpenRouter's 402, 403 and 429 bodies say failed:
// the recogniser (Recognise), the figures it extracts (Failure) and the
// kinds and classes it tells apart. The wording it matches is the facts
// sheet's, older wordings included; bodies.go builds the same wording.

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Kind is what a failure says ran out or refused: a key's cap, the
// account's balance, a workspace budget, a free-model allowance, a
// provider. Its String is a stable metric label.
type Kind uint8

// The kinds of failure. Every one but KindNotKey and KindUnrecognised is
// an authenticated request: the key itself still works.
const (
	// KindUnrecognised is a failure whose wording is not known: nothing is
	// claimed of it, no figure extracted.
	KindUnrecognised Kind = iota
	// KindAccountBalance (402): the account's credits do not cover the
	// request (or are spent, or were never bought).
	KindAccountBalance
	// KindKeyCapHeadroom (402): the key's own cap has headroom left, but
	// less than the request could cost.
	KindKeyCapHeadroom
	// KindCreditsUnscoped (402): "requires more credits, or fewer
	// max_tokens ... can only afford N" without the URL that tells the
	// key's cap from the account's balance. The tokens are known, the
	// scope is not.
	KindCreditsUnscoped
	// KindInFlight (402): requests in flight reserve the balance; the only
	// 402 a retry can cure.
	KindInFlight
	// KindKeyCapSpent (403): the key's cap for its window is spent.
	KindKeyCapSpent
	// KindWorkspaceBudget (403): the key's workspace spent its budget.
	KindWorkspaceBudget
	// KindBYOKRequired (403): the provider serves the model only with the
	// user's own provider key.
	KindBYOKRequired
	// KindFreeDaily (429): the account's daily free-model allowance (50 or
	// 1000 requests, one counter for every ":free" model) is used up.
	KindFreeDaily
	// KindFreePerMinute (429): the free-model rate, per minute.
	KindFreePerMinute
	// KindProviderPool (429): a provider rate-limits OpenRouter's shared
	// pool (not the user's key or account), or with BYOK the user's own
	// provider key.
	KindProviderPool
	// KindProvidersAtCapacity (429): every provider of the model is at
	// capacity; retryable after a while.
	KindProvidersAtCapacity
	// KindNotKey: content, moderation, region, context-length or routing
	// failures; not about the key or account. Counted by Class, never
	// explained.
	KindNotKey
	kindCount
)

// Kinds is the number of kinds, for tables indexed by Kind.
const Kinds = int(modelKindsEnd)

var kindNames = [Kinds]string{
	KindUnrecognised:        "unrecognised",
	KindAccountBalance:      "account_balance",
	KindKeyCapHeadroom:      "key_cap_headroom",
	KindCreditsUnscoped:     "credits_unscoped",
	KindInFlight:            "in_flight",
	KindKeyCapSpent:         "key_cap_spent",
	KindWorkspaceBudget:     "workspace_budget",
	KindBYOKRequired:        "byok_required",
	KindFreeDaily:           "free_daily",
	KindFreePerMinute:       "free_per_minute",
	KindProviderPool:        "provider_pool",
	KindProvidersAtCapacity: "providers_at_capacity",
	KindNotKey:              "not_key",
}

// String is the kind's metric label.
func (k Kind) String() string {
	if int(k) < Kinds {
		return kindNames[k]
	}
	return "kind_" + strconv.Itoa(int(k))
}

// Class is the class of a failure that is not about the key (KindNotKey),
// for counting drift.
type Class string

// The classes of failures that are not key failures.
const (
	ClassModeration    Class = "moderation"
	ClassRegion        Class = "region"
	ClassContextLength Class = "context_length"
	// ClassRouting is a routing, data-policy or guardrail refusal
	// (allowlists, guardrail budgets, no endpoint).
	ClassRouting Class = "routing"
)

// The values of metadata.limit_source OpenRouter sends (since about
// August 2026). The workspace and guardrail ones are unverified claims.
const (
	LimitSourceCredits         = "openrouter_credits"
	LimitSourceKeyLimit        = "openrouter_key_limit"
	LimitSourceInFlightBudget  = "openrouter_in_flight_budget"
	LimitSourceFreeTierDaily   = "openrouter_free_tier_daily"
	LimitSourceSharedPool      = "upstream_provider_shared_pool"
	LimitSourceWorkspaceBudget = "openrouter_workspace_budget"
	LimitSourceGuardrailBudget = "openrouter_guardrail_budget"
)

// Failure is what a 402, 403 or 429 body (and its headers) says. Figures
// the body does not carry are zero or nil: nothing is guessed.
type Failure struct {
	Status int
	Kind   Kind
	// Class is set for KindNotKey only.
	Class Class
	// LimitSource is metadata.limit_source as sent, "" without one.
	LimitSource string
	// Window is a key cap's window (KindKeyCapHeadroom, KindKeyCapSpent),
	// WindowUnknown when the body does not name it.
	Window Window
	// Tokens are the requested and affordable tokens of a 402.
	Tokens *Tokens
	// Spend is a key-limit 403's "$20.05 of $20.00 used; resets T" (an
	// unconfirmed wording), nil without it.
	Spend *KeySpend
	// Budget is a workspace budget's interval and amount (403).
	Budget *Budget
	// Provider is metadata.provider_name, or the provider a BYOK 403
	// names.
	Provider string
	// BYOK is metadata.is_byok: the provider's limit is the user's own
	// provider key's.
	BYOK bool
	// FreeDailyLimit is the tier of the free-model daily allowance (50 or
	// 1000), 0 when neither the message nor X-RateLimit-Limit says it.
	FreeDailyLimit int
	// RetryAfter is the upstream's own wait: the Retry-After header,
	// metadata.availability.retry_after, or "Retry after N seconds" in the
	// message, in that order; 0 when none.
	RetryAfter time.Duration
	// RateLimit is X-RateLimit-* from the headers or metadata.headers.
	RateLimit *RateLimit429
	// RecordHash is the record hash in a key-limit 403's URL, "" without
	// one. KEY MATERIAL: see RecordHash.
	RecordHash RecordHash
	// Policy is what a policy 403 (policy.go) or a BYOK-required one says
	// beyond its kind; nil for the others.
	Policy *Policy
	// ProviderError is what a "Provider returned error" body says of the
	// provider's answer (KindProviderError, provider.go), nil otherwise.
	ProviderError *ProviderError
}

// RecordHash is a key's record hash (64 lowercase hex digits) as a
// key-limit 403's URL carries it. KEY MATERIAL: it identifies the key and
// may be sha256 of it. Never log, store, count or export it; it may go
// back only to the client that sent the key, inside the body it came in.
// Printed with any fmt verb or marshalled to JSON it shows only whether
// it is there, so that a Failure logged by mistake leaks nothing.
type RecordHash string

// redactedRecordHash is what a present RecordHash prints as.
const redactedRecordHash = "[record hash]"

// Format prints the hash redacted, whatever the verb.
func (h RecordHash) Format(f fmt.State, _ rune) {
	if h != "" {
		_, _ = io.WriteString(f, redactedRecordHash)
	}
}

// MarshalJSON writes the hash redacted.
func (h RecordHash) MarshalJSON() ([]byte, error) {
	if h == "" {
		return []byte(`""`), nil
	}
	return []byte(`"` + redactedRecordHash + `"`), nil
}

// Matches reports, in constant time, whether the hash is sha256 of key:
// proof that the account hashes its keys' records that way.
func (h RecordHash) Matches(key string) bool {
	sum := RecordHashSum(key)
	var want [2 * sha256.Size]byte
	hex.Encode(want[:], sum[:])
	return len(h) == len(want) && subtle.ConstantTimeCompare([]byte(h), want[:]) == 1
}

// Tokens are a 402's "requested up to N tokens, but can only afford M"
// (or the oldest "N token capacity required, M available").
type Tokens struct {
	Requested  int64
	Affordable int64
}

// KeySpend is a key-limit 403's "$Spent of $Limit used; resets ResetsAt".
// ResetsAt is zero when the body does not say it.
type KeySpend struct {
	Spent, Limit float64
	ResetsAt     time.Time
}

// Budget is a workspace budget named by a 403: "Workspace monthly budget
// of $500.00 exceeded".
type Budget struct {
	// Interval as written: "daily", "weekly", "monthly", "lifetime", ...
	Interval string
	// USD is the budget's amount.
	USD float64
}

// RateLimit429 is a 429's X-RateLimit-* figures; nil members were not
// sent.
type RateLimit429 struct {
	Limit     *int64
	Remaining *int64
	// Reset is X-RateLimit-Reset (epoch milliseconds on the wire; a value
	// too small to be milliseconds is read as seconds). Zero when absent.
	Reset time.Time
}

// Recognise reads a failure from its status, its decoded (decompressed)
// body in any of OpenRouter's envelopes, and its headers: by
// metadata.limit_source first, then by status and message. A body it
// cannot read, or wording it does not know, is KindUnrecognised with
// nothing else claimed.
func Recognise(status int, body []byte, header http.Header) Failure {
	w, ok := readWire(body)
	if !ok {
		return Failure{Status: status}
	}
	f := Failure{Status: status, LimitSource: w.limitSource}
	f.Kind, f.Class = w.kind(status)
	if f.Kind == KindUnrecognised || f.Kind == KindNotKey {
		return f
	}
	w.figures(&f, header)
	return f
}

// wire is the part of an error body recognition reads.
type wire struct {
	message      string // the error's message, as sent
	lower        string // message in lower case
	limitSource  string
	reason       string // metadata.reason
	raw          string // metadata.raw, when a string
	provider     string // metadata.provider_name
	isBYOK       bool
	hasReasons   bool // metadata.reasons (moderation)
	headers      map[string]any
	availability map[string]any
	metadata     map[string]any // for policy.go and provider.go
}

// readWire finds the error object in any envelope: {"error":{...}} (the
// OpenAI one, /messages' and /responses'), or the flat {"message":...}.
func readWire(body []byte) (wire, bool) {
	var top map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&top); err != nil {
		return wire{}, false
	}
	obj := top
	if e, ok := top["error"].(map[string]any); ok {
		obj = e
	}
	msg, ok := obj["message"].(string)
	if !ok {
		return wire{}, false
	}
	w := wire{message: msg, lower: strings.ToLower(msg)}
	md, _ := obj["metadata"].(map[string]any)
	w.limitSource, _ = md["limit_source"].(string)
	w.reason, _ = md["reason"].(string)
	w.raw, _ = md["raw"].(string)
	w.provider, _ = md["provider_name"].(string)
	w.isBYOK, _ = md["is_byok"].(bool)
	_, w.hasReasons = md["reasons"]
	w.headers, _ = md["headers"].(map[string]any)
	w.availability, _ = md["availability"].(map[string]any)
	w.metadata = md
	if w.availability == nil { // documented in "error" too (2026-08-19); some docs put it beside the message
		w.availability, _ = obj["availability"].(map[string]any)
	}
	return w, true
}

// The wording recognition matches.
var (
	reAfford        = regexp.MustCompile(`requested up to (\d+) tokens?, but can only afford (-?\d+)`)
	reCapacity      = regexp.MustCompile(`(\d+) token capacity required, (-?\d+) available`)
	reHigherLimit   = regexp.MustCompile(`higher (daily|weekly|monthly|total) limit`)
	reKeyLimit      = regexp.MustCompile(`key limit exceeded(?: \((daily|weekly|monthly|total) limit\))?`)
	reRecordHash    = regexp.MustCompile(`openrouter\.ai/workspaces/[^/\s]+/keys/([0-9a-fA-F]{64})\b`)
	reSpend         = regexp.MustCompile(`\$([0-9,]+(?:\.[0-9]+)?) of \$([0-9,]+(?:\.[0-9]+)?) used`)
	reResets        = regexp.MustCompile(`resets (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)`)
	reWorkspace     = regexp.MustCompile(`workspace (\w+) budget of \$([0-9,]+(?:\.[0-9]+)?) exceeded`)
	reBYOKRequired  = regexp.MustCompile(`^(.+?) is requiring a key to access this model`)
	reRetryAfterMsg = regexp.MustCompile(`retry after (\d+) seconds?`)
	reAtCapacity    = regexp.MustCompile(`all providers for .+ are at capacity`)
)

// kind decides the kind: limit_source first, then status and message.
func (w *wire) kind(status int) (Kind, Class) {
	// The fourth round's limit sources and a provider's error
	// (provider.go).
	if k, ok := w.providerKind(status); ok {
		return k, ""
	}
	if k := w.policyKind(status); k != KindUnrecognised {
		return k, ""
	}
	switch w.limitSource {
	case LimitSourceCredits:
		return KindAccountBalance, ""
	case LimitSourceKeyLimit:
		if status == http.StatusForbidden {
			return KindKeyCapSpent, ""
		}
		return KindKeyCapHeadroom, ""
	case LimitSourceInFlightBudget:
		return KindInFlight, ""
	case LimitSourceFreeTierDaily:
		return KindFreeDaily, ""
	case LimitSourceSharedPool:
		return KindProviderPool, ""
	case LimitSourceWorkspaceBudget:
		return KindWorkspaceBudget, ""
	case LimitSourceGuardrailBudget:
		return KindNotKey, ClassRouting
	}
	m := w.lower
	switch status {
	case http.StatusPaymentRequired:
		switch {
		case w.reason == "in_flight_budget_exhausted" || strings.Contains(m, "in-flight requests"):
			return KindInFlight, ""
		case strings.HasPrefix(m, "insufficient credits"):
			return KindAccountBalance, ""
		case reCapacity.MatchString(m):
			return KindKeyCapHeadroom, ""
		case reAfford.MatchString(m) || strings.Contains(m, "requires more credits"):
			switch {
			case strings.Contains(m, "openrouter.ai/settings/keys") || reHigherLimit.MatchString(m):
				return KindKeyCapHeadroom, ""
			case strings.Contains(m, "openrouter.ai/settings/credits") || strings.Contains(m, "upgrade to a paid account"):
				return KindAccountBalance, ""
			}
			return KindCreditsUnscoped, ""
		}
	case http.StatusForbidden:
		switch {
		case strings.HasPrefix(m, "key limit exceeded"):
			return KindKeyCapSpent, ""
		case reWorkspace.MatchString(m):
			return KindWorkspaceBudget, ""
		case reBYOKRequired.MatchString(m):
			return KindBYOKRequired, ""
		}
	case http.StatusTooManyRequests:
		code, _ := w.availability["code"].(string)
		switch {
		case strings.Contains(m, "free-models-per-day"):
			return KindFreeDaily, ""
		case strings.Contains(m, "free-models-per-min"):
			return KindFreePerMinute, ""
		case code == "capacity_exhausted" || reAtCapacity.MatchString(m):
			return KindProvidersAtCapacity, ""
		case strings.Contains(strings.ToLower(w.raw), "rate-limited upstream"),
			m == "provider returned error" && w.provider != "":
			return KindProviderPool, ""
		}
	}
	if k := w.modelKind(status); k != KindUnrecognised {
		return k, ""
	}
	if c := w.class(); c != "" {
		return KindNotKey, c
	}
	return KindUnrecognised, ""
}

// class is the class of a failure that is not about the key, "" if none.
func (w *wire) class() Class {
	m := w.lower
	switch {
	case w.hasReasons || strings.Contains(m, "requires moderation") || strings.Contains(m, "flagged for"):
		return ClassModeration
	case w.reason == "region_restricted" || strings.Contains(m, "region_restricted") ||
		strings.Contains(m, "not available in your region"):
		return ClassRegion
	case strings.Contains(m, "context length"):
		return ClassContextLength
	case strings.Contains(m, "guardrail") || strings.Contains(m, "allowlist") ||
		strings.Contains(m, "no endpoints found") || strings.Contains(m, "data policy"):
		return ClassRouting
	}
	return ""
}

// figures fills what the body and headers say of a recognised failure.
func (w *wire) figures(f *Failure, header http.Header) {
	m := w.lower
	if s := reAfford.FindStringSubmatch(m); s != nil {
		f.Tokens = tokens(s[1], s[2])
	} else if s := reCapacity.FindStringSubmatch(m); s != nil {
		f.Tokens = tokens(s[1], s[2])
	}
	switch f.Kind {
	case KindKeyCapHeadroom:
		if s := reHigherLimit.FindStringSubmatch(m); s != nil {
			f.Window = ParseWindow(s[1])
		}
	case KindKeyCapSpent:
		if s := reKeyLimit.FindStringSubmatch(m); s != nil {
			f.Window = ParseWindow(s[1])
		}
		if s := reRecordHash.FindStringSubmatch(w.message); s != nil {
			f.RecordHash = RecordHash(strings.ToLower(s[1]))
		}
		if s := reSpend.FindStringSubmatch(m); s != nil {
			spend := &KeySpend{Spent: dollars(s[1]), Limit: dollars(s[2])}
			if r := reResets.FindStringSubmatch(w.message); r != nil {
				spend.ResetsAt, _ = time.Parse(time.RFC3339Nano, r[1])
			}
			f.Spend = spend
		}
	case KindWorkspaceBudget:
		if s := reWorkspace.FindStringSubmatch(m); s != nil {
			f.Budget = &Budget{Interval: s[1], USD: dollars(s[2])}
		}
	case KindBYOKRequired:
		if s := reBYOKRequired.FindStringSubmatch(w.message); s != nil {
			f.Provider = s[1]
		}
	case KindFreeDaily:
		switch {
		case strings.Contains(m, "free-models-per-day-high-balance"):
			f.FreeDailyLimit = FreeDailyHighBalance
		case strings.Contains(m, "free-models-per-day"):
			f.FreeDailyLimit = FreeDailyLow
		}
	}
	if w.provider != "" {
		f.Provider = w.provider
	}
	f.BYOK = w.isBYOK
	f.RetryAfter = w.retryAfter(header)
	f.RateLimit = w.rateLimit(header)
	if f.Kind == KindFreeDaily && f.FreeDailyLimit == 0 && f.RateLimit != nil && f.RateLimit.Limit != nil {
		if l := *f.RateLimit.Limit; l == FreeDailyLow || l == FreeDailyHighBalance {
			f.FreeDailyLimit = int(l)
		}
	}
	w.policyFigures(f)
	w.providerFigures(f)
}

// The free-model daily allowances: FreeDailyLow requests a day for an
// account that bought fewer than FreeDailyUnlockCredits credits in all,
// FreeDailyHighBalance for one that bought at least that.
const (
	FreeDailyLow           = 50
	FreeDailyHighBalance   = 1000
	FreeDailyUnlockCredits = 10
	// FreePerMinute is the free-model rate per minute.
	FreePerMinute = 20
)

func tokens(requested, affordable string) *Tokens {
	r, err1 := strconv.ParseInt(requested, 10, 64)
	a, err2 := strconv.ParseInt(affordable, 10, 64)
	if err1 != nil || err2 != nil {
		return nil
	}
	return &Tokens{Requested: r, Affordable: a}
}

func dollars(s string) float64 {
	v, _ := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
	return v
}

// retryAfter is the upstream's own wait, in the order Failure.RetryAfter
// documents.
func (w *wire) retryAfter(header http.Header) time.Duration {
	if n, err := strconv.ParseInt(strings.TrimSpace(header.Get("Retry-After")), 10, 64); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if n, ok := number(w.availability["retry_after"]); ok && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if s := reRetryAfterMsg.FindStringSubmatch(w.lower); s != nil {
		if n, err := strconv.ParseInt(s[1], 10, 64); err == nil {
			return time.Duration(n) * time.Second
		}
	}
	return 0
}

// The X-RateLimit-* headers of 429s.
const (
	headerRateLimitLimit     = "X-RateLimit-Limit"
	headerRateLimitRemaining = "X-RateLimit-Remaining"
	headerRateLimitReset     = "X-RateLimit-Reset"
)

// rateLimit reads X-RateLimit-* from the headers, each falling back on
// metadata.headers.
func (w *wire) rateLimit(header http.Header) *RateLimit429 {
	get := func(name string) (int64, bool) {
		if v := header.Get(name); v != "" {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
		for k, v := range w.headers {
			if strings.EqualFold(k, name) {
				return number(v)
			}
		}
		return 0, false
	}
	var rl RateLimit429
	found := false
	if n, ok := get(headerRateLimitLimit); ok {
		rl.Limit, found = &n, true
	}
	if n, ok := get(headerRateLimitRemaining); ok {
		rl.Remaining, found = &n, true
	}
	if n, ok := get(headerRateLimitReset); ok && n > 0 {
		if n < 1e11 { // seconds, not milliseconds: 1e11 ms is in 1973
			n *= 1000
		}
		rl.Reset, found = time.UnixMilli(n).UTC(), true
	}
	if !found {
		return nil
	}
	return &rl
}

// number reads an integer sent as a JSON number or a string.
func number(v any) (int64, bool) {
	switch v := v.(type) {
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n, true
		}
		f, err := v.Float64()
		return int64(f), err == nil
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		return n, err == nil
	}
	return 0, false
}
