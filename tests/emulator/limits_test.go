package emulator

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// failure is what the shared recogniser reads of a reply, as the gateway
// will.
func (r reply) failure() openrouter.Failure {
	return openrouter.Recognise(r.status, r.body, r.header)
}

func chatMax(t *testing.T, base, bearer, model string, maxTokens int) reply {
	t.Helper()
	return call(t, "POST", base+"/chat/completions", bearer,
		fmt.Sprintf(`{"model":%q,"max_tokens":%d,"messages":[{"role":"user","content":"hi"}]}`, model, maxTokens))
}

type gotKeyInfo struct {
	Limit          *float64 `json:"limit"`
	LimitRemaining *float64 `json:"limit_remaining"`
	LimitReset     *string  `json:"limit_reset"`
	UsageDaily     float64  `json:"usage_daily"`
	IsFreeTier     bool     `json:"is_free_tier"`
	Free           struct {
		Limit, Remaining, Used int
	} `json:"free_model_daily_requests"`
}

// A key's cap answers as GET /key says: a request costing more than is
// left gets the 402 with the affordable tokens, a spent cap the 403 with
// the key's record hash.
func TestKeyCap(t *testing.T) {
	s, base := start(t)
	key := s.NewKey(KeyOptions{Limit: ptr(1.0), LimitReset: "daily", Usage: 0.5})
	var info gotKeyInfo
	call(t, "GET", base+"/key", key, "").data(t, &info)
	if *info.Limit != 1 || *info.LimitRemaining != 0.5 || *info.LimitReset != "daily" || info.UsageDaily != 0.5 {
		t.Errorf("GET /key: %+v", info)
	}
	// 0.5 credits at 0.00001 a token: 50,000 tokens.
	if r := chatMax(t, base, key, "openai/gpt-4o", 50000); r.status != 200 {
		t.Errorf("affordable request: %d %s", r.status, r.body)
	}
	if r := chat(t, base, key, "openai/gpt-4o"); r.status != 200 {
		t.Errorf("without max_tokens (16384 reserved): %d %s", r.status, r.body)
	}
	r := chatMax(t, base, key, "openai/gpt-4o", 60000)
	f := r.failure()
	if r.status != 402 || f.Kind != openrouter.KindKeyCapHeadroom || f.Window != openrouter.WindowDaily ||
		f.Tokens == nil || *f.Tokens != (openrouter.Tokens{Requested: 60000, Affordable: 50000}) || f.LimitSource != openrouter.LimitSourceKeyLimit {
		t.Errorf("over the headroom: %d %s", r.status, r.body)
	}

	s.SetUsage(key, 1)
	call(t, "GET", base+"/key", key, "").data(t, &info)
	if *info.LimitRemaining != 0 {
		t.Errorf("spent: limit_remaining %v", *info.LimitRemaining)
	}
	r = chatMax(t, base, key, "openai/gpt-4o", 1)
	f = r.failure()
	if r.status != 403 || f.Kind != openrouter.KindKeyCapSpent || f.Window != openrouter.WindowDaily || !f.RecordHash.Matches(key) {
		t.Errorf("spent: %d %s", r.status, r.body)
	}
	// A total cap says so; the old wording has no hash.
	total := s.NewKey(KeyOptions{Limit: ptr(2.0), Usage: 2})
	if f := chat(t, base, total, "openai/gpt-4o").failure(); f.Kind != openrouter.KindKeyCapSpent || f.Window != openrouter.WindowTotal {
		t.Errorf("total cap: %+v", f)
	}
	s.Wording = openrouter.WordingOld
	if f := chat(t, base, key, "openai/gpt-4o").failure(); f.Kind != openrouter.KindKeyCapSpent || f.RecordHash != "" || f.LimitSource != "" {
		t.Errorf("old wording: %+v", f)
	}
	if f := chatMax(t, base, total, "openai/gpt-4o", 1).failure(); f.Kind != openrouter.KindKeyCapSpent {
		t.Errorf("old wording, total: %+v", f)
	}
}

// An account's balance: GET /credits says it, a request it cannot cover
// gets the 402, a spent or never-funded account "Insufficient credits".
// A key of another account is not the emulator's account's to see.
func TestAccountBalance(t *testing.T) {
	s, base := start(t)
	management := s.NewKey(KeyOptions{Management: true})
	var credits struct {
		TotalCredits float64 `json:"total_credits"`
		TotalUsage   float64 `json:"total_usage"`
	}
	call(t, "GET", base+"/credits", management, "").data(t, &credits)
	if credits.TotalCredits != 25 || credits.TotalUsage != 11.5 {
		t.Errorf("default credits %+v", credits)
	}
	s.SetCredits("", 30, 29.5)
	call(t, "GET", base+"/credits", management, "").data(t, &credits)
	if credits.TotalCredits != 30 || credits.TotalUsage != 29.5 {
		t.Errorf("set credits %+v", credits)
	}
	own := s.NewKey(KeyOptions{})
	r := chatMax(t, base, own, "openai/gpt-4o", 60000)
	f := r.failure()
	if r.status != 402 || f.Kind != openrouter.KindAccountBalance || *f.Tokens != (openrouter.Tokens{Requested: 60000, Affordable: 50000}) {
		t.Errorf("over the balance: %d %s", r.status, r.body)
	}
	// The key's cap binds before the balance when it is the lower.
	capped := s.NewKey(KeyOptions{Limit: ptr(0.2), LimitReset: "monthly"})
	if f := chatMax(t, base, capped, "openai/gpt-4o", 40000).failure(); f.Kind != openrouter.KindKeyCapHeadroom || f.Tokens.Affordable != 20000 || f.Window != openrouter.WindowMonthly {
		t.Errorf("key cap below the balance: %+v", f)
	}

	broke := s.NewAccount(AccountOptions{Credits: 5, Usage: 5})
	never := s.NewAccount(AccountOptions{})
	for _, c := range []struct {
		account string
		message string
	}{
		{broke, openrouter.MessageInsufficientCredits},
		{never, openrouter.MessageNeverPurchased},
	} {
		key := s.NewKey(KeyOptions{Account: c.account})
		r := chatMax(t, base, key, "openai/gpt-4o", 1)
		if r.status != 402 || r.message() != c.message || r.failure().Kind != openrouter.KindAccountBalance {
			t.Errorf("spent account: %d %s", r.status, r.body)
		}
		var info gotKeyInfo
		call(t, "GET", base+"/key", key, "").data(t, &info)
		if info.IsFreeTier != (c.account == never) {
			t.Errorf("is_free_tier %v", info.IsFreeTier)
		}
		sum := sha256.Sum256([]byte(key))
		if r := call(t, "GET", base+"/keys/"+hex.EncodeToString(sum[:]), management, ""); r.status != 404 {
			t.Errorf("another account's key by hash: %d", r.status)
		}
	}
	// A negative balance refuses even free models.
	s.SetCredits(broke, 5, 6)
	if r := chat(t, base, s.NewKey(KeyOptions{Account: broke}), FreeModel); r.status != 402 {
		t.Errorf("free model with a negative balance: %d", r.status)
	}
}

// Workspace budgets: listed with a management key (404 without any), and
// the broadest exceeded one refuses the workspace's keys.
func TestWorkspaceBudgets(t *testing.T) {
	s, base := start(t)
	management := s.NewKey(KeyOptions{Management: true})
	team := s.NewWorkspace("Team")
	key := s.NewKey(KeyOptions{Workspace: team})
	if r := call(t, "GET", base+"/workspaces/"+team+"/budgets", management, ""); r.status != 404 {
		t.Errorf("no budgets: %d", r.status)
	}
	if r := call(t, "GET", base+"/workspaces/"+team+"/budgets", key, ""); r.status != 403 {
		t.Errorf("budgets with an inference key: %d", r.status)
	}
	s.SetWorkspaceBudget(team, "daily", 10, 2)
	s.SetWorkspaceBudget(team, "monthly", 500, 120)
	var budgets []struct {
		LimitUSD      float64 `json:"limit_usd"`
		ResetInterval string  `json:"reset_interval"`
		WorkspaceID   string  `json:"workspace_id"`
	}
	call(t, "GET", base+"/workspaces/"+team+"/budgets", management, "").data(t, &budgets)
	if len(budgets) != 2 || budgets[1].LimitUSD != 500 || budgets[1].ResetInterval != "monthly" || budgets[0].WorkspaceID != team {
		t.Errorf("budgets %+v", budgets)
	}
	if r := chat(t, base, key, "openai/gpt-4o"); r.status != 200 {
		t.Errorf("within budget: %d", r.status)
	}
	s.SetWorkspaceBudget(team, "daily", 10, 10)
	s.SetWorkspaceBudget(team, "monthly", 500, 500)
	for _, path := range []string{"/chat/completions", "/messages", "/responses"} {
		r := call(t, "POST", base+path, key, `{"model":"openai/gpt-4o","max_tokens":10}`)
		f := r.failure()
		if r.status != 403 || f.Kind != openrouter.KindWorkspaceBudget || *f.Budget != (openrouter.Budget{Interval: "monthly", USD: 500}) {
			t.Errorf("%s over budget: %d %s", path, r.status, r.body)
		}
	}
	if r := chat(t, base, s.NewKey(KeyOptions{}), "openai/gpt-4o"); r.status != 200 {
		t.Errorf("another workspace's key: %d", r.status)
	}
}

// The free-model allowances are counted per account across every ":free"
// model, by the day (UTC) and the minute, and GET /key says what is left.
func TestFreeModelAllowance(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 5, 23, 58, 30, 0, time.UTC).UnixNano())
	s, base := start(t, func(s *Server) { s.Clock = func() time.Time { return time.Unix(0, clock.Load()) } })
	low := s.NewAccount(AccountOptions{Credits: 5, FreeRequestsUsed: 48})
	key := s.NewKey(KeyOptions{Account: low})
	other := s.NewKey(KeyOptions{Account: low})
	if r := chat(t, base, key, FreeModel); r.status != 200 {
		t.Fatalf("49th: %d %s", r.status, r.body)
	}
	if r := chat(t, base, other, "vendor/another:free"); r.status != 200 {
		t.Fatalf("50th, another key and model: %d %s", r.status, r.body)
	}
	var info gotKeyInfo
	call(t, "GET", base+"/key", key, "").data(t, &info)
	if info.Free.Limit != 50 || info.Free.Remaining != 0 || info.Free.Used != 50 {
		t.Errorf("free_model_daily_requests %+v", info.Free)
	}
	midnight := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	r := chat(t, base, key, "vendor/third:free")
	f := r.failure()
	if r.status != 429 || f.Kind != openrouter.KindFreeDaily || f.FreeDailyLimit != 50 || f.RateLimit == nil ||
		!f.RateLimit.Reset.Equal(midnight) || r.header.Get("Retry-After") != "" || r.header.Get("X-RateLimit-Reset") != strconv.FormatInt(midnight.UnixMilli(), 10) {
		t.Errorf("51st: %d %v %s", r.status, r.header, r.body)
	}
	if r := chat(t, base, key, "openai/gpt-4o"); r.status != 200 {
		t.Errorf("a paid model after the free allowance: %d", r.status)
	}
	clock.Store(midnight.UnixNano())
	if r := chat(t, base, key, FreeModel); r.status != 200 {
		t.Errorf("after midnight: %d %s", r.status, r.body)
	}

	// Per minute: 20, then the 429 until the minute ends; the high tier.
	high := s.NewKey(KeyOptions{}) // the emulator's account bought 25
	for i := range openrouter.FreePerMinute {
		if r := chat(t, base, high, FreeModel); r.status != 200 {
			t.Fatalf("request %d: %d", i+1, r.status)
		}
	}
	r = chat(t, base, high, FreeModel)
	f = r.failure()
	if r.status != 429 || f.Kind != openrouter.KindFreePerMinute || !f.RateLimit.Reset.Equal(midnight.Add(time.Minute)) {
		t.Errorf("21st in a minute: %d %s", r.status, r.body)
	}
	clock.Store(midnight.Add(time.Minute).UnixNano())
	if r := chat(t, base, high, FreeModel); r.status != 200 {
		t.Errorf("next minute: %d", r.status)
	}
	call(t, "GET", base+"/key", high, "").data(t, &info)
	if info.Free.Limit != 1000 || info.Free.Used != 21 {
		t.Errorf("high tier %+v", info.Free)
	}
	s.SetFreeRequestsUsed("", 1000)
	if f := chat(t, base, high, FreeModel).failure(); f.Kind != openrouter.KindFreeDaily || f.FreeDailyLimit != 1000 {
		t.Errorf("high tier spent: %+v", f)
	}

	// X-RateLimit-* one way or the other.
	for _, c := range []struct {
		placement        RateLimitPlacement
		header, metadata bool
	}{{RateLimitHeadersOnly, true, false}, {RateLimitMetadataOnly, false, true}} {
		s.RateLimitFigures = c.placement
		r := chat(t, base, high, FreeModel)
		withoutHeader := openrouter.Recognise(r.status, r.body, http.Header{})
		if (r.header.Get("X-RateLimit-Limit") != "") != c.header || (withoutHeader.RateLimit != nil) != c.metadata || r.failure().RateLimit == nil {
			t.Errorf("placement %d: %v %s", c.placement, r.header, r.body)
		}
	}
}

// The provider models fail as providers do, after the account could pay.
func TestProviderFailures(t *testing.T) {
	s, base := start(t)
	key := s.NewKey(KeyOptions{})
	for _, c := range []struct {
		model      string
		status     int
		kind       openrouter.Kind
		retryAfter string
	}{
		{ModelInFlight, 402, openrouter.KindInFlight, "2"},
		{ModelSharedPool, 429, openrouter.KindProviderPool, ""},
		{ModelBYOKRateLimited, 429, openrouter.KindProviderPool, ""},
		{ModelAtCapacity, 429, openrouter.KindProvidersAtCapacity, "40"},
		{ModelBYOKRequired, 403, openrouter.KindBYOKRequired, ""},
		{ModelModerated, 403, openrouter.KindModeration, ""},
	} {
		r := chat(t, base, key, c.model)
		f := r.failure()
		if r.status != c.status || f.Kind != c.kind || r.header.Get("Retry-After") != c.retryAfter || f.BYOK != (c.model == ModelBYOKRateLimited) {
			t.Errorf("%s: %d %v %s", c.model, r.status, r.header, r.body)
		}
	}
	s.Wording = openrouter.WordingNoSource
	if f := chat(t, base, key, ModelSharedPool).failure(); f.Kind != openrouter.KindProviderPool || f.LimitSource != "" || f.Provider != "Chutes" {
		t.Errorf("without limit_source: %+v", f)
	}
}

// A spent cap comes back when its window ends by the UTC calendar, and
// GET /key's usage per window follows; a total cap never does.
func TestKeyCapResets(t *testing.T) {
	var clock atomic.Int64
	set := func(s string) {
		at, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		clock.Store(at.UnixNano())
	}
	set("2026-12-31T23:00:00Z") // a Thursday
	s, base := start(t, func(s *Server) { s.Clock = func() time.Time { return time.Unix(0, clock.Load()) } })
	keys := map[string]string{}
	for _, window := range []string{"daily", "weekly", "monthly", ""} {
		keys[window] = s.NewKey(KeyOptions{Limit: ptr(3.0), LimitReset: window, Usage: 3})
	}
	works := func(when string, want map[string]bool) {
		t.Helper()
		for window, key := range keys {
			r := chat(t, base, key, "openai/gpt-4o")
			if (r.status == 200) != want[window] || (r.status != 200 && r.failure().Kind != openrouter.KindKeyCapSpent) {
				t.Errorf("%s, %q cap: %d %s", when, window, r.status, r.body)
			}
		}
	}
	works("spent", map[string]bool{})
	set("2027-01-01T00:00:00Z")
	works("new day, month and year", map[string]bool{"daily": true, "monthly": true})
	var info struct {
		LimitRemaining float64 `json:"limit_remaining"`
		Usage          float64 `json:"usage"`
		UsageDaily     float64 `json:"usage_daily"`
		UsageWeekly    float64 `json:"usage_weekly"`
		UsageMonthly   float64 `json:"usage_monthly"`
	}
	call(t, "GET", base+"/key", keys["daily"], "").data(t, &info)
	if info.LimitRemaining != 3 || info.Usage != 3 || info.UsageDaily != 0 || info.UsageWeekly != 3 || info.UsageMonthly != 0 {
		t.Errorf("daily key on the new day: %+v", info)
	}
	set("2027-01-03T23:59:59Z")
	works("Sunday", map[string]bool{"daily": true, "monthly": true})
	set("2027-01-04T00:00:00Z")
	works("Monday", map[string]bool{"daily": true, "weekly": true, "monthly": true})
}
