package caddymodule

// limits.go owns what the 402, 403 and 429 reasons (their constants and
// entries are in reasons.go's one table) say: the facts each states
// (scope, figures, when it ends) and how its entry gathers them from the
// failure's body and the evidence; the lookup of a recognised failure's
// entry; the sentences, the money format, the metadata members' values,
// the retry headers, and the body of a capped key's edge answer.

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// The scopes a limit applies to (metadata.scope).
const (
	scopeKey        = "key"
	scopeAccount    = "account"
	scopeWorkspace  = "workspace"
	scopeFreeModels = "free_models"
	scopeProvider   = "provider"
)

// maxOwnRetryAfter is the longest wait the gateway announces in
// Retry-After itself: past it the official clients give up waiting, and a
// limit that far off is no retry's business.
const maxOwnRetryAfter = time.Minute

// limitFacts is what a verdict on a 402, 403 or 429 states: only what the
// failure's body and the evidence show. Figures not known are nil.
type limitFacts struct {
	scope  string
	window openrouter.Window
	// limit, spent and remaining: credits for a key's cap, requests for
	// the free-model daily allowance, USD for a workspace budget (limit).
	limit, spent, remaining *float64
	// resetsAt is when the limit ends, zero when not known; neverResets
	// for a cap without a window.
	resetsAt    time.Time
	neverResets bool
	tokens      *openrouter.Tokens
	// balance is the account's credits left (GET /credits).
	balance  *float64
	provider string
	// freeTier is the free-model daily allowance's size (50 or 1000).
	freeTier int
	// budgetInterval is a workspace budget's interval as written.
	budgetInterval string
	// retryAfter is the Retry-After to send, zero for none; upstream
	// says the upstream sent its own (which stays as it is).
	retryAfter time.Duration
	upstream   bool
	// original is OpenRouter's own sentence, kept after the gateway's.
	original string
	// policy is what a policy 403 or a BYOK-required one says beyond its
	// kind (policy.go), nil for the others.
	policy *openrouter.Policy
	// providerError is what a provider's error body shows (issue 26).
	providerError *openrouter.ProviderError
}

// The sentences of the limit reasons: what failed, the figures known,
// when it ends, the one fix. Each states only what f holds.

func creditsSentence(f *limitFacts) string {
	var b strings.Builder
	b.WriteString("The account's credits do not cover this request")
	if f.balance != nil {
		b.WriteString(" (balance " + money(*f.balance) + ")")
	}
	b.WriteString(".")
	writeTokens(&b, f.tokens, "the account")
	if f.tokens != nil && f.tokens.Affordable > 0 {
		b.WriteString(" Lower max_tokens to " + strconv.FormatInt(f.tokens.Affordable, 10) + " or less (without max_tokens the model's whole output is reserved), or add credits at " + openrouter.URLCredits + ".")
	} else {
		b.WriteString(" Add credits at " + openrouter.URLCredits + ".")
	}
	return b.String()
}

func keyHeadroomSentence(f *limitFacts) string {
	var b strings.Builder
	b.WriteString("This key's own")
	if w := f.window.String(); w != "" {
		b.WriteString(" " + w)
	}
	b.WriteString(" limit has less left than this request could cost")
	writeFigures(&b, f)
	b.WriteString(".")
	writeTokens(&b, f.tokens, "the key")
	writeReset(&b, f)
	if f.tokens != nil && f.tokens.Affordable > 0 {
		b.WriteString(" Lower max_tokens to " + strconv.FormatInt(f.tokens.Affordable, 10) + " or less, or raise this key's limit at " + openrouter.URLKeys + "; adding credits does not help.")
	} else {
		b.WriteString(" Raise this key's limit at " + openrouter.URLKeys + ", or lower max_tokens; adding credits does not help.")
	}
	return b.String()
}

func unaffordableSentence(f *limitFacts) string {
	var b strings.Builder
	b.WriteString("This request could cost more than is available to it")
	if f.tokens != nil {
		b.WriteString(" (up to " + strconv.FormatInt(f.tokens.Requested, 10) + " tokens requested, " + strconv.FormatInt(f.tokens.Affordable, 10) + " affordable)")
	}
	b.WriteString("; whether this key's limit or the account's credits fall short is not known.")
	if f.tokens != nil && f.tokens.Affordable > 0 {
		b.WriteString(" Lower max_tokens to " + strconv.FormatInt(f.tokens.Affordable, 10) + " or less, or add credits or raise this key's limit.")
	} else {
		b.WriteString(" Lower max_tokens, or add credits or raise this key's limit.")
	}
	return b.String()
}

func inFlightSentence(f *limitFacts) string {
	s := "Requests in flight have reserved the account's available credits."
	if f.retryAfter > 0 {
		s += " Retry in " + seconds(f.retryAfter) + ", once they settle, or add credits."
	} else {
		s += " Retry once they settle, or add credits."
	}
	return s
}

func keyCapSpentSentence(f *limitFacts) string {
	var b strings.Builder
	b.WriteString("This key's own")
	if w := f.window.String(); w != "" && f.window != openrouter.WindowTotal {
		b.WriteString(" " + w)
	}
	b.WriteString(" limit is spent")
	writeFigures(&b, f)
	b.WriteString(".")
	writeReset(&b, f)
	b.WriteString(" The key works otherwise; adding credits or creating keys does not lift it: raise this key's limit at " + openrouter.URLKeys)
	if !f.resetsAt.IsZero() {
		b.WriteString(", or wait until " + f.resetsAt.UTC().Format(time.RFC3339))
	}
	b.WriteString(".")
	return b.String()
}

func workspaceSentence(f *limitFacts) string {
	var b strings.Builder
	b.WriteString("The budget of this key's workspace is spent")
	if f.budgetInterval != "" && f.limit != nil {
		b.WriteString(" (" + f.budgetInterval + ", " + money(*f.limit) + ")")
	}
	b.WriteString(": every key of the workspace is refused, so creating keys or adding credits does not help. A workspace admin can raise the budget.")
	return b.String()
}

func byokRequiredSentence(f *limitFacts) string {
	p := "its provider"
	if f.provider != "" {
		p = f.provider
	}
	var b strings.Builder
	b.WriteString("This model needs your own provider key: " + p + " serves it only with your own " + possessive(f.provider) +
		"key; add one at " + openrouter.URLIntegrations)
	writeAlternatives(&b, policyOf(f), ", or switch to another model")
	b.WriteString(". The OpenRouter key and the account are fine.")
	return b.String()
}

func freeDailySentence(f *limitFacts) string {
	var b strings.Builder
	b.WriteString("The account's free-model allowance for today is used up")
	if f.limit != nil {
		b.WriteString(" (" + number(*f.limit) + " requests a day")
		if f.freeTier == openrouter.FreeDailyLow {
			b.WriteString("; 1000 once the account has bought 10 credits in all")
		}
		b.WriteString(")")
	}
	b.WriteString(". It is one counter for every :free model: switching to another free model does not help.")
	writeReset(&b, f)
	b.WriteString(" Wait until then, or use a paid model.")
	return b.String()
}

func freeRateSentence(f *limitFacts) string {
	s := "The account's free-model rate (" + strconv.Itoa(openrouter.FreePerMinute) + " requests a minute, shared by every :free model) is reached."
	if f.retryAfter > 0 {
		s += " Retry in " + seconds(f.retryAfter) + "."
	} else {
		s += " Retry within a minute."
	}
	return s
}

func providerPoolSentence(f *limitFacts) string {
	p := "a provider"
	if f.provider != "" {
		p = "provider " + f.provider
	}
	return "Rate-limited upstream, not your key or your account: " + p + " is limiting OpenRouter's shared capacity for this model. Retry shortly, choose another provider, or add your own provider key at " + openrouter.URLIntegrations + "."
}

func ownProviderKeySentence(f *limitFacts) string {
	p := "Your own provider key (BYOK)"
	if f.provider != "" {
		p += " for " + f.provider
	}
	return p + " is rate-limited by the provider: not your OpenRouter key or account. Retry shortly, or raise that key's limits with the provider."
}

func capacitySentence(f *limitFacts) string {
	s := "Every provider of this model is at capacity: not your key or your account."
	if f.retryAfter > 0 {
		s += " Retry in " + seconds(f.retryAfter) + ", or use another model."
	} else {
		s += " Retry shortly, or use another model."
	}
	return s
}

// limitEvidence is what was learned at failure time, beyond the body.
type limitEvidence struct {
	// key is the key's own GET /key, nil when not had in time.
	key *keyMetadata
	// balance is the account's credits left (GET /credits, management
	// key), nil when not known.
	balance *float64
	// budgets are the workspace's budgets, nil when not known.
	budgets []workspaceBudget
}

// limitVerdict is the verdict on a recognised key or account failure at
// now, from what its body says and the evidence: its entry is the first
// of its kind that applies (an unscoped 402 counts as the kind the
// evidence shows, unscopedKind), and its figures are gathered as the entry
// says; a verdict without a reason for failures that are not about the key
// or account.
func limitVerdict(f *openrouter.Failure, ev limitEvidence, now time.Time) verdict {
	kind := f.Kind
	if kind == openrouter.KindCreditsUnscoped {
		kind = unscopedKind(ev)
	}
	e := entryOfKind(kind, f)
	if e == nil {
		return verdict{}
	}
	v := figuresOf(e, f, ev, now)
	setRetryAfter(v.limit, e, f)
	return v
}

// figuresOf is e's verdict with the figures its entry gathers from f and
// ev.
func figuresOf(e *reasonEntry, f *openrouter.Failure, ev limitEvidence, now time.Time) verdict {
	facts := &limitFacts{scope: e.scope}
	if e.gather != nil {
		e.gather(facts, f, ev, now)
	}
	return verdict{reason: e.code, limit: facts}
}

// keyVerdict is limit reason r as the key check states it of a key that
// works: its entry's figures gathered from the key's GET /key alone, as if
// OpenRouter had refused a request with r's failure.
func keyVerdict(r reason, md *keyMetadata, now time.Time) verdict {
	e := entryOf(r)
	return figuresOf(e, &openrouter.Failure{Kind: e.kind}, limitEvidence{key: md}, now)
}

// How the entries gather their figures (reasonEntry.gather).

// gatherShortfall: the tokens a 402 names and the account's balance.
func gatherShortfall(facts *limitFacts, f *openrouter.Failure, ev limitEvidence, _ time.Time) {
	facts.tokens, facts.balance = f.Tokens, ev.balance
}

// gatherKeyCapShortfall: a 402's tokens and balance, and the key's cap.
func gatherKeyCapShortfall(facts *limitFacts, f *openrouter.Failure, ev limitEvidence, now time.Time) {
	gatherShortfall(facts, f, ev, now)
	keyCapFacts(facts, f, ev.key, now)
}

// gatherKeyCap: the key's cap, its figures and reset.
func gatherKeyCap(facts *limitFacts, f *openrouter.Failure, ev limitEvidence, now time.Time) {
	keyCapFacts(facts, f, ev.key, now)
}

// gatherBudget: the workspace budget the body names, in the amount the
// workspace's own budgets give now.
func gatherBudget(facts *limitFacts, f *openrouter.Failure, ev limitEvidence, _ time.Time) {
	if f.Budget == nil {
		return
	}
	facts.budgetInterval = f.Budget.Interval
	facts.limit = ptr(f.Budget.USD)
	for _, b := range ev.budgets {
		if b.ResetInterval == f.Budget.Interval {
			facts.limit = ptr(b.LimitUSD)
		}
	}
}

// gatherProvider: the provider the body names.
func gatherProvider(facts *limitFacts, f *openrouter.Failure, _ limitEvidence, _ time.Time) {
	facts.provider = f.Provider
}

// gatherFreeDaily: the free-model allowance's size, use and reset.
func gatherFreeDaily(facts *limitFacts, f *openrouter.Failure, ev limitEvidence, now time.Time) {
	freeDailyFacts(facts, f, ev.key, now)
}

// gatherFreeRate: the end of the free-model minute when it is near, and
// the wait until then: X-RateLimit-Reset's, or the next minute at the
// latest.
func gatherFreeRate(facts *limitFacts, f *openrouter.Failure, _ limitEvidence, now time.Time) {
	end := now.Truncate(time.Minute).Add(time.Minute)
	if f.RateLimit != nil && f.RateLimit.Reset.After(now) && f.RateLimit.Reset.Sub(now) <= maxOwnRetryAfter {
		facts.resetsAt = f.RateLimit.Reset.UTC()
		end = f.RateLimit.Reset
	}
	facts.retryAfter = max(end.Sub(now).Round(time.Second), time.Second)
}

// gatherCapacity: the provider, and when the upstream says to retry.
func gatherCapacity(facts *limitFacts, f *openrouter.Failure, ev limitEvidence, now time.Time) {
	gatherProvider(facts, f, ev, now)
	if f.RetryAfter > 0 {
		facts.resetsAt = now.Add(f.RetryAfter).UTC().Truncate(time.Second)
	}
}

// unscopedKind decides the scope of "can only afford N" without the URL
// that tells: the key's cap when GET /key shows a cap with less left than
// the account's balance; the account when the key has no cap at all, or
// the balance is below what the cap has left; not known otherwise (the
// failure stays unscoped).
func unscopedKind(ev limitEvidence) openrouter.Kind {
	if ev.key == nil {
		return openrouter.KindCreditsUnscoped
	}
	if ev.key.Limit == nil {
		return openrouter.KindAccountBalance
	}
	if ev.key.LimitRemaining == nil || ev.balance == nil {
		return openrouter.KindCreditsUnscoped
	}
	switch {
	case *ev.key.LimitRemaining < *ev.balance:
		return openrouter.KindKeyCapHeadroom
	case *ev.balance < *ev.key.LimitRemaining:
		return openrouter.KindAccountBalance
	}
	return openrouter.KindCreditsUnscoped
}

// keyCapFacts fills a key cap's window, figures and reset: figures from
// GET /key, else from the body's "$S of $L used"; the window from the
// body, else from GET /key's limit_reset; the reset from the body's own
// "resets T", else by the calendar.
func keyCapFacts(facts *limitFacts, f *openrouter.Failure, key *keyMetadata, now time.Time) {
	facts.window = f.Window
	if key != nil && key.Limit != nil {
		if facts.window == openrouter.WindowUnknown {
			facts.window = openrouter.WindowOfLimitReset(key.LimitReset)
		}
		facts.limit = ptr(*key.Limit)
		if key.LimitRemaining != nil {
			facts.remaining = ptr(max(*key.LimitRemaining, 0))
			facts.spent = ptr(*key.Limit - *key.LimitRemaining)
		}
	} else if f.Spend != nil {
		facts.limit, facts.spent = ptr(f.Spend.Limit), ptr(f.Spend.Spent)
		facts.remaining = ptr(max(f.Spend.Limit-f.Spend.Spent, 0))
	}
	switch {
	case f.Spend != nil && !f.Spend.ResetsAt.IsZero():
		facts.resetsAt = f.Spend.ResetsAt.UTC()
	case facts.window == openrouter.WindowTotal:
		facts.neverResets = true
	default:
		facts.resetsAt, _ = facts.window.ResetsAt(now)
	}
}

// freeDailyFacts fills the free-model daily allowance's size, use and
// reset.
func freeDailyFacts(facts *limitFacts, f *openrouter.Failure, key *keyMetadata, now time.Time) {
	facts.freeTier = f.FreeDailyLimit
	// GET /key's figures count only when they are of the allowance that
	// failed: a tier the body names that GET /key contradicts leaves the
	// body's alone.
	switch fr := freeRequests(key); {
	case fr != nil && (f.FreeDailyLimit == 0 || fr.Limit == f.FreeDailyLimit):
		facts.limit, facts.spent, facts.remaining = ptr(float64(fr.Limit)), ptr(float64(fr.Used)), ptr(float64(max(fr.Remaining, 0)))
		if facts.freeTier == 0 {
			facts.freeTier = fr.Limit
		}
	case f.FreeDailyLimit > 0:
		facts.limit = ptr(float64(f.FreeDailyLimit))
		if f.RateLimit != nil && f.RateLimit.Remaining != nil {
			facts.remaining = ptr(float64(max(*f.RateLimit.Remaining, 0)))
		}
	}
	var reset time.Time
	if f.RateLimit != nil {
		reset = f.RateLimit.Reset
	}
	facts.resetsAt = openrouter.FreeDailyResetsAt(now, reset)
}

// setRetryAfter settles the Retry-After a reason sends: none for a reason
// no retry cures; the upstream's own when it sent one (kept as it is);
// else the gateway's own wait, when the entry's gather found one.
func setRetryAfter(facts *limitFacts, e *reasonEntry, f *openrouter.Failure) {
	switch {
	case e.retry != retryYes:
		facts.retryAfter = 0
	case f.RetryAfter > 0:
		facts.retryAfter, facts.upstream = f.RetryAfter, true
	}
}

// limitSentence is a limit reason's message: the gateway's sentence from
// the verdict's facts, then OpenRouter's own.
func limitSentence(sentence func(f *limitFacts) string) func(v verdict) string {
	return func(v verdict) string {
		f := v.limit
		if f == nil {
			f = &limitFacts{}
		}
		s := sentence(f)
		if o := strings.TrimSpace(f.original); o != "" {
			s += " OpenRouter said: " + o
		}
		return s
	}
}

// appendMember appends member m when the facts show it.
func (f *limitFacts) appendMember(members []errbody.Member, m metaMember) []errbody.Member {
	number := func(v *float64) []errbody.Member {
		if v == nil {
			return members
		}
		return append(members, errbody.JSON(m.name(), jsonNumber(*v)))
	}
	switch m {
	case metaScope:
		if f.scope != "" {
			return append(members, errbody.Text(m.name(), f.scope))
		}
	case metaWindow:
		if w := f.window.String(); w != "" {
			return append(members, errbody.Text(m.name(), w))
		}
	case metaLimit:
		return number(f.limit)
	case metaSpent:
		return number(f.spent)
	case metaRemaining:
		return number(f.remaining)
	case metaBalance:
		return number(f.balance)
	case metaResetsAt:
		if !f.resetsAt.IsZero() {
			return append(members, errbody.Text(m.name(), f.resetsAt.UTC().Format(time.RFC3339)))
		}
	case metaNeverResets:
		if f.neverResets {
			return append(members, errbody.JSON(m.name(), []byte("true")))
		}
	case metaRequestedTokens:
		if f.tokens != nil {
			return append(members, errbody.JSON(m.name(), strconv.AppendInt(nil, f.tokens.Requested, 10)))
		}
	case metaAffordableTokens:
		if f.tokens != nil {
			return append(members, errbody.JSON(m.name(), strconv.AppendInt(nil, f.tokens.Affordable, 10)))
		}
	case metaProvider:
		if f.provider != "" {
			return append(members, errbody.Text(m.name(), f.provider))
		}
	case metaModel, metaCategories, metaCreditsCharged, metaGuardrail, metaAlternatives, metaLikelyCause:
		return f.appendPolicyMember(members, m)
	case metaFault:
		if f.providerError != nil {
			return append(members, errbody.Text(m.name(), f.providerError.Cause.String()))
		}
		return append(members, errbody.Text(m.name(), openrouter.CauseUnknown.String()))
	}
	return members
}

// setLimitHeaders sets the headers of an explained failure other than a
// 401: X-Should-Retry unless the reason keeps the upstream's, Retry-After
// when the gateway knows the end and the upstream sent no header (the
// upstream's own stays as it is; one it sent only in the body, such as
// availability.retry_after, becomes the header); then the long-wait rule.
func setLimitHeaders(h http.Header, v verdict) {
	if r := v.entry().retry; r != retryKept {
		h.Set("X-Should-Retry", strconv.FormatBool(r == retryYes))
	}
	if v.limit.retryAfter > 0 && (!v.limit.upstream || h.Get("Retry-After") == "") {
		h.Set("Retry-After", strconv.FormatInt(int64(v.limit.retryAfter/time.Second), 10))
	}
	noRetryAfterLongWait(h, time.Now())
}

// maxRetryAfterRetried is the longest Retry-After sent with a retry
// allowed: openai-python treats a longer one as not retryable, openai-node
// sleeps for any, however long.
const maxRetryAfterRetried = 2 * time.Minute

// noRetryAfterLongWait is the gateway's one rule for the headers it sets:
// a Retry-After over two minutes (seconds, or an HTTP date from now) goes
// with X-Should-Retry: false, so that no client sleeps that long for a
// retry.
func noRetryAfterLongWait(h http.Header, now time.Time) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return
	}
	var wait time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		wait = time.Duration(min(max(n, 0), int64(math.MaxInt64/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		wait = t.Sub(now)
	}
	if wait > maxRetryAfterRetried {
		h.Set("X-Should-Retry", "false")
	}
}

func writeFigures(b *strings.Builder, f *limitFacts) {
	switch {
	case f.spent != nil && f.limit != nil:
		b.WriteString(": " + money(*f.spent) + " of " + money(*f.limit) + " spent")
		if f.remaining != nil {
			b.WriteString(", " + money(*f.remaining) + " left")
		}
	case f.limit != nil:
		b.WriteString(" (" + money(*f.limit) + ")")
	}
}

func writeTokens(b *strings.Builder, t *openrouter.Tokens, who string) {
	if t != nil {
		b.WriteString(" It could cost up to " + strconv.FormatInt(t.Requested, 10) + " tokens; " + who + " can afford " + strconv.FormatInt(t.Affordable, 10) + ".")
	}
}

func writeReset(b *strings.Builder, f *limitFacts) {
	switch {
	case f.neverResets:
		b.WriteString(" It never resets (a total limit).")
	case !f.resetsAt.IsZero():
		b.WriteString(" It resets at " + f.resetsAt.UTC().Format(time.RFC3339) + ".")
	}
}

// money writes an amount of credits (US dollars), in the gateway's
// answers and the key check alike: with cents, and up to four decimals
// where the amount has them (OpenRouter bills fractions of a cent); a
// non-zero amount that four decimals would show as zero with its first
// two significant digits, so that no amount spent or left reads $0.00.
func money(v float64) string {
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	var s string
	switch r := math.Round(v*1e4) / 1e4; {
	case v == 0:
		return "$0.00"
	case r == 0:
		// Two significant digits: 0.000042 has its first at 1e-5.
		s = strconv.FormatFloat(v, 'f', 1-int(math.Floor(math.Log10(v))), 64)
		s = strings.TrimRight(s, "0")
	default:
		s = strconv.FormatFloat(r, 'f', 4, 64)
		for strings.HasSuffix(s, "0") && len(s)-strings.IndexByte(s, '.') > 3 {
			s = s[:len(s)-1]
		}
	}
	return sign + "$" + s
}

// number writes a figure as briefly as it is exact.
func number(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func jsonNumber(v float64) []byte { return strconv.AppendFloat(nil, v, 'f', -1, 64) }

func seconds(d time.Duration) string {
	n := int64(d / time.Second)
	if n == 1 {
		return "1 second"
	}
	return strconv.FormatInt(n, 10) + " seconds"
}

// possessive is "P " for a named provider, "" otherwise ("your own key").
func possessive(provider string) string {
	if provider == "" {
		return "provider "
	}
	return provider + " "
}

func ptr[T any](v T) *T { return &v }

// cappedVerdict is key_limit_reached as the edge gives it, from the key's
// state: its window and reset (figures are added from fresh evidence by
// the edge answer).
func cappedVerdict(s keyState) verdict {
	facts := &limitFacts{scope: scopeKey, window: s.capWindow}
	switch {
	case s.capEndsAt != 0:
		facts.resetsAt = s.capEndsAt.time()
	case s.capWindow == openrouter.WindowTotal:
		facts.neverResets = true
	}
	return verdict{reason: reasonKeyLimitReached, limit: facts}
}

// keyLimitBodies are OpenRouter's key-limit 403 in each envelope and for
// each window, in the older wording whose URL holds no record hash: an
// answer given at the edge is that body, rewritten as the upstream's own
// would have been.
var keyLimitBodies = func() [][openrouter.WindowTotal + 1]*errbody.Body {
	all := []openrouter.Envelope{openrouter.EnvelopeOpenAI, openrouter.EnvelopeFlat, openrouter.EnvelopeMessages, openrouter.EnvelopeResponsesDocs}
	out := make([][openrouter.WindowTotal + 1]*errbody.Body, len(all))
	for _, e := range all {
		for w := openrouter.WindowUnknown; w <= openrouter.WindowTotal; w++ {
			fb := openrouter.KeyLimitExceeded(w, "", "", openrouter.WordingOld)
			if w == openrouter.WindowUnknown {
				fb.Message = "Key limit exceeded. Manage it using " + openrouter.URLKeys
			}
			eb, ok := errbody.Parse(fb.Render(e))
			if !ok {
				panic("unparsable key-limit body in envelope " + strconv.Itoa(int(e)))
			}
			out[e][w] = eb
		}
	}
	return out
}()

// keyLimitEdgeBody is the body of key_limit_reached given at the edge in
// envelope e.
func keyLimitEdgeBody(e openrouter.Envelope, v verdict) []byte {
	eb := keyLimitBodies[e][min(v.limit.window, openrouter.WindowTotal)]
	v.limit.original = eb.Message()
	out, ok := rewrite(eb, v)
	if !ok {
		panic("OpenRouter's own key-limit body is always editable")
	}
	return out
}

// freeRequests is GET /key's free-model allowance, nil when not sent.
func freeRequests(key *keyMetadata) *openrouter.FreeModelDailyRequests {
	if key == nil || key.FreeModelDailyRequests == nil || key.FreeModelDailyRequests.Limit <= 0 {
		return nil
	}
	return key.FreeModelDailyRequests
}
