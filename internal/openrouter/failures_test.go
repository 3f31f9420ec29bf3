package openrouter

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

const recordHash = "3f1c5a0e9d2b47c8a6e1f0b9d8c7a6e5f4d3c2b1a09f8e7d6c5b4a3928170615"

func i64(n int64) *int64 { return &n }

// The bodies of the facts sheet, byte for byte, in every envelope,
// old and new wordings, with and without limit_source.
func TestRecognise(t *testing.T) {
	balance := "This request requires more credits, or fewer max_tokens. You requested up to 900 tokens, but can only afford 840. To increase, visit https://openrouter.ai/settings/credits and add more credits"
	keyCap := func(w string) string {
		return "This request requires more credits, or fewer max_tokens. You requested up to 900 tokens, but can only afford 840. To increase, visit https://openrouter.ai/settings/keys and create a key with a higher " + w + " limit"
	}
	tok := &Tokens{Requested: 900, Affordable: 840}
	freeHeaders := http.Header{"X-Ratelimit-Limit": {"50"}, "X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {"1765065600000"}}
	reset := time.UnixMilli(1765065600000).UTC()
	for _, c := range []struct {
		name   string
		status int
		body   string
		header http.Header
		want   Failure // Status is filled in
	}{
		// 402, the account's balance.
		{"balance", 402, `{"error":{"message":"` + balance + `","code":402,"metadata":{"limit_source":"openrouter_credits","provider_name":null,"previous_errors":[]}},"user_id":"user_2x"}`, nil,
			Failure{Kind: KindAccountBalance, LimitSource: LimitSourceCredits, Tokens: tok}},
		{"balance without source", 402, `{"error":{"message":"` + balance + `","code":402,"metadata":{"provider_name":null}}}`, nil,
			Failure{Kind: KindAccountBalance, Tokens: tok}},
		{"balance, old", 402, `{"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 900 tokens, but can only afford 840. To increase, visit https://openrouter.ai/settings/credits and upgrade to a paid account","code":402}}`, nil,
			Failure{Kind: KindAccountBalance, Tokens: tok}},
		{"never purchased", 402, `{"error":{"message":"Insufficient credits. This account never purchased credits. Make sure your key is on the correct account or org, and if so, purchase more at https://openrouter.ai/settings/credits","code":402}}`, nil,
			Failure{Kind: KindAccountBalance}},
		{"insufficient", 402, `{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/settings/credits","code":402}}`, nil,
			Failure{Kind: KindAccountBalance}},
		{"balance, flat", 402, `{"message":"` + balance + `","code":402}`, nil,
			Failure{Kind: KindAccountBalance, Tokens: tok}},
		{"balance, /messages", 402, `{"type":"error","error":{"type":"billing_error","message":"` + balance + `"}}`, nil,
			Failure{Kind: KindAccountBalance, Tokens: tok}},
		{"balance, /responses", 402, `{"error":{"code":"server_error","message":"` + balance + `"},"error_type":"payment_required"}`, nil,
			Failure{Kind: KindAccountBalance, Tokens: tok}},

		// 402, the key's cap with headroom left.
		{"key cap monthly", 402, `{"error":{"message":"` + keyCap("monthly") + `","code":402,"metadata":{"limit_source":"openrouter_key_limit","provider_name":null}}}`, nil,
			Failure{Kind: KindKeyCapHeadroom, LimitSource: LimitSourceKeyLimit, Window: WindowMonthly, Tokens: tok}},
		{"key cap weekly without source", 402, `{"error":{"message":"` + keyCap("weekly") + `","code":402}}`, nil,
			Failure{Kind: KindKeyCapHeadroom, Window: WindowWeekly, Tokens: tok}},
		{"key cap daily", 402, `{"error":{"message":"` + keyCap("daily") + `","code":402}}`, nil,
			Failure{Kind: KindKeyCapHeadroom, Window: WindowDaily, Tokens: tok}},
		{"key cap total", 402, `{"error":{"message":"` + keyCap("total") + `","code":402}}`, nil,
			Failure{Kind: KindKeyCapHeadroom, Window: WindowTotal, Tokens: tok}},
		{"key cap, oldest", 402, `{"error":{"message":"More credits are required to run this request. 128000 token capacity required, 19484 available. To increase, visit https://openrouter.ai/settings/keys","code":402}}`, nil,
			Failure{Kind: KindKeyCapHeadroom, Tokens: &Tokens{Requested: 128000, Affordable: 19484}}},
		// limit_source wins over the sentence's URL.
		{"source first", 402, `{"error":{"message":"` + balance + `","code":402,"metadata":{"limit_source":"openrouter_key_limit"}}}`, nil,
			Failure{Kind: KindKeyCapHeadroom, LimitSource: LimitSourceKeyLimit, Tokens: tok}},
		// Without either URL the scope is not said.
		{"unscoped", 402, `{"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 16384 tokens, but can only afford 1000.","code":402,"metadata":{"provider_name":null}}}`, nil,
			Failure{Kind: KindCreditsUnscoped, Tokens: &Tokens{Requested: 16384, Affordable: 1000}}},

		// 402, in flight.
		{"in flight", 402, `{"error":{"message":"` + messageInFlight + `","code":402,"metadata":{"reason":"in_flight_budget_exhausted","limit_source":"openrouter_in_flight_budget"}}}`, http.Header{"Retry-After": {"5"}},
			Failure{Kind: KindInFlight, LimitSource: LimitSourceInFlightBudget, RetryAfter: 5 * time.Second}},
		{"in flight by reason", 402, `{"error":{"message":"Something else.","code":402,"metadata":{"reason":"in_flight_budget_exhausted"}}}`, nil,
			Failure{Kind: KindInFlight}},
		{"in flight by message", 402, `{"error":{"message":"` + messageInFlight + `","code":402}}`, nil,
			Failure{Kind: KindInFlight}},

		// 403, the key's cap spent.
		{"key limit daily", 403, `{"error":{"message":"Key limit exceeded (daily limit). Manage it using https://openrouter.ai/workspaces/default/keys/` + recordHash + `","code":403}}`, nil,
			Failure{Kind: KindKeyCapSpent, Window: WindowDaily, RecordHash: recordHash}},
		{"key limit weekly, old URL", 403, `{"error":{"message":"Key limit exceeded (weekly limit). Manage it using https://openrouter.ai/settings/keys","code":403}}`, nil,
			Failure{Kind: KindKeyCapSpent, Window: WindowWeekly}},
		{"key limit monthly", 403, `{"error":{"message":"Key limit exceeded (monthly limit). Manage it using https://openrouter.ai/settings/keys","code":403}}`, nil,
			Failure{Kind: KindKeyCapSpent, Window: WindowMonthly}},
		{"key limit total, other workspace", 403, `{"error":{"message":"Key limit exceeded (total limit). Manage it using https://openrouter.ai/workspaces/research-2/keys/` + strings.ToUpper(recordHash) + `","code":403}}`, nil,
			Failure{Kind: KindKeyCapSpent, Window: WindowTotal, RecordHash: recordHash}},
		{"key limit, spend fixture", 403, `{"error":{"message":"Key limit exceeded (daily limit). $20.05 of $20.00 used; resets 2026-10-12T00:00:00.000Z. Manage it using https://openrouter.ai/workspaces/default/keys/` + recordHash + `","code":403,"metadata":{"limit_source":"openrouter_key_limit"}}}`, nil,
			Failure{Kind: KindKeyCapSpent, LimitSource: LimitSourceKeyLimit, Window: WindowDaily, RecordHash: recordHash,
				Spend: &KeySpend{Spent: 20.05, Limit: 20, ResetsAt: utc("2026-10-12T00:00:00Z")}}},
		{"key limit, /messages", 403, `{"type":"error","error":{"type":"permission_error","message":"Key limit exceeded (daily limit). Manage it using https://openrouter.ai/settings/keys"}}`, nil,
			Failure{Kind: KindKeyCapSpent, Window: WindowDaily}},

		// 403, others.
		{"workspace budget", 403, `{"error":{"message":"Workspace monthly budget of $500.00 exceeded. Contact your workspace admin.","code":403}}`, nil,
			Failure{Kind: KindWorkspaceBudget, Budget: &Budget{Interval: "monthly", USD: 500}}},
		{"workspace budget, old", 403, `{"error":{"message":"Workspace daily budget of $1,250.50 exceeded. Contact your org admin.","code":403}}`, nil,
			Failure{Kind: KindWorkspaceBudget, Budget: &Budget{Interval: "daily", USD: 1250.5}}},
		{"byok required", 403, `{"error":{"message":"OpenAI is requiring a key to access this model, which you can add in https://openrouter.ai/settings/integrations - you can also switch to o3-mini","code":403}}`, nil,
			Failure{Kind: KindBYOKRequired, Provider: "OpenAI", Policy: &Policy{Alternatives: []string{"o3-mini"}}}},

		// 429, free models.
		{"free daily", 429, `{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1765065600000"},"provider_name":null}},"user_id":"user_2x"}`, nil,
			Failure{Kind: KindFreeDaily, FreeDailyLimit: 50, RateLimit: &RateLimit429{Limit: i64(50), Remaining: i64(0), Reset: reset}}},
		{"free daily, headers", 429, `{"error":{"message":"Rate limit exceeded: free-models-per-day-high-balance. ","code":429,"metadata":{"limit_source":"openrouter_free_tier_daily"}}}`,
			http.Header{"X-Ratelimit-Limit": {"1000"}, "X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {"1765065600000"}},
			Failure{Kind: KindFreeDaily, LimitSource: LimitSourceFreeTierDaily, FreeDailyLimit: 1000, RateLimit: &RateLimit429{Limit: i64(1000), Remaining: i64(0), Reset: reset}}},
		{"free daily, source only", 429, `{"error":{"message":"Daily limit reached.","code":429,"metadata":{"limit_source":"openrouter_free_tier_daily"}}}`, freeHeaders,
			Failure{Kind: KindFreeDaily, LimitSource: LimitSourceFreeTierDaily, FreeDailyLimit: 50, RateLimit: &RateLimit429{Limit: i64(50), Remaining: i64(0), Reset: reset}}},
		{"free per minute", 429, `{"error":{"message":"Rate limit exceeded: free-models-per-min. ","code":429,"metadata":{"headers":{"X-RateLimit-Limit":20,"X-RateLimit-Remaining":0,"X-RateLimit-Reset":1765065660000}}}}`, nil,
			Failure{Kind: KindFreePerMinute, RateLimit: &RateLimit429{Limit: i64(20), Remaining: i64(0), Reset: time.UnixMilli(1765065660000).UTC()}}},
		{"free per minute, reset in seconds", 429, `{"error":{"message":"Rate limit exceeded: free-models-per-min.","code":429}}`, http.Header{"X-Ratelimit-Reset": {"1765065660"}},
			Failure{Kind: KindFreePerMinute, RateLimit: &RateLimit429{Reset: time.UnixMilli(1765065660000).UTC()}}},

		// 429, providers.
		{"shared pool", 429, `{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"deepseek/deepseek-r1:free is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: https://openrouter.ai/settings/integrations","provider_name":"Chutes","is_byok":false,"provider_error_code":429,"limit_source":"upstream_provider_shared_pool"}},"user_id":"user_2x"}`, nil,
			Failure{Kind: KindProviderPool, LimitSource: LimitSourceSharedPool, Provider: "Chutes"}},
		{"own provider key", 429, `{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"Rate limit reached for requests","provider_name":"OpenAI","is_byok":true,"limit_source":"upstream_provider_shared_pool"}}}`, nil,
			Failure{Kind: KindProviderPool, LimitSource: LimitSourceSharedPool, Provider: "OpenAI", BYOK: true}},
		{"shared pool without source", 429, `{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"google/gemini-2.0-flash-exp:free is temporarily rate-limited upstream. Please retry shortly.","provider_name":"Google"}}}`, nil,
			Failure{Kind: KindProviderPool, Provider: "Google"}},
		{"at capacity", 429, `{"error":{"message":"All providers for openai/gpt-4o are at capacity. Retry after 40 seconds.","code":429,"metadata":{"availability":{"code":"capacity_exhausted","retryable":true,"retry_after":40}}}}`, http.Header{"Retry-After": {"40"}},
			Failure{Kind: KindProvidersAtCapacity, RetryAfter: 40 * time.Second}},
		{"at capacity, metadata only", 429, `{"error":{"message":"Capacity.","code":429,"metadata":{"availability":{"code":"capacity_exhausted","retryable":true,"retry_after":12}}}}`, nil,
			Failure{Kind: KindProvidersAtCapacity, RetryAfter: 12 * time.Second}},
		{"at capacity, message only", 429, `{"type":"error","error":{"type":"rate_limit_error","message":"All providers for openai/gpt-4o are at capacity. Retry after 7 seconds."}}`, nil,
			Failure{Kind: KindProvidersAtCapacity, RetryAfter: 7 * time.Second}},

		// Policy 403s (policy.go) and failures that are not about the key.
		{"moderation", 403, `{"error":{"message":"openai/gpt-4o requires moderation on OpenRouter. Your input was flagged for \"violence\".","code":403,"metadata":{"reasons":["violence"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}`, nil,
			Failure{Kind: KindModeration, Provider: "OpenAI", Policy: &Policy{Model: "openai/gpt-4o", Categories: []string{"violence"}}}},
		{"region", 403, `{"error":{"message":"This model is not available in your region.","code":403,"metadata":{"reason":"region_restricted"}}}`, nil,
			Failure{Kind: KindRegion, Policy: &Policy{}}},
		{"context length", 400, `{"error":{"message":"This endpoint's maximum context length is 128000 tokens. However, you requested about 200000 tokens.","code":400}}`, nil,
			Failure{Kind: KindNotKey, Class: ClassContextLength}},
		{"data policy 403", 403, `{"error":{"message":"No endpoints found matching your data policy (Free model training). Configure: https://openrouter.ai/settings/privacy","code":403}}`, nil,
			Failure{Kind: KindNotKey, Class: ClassRouting}},
		// A 404's no endpoints is a model failure (models.go).
		{"data policy 404", 404, `{"error":{"message":"No endpoints found matching your data policy (Free model training). Configure: https://openrouter.ai/settings/privacy","code":404}}`, nil,
			Failure{Kind: KindNoEndpoints}},
		{"guardrail budget", 403, `{"error":{"message":"Guardrail budget exceeded.","code":403,"metadata":{"limit_source":"openrouter_guardrail_budget"}}}`, nil,
			Failure{Kind: KindGuardrail, LimitSource: LimitSourceGuardrailBudget, Policy: &Policy{Rule: GuardrailBudget}}},

		// Unknown wording: nothing claimed.
		{"unknown 402", 402, `{"error":{"message":"Payment required.","code":402}}`, nil, Failure{}},
		{"unknown 429", 429, `{"error":{"message":"Rate limit exceeded: something-new.","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"5"}}}}`, http.Header{"Retry-After": {"3"}}, Failure{}},
		{"unknown source", 403, `{"error":{"message":"Forbidden.","code":403,"metadata":{"limit_source":"openrouter_something_new"}}}`, nil,
			Failure{LimitSource: "openrouter_something_new"}},
		{"401", 401, `{"error":{"message":"User not found.","code":401}}`, nil, Failure{}},
		{"key limit under 402", 402, `{"error":{"message":"Key limit exceeded (daily limit).","code":402}}`, nil, Failure{}},
		{"not JSON", 402, `<html>Payment Required</html>`, nil, Failure{}},
		{"no message", 402, `{"error":{"code":402}}`, nil, Failure{}},
		{"message not a string", 402, `{"error":{"message":{"text":"Insufficient credits."},"code":402}}`, nil, Failure{}},
		{"empty", 429, ``, nil, Failure{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			header := c.header
			if header == nil {
				header = http.Header{}
			}
			got := Recognise(c.status, []byte(c.body), header)
			c.want.Status = c.status
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %s\nwant %s", describe(got), describe(c.want))
			}
		})
	}
}

// describe spells a Failure out, pointers followed and the record hash
// shown (a test hash), for failure messages.
func describe(f Failure) string {
	s := fmt.Sprintf("%d %v/%s source=%q window=%v provider=%q byok=%v free=%d retry=%v hash=%q",
		f.Status, f.Kind, f.Class, f.LimitSource, f.Window, f.Provider, f.BYOK, f.FreeDailyLimit, f.RetryAfter, string(f.RecordHash))
	if f.Tokens != nil {
		s += fmt.Sprintf(" tokens=%+v", *f.Tokens)
	}
	if f.Spend != nil {
		s += fmt.Sprintf(" spend=%+v", *f.Spend)
	}
	if f.Budget != nil {
		s += fmt.Sprintf(" budget=%+v", *f.Budget)
	}
	if rl := f.RateLimit; rl != nil {
		s += " ratelimit="
		for _, n := range []*int64{rl.Limit, rl.Remaining} {
			if n == nil {
				s += "nil,"
			} else {
				s += strconv.FormatInt(*n, 10) + ","
			}
		}
		s += rl.Reset.String()
	}
	return s
}

// Every builder's body is recognised as what it builds, in every envelope
// and wording. Envelopes without metadata lose only what metadata alone
// says.
func TestBuildersAreRecognised(t *testing.T) {
	reset := utc("2026-12-06T00:00:00Z")
	type built struct {
		name string
		body FailureBody
		kind Kind
		// needsMetadata: recognised only where metadata survives.
		needsMetadata bool
	}
	var cases []built
	for _, w := range []Wording{WordingCurrent, WordingNoSource, WordingOld} {
		name := []string{"current", "no source", "old"}[w]
		cases = append(cases,
			built{"balance afford " + name, BalanceAfford(900, 840, w), KindAccountBalance, false},
			built{"insufficient " + name, InsufficientCredits(false, w), KindAccountBalance, false},
			built{"never purchased " + name, InsufficientCredits(true, w), KindAccountBalance, false},
			built{"key cap " + name, KeyCapAfford(900, 840, WindowWeekly, w), KindKeyCapHeadroom, false},
			built{"in flight " + name, InFlight(3, w), KindInFlight, false},
			built{"key limit " + name, KeyLimitExceeded(WindowDaily, "default", recordHash, w), KindKeyCapSpent, false},
			built{"workspace " + name, WorkspaceBudgetExceeded("monthly", 500, w), KindWorkspaceBudget, false},
			built{"free daily " + name, FreeDaily(false, reset, w), KindFreeDaily, false},
			built{"free daily high " + name, FreeDaily(true, reset, w), KindFreeDaily, false},
			built{"pool " + name, ProviderPool("m:free", "Chutes", false, w), KindProviderPool, true},
		)
	}
	cases = append(cases,
		built{"byok required", BYOKRequired("OpenAI"), KindBYOKRequired, false},
		built{"per minute", FreePerMinute429(reset), KindFreePerMinute, false},
		built{"capacity", ProvidersAtCapacity("openai/gpt-4o", 40), KindProvidersAtCapacity, false},
		built{"moderated", Moderated("openai/gpt-4o", "violence"), KindModeration, false},
	)
	for _, c := range cases {
		for _, e := range []Envelope{EnvelopeOpenAI, EnvelopeFlat, EnvelopeMessages, EnvelopeResponsesDocs} {
			want := c.kind
			if c.needsMetadata && (e == EnvelopeMessages || e == EnvelopeResponsesDocs) {
				// "Provider returned error" alone: a provider's error
				// of unknown cause (provider.go).
				want = KindProviderError
			}
			got := Recognise(c.body.Status, c.body.Render(e), c.body.Header)
			if got.Kind != want {
				t.Errorf("%s in envelope %d: %v, want %v: %s", c.name, e, got.Kind, want, c.body.Render(e))
			}
		}
	}

	// The figures come back as built.
	if f := Recognise(402, KeyCapAfford(900, 840, WindowWeekly, WordingCurrent).Render(EnvelopeOpenAI), nil); f.Window != WindowWeekly || *f.Tokens != (Tokens{900, 840}) {
		t.Errorf("key cap: %s", describe(f))
	}
	if f := Recognise(402, KeyCapAfford(128000, 19484, WindowMonthly, WordingOld).Render(EnvelopeOpenAI), nil); f.Window != WindowUnknown || *f.Tokens != (Tokens{128000, 19484}) {
		t.Errorf("key cap, old: %s", describe(f))
	}
	b := KeyLimitExceeded(WindowMonthly, "research", recordHash, WordingNoSource)
	if f := Recognise(403, b.Render(EnvelopeOpenAI), nil); f.RecordHash != recordHash || f.Window != WindowMonthly || f.LimitSource != "" {
		t.Errorf("key limit: %s", describe(f))
	}
	b = FreeDaily(true, reset, WordingCurrent)
	f := Recognise(429, b.Render(EnvelopeOpenAI), http.Header{})
	if f.FreeDailyLimit != 1000 || f.RateLimit == nil || !f.RateLimit.Reset.Equal(reset) || *f.RateLimit.Remaining != 0 {
		t.Errorf("free daily from metadata.headers: %s", describe(f))
	}
	f = Recognise(429, b.Render(EnvelopeMessages), b.Header)
	if f.FreeDailyLimit != 1000 || f.RateLimit == nil || !f.RateLimit.Reset.Equal(reset) {
		t.Errorf("free daily from headers: %s", describe(f))
	}
	if f := Recognise(429, ProviderPool("m", "OpenAI", true, WordingCurrent).Render(EnvelopeOpenAI), nil); !f.BYOK || f.Provider != "OpenAI" {
		t.Errorf("pool: %s", describe(f))
	}
	if f := Recognise(403, WorkspaceBudgetExceeded("weekly", 12.5, WordingOld).Render(EnvelopeFlat), nil); *f.Budget != (Budget{"weekly", 12.5}) {
		t.Errorf("workspace: %s", describe(f))
	}
}

// The builders write OpenRouter's sentences byte for byte.
func TestBuilderWording(t *testing.T) {
	for _, c := range []struct {
		body FailureBody
		want string
	}{
		{BalanceAfford(900, 840, WordingCurrent),
			`{"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 900 tokens, but can only afford 840. To increase, visit https://openrouter.ai/settings/credits and add more credits","code":402,"metadata":{"provider_name":null,"limit_source":"openrouter_credits"}}}`},
		{KeyLimitExceeded(WindowDaily, "default", recordHash, WordingNoSource),
			`{"error":{"message":"Key limit exceeded (daily limit). Manage it using https://openrouter.ai/workspaces/default/keys/` + recordHash + `","code":403}}`},
		{KeyLimitExceeded(WindowMonthly, "default", recordHash, WordingOld),
			`{"error":{"message":"Key limit exceeded (monthly limit). Manage it using https://openrouter.ai/settings/keys","code":403}}`},
		{WorkspaceBudgetExceeded("monthly", 500, WordingNoSource),
			`{"error":{"message":"Workspace monthly budget of $500.00 exceeded. Contact your workspace admin.","code":403}}`},
		{FreeDaily(false, time.UnixMilli(1765065600000), WordingNoSource),
			`{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1765065600000"}}}}`},
		{ProvidersAtCapacity("openai/gpt-4o", 40),
			`{"error":{"message":"All providers for openai/gpt-4o are at capacity. Retry after 40 seconds.","code":429,"metadata":{"availability":{"code":"capacity_exhausted","retryable":true,"retry_after":40}}}}`},
		{InFlight(2, WordingCurrent),
			`{"error":{"message":"This request would exceed your available credits given your current in-flight requests. Retry after in-flight requests settle, or add credits.","code":402,"metadata":{"reason":"in_flight_budget_exhausted","limit_source":"openrouter_in_flight_budget"}}}`},
	} {
		if got := string(c.body.Render(EnvelopeOpenAI)); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
	if got := InFlight(2, WordingCurrent).Header.Get("Retry-After"); got != "2" {
		t.Errorf("in flight Retry-After %q", got)
	}
	if got := BalanceAfford(1, 0, WordingCurrent).Metadata.Without("limit_source").Without("provider_name"); got != nil {
		t.Errorf("Without left %v", got)
	}
}

func TestKindNames(t *testing.T) {
	seen := map[string]bool{}
	for k := range Kind(Kinds) {
		name := k.String()
		if name == "" || seen[name] || strings.HasPrefix(name, "kind_") {
			t.Errorf("kind %d named %q", k, name)
		}
		seen[name] = true
	}
	if got := Kind(Kinds).String(); got != "kind_"+strconv.Itoa(Kinds) {
		t.Errorf("out of range: %q", got)
	}
}

// A record hash never prints, whatever prints the Failure that holds it;
// it can only be compared with sha256 of a key.
func TestRecordHashIsKeyMaterial(t *testing.T) {
	key := KeyPrefix + strings.Repeat("ab", 32)
	sum := sha256.Sum256([]byte(key))
	hash := hex.EncodeToString(sum[:])
	f := Recognise(403, KeyLimitExceeded(WindowDaily, "default", hash, WordingCurrent).Render(EnvelopeOpenAI), nil)
	if !f.RecordHash.Matches(key) || f.RecordHash.Matches(key+"x") || f.RecordHash.Matches(KeyPrefix+strings.Repeat("ba", 32)) {
		t.Errorf("Matches does not tell the key")
	}
	js, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{
		fmt.Sprint(f), fmt.Sprintf("%v %+v %#v %s %q %x", f, f, f, f.RecordHash, f.RecordHash, f.RecordHash), string(js),
	} {
		if strings.Contains(out, hash[:8]) || strings.Contains(out, hash[len(hash)-8:]) || strings.Contains(strings.ToLower(out), hash[:8]) {
			t.Errorf("printed: %s", out)
		}
		if !strings.Contains(out, "[record hash]") {
			t.Errorf("does not say a hash is there: %s", out)
		}
	}
	if got := fmt.Sprint(Failure{}.RecordHash) + string(must(json.Marshal(Failure{}.RecordHash))); got != `""` {
		t.Errorf("no hash prints as %s", got)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
