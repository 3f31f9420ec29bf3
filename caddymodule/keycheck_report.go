package caddymodule

// keycheck_report.go owns what the key check says about a key: it asks
// OpenRouter and applies the same rules as the gateway (credential.go,
// records.go, state.go, reasons.go). It reads what a gateway learned of
// the key and never writes it: nothing a check finds about the key enters
// a gateway's cache or shared storage. What it learns of the account is
// shared, as any caller's would be: a listing it starts serves the
// gateway's next failure, and a record it matches by hash proves the
// account's hash scheme.

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// report is the key check's answer. Field names are the API's; a part that
// is unavailable is null, and its *_unavailable sibling says why.
type report struct {
	// Status is "valid", one of the gateway's reasons (key_limit_reached
	// for a key that works but whose own limit is spent), or "unknown"
	// when OpenRouter refuses the key and nothing more is known.
	Status string `json:"status"`
	// Headline is the status in words, for people.
	Headline string `json:"headline"`
	Message  string `json:"message"`
	// MatchedBy is "label" when the status comes from the account's
	// records that share the key's label, not from the key's own record.
	MatchedBy string `json:"matched_by,omitempty"`

	Key            *keyReport `json:"key"`
	KeyUnavailable string     `json:"key_unavailable,omitempty"`

	Credits            *creditsReport `json:"credits"`
	CreditsUnavailable string         `json:"credits_unavailable,omitempty"`

	Models            *modelsReport `json:"models"`
	ModelsUnavailable string        `json:"models_unavailable,omitempty"`

	// RetiringModels are the models this key used through the gateways
	// of this account that retire within their warn_model_retirement,
	// soonest first (issue 25); none when they know of none.
	RetiringModels []retiringModelReport `json:"retiring_models,omitempty"`

	Advice []string `json:"advice"`
}

// keyReport is what is known of the key; unknown values are null.
type keyReport struct {
	Label string `json:"label"`
	// Workspace and Name come from the key's own record (matched by hash).
	Workspace       string   `json:"workspace,omitempty"`
	Name            string   `json:"name,omitempty"`
	IsManagementKey *bool    `json:"is_management_key"`
	IsFreeTier      *bool    `json:"is_free_tier"`
	Limit           *float64 `json:"limit"`
	LimitRemaining  *float64 `json:"limit_remaining"`
	LimitReset      *string  `json:"limit_reset"`
	// ResetsAt is when the limit's window ends and the limit comes back
	// (limit_reset by OpenRouter's UTC calendar); null without a limit and
	// for a total limit, which never resets (NeverResets).
	ResetsAt    *time.Time   `json:"resets_at"`
	NeverResets bool         `json:"never_resets,omitempty"`
	Usage       *usageReport `json:"usage"`
	// FreeModelRequests is the account's allowance of requests to ":free"
	// models today, shared by all of them; null when OpenRouter does not
	// say it.
	FreeModelRequests *freeModelRequestsReport `json:"free_model_requests"`
	ExpiresAt         *time.Time               `json:"expires_at"`
	ExpiresInSeconds  *int64                   `json:"expires_in_seconds"`
	// LastUsedAt is when a gateway with watch_keys last saw the key used.
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`

	// Without the key's own record, Workspace names GET /key's
	// workspace_id (WorkspaceID): by its name when the management key
	// reads the account's workspaces, else by the id (nameWorkspace).
	WorkspaceID string `json:"workspace_id,omitempty"`
	// WorkspaceDeleted: GET /key says the key's workspace was deleted.
	WorkspaceDeleted bool `json:"workspace_deleted,omitempty"`
}

// usageReport is the key's spending in credits.
type usageReport struct {
	Total   float64 `json:"total"`
	Daily   float64 `json:"daily"`
	Weekly  float64 `json:"weekly"`
	Monthly float64 `json:"monthly"`
}

// freeModelRequestsReport is GET /key's free_model_daily_requests and
// when the day's allowance comes back (00:00 UTC).
type freeModelRequestsReport struct {
	Limit     int       `json:"limit"`
	Remaining int       `json:"remaining"`
	Used      int       `json:"used"`
	ResetsAt  time.Time `json:"resets_at"`
}

// creditsReport is the account's balance.
type creditsReport struct {
	TotalCredits float64 `json:"total_credits"`
	TotalUsage   float64 `json:"total_usage"`
	Remaining    float64 `json:"remaining"`
}

// modelsReport is the size of the model catalogue and a few of its ids.
type modelsReport struct {
	Count  int      `json:"count"`
	Sample []string `json:"sample"`
}

// The statuses that are not reasons.
const (
	statusValid   = "valid"
	statusUnknown = "unknown"
)

// warnWithin is how soon an expiry or a limit running out makes the
// headline of a key that works say so.
const warnWithin = 7 * 24 * time.Hour

// checker builds reports for one account.
type checker struct {
	acct *account
	// life bounds work that outlives one check (a listing).
	life context.Context
	// catalogue is the upstream's model catalogue; nil (the command)
	// reads the model list itself.
	catalogue *catalogue
}

// check builds the report for token, within ctx's deadline. An error means
// OpenRouter could not be asked: no answer, which is not an answer about
// the key.
func (c *checker) check(ctx context.Context, token string, now time.Time) (*report, error) {
	rep := &report{}
	// The catalogue is read beside everything else, and awaited last.
	modelsDone := make(chan struct{})
	go func() {
		defer close(modelsDone)
		ids, err := c.modelIDs(ctx)
		if err != nil {
			rep.ModelsUnavailable = "the model catalogue could not be read: " + publicError(err)
			return
		}
		rep.Models = &modelsReport{Count: len(ids), Sample: ids[:min(len(ids), 5)]}
	}()
	defer func() { <-modelsDone }()

	cred := classifyToken(token)
	// The check judges a credential for inference; another issuer's JWT
	// is never sent to OpenRouter.
	cred.forInference = true
	if v := tokenVerdict(cred, now, anyReason); v.known() && (cred.kind != credJWT || v.reason == reasonNotOpenRouterToken) {
		// Certainly no OpenRouter credential: OpenRouter is not asked.
		rep.setVerdict(v)
		rep.KeyUnavailable = "OpenRouter was not asked about it: no OpenRouter key looks like this"
		rep.CreditsUnavailable = rep.KeyUnavailable
		rep.Advice = adviceFor(rep, now)
		return rep, nil
	}

	// GET /key and, for an OpenRouter key with a management key
	// configured, the key's records, at once.
	var (
		md     *keyMetadata
		keyRes openrouter.Result
		m      match
		recErr error
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		md, keyRes = c.acct.client.Key(ctx, token)
	}()
	learned := c.acct.learned(fingerprintOf(token))
	seen := firstSeen(learned, now)
	if cred.isKey() && c.acct.hasManagementKey() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, recErr = c.acct.recordsFor(c.life, ctx, token, seen)
			// A listing's index keeps no name: the key's own record has it.
			m = c.acct.completeRecord(ctx, token, m)
		}()
	}
	wg.Wait()

	switch {
	case md != nil:
		rep.Key = keyReportOf(token, md, m, now)
		c.nameWorkspace(ctx, rep.Key, md.WorkspaceID)
		rep.Key.LastUsedAt = c.lastUsed(m)
		switch {
		case md.Management():
			rep.setVerdict(verdict{reason: reasonManagementKey})
		case rep.Key.limitSpent():
			rep.setVerdict(keyVerdict(reasonKeyLimitReached, md, now))
		default:
			rep.setWorks(md, now)
		}
	case keyRes.Err == nil && keyRes.Status == http.StatusUnauthorized:
		c.explainRefused(rep, cred, refusedEvidence{m, recErr, learned, seen}, now)
	case keyRes.Err == nil:
		return nil, &openrouter.Error{Endpoint: endpointKey, Kind: failStatus, Status: keyRes.Status}
	default:
		return nil, keyRes.Err
	}
	c.addCredits(ctx, rep, token, md, m)
	if cred.isKey() {
		rep.RetiringModels = c.acct.retiringModelsUsedBy(fingerprintOf(token), now)
	}
	rep.Advice = adviceFor(rep, now)
	return rep, nil
}

// firstSeen is the earliest time a key is known to have existed: when a
// gateway of the account first saw it, or the check's own now.
func firstSeen(learned []learnedState, now time.Time) time.Time {
	seen := now
	for _, l := range learned {
		if at := time.Unix(0, l.st.firstSeenAt); l.st.firstSeenAt != 0 && at.Before(seen) {
			seen = at
		}
	}
	return seen
}

// refusedEvidence is what the check gathered about a refused key: its
// records (or why they could not be read), what the gateways of the account
// learned of it, and since when it is known to exist.
type refusedEvidence struct {
	m       match
	recErr  error
	learned []learnedState
	seen    time.Time
}

// explainRefused says what is known of a credential OpenRouter refuses:
// from the token itself, the key's records, and what the gateways of this
// account learned, read by fingerprint, under the same freshness rule: a
// verdict only when every gateway that knows the key reaches it under its
// own cache_ttl.
func (c *checker) explainRefused(rep *report, cred credential, ev refusedEvidence, now time.Time) {
	m := ev.m
	if v := tokenVerdict(cred, now, anyReason); v.known() {
		rep.setVerdict(v)
		return
	}
	if !cred.isKey() {
		rep.setUnknown("OpenRouter refuses this credential and says nothing more.")
		return
	}
	evidence := func(st *keyState) {
		st.seenSince(ev.seen)
		st.refused(now)
		switch {
		case m.record != nil:
			st.applyRecord(m.record, now)
		case m.absent:
			st.listedAbsent(m.listStarted, now)
		}
	}
	learned := ev.learned
	if len(learned) == 0 {
		learned = []learnedState{{newKeyState(now), freshness{ttl: DefaultCacheTTL}}}
	}
	st := learned[0].st
	evidence(&st)
	rep.Key = &keyReport{Label: openrouter.Label(cred.token)}
	if m.record != nil {
		rep.Key.Workspace, rep.Key.Name = m.workspace, m.record.Name
		rep.Key.LastUsedAt = c.lastUsed(m)
	}
	if st.has(flagExpiry) {
		exp := st.expiry()
		rep.Key.ExpiresAt = &exp
	}
	v := agreedVerdict(learned, now, evidence)
	if !v.known() {
		v = m.labelVerdict(now)
	}
	if v.known() {
		rep.setVerdict(v)
		return
	}
	msg := `OpenRouter refuses the key and says only "User not found.": it is expired, deleted or disabled.`
	switch {
	case !c.acct.hasManagementKey():
		msg += " This gateway has no management key of the key's account, which it would need to tell which."
	case ev.recErr != nil:
		msg += " The account's records could not be read: " + publicError(ev.recErr) + "."
	default:
		msg += " The account's records do not say which."
	}
	rep.setUnknown(msg)
}

// lastUsed is when the key watch of a gateway of this account last saw the
// key of a record matched by hash used.
func (c *checker) lastUsed(m match) *time.Time {
	if m.record == nil || m.record.Hash == "" {
		return nil
	}
	if t, ok := c.acct.lastUsed(m.record.Hash); ok {
		return &t
	}
	return nil
}

// anyReason lets the key check give every reason the token alone shows.
func anyReason(*reasonEntry) bool { return true }

// setVerdict sets the status from a verdict.
func (r *report) setVerdict(v verdict) {
	r.Status, r.Headline, r.Message = string(v.reason), v.entry().headline, v.message()
	if v.byLabel {
		r.MatchedBy = "label"
	}
}

// limitSpent reports whether the key has a limit with nothing left.
func (k *keyReport) limitSpent() bool {
	return k.Limit != nil && k.LimitRemaining != nil && *k.LimitRemaining <= 0
}

// windowWords is the limit's window as a sentence names it: "daily",
// ..., "total".
func (k *keyReport) windowWords() string {
	return openrouter.WindowOfLimitReset(k.LimitReset).String()
}

// setWorks says that the key works, and in its headline whether the
// account's free-model allowance is used up (in the words of
// free_daily_limit_reached's entry), or else whether the key expires or
// its limit runs out within warnWithin, whichever comes first.
func (r *report) setWorks(md *keyMetadata, now time.Time) {
	r.Status, r.Headline, r.Message = statusValid, "Key works", "The key is valid: OpenRouter accepts it."
	k := r.Key
	var exp time.Time
	if k.ExpiresAt != nil && k.ExpiresAt.Sub(now) < warnWithin {
		exp = *k.ExpiresAt
	}
	out, pace, ok := k.runsOut(now)
	switch {
	case ok && (exp.IsZero() || out.Before(exp)):
		r.Headline = "Key works, but its limit runs out " + relativeTime(out, now)
		r.Message += " At " + pace + ", its " + k.windowWords() + " limit (" + money(*k.LimitRemaining) + " left of " +
			money(*k.Limit) + ") runs out " + relativeTime(out, now) + ", before it resets."
	case !exp.IsZero():
		r.Headline = "Key works, but expires " + relativeTime(exp, now)
	}
	if k.freeUsedUp() {
		v := keyVerdict(reasonFreeDailyLimitReached, md, now)
		r.Headline = worksBut(v.entry())
		r.Message += " " + v.message()
	}
}

// worksBut is the headline of a key that works while what e says ran out
// stops some of its requests.
func worksBut(e *reasonEntry) string {
	return "Key works; " + strings.ToLower(e.headline[:1]) + e.headline[1:]
}

// freeUsedUp reports whether GET /key shows the account's free-model
// allowance for today used up.
func (k *keyReport) freeUsedUp() bool {
	return k.FreeModelRequests != nil && k.FreeModelRequests.Limit > 0 && k.FreeModelRequests.Remaining <= 0
}

// runsOut is when the key's limit would be used up at the pace the key
// spent in the window that holds now (a total limit: this week), if that
// is within warnWithin and before the limit resets. A window begun less
// than an hour ago says nothing of a pace.
func (k *keyReport) runsOut(now time.Time) (at time.Time, pace string, ok bool) {
	if k.Limit == nil || k.LimitRemaining == nil || *k.LimitRemaining <= 0 || k.Usage == nil {
		return time.Time{}, "", false
	}
	window := openrouter.WindowOfLimitReset(k.LimitReset)
	spent, pace, began := k.Usage.Weekly, "this week's pace", openrouter.WindowWeekly
	switch window {
	case openrouter.WindowDaily:
		spent, pace, began = k.Usage.Daily, "today's pace", openrouter.WindowDaily
	case openrouter.WindowMonthly:
		spent, pace, began = k.Usage.Monthly, "this month's pace", openrouter.WindowMonthly
	}
	start, _ := began.StartedAt(now)
	elapsed := now.Sub(start)
	if spent <= 0 || elapsed < time.Hour {
		return time.Time{}, "", false
	}
	left := time.Duration(*k.LimitRemaining / spent * float64(elapsed))
	at = now.Add(left).Truncate(time.Minute)
	if left >= warnWithin || (k.ResetsAt != nil && !at.Before(*k.ResetsAt)) {
		return time.Time{}, "", false
	}
	return at, pace, true
}

func (r *report) setUnknown(msg string) {
	r.Status, r.Headline, r.Message = statusUnknown, "Key refused", msg
}

// addCredits adds the account balance when the checked key may see it: a
// management key reads its own; otherwise the configured management key
// reads it, but only for a key whose own record (matched by hash) is in its
// account, so that nobody sees another account's balance.
func (c *checker) addCredits(ctx context.Context, rep *report, token string, md *keyMetadata, m match) {
	var (
		cr  *openrouter.Credits
		err error
	)
	switch {
	case md != nil && md.Management():
		// A management key reads its own account's credits, with itself.
		var res openrouter.Result
		cr, res = c.acct.client.Credits(ctx, token)
		err = res.Err
	case !c.acct.hasManagementKey():
		rep.CreditsUnavailable = "OpenRouter shows an account's credits to its management keys only, and this key check has no management key configured"
		return
	case m.record == nil:
		rep.CreditsUnavailable = "OpenRouter shows an account's credits to its management keys only; this key's own record was not found in the account of the configured management key"
		return
	default:
		cr, err = c.acct.accountCredits(ctx)
	}
	if err != nil {
		rep.CreditsUnavailable = "the credits could not be read: " + publicError(err)
		return
	}
	rep.Credits = &creditsReport{TotalCredits: cr.TotalCredits, TotalUsage: cr.TotalUsage, Remaining: cr.TotalCredits - cr.TotalUsage}
}

func keyReportOf(token string, md *keyMetadata, m match, now time.Time) *keyReport {
	mgmt, free := md.Management(), md.IsFreeTier
	kr := &keyReport{
		Label: md.Label, IsManagementKey: &mgmt, IsFreeTier: &free,
		Limit: md.Limit, LimitRemaining: md.LimitRemaining, LimitReset: md.LimitReset,
		Usage: &usageReport{Total: md.Usage, Daily: md.UsageDaily, Weekly: md.UsageWeekly, Monthly: md.UsageMonthly},
	}
	if kr.Label == "" && len(token) == openrouter.KeyLen {
		kr.Label = openrouter.Label(token)
	}
	if m.record != nil {
		kr.Workspace, kr.Name = m.workspace, m.record.Name
	}
	if md.ExpiresAt != nil {
		exp := md.ExpiresAt.UTC()
		in := int64(exp.Sub(now) / time.Second)
		kr.ExpiresAt, kr.ExpiresInSeconds = &exp, &in
	}
	if md.Limit != nil {
		w := openrouter.WindowOfLimitReset(md.LimitReset)
		if at, ok := w.ResetsAt(now); ok {
			kr.ResetsAt = &at
		}
		kr.NeverResets = w == openrouter.WindowTotal
	}
	if f := md.FreeModelDailyRequests; f != nil {
		reset, _ := openrouter.WindowDaily.ResetsAt(now)
		kr.FreeModelRequests = &freeModelRequestsReport{Limit: f.Limit, Remaining: f.Remaining, Used: f.Used, ResetsAt: reset}
	}
	return kr
}

// nameWorkspace names the key's workspace from GET /key's workspace_id:
// a deleted workspace is said to be; otherwise, when the key's own record
// did not name it, by its name among the account's workspaces where the
// management key reads them (a workspace of another account is not among
// them and keeps its id), else by its id.
func (c *checker) nameWorkspace(ctx context.Context, k *keyReport, ws openrouter.WorkspaceRef) {
	switch {
	case ws.Deleted():
		k.Workspace, k.WorkspaceDeleted = "", true
	case ws.ID != "":
		k.WorkspaceID = ws.ID
		if k.Workspace == "" {
			k.Workspace = ws.ID
			if c.acct.hasManagementKey() {
				k.Workspace = c.acct.workspaceName(ctx, ws.ID)
			}
		}
	}
}

// adviceFor is what to do about this report, first things first: nothing
// for a key that works and needs nothing. Never a generic list.
func adviceFor(rep *report, now time.Time) []string {
	advice := []string{}
	label := "the key"
	if rep.Key != nil && rep.Key.Label != "" {
		label += " " + rep.Key.Label
	}
	switch rep.Status {
	case statusValid:
		advice = appendAccountAdvice(advice, rep)
		if k := rep.Key; k != nil {
			if at, pace, ok := k.runsOut(now); ok {
				advice = append(advice, "At "+pace+" the key's limit runs out "+relativeTime(at, now)+", before it resets: raise it at "+openrouter.URLKeys+" if the key must keep working.")
			}
			if k.ExpiresAt != nil && k.ExpiresAt.Sub(now) < warnWithin {
				advice = append(advice, "The key expires "+relativeTime(*k.ExpiresAt, now)+": create a new key at "+openrouter.URLKeys+" and switch to it before then. An expiry cannot be extended.")
			}
		}
	case statusUnknown:
		advice = append(advice, "Find "+label+" in the list at "+openrouter.URLKeys+": it shows whether the key expired or was disabled; a key that is not listed was deleted.")
	default:
		if e := entryOf(reason(rep.Status)); e != nil {
			advice = append(advice, e.advice)
		}
		if rep.Status == string(reasonKeyLimitReached) {
			// The key works otherwise: what the account lacks still counts.
			advice = appendAccountAdvice(advice, rep)
		}
	}
	if rep.MatchedBy == "label" {
		advice = append(advice, "This result comes from the key's label, which several keys can share: find the key by its name at "+openrouter.URLKeys+" to be sure.")
	}
	return advice
}

// appendAccountAdvice adds what the account's figures call for, for a key
// that works, in the words of the entries of the reasons its requests
// would then fail with: no credits left (credits_insufficient), no
// free-model requests left today (free_daily_limit_reached).
func appendAccountAdvice(advice []string, rep *report) []string {
	if c := rep.Credits; c != nil && c.Remaining <= 0 {
		advice = append(advice, entryAdvice(reasonCreditsInsufficient))
	}
	if k := rep.Key; k != nil && k.freeUsedUp() {
		advice = append(advice, entryAdvice(reasonFreeDailyLimitReached))
	}
	return advice
}

// entryAdvice is a reason's headline and advice, as one piece of advice.
func entryAdvice(r reason) string {
	e := entryOf(r)
	return e.headline + ": " + strings.ToLower(e.advice[:1]) + e.advice[1:]
}

// modelIDs are the ids of the upstream's models: the catalogue's latest
// read (waited for within ctx only when none was ever made), or without
// a catalogue a read of the account's.
func (c *checker) modelIDs(ctx context.Context) ([]string, error) {
	if c.catalogue == nil {
		return c.acct.modelIDs(ctx)
	}
	if !c.catalogue.await(ctx) {
		return nil, openrouter.ContextError(ctx, openrouter.EndpointModels.String(), ctx.Err())
	}
	listed := c.catalogue.listed()
	ids := make([]string, len(listed))
	for i, m := range listed {
		ids[i] = m.ID
	}
	return ids, nil
}
