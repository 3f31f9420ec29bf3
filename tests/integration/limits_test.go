package integration

// limits_test.go drives the 402, 403 and 429 failures (issue 20) through
// the official openai-go client and raw HTTP, against a real Caddy in front
// of the emulator: the reason, scope, figures and reset each one says, its
// retry headers, every envelope, the upstream requests a client's default
// retries cost, what is said without evidence, explain_limits off, and the
// key-limit 403's record hash, which goes back only to its own client.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// limitError is a 402, 403 or 429 as a client sees it: the error object's
// message and metadata in whatever envelope, and the headers the gateway
// sets.
type limitError struct {
	status   int
	message  string
	metadata map[string]any
	// errorType is error.type (/messages) or error_type (/responses docs).
	errorType string
	header    http.Header
	body      []byte
}

func (le limitError) reason() string { s, _ := le.metadata["reason"].(string); return s }

// str is a string member of the metadata, "" when absent.
func (le limitError) str(name string) string { s, _ := le.metadata[name].(string); return s }

// num is a number member of the metadata; ok is false when absent.
func (le limitError) num(name string) (float64, bool) {
	f, ok := le.metadata[name].(float64)
	return f, ok
}

func (le limitError) String() string {
	return fmt.Sprintf("%d %s (X-OpenRouter-Key-Status %q, X-Should-Retry %q, Retry-After %q)",
		le.status, le.body, le.header.Get("X-OpenRouter-Key-Status"), le.header.Get("X-Should-Retry"), le.header.Get("Retry-After"))
}

// parseLimitError reads an error body in any envelope.
func parseLimitError(t *testing.T, status int, header http.Header, body []byte) limitError {
	t.Helper()
	var top map[string]any
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("%d: not JSON: %q", status, body)
	}
	obj := top
	if e, ok := top["error"].(map[string]any); ok {
		obj = e
	}
	le := limitError{status: status, header: header, body: body}
	le.message, _ = obj["message"].(string)
	le.metadata, _ = obj["metadata"].(map[string]any)
	le.errorType, _ = obj["type"].(string)
	if et, ok := top["error_type"].(string); ok {
		le.errorType = et
	}
	return le
}

// recordHashOf is the key's record hash as the emulator computes it (and
// as OpenRouter is believed to): sha256 of the key, in hex.
func recordHashOf(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ownHashPlaceholder replaces a key-limit 403's record hash in the
// responses swept for key material: that one place, in the answer to the
// client that sent the key, is where it belongs.
const ownHashPlaceholder = "<own record hash>"

// recordOwnResponse adds an answer to key's own request to the sweep, its
// record hash in the manage URL excepted: anywhere else the sweep finds it.
func recordOwnResponse(key string, b []byte) {
	recordResponse([]byte(strings.ReplaceAll(string(b), "/keys/"+recordHashOf(key), "/keys/"+ownHashPlaceholder)))
}

// asLimitError is the failure the openai-go client returned.
func asLimitError(t *testing.T, key string, err error) limitError {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("want an API error, got %v", err)
	}
	// RawJSON is the error object; the envelope around it is OpenAI's.
	body := []byte(`{"error":` + apiErr.RawJSON() + `}`)
	recordOwnResponse(key, body)
	return parseLimitError(t, apiErr.StatusCode, apiErr.Response.Header, body)
}

// limitChat sends one chat completion with no retries.
func limitChat(t *testing.T, key, model string, maxTokens int64) limitError {
	t.Helper()
	c := client(gatewayBase, key)
	p := chatParams(model)
	if maxTokens > 0 {
		p.MaxTokens = openai.Int(maxTokens)
	}
	_, err := c.Chat.Completions.New(context.Background(), p)
	return asLimitError(t, key, err)
}

// limitRaw sends a request to path with the exact JSON body given.
func limitRaw(t *testing.T, base, path, key, body string, header ...string) limitError {
	t.Helper()
	resp, err := (&http.Client{}).Do(newRequest(t, "POST", base+path, key, body, header...))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	recordOwnResponse(key, b)
	return parseLimitError(t, resp.StatusCode, resp.Header, b)
}

// The ends of the UTC calendar windows after now, written independently of
// the gateway's calendar.
func nextMidnight(now time.Time) time.Time {
	return now.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
}

func nextMonday(now time.Time) time.Time {
	d := nextMidnight(now)
	for d.Weekday() != time.Monday {
		d = d.Add(24 * time.Hour)
	}
	return d
}

func nextFirstOfMonth(now time.Time) time.Time {
	y, m, _ := now.UTC().Date()
	return time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
}

// expectation is what one explained failure must say.
type expectation struct {
	status      int
	reason      string
	scope       string // "": no scope member
	retry       string // X-Should-Retry
	retryAfter  string // "": no Retry-After
	window      string
	numbers     map[string]float64 // metadata numbers that must be there, exactly (within a cent's rounding)
	absent      []string           // metadata members that must not be there
	resetsAt    func(now time.Time) time.Time
	neverResets bool
	// resetsSoon: resets_at is the end of the upstream's own wait, within
	// a minute of the request.
	resetsSoon   bool
	inMessage    []string // what the gateway's sentence must say
	upstreamSays string   // OpenRouter's own sentence, kept after " OpenRouter said: "
	provider     string
}

// check compares a failure with what it must say; before and after
// bracket the request, for a reset computed across a boundary.
func (x expectation) check(t *testing.T, what string, le limitError, before, after time.Time) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("%s: "+format+"\n  got %v", append(append([]any{what}, args...), le)...)
	}
	if le.status != x.status {
		fail("status %d, want %d", le.status, x.status)
	}
	if le.reason() != x.reason || le.header.Get("X-OpenRouter-Key-Status") != x.reason {
		fail("reason %q (header %q), want %q", le.reason(), le.header.Get("X-OpenRouter-Key-Status"), x.reason)
	}
	if got, ok := le.metadata["scope"]; (x.scope == "") != !ok || (ok && got != x.scope) {
		fail("scope %v, want %q", got, x.scope)
	}
	if got := le.header.Get("X-Should-Retry"); got != x.retry {
		fail("X-Should-Retry %q, want %q", got, x.retry)
	}
	if got := le.header.Get("Retry-After"); got != x.retryAfter {
		fail("Retry-After %q, want %q", got, x.retryAfter)
	}
	if x.window != "" && le.str("window") != x.window {
		fail("window %q, want %q", le.str("window"), x.window)
	}
	for name, want := range x.numbers {
		if got, ok := le.num(name); !ok || math.Abs(got-want) > 0.005 {
			fail("metadata.%s %v, want %v", name, le.metadata[name], want)
		}
	}
	for _, name := range x.absent {
		if v, ok := le.metadata[name]; ok {
			fail("metadata.%s is %v, which the evidence does not show", name, v)
		}
	}
	switch {
	case x.neverResets:
		if le.metadata["never_resets"] != true || le.metadata["resets_at"] != nil {
			fail("a total cap must say never_resets and no resets_at")
		}
		if !strings.Contains(le.message, "never resets") {
			fail("the message does not say the cap never resets")
		}
	case x.resetsSoon:
		at, err := time.Parse(time.RFC3339, le.str("resets_at"))
		if err != nil || at.Before(before.Add(-time.Second)) || at.After(after.Add(61*time.Second)) {
			fail("resets_at %q is not the end of the upstream's wait, within a minute", le.str("resets_at"))
		}
	case x.resetsAt != nil:
		at, err := time.Parse(time.RFC3339, le.str("resets_at"))
		if err != nil || at.Location() != time.UTC && !strings.HasSuffix(le.str("resets_at"), "Z") {
			fail("resets_at %q is no RFC 3339 UTC time", le.str("resets_at"))
		} else if lo, hi := x.resetsAt(before), x.resetsAt(after); !at.Equal(lo) && !at.Equal(hi) {
			fail("resets_at %v, want %v", at, lo)
		} else if !strings.Contains(le.message, le.str("resets_at")) {
			fail("the message does not say when it resets (%s)", le.str("resets_at"))
		}
	default:
		if v, ok := le.metadata["resets_at"]; ok {
			fail("resets_at %v, which nothing shows", v)
		}
	}
	for _, s := range x.inMessage {
		if !strings.Contains(strings.ToLower(le.message), strings.ToLower(s)) {
			fail("the message does not say %q", s)
		}
	}
	if x.upstreamSays != "" && !strings.Contains(le.message, " OpenRouter said: "+x.upstreamSays) {
		fail("OpenRouter's own sentence (%q) is not kept after the gateway's", x.upstreamSays)
	}
	if x.provider != "" && le.str("provider") != x.provider {
		fail("provider %q, want %q", le.str("provider"), x.provider)
	}
}

// limitCase is one failure: how the emulator is set up for it, the request
// that meets it and what it must say.
type limitCase struct {
	name      string
	setup     func(e *env) (key string)
	model     string
	maxTokens int64
	want      expectation
}

// limitCases are every explained failure of the contract, each set up in
// the emulator so that the key's own GET /key (and with the management
// key, GET /credits) agrees with the body.
func limitCases() []limitCase {
	limit := func(v float64) *float64 { return &v }
	return []limitCase{
		{
			name: "account balance spent",
			setup: func(e *env) string {
				e.emu.SetCredits("", 20, 20)
				return e.emu.NewKey(emulator.KeyOptions{})
			},
			model: "openai/gpt-4o",
			want: expectation{
				status: 402, reason: "credits_insufficient", scope: "account", retry: "false",
				numbers: map[string]float64{"balance": 0}, absent: []string{"window", "limit", "resets_at"},
				inMessage: []string{"account", "add credits"}, upstreamSays: "Insufficient credits.",
			},
		},
		{
			name: "account balance below the request",
			setup: func(e *env) string {
				e.emu.SetCredits("", 20, 19.99) // 0.01 credits: 1000 output tokens
				return e.emu.NewKey(emulator.KeyOptions{})
			},
			model: "openai/gpt-4o",
			want: expectation{
				status: 402, reason: "credits_insufficient", scope: "account", retry: "false",
				numbers:   map[string]float64{"requested_tokens": 16384, "affordable_tokens": 1000, "balance": 0.01},
				inMessage: []string{"1000", "max_tokens"}, upstreamSays: "This request requires more credits",
			},
		},
		{
			name: "key cap with headroom below the request",
			setup: func(e *env) string {
				return e.emu.NewKey(emulator.KeyOptions{Limit: limit(5), LimitReset: "weekly", Usage: 4.5})
			},
			model: "openai/gpt-4o", maxTokens: 100000, // 0.5 credits left: 50000 tokens
			want: expectation{
				status: 402, reason: "key_limit_insufficient", scope: "key", retry: "false", window: "weekly",
				numbers:  map[string]float64{"requested_tokens": 100000, "affordable_tokens": 50000, "limit": 5, "spent": 4.5, "remaining": 0.5},
				resetsAt: nextMonday, inMessage: []string{"50000", "key"}, upstreamSays: "This request requires more credits",
			},
		},
		{
			name:  "in-flight reservations",
			setup: func(e *env) string { return e.emu.NewKey(emulator.KeyOptions{}) },
			model: emulator.ModelInFlight,
			want: expectation{
				status: 402, reason: "in_flight_budget", scope: "account", retry: "true", retryAfter: "2",
				upstreamSays: "This request would exceed your available credits given your current in-flight requests.",
			},
		},
		{
			name: "daily key cap spent",
			setup: func(e *env) string {
				return e.emu.NewKey(emulator.KeyOptions{Limit: limit(5), LimitReset: "daily", Usage: 5})
			},
			model: "openai/gpt-4o",
			want: expectation{
				status: 403, reason: "key_limit_reached", scope: "key", retry: "false", window: "daily",
				numbers:  map[string]float64{"limit": 5, "spent": 5, "remaining": 0},
				resetsAt: nextMidnight, upstreamSays: "Key limit exceeded (daily limit).",
			},
		},
		{
			name: "monthly key cap spent",
			setup: func(e *env) string {
				return e.emu.NewKey(emulator.KeyOptions{Limit: limit(12.5), LimitReset: "monthly", Usage: 13})
			},
			model: "openai/gpt-4o",
			want: expectation{
				status: 403, reason: "key_limit_reached", scope: "key", retry: "false", window: "monthly",
				numbers:  map[string]float64{"limit": 12.5, "spent": 13},
				resetsAt: nextFirstOfMonth, upstreamSays: "Key limit exceeded (monthly limit).",
			},
		},
		{
			name: "total key cap spent",
			setup: func(e *env) string {
				return e.emu.NewKey(emulator.KeyOptions{Limit: limit(2), Usage: 2})
			},
			model: "openai/gpt-4o",
			want: expectation{
				status: 403, reason: "key_limit_reached", scope: "key", retry: "false", window: "total",
				numbers: map[string]float64{"limit": 2, "spent": 2, "remaining": 0}, neverResets: true,
				upstreamSays: "Key limit exceeded (total limit).",
			},
		},
		{
			name: "workspace budget",
			setup: func(e *env) string {
				ws := e.emu.NewWorkspace("Research")
				e.emu.SetWorkspaceBudget(ws, "monthly", 500, 500.25)
				return e.emu.NewKey(emulator.KeyOptions{Workspace: ws})
			},
			model: "openai/gpt-4o",
			want: expectation{
				status: 403, reason: "workspace_budget_exceeded", scope: "workspace", retry: "false",
				inMessage:    []string{"workspace"},
				upstreamSays: "Workspace monthly budget of $500.00 exceeded.",
			},
		},
		{
			name:  "provider requires the user's own key",
			setup: func(e *env) string { return e.emu.NewKey(emulator.KeyOptions{}) },
			model: emulator.ModelBYOKRequired,
			want: expectation{
				status: 403, reason: "provider_key_required", scope: "provider", retry: "false", provider: "OpenAI",
				upstreamSays: "OpenAI is requiring a key to access this model",
			},
		},
		{
			name: "free-model daily allowance used up",
			setup: func(e *env) string {
				e.emu.SetCredits("", 5, 1) // bought fewer than 10 credits: 50 a day
				e.emu.SetFreeRequestsUsed("", openrouter.FreeDailyLow)
				return e.emu.NewKey(emulator.KeyOptions{})
			},
			model: emulator.FreeModel,
			want: expectation{
				status: 429, reason: "free_daily_limit_reached", scope: "free_models", retry: "false",
				numbers:  map[string]float64{"limit": 50, "spent": 50, "remaining": 0},
				resetsAt: nextMidnight, inMessage: []string{":free"},
				upstreamSays: "Rate limit exceeded: free-models-per-day.",
			},
		},
		{
			name:  "a provider's shared pool",
			setup: func(e *env) string { return e.emu.NewKey(emulator.KeyOptions{}) },
			model: emulator.ModelSharedPool,
			want: expectation{
				status: 429, reason: "provider_rate_limited", scope: "provider", retry: "true", provider: "Chutes",
				inMessage: []string{"Chutes"}, upstreamSays: "Provider returned error",
			},
		},
		{
			name:  "the user's own provider key",
			setup: func(e *env) string { return e.emu.NewKey(emulator.KeyOptions{}) },
			model: emulator.ModelBYOKRateLimited,
			want: expectation{
				status: 429, reason: "provider_key_rate_limited", scope: "provider", retry: "true", provider: "OpenAI",
				upstreamSays: "Provider returned error",
			},
		},
		{
			name:  "all providers at capacity",
			setup: func(e *env) string { return e.emu.NewKey(emulator.KeyOptions{}) },
			model: emulator.ModelAtCapacity,
			want: expectation{
				status: 429, reason: "providers_at_capacity", scope: "provider", retry: "true", retryAfter: "40", resetsSoon: true,
				upstreamSays: "All providers for " + emulator.ModelAtCapacity + " are at capacity.",
			},
		},
	}
}

// Every failure of the contract, through openai-go, says its reason,
// scope, figures, reset and fix, with the retry headers.
// Each has an emulator of its own: the account's balance is cached.
func TestLimitFailuresExplained(t *testing.T) {
	for _, c := range limitCases() {
		t.Run(c.name, func(t *testing.T) {
			e := start(t, options{management: true})
			key := c.setup(e)
			before := time.Now()
			le := limitChat(t, key, c.model, c.maxTokens)
			c.want.check(t, "chat", le, before, time.Now())
			if le.header.Get("X-OpenRouter-Keys-Answer") == "edge" {
				t.Error("the first failure was answered at the edge")
			}
		})
	}
}

// Without a management key there is no balance: none is named, and a
// 402 whose sentence names no scope is not given one.
func TestLimitFailuresWithoutManagementKey(t *testing.T) {
	e := start(t, options{})
	e.emu.SetCredits("", 20, 20)
	key := e.emu.NewKey(emulator.KeyOptions{})
	expectation{
		status: 402, reason: "credits_insufficient", scope: "account", retry: "false",
		absent: []string{"balance"}, upstreamSays: "Insufficient credits.",
	}.check(t, "balance spent", limitChat(t, key, "openai/gpt-4o", 0), time.Now(), time.Now())
	e.emu.SetCredits("", 25, 11.5)

	// "can only afford 1000" without the URL that names key or account:
	// a key without a limit of its own leaves only the account; a key
	// with one, without a balance to compare, leaves it open.
	expectation{
		status: 402, reason: "credits_insufficient", scope: "account", retry: "false",
		numbers: map[string]float64{"requested_tokens": 16384, "affordable_tokens": 1000},
		absent:  []string{"balance", "limit"}, inMessage: []string{"1000"},
		upstreamSays: "This request requires more credits, or fewer max_tokens.",
	}.check(t, "unscoped 402, no key limit", limitChat(t, key, emulator.ModelNeedsCredits, 0), time.Now(), time.Now())
	limit := 5.0
	limited := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "daily", Usage: 1})
	expectation{
		status: 402, reason: "request_unaffordable", retry: "false",
		numbers: map[string]float64{"requested_tokens": 16384, "affordable_tokens": 1000},
		absent:  []string{"balance", "limit", "window", "resets_at"}, inMessage: []string{"1000"},
		upstreamSays: "This request requires more credits, or fewer max_tokens.",
	}.check(t, "unscoped 402, key limit, no balance", limitChat(t, limited, emulator.ModelNeedsCredits, 0), time.Now(), time.Now())
}

// The same unscoped 402, for a key whose own limit has less left than the
// account's balance: the evidence proves it is the key's cap.
func TestUnscoped402ProvedTheKeysCap(t *testing.T) {
	e := start(t, options{management: true})
	limit := 5.0
	key := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "daily", Usage: 4.99})
	expectation{
		status: 402, reason: "key_limit_insufficient", scope: "key", retry: "false", window: "daily",
		numbers:  map[string]float64{"requested_tokens": 16384, "affordable_tokens": 1000, "limit": 5, "remaining": 0.01},
		resetsAt: nextMidnight, upstreamSays: "This request requires more credits, or fewer max_tokens.",
	}.check(t, "unscoped 402, key cap proved", limitChat(t, key, emulator.ModelNeedsCredits, 0), time.Now(), time.Now())
}

// The free-model per-minute rate: Retry-After is the seconds to the
// minute's end, and the client may retry.
func TestFreePerMinuteRetryAfter(t *testing.T) {
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{})
	body := `{"model":"` + emulator.FreeModel + `","messages":[{"role":"user","content":"hi"}]}`
	var le limitError
	for i := 0; i <= 2*openrouter.FreePerMinute && le.status != 429; i++ {
		le = limitRaw(t, gatewayBase, "/chat/completions", key, body)
	}
	if le.status != 429 {
		t.Fatalf("no 429 after %d free requests", 2*openrouter.FreePerMinute)
	}
	expectation{
		status: 429, reason: "free_rate_limited", scope: "free_models", retry: "true", retryAfter: le.header.Get("Retry-After"), resetsSoon: true,
		upstreamSays: "Rate limit exceeded: free-models-per-min.",
	}.check(t, "per minute", le, time.Now(), time.Now())
	if n, err := strconv.Atoi(le.header.Get("Retry-After")); err != nil || n < 0 || n > 60 {
		t.Errorf("Retry-After %q: want the seconds to the minute's end, at most 60", le.header.Get("Retry-After"))
	}
}

// The daily free allowance answered through the client's default retries
// costs OpenRouter one request; plain reverse_proxy lets the client spend
// three.
func TestFreeDailyCostsOneUpstreamRequest(t *testing.T) {
	e := start(t, options{})
	e.emu.SetCredits("", 5, 1)
	e.emu.SetFreeRequestsUsed("", openrouter.FreeDailyLow)
	key := e.emu.NewKey(emulator.KeyOptions{})
	for _, via := range []struct {
		name, base string
		want       int
	}{{"gateway", gatewayBase, 1}, {"plain reverse_proxy", plainBase, 3}} {
		c := openai.NewClient(option.WithBaseURL(via.base+"/"), option.WithAPIKey(key)) // default retries
		before := e.emu.Count("/chat/completions")
		_, err := c.Chat.Completions.New(context.Background(), chatParams(emulator.FreeModel))
		le := asLimitError(t, key, err)
		if n := e.emu.Count("/chat/completions") - before; le.status != 429 || n != via.want {
			t.Errorf("through %s: %d upstream requests for %v; want %d", via.name, n, le, via.want)
		}
	}
	// A spent key cap is a 403, which clients do not retry either way; a
	// second request is answered at the edge, costing OpenRouter nothing.
	limit := 1.0
	capped := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "daily", Usage: 1})
	c := openai.NewClient(option.WithBaseURL(gatewayBase+"/"), option.WithAPIKey(capped))
	before := e.emu.Count("/chat/completions")
	for i := 0; i < 3; i++ {
		_, err := c.Chat.Completions.New(context.Background(), chatParams("openai/gpt-4o"))
		asLimitError(t, capped, err)
	}
	if n := e.emu.Count("/chat/completions") - before; n != 1 {
		t.Errorf("three requests with a spent key cap reached OpenRouter %d times; want 1", n)
	}
}

// /messages and /responses (both envelopes) carry the same reason, scope,
// figures and headers inside their own envelope.
func TestLimitFailuresInEveryEnvelope(t *testing.T) {
	for name, env := range map[string]openrouter.Envelope{
		"responses docs envelope": openrouter.EnvelopeResponsesDocs, "responses spec envelope": openrouter.EnvelopeOpenAI,
	} {
		t.Run(name, func(t *testing.T) { limitEnvelopes(t, env) })
	}
}

func limitEnvelopes(t *testing.T, env openrouter.Envelope) {
	e := start(t, options{emulator: func(s *emulator.Server) { s.ResponsesEnvelope = env }})
	limit := 5.0
	capped := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "daily", Usage: 5})
	e.emu.SetCredits("", 5, 1)
	e.emu.SetFreeRequestsUsed("", openrouter.FreeDailyLow)
	free := e.emu.NewKey(emulator.KeyOptions{})
	for _, c := range []struct {
		path, key, body string
		want            expectation
	}{
		{"/responses", capped, `{"model":"openai/gpt-4o","input":"hi"}`,
			expectation{status: 403, reason: "key_limit_reached", scope: "key", retry: "false", window: "daily",
				numbers: map[string]float64{"limit": 5, "spent": 5, "remaining": 0}, resetsAt: nextMidnight}},
		// Asked again: the edge answers, in the envelope the upstream used.
		{"/responses", capped, `{"model":"openai/gpt-4o","input":"hi"}`,
			expectation{status: 403, reason: "key_limit_reached", scope: "key", retry: "false", window: "daily",
				numbers: map[string]float64{"limit": 5, "spent": 5, "remaining": 0}, resetsAt: nextMidnight}},
		{"/messages", capped, `{"model":"anthropic/claude-3.5-sonnet","max_tokens":100,"messages":[]}`,
			expectation{status: 403, reason: "key_limit_reached", scope: "key", retry: "false", window: "daily",
				numbers: map[string]float64{"limit": 5, "spent": 5, "remaining": 0}, resetsAt: nextMidnight}},
		{"/messages", free, `{"model":"` + emulator.FreeModel + `","max_tokens":100,"messages":[]}`,
			expectation{status: 429, reason: "free_daily_limit_reached", scope: "free_models", retry: "false",
				numbers: map[string]float64{"limit": 50, "remaining": 0}, resetsAt: nextMidnight}},
		{"/responses", free, `{"model":"` + emulator.FreeModel + `","input":"hi"}`,
			expectation{status: 429, reason: "free_daily_limit_reached", scope: "free_models", retry: "false",
				numbers: map[string]float64{"limit": 50, "remaining": 0}, resetsAt: nextMidnight}},
	} {
		before := time.Now()
		// The capped key's later requests come from the edge, in the
		// endpoint's envelope all the same: on /responses the one the
		// upstream was last seen to use there (TestEnvelopes).
		le := limitRaw(t, gatewayBase, c.path, c.key, c.body)
		what := fmt.Sprintf("%s (%v)", c.path, env)
		c.want.check(t, what, le, before, time.Now())
		var top map[string]any
		_ = json.Unmarshal(le.body, &top)
		switch {
		case c.path == "/messages" && (top["type"] != "error" || le.errorType == ""):
			t.Errorf("%s: not Anthropic's envelope: %s", what, le.body)
		case c.path == "/responses" && env == openrouter.EnvelopeResponsesDocs &&
			le.errorType != map[int]string{403: "permission_denied", 429: "rate_limit_exceeded"}[le.status]:
			// OpenRouter's ApiErrorType for the status, from the upstream
			// and from the edge alike.
			t.Errorf("%s: not the docs envelope with error_type of a %d: %s", what, le.status, le.body)
		case c.path == "/responses" && env == openrouter.EnvelopeOpenAI && le.errorType != "":
			t.Errorf("%s: not the OpenAI envelope: %s", what, le.body)
		}
	}
}

// A spent key cap is answered at the edge after its first 403, with the
// same body and headers, and never reaches OpenRouter meanwhile; the
// record hash goes back to the key's own client only.
func TestCappedKeyAnsweredAtTheEdge(t *testing.T) {
	e := start(t, options{})
	limit := 5.0
	key := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "daily", Usage: 5})
	first := limitChat(t, key, "openai/gpt-4o", 0)
	if first.reason() != "key_limit_reached" || first.header.Get("X-OpenRouter-Keys-Answer") == "edge" {
		t.Fatalf("first: %v", first)
	}
	if !strings.Contains(first.message, "/keys/"+recordHashOf(key)) {
		t.Errorf("the key's own client lost the manage URL with its record hash: %q", first.message)
	}
	before := e.emu.Count("/chat/completions")
	edge := limitChat(t, key, "openai/gpt-4o", 0)
	if edge.header.Get("X-OpenRouter-Keys-Answer") != "edge" || e.emu.Count("/chat/completions") != before {
		t.Fatalf("the second request with a spent cap was not answered at the edge: %v", edge)
	}
	// The same explanation: the gateway's sentence and every member it
	// states. (The edge does not keep the upstream's body: its manage URL
	// holds the record hash, which is never stored.)
	said := func(le limitError) string { s, _, _ := strings.Cut(le.message, " OpenRouter said: "); return s }
	if said(edge) != said(first) {
		t.Errorf("the edge answer says otherwise:\n upstream %s\n edge     %s", first.message, edge.message)
	}
	for _, m := range []string{"reason", "scope", "window", "limit", "spent", "remaining", "resets_at"} {
		if fmt.Sprint(edge.metadata[m]) != fmt.Sprint(first.metadata[m]) {
			t.Errorf("metadata.%s: %v from the upstream's answer, %v from the edge", m, first.metadata[m], edge.metadata[m])
		}
	}
	for _, h := range []string{"X-OpenRouter-Key-Status", "X-Should-Retry", "Retry-After"} {
		if first.header.Get(h) != edge.header.Get(h) {
			t.Errorf("%s: %q from the upstream's answer, %q from the edge", h, first.header.Get(h), edge.header.Get(h))
		}
	}
	// Another key of the same account is not answered at the edge.
	other := e.emu.NewKey(emulator.KeyOptions{})
	if _, err := chat(gatewayBase, other); err != nil {
		t.Errorf("another key of the account: %v", err)
	}
	// Raising the cap cannot be seen, so the edge stops within
	// edge_capped_for; with edge_answers off it never starts.
	e.reload("edge_answers off")
	key2 := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "daily", Usage: 5})
	for i := 0; i < 2; i++ {
		if le := limitChat(t, key2, "openai/gpt-4o", 0); le.reason() != "key_limit_reached" || le.header.Get("X-OpenRouter-Keys-Answer") == "edge" {
			t.Errorf("edge_answers off, request %d: %v", i+1, le)
		}
	}
	// The hash never reaches the metrics; the sweep checks the logs.
	metrics := scrape(t)
	if strings.Contains(metrics, recordHashOf(key)) || strings.Contains(metrics, recordHashOf(key2)) {
		t.Error("a record hash is in /metrics")
	}
	recordResponse([]byte(metrics))
}

// edge_capped_for bounds the edge: a cap raised meanwhile works again
// once it has passed. The window counts from the second the cap was seen
// spent (whole seconds), so 3s lasts at least 2s: the second request,
// sent at once, is within it however slow the machine.
func TestCappedKeyEdgeIsBounded(t *testing.T) {
	e := start(t, options{module: "edge_capped_for 3s\n limit_lookup_timeout 2s"})
	limit := 5.0
	key := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "daily", Usage: 5})
	// With limit_lookup_timeout as long as lookup_timeout, the failure
	// waits for its GET /key, which the gateway records before answering:
	// the figures only GET /key knows (spent) show that it did. Raising
	// the limit afterwards cannot reach that lookup.
	if le := limitChat(t, key, "openai/gpt-4o", 0); le.reason() != "key_limit_reached" {
		t.Fatalf("first: %v", le)
	} else if _, ok := le.num("spent"); !ok {
		t.Fatalf("the failure did not wait for its GET /key: %v", le)
	}
	e.emu.SetUsage(key, 0) // as if the limit had been raised
	if le := limitChat(t, key, "openai/gpt-4o", 0); le.header.Get("X-OpenRouter-Keys-Answer") != "edge" {
		t.Errorf("within edge_capped_for: %v", le)
	}
	edgeEnded := time.Now().Add(3 * time.Second) // at the latest
	sleepUntil(edgeEnded)
	if _, err := chat(gatewayBase, key); err != nil {
		t.Errorf("after edge_capped_for, a key whose cap came back still fails: %v", err)
	}
}

// With GET /key failing, a failure says only what its body says: the
// figures only GET /key knows are absent, nothing is made up, and the
// answer is not held longer than limit_lookup_timeout.
func TestLimitFailuresWithoutEvidence(t *testing.T) {
	for _, fault := range []emulator.Fault{emulator.FaultStatus500, emulator.FaultHang} {
		t.Run(fault.String(), func(t *testing.T) {
			e := start(t, options{module: "limit_lookup_timeout 300ms"})
			e.emu.SetKeyFault(fault)
			limit := 5.0
			capped := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "weekly", Usage: 5})
			headroom := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "weekly", Usage: 4.5})
			began := time.Now()
			le := limitChat(t, capped, "openai/gpt-4o", 0)
			took := time.Since(began)
			// The body names the weekly window: its reset follows from the
			// calendar; the limit and what was spent do not.
			expectation{
				status: 403, reason: "key_limit_reached", scope: "key", retry: "false", window: "weekly",
				absent: []string{"limit", "spent", "remaining", "balance"}, resetsAt: nextMonday,
				upstreamSays: "Key limit exceeded (weekly limit).",
			}.check(t, "403 without GET /key", le, began, time.Now())
			// A bound, not a speed target: lookup_timeout (2s) would be
			// waited without limit_lookup_timeout.
			if took > 1500*time.Millisecond {
				t.Errorf("the 403 waited %v for evidence; limit_lookup_timeout is 300ms", took)
			}
			le = limitChat(t, headroom, "openai/gpt-4o", 100000)
			expectation{
				status: 402, reason: "key_limit_insufficient", scope: "key", retry: "false", window: "weekly",
				numbers:  map[string]float64{"requested_tokens": 100000, "affordable_tokens": 50000},
				absent:   []string{"limit", "spent", "remaining", "balance"},
				resetsAt: nextMonday,
			}.check(t, "402 without GET /key", le, began, time.Now())

			// Evidence that comes back serves a later failure (the 402:
			// the capped key is answered at the edge meanwhile).
			e.emu.SetKeyFault(emulator.FaultNone)
			deadline := time.Now().Add(15 * time.Second)
			for {
				le := limitRaw(t, gatewayBase, "/chat/completions", headroom, `{"model":"openai/gpt-4o","max_tokens":100000,"messages":[]}`)
				if _, ok := le.num("limit"); ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("GET /key works again, but failures still lack its figures: %v", le)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}

// explain_limits off: every 402, 403 and 429 passes byte for byte as
// plain reverse_proxy passes it, in every encoding.
func TestExplainLimitsOffIsPlainReverseProxy(t *testing.T) {
	e := start(t, options{management: true, module: "explain_limits off"})
	limit := 5.0
	capped := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "daily", Usage: 5})
	headroom := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "weekly", Usage: 4.5})
	key := e.emu.NewKey(emulator.KeyOptions{})
	ws := e.emu.NewWorkspace("Budgeted")
	e.emu.SetWorkspaceBudget(ws, "daily", 1, 1)
	budgeted := e.emu.NewKey(emulator.KeyOptions{Workspace: ws})
	free := e.emu.NewKey(emulator.KeyOptions{Account: e.emu.NewAccount(emulator.AccountOptions{Credits: 5, FreeRequestsUsed: openrouter.FreeDailyLow})})
	broke := e.emu.NewKey(emulator.KeyOptions{Account: e.emu.NewAccount(emulator.AccountOptions{Credits: 5, Usage: 5})})
	chatBody := func(model string) string {
		return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
	}
	cases := []struct {
		name, path, key, body string
		status                int
	}{
		{"key cap spent", "/chat/completions", capped, chatBody("openai/gpt-4o"), 403},
		{"key cap spent, /messages", "/messages", capped, chatBody("openai/gpt-4o"), 403},
		{"key cap headroom", "/chat/completions", headroom, `{"model":"openai/gpt-4o","max_tokens":100000,"messages":[]}`, 402},
		{"balance below the request", "/chat/completions", key, `{"model":"openai/gpt-4o","max_tokens":100000000,"messages":[]}`, 402},
		{"balance", "/chat/completions", broke, chatBody("openai/gpt-4o"), 402},
		{"in flight", "/chat/completions", key, chatBody(emulator.ModelInFlight), 402},
		{"workspace budget", "/chat/completions", budgeted, chatBody("openai/gpt-4o"), 403},
		{"BYOK required", "/chat/completions", key, chatBody(emulator.ModelBYOKRequired), 403},
		{"free daily", "/chat/completions", free, chatBody(emulator.FreeModel), 429},
		{"free daily, /responses", "/responses", free, chatBody(emulator.FreeModel), 429},
		{"shared pool", "/chat/completions", key, chatBody(emulator.ModelSharedPool), 429},
		{"capacity", "/chat/completions", key, chatBody(emulator.ModelAtCapacity), 429},
		{"moderation", "/chat/completions", key, chatBody(emulator.ModelModerated), 403},
		{"moderation, captured", "/chat/completions", key, chatBody(emulator.ModelModerationFlagged), 403},
		{"guardrail", "/messages", key, chatBody(emulator.ModelGuardrailPatterns), 403},
		{"provider terms", "/responses", key, chatBody(emulator.ModelProviderToS), 403},
		{"region", "/chat/completions", key, chatBody(emulator.ModelRegionRestricted), 403},
	}
	rt := &http.Transport{DisableCompression: true}
	for _, c := range cases {
		for _, enc := range []string{"", "gzip", "br"} {
			for i := 0; i < 2; i++ { // twice: no edge answer either
				gw := fetchOwn(t, rt, "POST", c.key, gatewayBase+c.path, c.body, "Accept-Encoding", enc)
				pl := fetchOwn(t, rt, "POST", c.key, plainBase+c.path, c.body, "Accept-Encoding", enc)
				if gw.status != c.status {
					t.Errorf("%s (%q): status %d, want %d", c.name, enc, gw.status, c.status)
				}
				if d := sameWire(gw, pl); d != "" {
					t.Errorf("%s (%q): differs from plain reverse_proxy: %s", c.name, enc, d)
				}
			}
		}
	}
}

// fetchOwn is fetch for a request with key whose answer may carry the
// key's own record hash.
func fetchOwn(t *testing.T, rt http.RoundTripper, method, key, url, body string, header ...string) wire {
	t.Helper()
	return fetchRecorded(t, rt, func(b []byte) { recordOwnResponse(key, b) }, method, url, key, body, header...)
}

// Errors that are not about the key pass unchanged and are counted by
// class; so does an error inside a stream after its first event, and a
// stream refused before it starts is explained.
func TestLimitsLeaveOthersAlone(t *testing.T) {
	e := start(t, options{emulator: func(s *emulator.Server) { s.EventGap = time.Millisecond }})
	key := e.emu.NewKey(emulator.KeyOptions{})
	const counted = `caddy_openrouter_keys_unexplained_total{class="unrecognized_failure"}`
	before := metric(t, counted)
	body := `{"model":"` + emulator.ModelForbiddenUnknown + `","messages":[]}`
	rt := &http.Transport{DisableCompression: true}
	gw := fetchOwn(t, rt, "POST", key, gatewayBase+"/chat/completions", body)
	pl := fetchOwn(t, rt, "POST", key, plainBase+"/chat/completions", body)
	if d := sameWire(gw, pl); d != "" || gw.status != 403 {
		t.Errorf("a 403 of unknown wording changed: %s", d)
	}
	if after := metric(t, counted); after != before+1 {
		t.Errorf("%s went from %v to %v; want one more", counted, before, after)
	}

	stream := `{"model":"` + emulator.ModelInBandError + `","stream":true,"messages":[]}`
	gw = fetchOwn(t, rt, "POST", key, gatewayBase+"/chat/completions", stream)
	pl = fetchOwn(t, rt, "POST", key, plainBase+"/chat/completions", stream)
	if d := sameWire(gw, pl); d != "" || gw.status != 200 || !strings.Contains(string(gw.body), `"finish_reason":"error"`) {
		t.Errorf("an error inside a stream changed: %s", d)
	}

	e.emu.SetCredits("", 5, 1)
	e.emu.SetFreeRequestsUsed("", openrouter.FreeDailyLow)
	c := client(gatewayBase, key)
	s := c.Chat.Completions.NewStreaming(context.Background(), chatParams(emulator.FreeModel))
	for s.Next() {
	}
	le := asLimitError(t, key, s.Err())
	s.Close()
	if le.reason() != "free_daily_limit_reached" || le.header.Get("X-Should-Retry") != "false" {
		t.Errorf("a stream refused before its first event: %v", le)
	}
}

// The wordings without limit_source, the older ones, and X-RateLimit-* in
// only one of its two places, say the same.
func TestLimitFailuresInEveryWording(t *testing.T) {
	for _, w := range []struct {
		name      string
		wording   openrouter.Wording
		placement emulator.RateLimitPlacement
	}{
		{"no limit_source, figures in headers only", openrouter.WordingNoSource, emulator.RateLimitHeadersOnly},
		{"older wording, figures in metadata only", openrouter.WordingOld, emulator.RateLimitMetadataOnly},
	} {
		t.Run(w.name, func(t *testing.T) {
			for _, c := range limitCases() {
				e := start(t, options{management: true, emulator: func(s *emulator.Server) {
					s.Wording, s.RateLimitFigures = w.wording, w.placement
				}})
				key := c.setup(e)
				before := time.Now()
				le := limitChat(t, key, c.model, c.maxTokens)
				x := c.want
				x.upstreamSays = "" // the older sentences differ
				x.check(t, c.name, le, before, time.Now())
			}
		})
	}
}

// The management key's balance is its own account's: a key of another
// account (its record is not in the management key's account) whose
// credits are spent is told the account's credits fall short, and no
// balance, which would be another account's.
func TestBalanceOfAnotherAccountIsNeverNamed(t *testing.T) {
	e := start(t, options{management: true})
	broke := e.emu.NewKey(emulator.KeyOptions{Account: e.emu.NewAccount(emulator.AccountOptions{Credits: 5, Usage: 5})})
	expectation{
		status: 402, reason: "credits_insufficient", scope: "account", retry: "false",
		absent: []string{"balance"}, upstreamSays: "Insufficient credits.",
	}.check(t, "another account's key", limitChat(t, broke, "openai/gpt-4o", 0), time.Now(), time.Now())
	if le := limitChat(t, broke, "openai/gpt-4o", 0); strings.Contains(le.message, "13.50") {
		t.Errorf("the message names the management key's balance: %q", le.message)
	}
}

// A capped key still works where no limit applies: its own GET /key and
// the model list go upstream and answer as they do without the gateway,
// also while its inference is answered at the edge.
func TestCappedKeyStillReadsWhatNeedsNoCredit(t *testing.T) {
	e := start(t, options{})
	limit := 5.0
	capped := e.emu.NewKey(emulator.KeyOptions{Limit: &limit, LimitReset: "daily", Usage: 5})
	if le := limitChat(t, capped, "openai/gpt-4o", 0); le.reason() != "key_limit_reached" {
		t.Fatalf("first: %v", le)
	}
	if le := limitChat(t, capped, "openai/gpt-4o", 0); le.header.Get("X-OpenRouter-Keys-Answer") != "edge" {
		t.Fatalf("not at the edge: %v", le)
	}
	rt := &http.Transport{DisableCompression: true}
	for _, path := range []string{"/key", "/models"} {
		gw := fetchOwn(t, rt, "GET", capped, gatewayBase+path, "")
		pl := fetchOwn(t, rt, "GET", capped, plainBase+path, "")
		if d := sameWire(gw, pl); d != "" || gw.status != 200 {
			t.Errorf("GET %s with a capped key: %d, differs from plain reverse_proxy: %s", path, gw.status, d)
		}
	}
}
