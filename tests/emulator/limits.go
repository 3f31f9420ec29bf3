package emulator

// limits.go owns what limits an inference request: the account's balance
// (GET /credits), a key's cap and its window, workspace budgets
// (GET /workspaces/{id}/budgets), the free-model allowances counted per
// account across every ":free" model, and the models that fail as a
// provider or OpenRouter's capacity does. Bodies come from package
// openrouter's builders, so that their wording is the recogniser's.

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// RateLimitPlacement is where 429s carry their X-RateLimit-* figures.
type RateLimitPlacement uint8

// The placements.
const (
	RateLimitBoth         RateLimitPlacement = iota // headers and metadata.headers, as OpenRouter does
	RateLimitHeadersOnly                            // headers only
	RateLimitMetadataOnly                           // metadata.headers only
)

// Models that fail the way a provider or OpenRouter's capacity does, after
// the account and key were found able to pay.
const (
	// ModelInFlight answers the in-flight 402 with Retry-After: 2.
	ModelInFlight = "emulator/in-flight-402"
	// ModelSharedPool is a provider rate-limiting OpenRouter's shared pool.
	ModelSharedPool = "emulator/shared-pool-429"
	// ModelBYOKRateLimited is the user's own provider key being rate-limited.
	ModelBYOKRateLimited = "emulator/byok-429"
	// ModelAtCapacity: all providers at capacity, retry after 40 seconds.
	ModelAtCapacity = "emulator/capacity-429"
	// ModelBYOKRequired: the provider (OpenAI) requires the user's own key.
	ModelBYOKRequired = "emulator/byok-required-403"
	// ModelModerated: the input is flagged by moderation (the documented
	// form; policy.go serves the captured one).
	ModelModerated = "emulator/moderated-403"
)

// FreeModel is a free model; any model id ending in ":free" is one, and
// all of them share the account's free-model counters.
const FreeModel = "emulator/free-model:free"

// The pricing every paid model has, per token, as /models lists it.
const (
	promptPrice     = 0.0000025
	completionPrice = 0.00001
	// maxCompletionTokens is what OpenRouter reserves without max_tokens:
	// the model's whole output capacity.
	maxCompletionTokens = 16384
)

// Fixed answers of the provider models, so that two compare byte for byte.
const (
	inFlightRetryAfter = 2
	capacityRetryAfter = 40
)

// account is one OpenRouter account: its balance and free-model counters.
type account struct {
	userID       string
	totalCredits float64 // bought, in all
	totalUsage   float64
	freeDay      time.Time // the UTC day freeUsed counts
	freeUsed     int
	freeMinute   time.Time // the minute freeThisMinute counts
	freeThisMin  int
	// hidden is a secondary account's default workspace, which the
	// emulator's management API does not see; nil for the emulator's own.
	hidden *workspace
}

// AccountOptions describe a secondary account (NewAccount).
type AccountOptions struct {
	// Credits is what the account bought in all (total_credits); under
	// openrouter.FreeDailyUnlockCredits it gets the low free-model tier,
	// at 0 "never purchased credits".
	Credits float64
	// Usage is what it spent (total_usage); Credits - Usage is the balance.
	Usage float64
	// FreeRequestsUsed is the free-model requests it made today (UTC).
	FreeRequestsUsed int
}

// NewAccount creates another account and returns its user id, for keys
// (KeyOptions.Account) whose account is not the emulator's: the
// management API does not see them, and they have no management keys.
func (s *Server) NewAccount(o AccountOptions) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &account{
		userID: "user_" + randomAlphanumeric(27), totalCredits: o.Credits, totalUsage: o.Usage,
		freeDay: today(s.now()), freeUsed: o.FreeRequestsUsed,
		hidden: &workspace{Workspace: Workspace{ID: newUUID(), Name: "Default", Slug: "default", CreatedAt: time.Now().UTC()}},
	}
	s.accounts[a.userID] = a
	return a.userID
}

// SetCredits sets an account's total_credits and total_usage ("" is the
// emulator's own account).
func (s *Server) SetCredits(accountID string, totalCredits, totalUsage float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountByID(accountID)
	a.totalCredits, a.totalUsage = totalCredits, totalUsage
}

// SetFreeRequestsUsed sets the free-model requests an account ("" is the
// emulator's own) made today (UTC).
func (s *Server) SetFreeRequestsUsed(accountID string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountByID(accountID)
	a.rollFreeDay(s.now())
	a.freeUsed = n
}

// accountByID is the account; "" is the emulator's own. s.mu must be held.
func (s *Server) accountByID(id string) *account {
	if id == "" {
		id = s.userID
	}
	a := s.accounts[id]
	if a == nil {
		panic("emulator: no account " + id)
	}
	return a
}

// now is the emulator's clock for limits: Clock, or the time.
func (s *Server) now() time.Time {
	if s.Clock != nil {
		return s.Clock().UTC()
	}
	return time.Now().UTC()
}

// rollFreeDay starts a new free-model day when now is outside the counted
// one (a Clock set after New may be behind it).
func (a *account) rollFreeDay(now time.Time) {
	if end, _ := openrouter.WindowDaily.ResetsAt(a.freeDay); now.Before(a.freeDay) || !now.Before(end) {
		a.freeDay, a.freeUsed = today(now), 0
	}
}

// today is when the UTC day that holds now began, as OpenRouter's
// calendar counts the free-model allowance.
func today(now time.Time) time.Time {
	t, _ := openrouter.WindowDaily.StartedAt(now)
	return t
}

// freeDailyLimit is the account's tier: 50, or 1000 once it bought 10
// credits in all.
func (a *account) freeDailyLimit() int {
	if a.totalCredits >= openrouter.FreeDailyUnlockCredits {
		return openrouter.FreeDailyHighBalance
	}
	return openrouter.FreeDailyLow
}

// freeModelDailyRequests is GET /key's free_model_daily_requests. s.mu
// must be held.
func (a *account) freeModelDailyRequests(now time.Time) *openrouter.FreeModelDailyRequests {
	a.rollFreeDay(now)
	limit := a.freeDailyLimit()
	return &openrouter.FreeModelDailyRequests{Limit: limit, Remaining: max(limit-a.freeUsed, 0), Used: a.freeUsed}
}

// budget is one workspace budget.
type budget struct {
	ID        string
	Interval  string // daily, weekly, monthly, lifetime
	LimitUSD  float64
	SpentUSD  float64
	CreatedAt time.Time
}

// budgetBreadth orders intervals, broadest last: a 403 names the broadest
// exceeded one.
var budgetBreadth = map[string]int{"daily": 1, "weekly": 2, "monthly": 3, "lifetime": 4}

// SetWorkspaceBudget sets (or replaces) a workspace's budget for an
// interval ("daily", "weekly", "monthly" or "lifetime") and what the
// workspace spent in it: at or over the limit, the workspace's keys get
// the 403.
func (s *Server) SetWorkspaceBudget(workspaceID, interval string, limitUSD, spentUSD float64) {
	if budgetBreadth[interval] == 0 {
		panic("emulator: no budget interval " + interval)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.workspaceByID[workspaceID]
	if ws == nil {
		panic("emulator: no workspace " + workspaceID)
	}
	for _, b := range ws.budgets {
		if b.Interval == interval {
			b.LimitUSD, b.SpentUSD = limitUSD, spentUSD
			return
		}
	}
	ws.budgets = append(ws.budgets, &budget{ID: newUUID(), Interval: interval, LimitUSD: limitUSD, SpentUSD: spentUSD, CreatedAt: time.Now().UTC()})
}

// exceededBudget is the broadest budget the workspace exceeded, or nil.
// s.mu must be held.
func exceededBudget(ws *workspace) *budget {
	var worst *budget
	for _, b := range ws.budgets {
		if b.SpentUSD >= b.LimitUSD && (worst == nil || budgetBreadth[b.Interval] > budgetBreadth[worst.Interval]) {
			worst = b
		}
	}
	return worst
}

// workspaceBudgets is GET /workspaces/{id}/budgets; 404 for an unknown
// workspace or one without budgets.
func (s *Server) workspaceBudgets(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	ws := s.workspaceByID[id]
	var page openrouter.BudgetsPage
	if ws != nil {
		for _, b := range ws.budgets {
			page.Data = append(page.Data, openrouter.WorkspaceBudget{
				CreatedAt: b.CreatedAt.Format(time.RFC3339), ID: b.ID, LimitUSD: b.LimitUSD,
				ResetInterval: b.Interval, WorkspaceID: ws.ID,
			})
		}
	}
	s.mu.Unlock()
	if len(page.Data) == 0 {
		s.writeError(w, r, http.StatusNotFound, openrouter.MessageBudgetsNotFound, nil)
		return
	}
	s.writeJSON(w, r, http.StatusOK, page)
}

// inferenceRequest is what limits read of an inference request's body.
type inferenceRequest struct {
	Model               string          `json:"model"`
	Stream              bool            `json:"stream"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	MaxOutputTokens     *int64          `json:"max_output_tokens"` // /responses
	Tools               json.RawMessage `json:"tools"`             // models.go
}

// readInference decodes an inference request's body.
func readInference(r *http.Request) (inferenceRequest, error) {
	var req inferenceRequest
	err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req)
	return req, err
}

// outputTokens is what the request may produce: its max_tokens, or the
// model's whole output capacity, as OpenRouter reserves.
func (req *inferenceRequest) outputTokens() int64 {
	for _, n := range []*int64{req.MaxTokens, req.MaxCompletionTokens, req.MaxOutputTokens} {
		if n != nil && *n > 0 {
			return *n
		}
	}
	return maxCompletionTokens
}

// admit applies the limits to an inference request with a working key and
// answers the failure if one applies; it reports whether the request may
// go on.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, k *Key, req *inferenceRequest) bool {
	if fail, ok := modelFailure(req.Model, req.Tools); ok {
		s.writeFailure(w, r, fail)
		return false
	}
	if fail, ok := s.limitFailure(k, req); ok {
		s.writeFailure(w, r, fail)
		return false
	}
	if fail, ok := policyFailure(req.Model); ok { // policy.go
		s.writeFailure(w, r, fail)
		return false
	}
	switch req.Model {
	case ModelInFlight:
		s.writeFailure(w, r, openrouter.InFlight(inFlightRetryAfter, s.Wording))
	case ModelSharedPool:
		s.writeFailure(w, r, openrouter.ProviderPool(req.Model, "Chutes", false, s.Wording))
	case ModelBYOKRateLimited:
		s.writeFailure(w, r, openrouter.ProviderPool(req.Model, "OpenAI", true, s.Wording))
	case ModelAtCapacity:
		s.writeFailure(w, r, openrouter.ProvidersAtCapacity(req.Model, capacityRetryAfter))
	case ModelBYOKRequired:
		s.writeFailure(w, r, openrouter.BYOKRequired("OpenAI"))
	case ModelModerated:
		s.writeFailure(w, r, openrouter.Moderated(req.Model, "violence"))
	default:
		return !s.provider(w, r, k, req.Model)
	}
	return false
}

// limitFailure is the failure the account's, the workspace's and the
// key's limits give the request, in the order OpenRouter is taken to
// check them (not documented): workspace budget, then for free models the
// balance and the free counters (a request that passes counts), for paid
// ones the key's spent cap, the balance, and what the request could cost.
func (s *Server) limitFailure(k *Key, req *inferenceRequest) (openrouter.FailureBody, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.current(k)
	key := &cur
	a := s.accountByID(key.AccountID)
	ws := s.workspaceByID[key.WorkspaceID]
	if ws == nil {
		ws = a.hidden
	}
	if b := exceededBudget(ws); b != nil {
		return openrouter.WorkspaceBudgetExceeded(b.Interval, b.LimitUSD, s.Wording), true
	}
	balance := a.totalCredits - a.totalUsage
	if strings.HasSuffix(req.Model, ":free") {
		if balance < 0 {
			return openrouter.InsufficientCredits(a.totalCredits == 0, s.Wording), true
		}
		a.rollFreeDay(now)
		if minute := now.Truncate(time.Minute); !a.freeMinute.Equal(minute) {
			a.freeMinute, a.freeThisMin = minute, 0
		}
		if a.freeThisMin >= openrouter.FreePerMinute {
			return openrouter.FreePerMinute429(a.freeMinute.Add(time.Minute)), true
		}
		if limit := a.freeDailyLimit(); a.freeUsed >= limit {
			reset, _ := openrouter.WindowDaily.ResetsAt(now)
			return openrouter.FreeDaily(limit == openrouter.FreeDailyHighBalance, reset, s.Wording), true
		}
		a.freeUsed++
		a.freeThisMin++
		return openrouter.FailureBody{}, false
	}
	_, keyLeft := limits(key)
	if keyLeft != nil && *keyLeft <= 0 {
		return openrouter.KeyLimitExceeded(key.window(), ws.Slug, key.Hash, s.Wording), true
	}
	if balance <= 0 {
		return openrouter.InsufficientCredits(a.totalCredits == 0, s.Wording), true
	}
	requested := req.outputTokens()
	accountAfford := affordable(balance)
	if keyLeft != nil && affordable(*keyLeft) < min(requested, accountAfford+1) {
		return openrouter.KeyCapAfford(requested, affordable(*keyLeft), key.window(), s.Wording), true
	}
	if accountAfford < requested {
		return openrouter.BalanceAfford(requested, accountAfford, s.Wording), true
	}
	return openrouter.FailureBody{}, false
}

// affordable is how many output tokens credit pays for.
func affordable(credit float64) int64 {
	return int64(math.Floor(credit/completionPrice + 1e-6))
}

// writeFixed sends a failure of the fixed models in the endpoint's
// envelope with its headers, whatever RateLimitFigures says.
func (s *Server) writeFixed(w http.ResponseWriter, r *http.Request, b openrouter.FailureBody) {
	for name, values := range b.Header {
		w.Header()[name] = values
	}
	s.send(w, r, b.Status, b.Render(s.envelope(r)))
}

// writeFailure sends a failure in the endpoint's envelope with its
// headers, X-RateLimit-* where RateLimitFigures says.
func (s *Server) writeFailure(w http.ResponseWriter, r *http.Request, b openrouter.FailureBody) {
	h := w.Header()
	for name, values := range b.Header {
		if strings.HasPrefix(name, "X-Ratelimit-") && s.RateLimitFigures == RateLimitMetadataOnly {
			continue
		}
		h[name] = values
	}
	if s.RateLimitFigures == RateLimitHeadersOnly {
		b.Metadata = b.Metadata.Without("headers")
	}
	s.send(w, r, b.Status, b.Render(s.envelope(r)))
}
