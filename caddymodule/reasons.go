package caddymodule

// reasons.go owns the reasons the gateway gives: every reason's constant
// and its one entry in reasonTable, which says and decides. An entry is
// the code, the status it explains, what chooses it (decide, evidence, or
// the recognised failure's kind), how its figures are gathered, the
// sentence for clients, the metadata members it adds, the key check's
// headline and advice, whether the gateway may give it without asking the
// upstream, and for the reasons of failures other than 401 the scope and
// the retry advice. The reason's code is its metric label.
//
// What adding a reason touches, by how it is decided:
//
//   - From the failure's body or the token (the 401s but the evidence
//     ones): its constant and entry here, with decide. Where OpenRouter's
//     wording is new, one case in internal/openrouter's AuthMessageOf.
//   - From the failure's body, of a status other than 401 (the 402, 403
//     and 429 limits today; the 400, 403, 404, 429 and 5xx reasons of the
//     next issues): its constant and entry here, with the kind
//     openrouter.Recognise gives the failure, applies where entries share
//     a kind, and gather for its figures (limits.go's limitFacts). Where
//     OpenRouter's wording is new, one Kind and its case in
//     internal/openrouter's recogniser; where the figures need GET /key,
//     the account's balance or the workspace's budgets, the kind's line
//     in evidence.go's needs (evidence is chosen by kind: it is gathered
//     before the reason, which for an unscoped 402 it decides).
//   - From evidence about the key (a 401 with evidence set): its constant
//     and entry here, and the fact of the key's state that gives it
//     (state.go, freshness.verdict, and what records it).
//
// Each also needs the members it adds that no reason has yet (rewrite.go's
// metaMember and, for a figure, limitFacts.appendMember), and its row in
// the README's reason table. Holding the status, rewriting the body in the
// upstream's envelope, the headers, the metric label and the key check's
// words follow from the entry; TestReasonTable proves every entry complete
// and reachable, its sentence and members whole.
//
// A policy 403's kind (moderation, guardrail, a provider's terms, region)
// is internal/openrouter's policy.go's (its Kind, its case in policyKind,
// what policyFigures reads), its sentence and members caddymodule's
// policy.go's.
// A reason from a JWT's claims also needs its case, in precedence order,
// in accesstoken.go's claimsVerdict (its decide is decideByClaims).
// A reason that explains statuses beside its own (a provider's error comes
// with any) lists them in statuses: they are held too.
// A model reason (400 unknown model, 404 no endpoints) is chosen by
// modelreasons.go's modelVerdict, not by kind alone: it also takes its
// case there, and a member of its own in modelMemberNames.

import (
	"net/http"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// reason is the machine-readable cause of a key failure, sent as
// metadata.reason and X-OpenRouter-Key-Status.
type reason string

// The reasons this gateway can give.
const (
	reasonNone reason = ""

	// 401s.
	reasonMalformed        reason = "key_malformed"
	reasonExpired          reason = "key_expired"
	reasonDisabled         reason = "key_disabled"
	reasonNotFound         reason = "key_not_found"
	reasonManagementKey    reason = "management_key"
	reasonTokenExpired     reason = "token_expired"
	reasonNotOpenRouterKey reason = "not_openrouter_key"
	reasonNotAccepted      reason = "credential_not_accepted"
	reasonProviderRejected reason = "provider_key_rejected"
	reasonValidRetry       reason = "key_valid_retry"

	// 402, 403 and 429 key and account failures.
	reasonCreditsInsufficient   reason = "credits_insufficient"
	reasonKeyLimitInsufficient  reason = "key_limit_insufficient"
	reasonRequestUnaffordable   reason = "request_unaffordable"
	reasonInFlightBudget        reason = "in_flight_budget"
	reasonKeyLimitReached       reason = "key_limit_reached"
	reasonWorkspaceBudget       reason = "workspace_budget_exceeded"
	reasonProviderKeyRequired   reason = "provider_key_required"
	reasonFreeDailyLimitReached reason = "free_daily_limit_reached"
	reasonFreeRateLimited       reason = "free_rate_limited"
	reasonProviderRateLimited   reason = "provider_rate_limited"
	reasonProviderKeyRateLimit  reason = "provider_key_rate_limited"
	reasonProvidersAtCapacity   reason = "providers_at_capacity"

	// Policy 403s (issue 26): not key or billing failures.
	reasonModerationFlagged reason = "moderation_flagged"
	reasonGuardrailBlocked  reason = "guardrail_blocked"
	reasonProviderTerms     reason = "provider_terms_refused"
	reasonRegionRestricted  reason = "region_restricted"
)

// Credentials: JWT access tokens (issue 26).
const (
	reasonNotOpenRouterToken reason = "not_openrouter_token"
	reasonTokenInAPIKey      reason = "token_in_x_api_key"
	reasonTokenScope         reason = "token_scope_missing"
)

// Provider errors and admission control (issue 26).
const (
	reasonProviderRequestRejected reason = "provider_request_rejected"
	reasonProviderUnavailable     reason = "provider_unavailable"
	reasonProviderKeyRefused      reason = "provider_key_refused"
	reasonProviderBlocked         reason = "provider_blocked"
	reasonProviderError           reason = "provider_error"
	reasonAdmissionControl        reason = "admission_control"
)

// Unknown model and no endpoints (issue 25, modelreasons.go).
const (
	reasonModelNotFound        reason = "model_not_found"
	reasonNoEndpointsRequest   reason = "no_endpoints_request"
	reasonNoEndpointsAccount   reason = "no_endpoints_account"
	reasonNoEndpointsGuardrail reason = "no_endpoints_guardrail"
	reasonModelRetired         reason = "model_retired"
	reasonFreeVariantEnded     reason = "free_variant_ended"
	reasonNoEndpointsUnknown   reason = "no_endpoints_unknown"
)

// verdict is what the gateway can truthfully say about a failed request:
// a reason and the facts its sentence and members state.
type verdict struct {
	reason reason
	// at is when the key or token expired (key_expired, token_expired).
	at time.Time
	// byLabel: the fact comes from the account's records that share the
	// key's label, not from a record matched by hash. Said so in the
	// message and in metadata.matched_by; never stored, never answered at
	// the edge.
	byLabel   bool
	malformed malformation   // key_malformed: what is wrong
	provider  uint8          // not_openrouter_key: index in foreignKeys
	token     credentialKind // credential_not_accepted: what the token is
	// limit is what a 402, 403 or 429 reason states (limits.go); nil for
	// the 401 reasons.
	limit *limitFacts
	// claims are what a JWT says of itself (accesstoken.go); nil for
	// other credentials.
	claims *jwtClaims
	// model is what an unknown-model or no-endpoints reason states
	// (modelreasons.go).
	model *modelFacts
}

func (v verdict) known() bool { return v.reason != reasonNone }

// entry is the reason's entry in the table.
func (v verdict) entry() *reasonEntry { return entryOf(v.reason) }

// message is the sentence that replaces the upstream's, or "" to keep it.
// It states what is known and what to do, and never includes the key.
func (v verdict) message() string { return v.entry().message(v) }

// refusal is what is known of a failed response when its reason is
// decided: its status and message, the body (nil when deciding from the
// credential alone, at the edge or in the key check), the credential the
// request sent, and when. It is passed by value: through the entries'
// decide functions a pointer would escape, and cost every rewrite an
// allocation.
type refusal struct {
	status int
	msg    openrouter.AuthMessage
	body   *errbody.Body
	cred   credential
	now    time.Time
}

// edgeUse says when a reason may be given by the gateway itself, without
// asking the upstream (edge_answers).
type edgeUse uint8

const (
	// edgeNever: only an upstream's answer can carry the reason.
	edgeNever edgeUse = iota
	// edgeDeadKey: with edge_answers on (or malformed), for a key whose
	// state proves it dead (state.go, edgeRule.verdict).
	edgeDeadKey
	// edgeToken: with edge_answers malformed, for a token that is
	// certainly no OpenRouter credential (edgeRule.tokenVerdict).
	edgeToken
	// edgeCappedKey: with edge_answers on (or malformed) and
	// explain_limits, for edge_capped_for after a key's cap was seen
	// spent, never past its reset, and only for inference.
	edgeCappedKey
)

// retryAdvice is the X-Should-Retry a reason sends.
type retryAdvice uint8

const (
	// retryKept: the upstream's headers stay as they are (the 401s).
	retryKept retryAdvice = iota
	// retryNo: no retry can succeed within a minute.
	retryNo
	// retryYes: a retry can succeed soon; Retry-After says when if it is
	// known.
	retryYes
)

// reasonEntry is everything about one reason.
type reasonEntry struct {
	code reason
	// status is the HTTP status whose body the reason explains.
	status int
	// decide says whether the reason applies from the failure alone (its
	// body and the credential), and with which facts. nil for a reason
	// that only evidence about the key can give.
	decide func(f refusal) (verdict, bool)
	// evidence: the reason comes from what is learned about the key
	// (GET /key, the account's records, other replicas), under state.go's
	// freshness rule; knowledge.explainKey gathers it.
	evidence bool
	// message is the sentence for clients; "" keeps the upstream's.
	message func(v verdict) string
	// members are the metadata members added beside "reason" (rewrite.go
	// renders them).
	members []metaMember
	// headline and advice are the key check's words for people.
	headline string
	advice   string
	edge     edgeUse
	// kind is the recognised failure (openrouter.Recognise) a reason of
	// a status other than 401 explains; KindUnrecognised for the 401
	// reasons. Such a reason is chosen by kind (limitVerdict), not by
	// decide.
	kind openrouter.Kind
	// applies tells the entries of one kind apart (nil: the first entry
	// of its kind applies).
	applies func(f *openrouter.Failure) bool
	// gather fills in the figures the failure's body and the evidence
	// gathered at failure time show (limits.go); nil: the scope alone.
	gather func(facts *limitFacts, f *openrouter.Failure, ev limitEvidence, now time.Time)
	// scope is metadata.scope of a limit reason: what ran out.
	scope string
	// retry is the X-Should-Retry the reason sends (setLimitHeaders).
	retry retryAdvice
	// statuses are further statuses the reason explains beside status (a
	// provider's error comes with any): they are held too.
	statuses []int
}

// reasonTable is every reason, in the order decide tries them: the body's
// own word first, then what the token alone shows.
var reasonTable = []reasonEntry{
	{
		code: reasonProviderRejected, status: http.StatusUnauthorized,
		// OpenRouter accepted the key; a provider refused its own
		// credentials (BYOK). The key is fine: the message stays.
		decide: func(f refusal) (verdict, bool) {
			if f.body == nil {
				return verdict{}, false
			}
			_, named := f.body.Metadata("provider_name").Text()
			return verdict{reason: reasonProviderRejected}, (f.msg == openrouter.AuthProviderError && named) || acceptedBy(f.body)
		},
		message:  func(verdict) string { return "" },
		headline: "A provider refused its own key",
		advice:   "OpenRouter accepted the key; the provider named in the error refused the provider key added to the account (BYOK): replace it at " + openrouter.URLIntegrations + ".",
		edge:     edgeNever,
	},
	{
		code: reasonMalformed, status: http.StatusUnauthorized,
		decide: func(f refusal) (verdict, bool) {
			return verdict{reason: reasonMalformed, malformed: f.cred.malformed}, f.msg.RefusesCredential() && f.cred.kind == credMalformed
		},
		message: func(v verdict) string {
			return `Key malformed: an OpenRouter key is "sk-or-v1-" followed by 64 lowercase hexadecimal digits (73 characters); this one ` +
				malformationText[v.malformed] + "."
		},
		headline: "Key malformed",
		advice:   `Copy the key again from where it was created: it is "sk-or-v1-" followed by 64 lowercase hexadecimal digits, with nothing before or after it.`,
		edge:     edgeToken,
	},
	{
		code: reasonNotOpenRouterKey, status: http.StatusUnauthorized,
		decide: func(f refusal) (verdict, bool) {
			return verdict{reason: reasonNotOpenRouterKey, provider: f.cred.provider}, f.msg.RefusesCredential() && f.cred.kind == credForeign
		},
		message: func(v verdict) string {
			return "Not an OpenRouter key: this looks like a key of " + foreignKeys[v.provider].name +
				`. OpenRouter keys start with "sk-or-v1-"; create one at ` + openrouter.URLKeys + ` (a provider's own key can be added there as a BYOK key).`
		},
		members:  []metaMember{metaLooksLike},
		headline: "Not an OpenRouter key",
		advice:   "Use an OpenRouter key, from " + openrouter.URLKeys + ". To use this provider's key through OpenRouter, add it there as a BYOK key.",
		edge:     edgeToken,
	},
	{
		code: reasonTokenExpired, status: http.StatusUnauthorized,
		decide:   decideByClaims(reasonTokenExpired),
		message:  tokenExpiredSentence,
		members:  []metaMember{metaExpiresAt},
		headline: "Token expired",
		advice:   "Get a new access token: sign in again, or exchange your identity provider's token again at " + openrouter.URLOAuthToken + " (OpenRouter's access tokens live at most 15 minutes).",
		edge:     edgeNever,
	},
	{
		code: reasonNotAccepted, status: http.StatusUnauthorized,
		// "Missing Authentication header" to a request that sent a
		// credential is never passed on: the header was there, and
		// OpenRouter did not take what it held for a credential.
		decide: func(f refusal) (verdict, bool) {
			return verdict{reason: reasonNotAccepted, token: f.cred.kind}, f.msg == openrouter.AuthMissingHeader && f.cred.kind != credNone && !claimsVerdict(f).known()
		},
		message: func(v verdict) string {
			if v.token == credJWT {
				return "OpenRouter did not accept this token as a credential: it is a JWT that has not expired by its own claim, but OpenRouter did not take it for one of its access tokens. Get a new access token, or use an OpenRouter key."
			}
			return `OpenRouter did not accept this token as a credential. An OpenRouter key is "sk-or-v1-" followed by 64 lowercase hexadecimal digits; create one at ` + openrouter.URLKeys + `.`
		},
		headline: "Not accepted as a credential",
		advice:   "Send an OpenRouter key (from " + openrouter.URLKeys + ") or a current OpenRouter access token.",
		edge:     edgeNever,
	},
	{
		code: reasonExpired, status: http.StatusUnauthorized, evidence: true,
		message: func(v verdict) string {
			if v.byLabel {
				return "Key expired at " + v.at.UTC().Format(time.RFC3339) + labelNote + ". An expiry cannot be extended: create a new key."
			}
			return "Key expired. It expired at " + v.at.UTC().Format(time.RFC3339) + "; an expiry cannot be extended, create a new key."
		},
		members:  []metaMember{metaExpiresAt, metaMatchedBy},
		headline: "Key expired",
		advice:   "Create a new key at " + openrouter.URLKeys + " and use it wherever this one is used. An expiry cannot be extended or removed.",
		edge:     edgeDeadKey,
	},
	{
		code: reasonManagementKey, status: http.StatusUnauthorized, evidence: true,
		message: func(verdict) string {
			return "Management keys cannot be used for inference. Use an API key; a management key only manages keys and credits."
		},
		headline: "Management key",
		advice:   "Use an API key for requests to models, and keep the management key for managing keys and credits.",
		edge:     edgeNever,
	},
	{
		code: reasonDisabled, status: http.StatusUnauthorized, evidence: true,
		message: func(v verdict) string {
			if v.byLabel {
				return "Key disabled" + labelNote + ". Re-enable it in the key settings or use another key."
			}
			return "Key disabled. Re-enable it in the key settings or use another key."
		},
		members:  []metaMember{metaMatchedBy},
		headline: "Key disabled",
		advice:   "Enable the key again at " + openrouter.URLKeys + ", or use another key.",
		edge:     edgeDeadKey,
	},
	{
		code: reasonNotFound, status: http.StatusUnauthorized, evidence: true,
		message: func(verdict) string {
			return "Key not found in any workspace of the account of the gateway's management key: it was deleted, never issued, or belongs to another account."
		},
		headline: "Key not found",
		advice:   "Create a new key at " + openrouter.URLKeys + ", or use a key of the account this gateway serves.",
		edge:     edgeNever,
	},
	{
		code: reasonValidRetry, status: http.StatusUnauthorized, evidence: true,
		message: func(verdict) string {
			return "OpenRouter did not recognise the key on this request, but the key works: retry."
		},
		headline: "Key works",
		advice:   "Retry the request: OpenRouter refused it once, and the key works.",
		edge:     edgeNever,
	},
	// The 402, 403 and 429 reasons: chosen by the recognised failure's
	// kind, their figures gathered from its body and the evidence
	// gathered at failure time (limits.go, limitVerdict).
	{
		code: reasonCreditsInsufficient, status: http.StatusPaymentRequired, kind: openrouter.KindAccountBalance, scope: scopeAccount, retry: retryNo,
		gather:   gatherShortfall,
		message:  limitSentence(creditsSentence),
		members:  []metaMember{metaScope, metaRequestedTokens, metaAffordableTokens, metaBalance},
		headline: "Account out of credits",
		advice:   "Add credits at " + openrouter.URLCredits + "; while some are left, a lower max_tokens may fit what remains.",
		edge:     edgeNever,
	},
	{
		code: reasonKeyLimitInsufficient, status: http.StatusPaymentRequired, kind: openrouter.KindKeyCapHeadroom, scope: scopeKey, retry: retryNo,
		gather:   gatherKeyCapShortfall,
		message:  limitSentence(keyHeadroomSentence),
		members:  []metaMember{metaScope, metaWindow, metaLimit, metaSpent, metaRemaining, metaResetsAt, metaNeverResets, metaRequestedTokens, metaAffordableTokens, metaBalance},
		headline: "Key limit almost reached",
		advice:   "Raise this key's limit at " + openrouter.URLKeys + ", or lower max_tokens.",
		edge:     edgeNever,
	},
	{
		code: reasonRequestUnaffordable, status: http.StatusPaymentRequired, kind: openrouter.KindCreditsUnscoped, retry: retryNo,
		gather:   gatherShortfall,
		message:  limitSentence(unaffordableSentence),
		members:  []metaMember{metaRequestedTokens, metaAffordableTokens, metaBalance},
		headline: "Request not affordable",
		advice:   "Lower max_tokens, or add credits or raise the key's limit.",
		edge:     edgeNever,
	},
	{
		code: reasonInFlightBudget, status: http.StatusPaymentRequired, kind: openrouter.KindInFlight, scope: scopeAccount, retry: retryYes,
		message:  limitSentence(inFlightSentence),
		members:  []metaMember{metaScope},
		headline: "Credits reserved by requests in flight",
		advice:   "Retry shortly, or add credits.",
		edge:     edgeNever,
	},
	{
		code: reasonKeyLimitReached, status: http.StatusForbidden, kind: openrouter.KindKeyCapSpent, scope: scopeKey, retry: retryNo,
		gather:   gatherKeyCap,
		message:  limitSentence(keyCapSpentSentence),
		members:  []metaMember{metaScope, metaWindow, metaLimit, metaSpent, metaRemaining, metaResetsAt, metaNeverResets},
		headline: "Key limit reached",
		advice:   "Raise the key's limit at " + openrouter.URLKeys + ", or wait until it resets (a total limit never does). Adding credits to the account does not help, nor does a retry: the limit is the key's own.",
		edge:     edgeCappedKey,
	},
	{
		code: reasonWorkspaceBudget, status: http.StatusForbidden, kind: openrouter.KindWorkspaceBudget, scope: scopeWorkspace, retry: retryNo,
		gather:   gatherBudget,
		message:  limitSentence(workspaceSentence),
		members:  []metaMember{metaScope, metaLimit},
		headline: "Workspace budget spent",
		advice:   "Ask a workspace admin to raise the workspace's budget.",
		edge:     edgeNever,
	},
	{
		code: reasonProviderKeyRequired, status: http.StatusForbidden, kind: openrouter.KindBYOKRequired, scope: scopeProvider, retry: retryNo,
		gather:   gatherPolicy,
		message:  limitSentence(byokRequiredSentence),
		members:  []metaMember{metaScope, metaProvider, metaAlternatives},
		headline: "Provider key required",
		advice:   "Add your own provider key at " + openrouter.URLIntegrations + ".",
		edge:     edgeNever,
	},
	{
		code: reasonFreeDailyLimitReached, status: http.StatusTooManyRequests, kind: openrouter.KindFreeDaily, scope: scopeFreeModels, retry: retryNo,
		gather:   gatherFreeDaily,
		message:  limitSentence(freeDailySentence),
		members:  []metaMember{metaScope, metaLimit, metaSpent, metaRemaining, metaResetsAt},
		headline: "Free-model allowance used up",
		advice:   "Wait until 00:00 UTC, or use a paid model; every :free model shares the one allowance.",
		edge:     edgeNever,
	},
	{
		code: reasonFreeRateLimited, status: http.StatusTooManyRequests, kind: openrouter.KindFreePerMinute, scope: scopeFreeModels, retry: retryYes,
		gather:   gatherFreeRate,
		message:  limitSentence(freeRateSentence),
		members:  []metaMember{metaScope, metaResetsAt},
		headline: "Free-model rate reached",
		advice:   "Retry within a minute.",
		edge:     edgeNever,
	},
	{
		code: reasonProviderRateLimited, status: http.StatusTooManyRequests, kind: openrouter.KindProviderPool, scope: scopeProvider, retry: retryYes,
		applies:  notBYOK,
		gather:   gatherProvider,
		message:  limitSentence(providerPoolSentence),
		members:  []metaMember{metaScope, metaProvider},
		headline: "Provider rate-limited",
		advice:   "Retry shortly, or add your own provider key.",
		edge:     edgeNever,
	},
	{
		code: reasonProviderKeyRateLimit, status: http.StatusTooManyRequests, kind: openrouter.KindProviderPool, scope: scopeProvider, retry: retryYes,
		applies:  byBYOK,
		gather:   gatherProvider,
		message:  limitSentence(ownProviderKeySentence),
		members:  []metaMember{metaScope, metaProvider},
		headline: "Your provider key is rate-limited",
		advice:   "Retry shortly, or raise your provider key's limits.",
		edge:     edgeNever,
	},
	{
		code: reasonProvidersAtCapacity, status: http.StatusTooManyRequests, kind: openrouter.KindProvidersAtCapacity, scope: scopeProvider, retry: retryYes,
		gather:   gatherCapacity,
		message:  limitSentence(capacitySentence),
		members:  []metaMember{metaScope, metaProvider, metaResetsAt},
		headline: "Providers at capacity",
		advice:   "Retry shortly, or use another model.",
		edge:     edgeNever,
	},
	// Policy 403s (issue 26): what refused, from the body alone; never a
	// key or billing failure, never retried.
	{
		code: reasonModerationFlagged, status: http.StatusForbidden, kind: openrouter.KindModeration, scope: scopeContent, retry: retryNo,
		gather:   gatherPolicy,
		message:  limitSentence(moderationSentence),
		members:  []metaMember{metaScope, metaModel, metaProvider, metaCategories, metaCreditsCharged},
		headline: "Refused by moderation",
		advice:   "The model requires moderation on OpenRouter and the input was flagged: change the input, or use a model that does not require moderation. The key and the credits are fine; sending the same input again is refused again.",
		edge:     edgeNever,
	},
	{
		code: reasonGuardrailBlocked, status: http.StatusForbidden, kind: openrouter.KindGuardrail, scope: scopeGuardrail, retry: retryNo,
		gather:   gatherPolicy,
		message:  limitSentence(guardrailSentence),
		members:  []metaMember{metaScope, metaGuardrail},
		headline: "Blocked by a guardrail",
		advice:   "A guardrail an admin set on the key or its workspace blocked the request (patterns in the input, a model not on its allowlist, or its budget spent): change the request, or ask the admin to change the guardrail. Adding credits does not help.",
		edge:     edgeNever,
	},
	{
		code: reasonProviderTerms, status: http.StatusForbidden, kind: openrouter.KindProviderToS, scope: scopeProvider, retry: retryNo,
		gather:   gatherPolicy,
		message:  limitSentence(providerTermsSentence),
		members:  []metaMember{metaScope, metaProvider, metaLikelyCause},
		headline: "Refused under a provider's Terms of Service",
		advice:   "OpenRouter does not say why; most likely the privacy settings (" + openrouter.URLPrivacy + ") or the request's provider routing send it to a provider whose terms exclude it. Check those, or use another model. The key and the credits are fine.",
		edge:     edgeNever,
	},
	{
		code: reasonRegionRestricted, status: http.StatusForbidden, kind: openrouter.KindRegion, scope: scopeRegion, retry: retryNo,
		gather:   gatherPolicy,
		message:  limitSentence(regionSentence),
		members:  []metaMember{metaScope, metaModel, metaProvider, metaAlternatives},
		headline: "Not available in this region",
		advice:   "The model is not served to the region OpenRouter sees the request come from (the gateway's network): use another model. The key and the credits are fine; a retry from the same place is refused again.",
		edge:     edgeNever,
	},
	// Credentials: JWT access tokens (issue 26), decided by what the
	// token's own claims say (accesstoken.go, claimsVerdict).
	{
		code: reasonNotOpenRouterToken, status: http.StatusUnauthorized,
		decide:   decideByClaims(reasonNotOpenRouterToken),
		message:  notOpenRouterTokenSentence,
		headline: "Not an OpenRouter access token",
		advice:   "Exchange your identity provider's token for an OpenRouter access token at " + openrouter.URLOAuthToken + " and send that, or use an OpenRouter key from " + openrouter.URLKeys + ".",
		edge:     edgeToken,
	},
	{
		code: reasonTokenInAPIKey, status: http.StatusUnauthorized,
		decide:   decideByClaims(reasonTokenInAPIKey),
		message:  tokenInAPIKeySentence,
		headline: "Access token sent in x-api-key",
		advice:   `Send the access token as "Authorization: Bearer <token>": x-api-key takes OpenRouter keys only.`,
		edge:     edgeNever,
	},
	{
		code: reasonTokenScope, status: http.StatusUnauthorized,
		decide:   decideByClaims(reasonTokenScope),
		message:  tokenScopeSentence,
		headline: "Access token without the inference scope",
		advice:   `Request an access token with scope "` + openrouter.ScopeInference + `" at ` + openrouter.URLOAuthToken + ".",
		edge:     edgeNever,
	},
	// Provider errors and admission control (issue 26; provider.go): a
	// "Provider returned error" by whose fault the body shows it is, the
	// unknown cause last.
	{
		code: reasonProviderRequestRejected, status: http.StatusBadRequest, kind: openrouter.KindProviderError, retry: retryNo,
		applies:  byRequest,
		gather:   gatherProviderError,
		message:  limitSentence(providerRequestSentence),
		members:  []metaMember{metaProvider, metaFault},
		headline: "The provider refused the request",
		advice:   "Change the request, or route it to another provider (provider.order, provider.ignore); unchanged it fails again.",
		edge:     edgeNever,
	},
	{
		code: reasonProviderUnavailable, status: http.StatusServiceUnavailable, kind: openrouter.KindProviderError, retry: retryYes,
		applies:  byProvider,
		gather:   gatherProviderError,
		message:  limitSentence(providerUnavailableSentence),
		members:  []metaMember{metaProvider, metaFault},
		headline: "The provider failed or is over capacity",
		advice:   "Retry, or route to another provider (provider.order, provider.ignore).",
		edge:     edgeNever,
	},
	{
		code: reasonProviderKeyRefused, status: http.StatusForbidden, kind: openrouter.KindProviderError, retry: retryNo,
		applies:  byOwnProviderKey,
		gather:   gatherProviderError,
		message:  limitSentence(providerKeyRefusedSentence),
		members:  []metaMember{metaProvider, metaFault},
		headline: "A provider refused your own provider key",
		advice:   "Fix the provider key at the provider, or replace it at " + openrouter.URLIntegrations + ".",
		edge:     edgeNever,
	},
	{
		code: reasonProviderBlocked, status: http.StatusForbidden, kind: openrouter.KindProviderError, retry: retryNo,
		applies:  byRegionOrPolicy,
		gather:   gatherProviderError,
		message:  limitSentence(providerBlockedSentence),
		members:  []metaMember{metaProvider, metaFault},
		headline: "The provider blocks this region or request",
		advice:   "Use another provider (provider.ignore, provider.order) or another model.",
		edge:     edgeNever,
	},
	{
		code: reasonProviderError, status: http.StatusBadRequest, kind: openrouter.KindProviderError, retry: retryKept,
		statuses: providerErrorStatuses,
		gather:   gatherProviderError,
		message:  limitSentence(providerErrorSentence),
		members:  []metaMember{metaProvider, metaFault},
		headline: "A provider returned an error",
		advice:   "Read the provider's message; whose fault it is is not known.",
		edge:     edgeNever,
	},
	{
		code: reasonAdmissionControl, status: http.StatusTooManyRequests, kind: openrouter.KindAdmissionControl, retry: retryYes,
		message:  limitSentence(admissionControlSentence),
		headline: "Credits not verified in time",
		advice:   "Retry after the Retry-After: the balance is not the cause.",
		edge:     edgeNever,
	},
	// Unknown model and no endpoints (issue 25): chosen by
	// modelVerdict from the failure, the request's body, the catalogue
	// and the key's GET /models/user (explainmodels.go).
	{
		code: reasonModelNotFound, status: http.StatusBadRequest, kind: openrouter.KindModelNotFound, retry: retryNo,
		message:  modelSentence(unknownModelSentence),
		members:  []metaMember{metaModelID, metaSuggestions, metaLastListed, metaExpirationDate},
		headline: "Unknown model",
		advice:   "Send a valid model ID (author/slug, as listed at " + openrouter.URLModels + "); the answer names the nearest ones.",
		edge:     edgeNever,
	},
	{
		code: reasonNoEndpointsRequest, status: http.StatusNotFound, kind: openrouter.KindNoEndpoints, retry: retryNo,
		message:  modelSentence(requestFilterSentence),
		members:  []metaMember{metaModelID, metaFilter, metaSource, metaSetting},
		headline: "The request excludes every endpoint",
		advice:   "Remove or relax the request member the answer names, or choose a model that supports it.",
		edge:     edgeNever,
	},
	{
		code: reasonNoEndpointsAccount, status: http.StatusNotFound, kind: openrouter.KindNoEndpoints, retry: retryNo,
		message:  modelSentence(accountFilterSentence),
		members:  []metaMember{metaModelID, metaFilter, metaSource, metaSetting, metaAvailableProviders},
		headline: "The account's settings exclude every endpoint",
		advice:   "Change the data policy, ZDR or provider setting the answer names at " + openrouter.URLPrivacy + ".",
		edge:     edgeNever,
	},
	{
		code: reasonNoEndpointsGuardrail, status: http.StatusNotFound, kind: openrouter.KindNoEndpoints, retry: retryNo,
		message:  modelSentence(modelGuardrailSentence),
		members:  []metaMember{metaModelID, metaSource, metaSetting},
		headline: "The key's guardrail excludes the model",
		advice:   "Allow the model in the guardrail of the key (managed with the key at " + openrouter.URLKeys + "), or use a model it allows.",
		edge:     edgeNever,
	},
	{
		code: reasonModelRetired, status: http.StatusNotFound, kind: openrouter.KindModelRetired, retry: retryNo,
		message:  modelSentence(retiredSentence),
		members:  []metaMember{metaModelID, metaSource, metaLastListed, metaExpirationDate, metaSuccessors},
		headline: "Model retired",
		advice:   "Use the successor the answer names, or another model from " + openrouter.URLModels + ".",
		edge:     edgeNever,
	},
	{
		code: reasonFreeVariantEnded, status: http.StatusNotFound, kind: openrouter.KindFreeVariantEnded, retry: retryNo,
		message:  modelSentence(freeEndedSentence),
		members:  []metaMember{metaModelID, metaSource, metaPaidModel},
		headline: "Free variant ended",
		advice:   "Switch to the paid model the answer names, or another free model.",
		edge:     edgeNever,
	},
	{
		code: reasonNoEndpointsUnknown, status: http.StatusNotFound, kind: openrouter.KindNoEndpoints, retry: retryNo,
		message:  modelSentence(unknownFilterSentence),
		members:  []metaMember{metaModelID, metaFilter, metaCandidates},
		headline: "No endpoints, cause not known",
		advice:   "Check the candidates the answer lists: the request's routing members, the account's privacy settings, the key's guardrail.",
		edge:     edgeNever,
	},
}

// labelNote qualifies a fact matched by label.
const labelNote = " (matched by label only: the account's records that share this key's label all say so, but a label is not unique)"

// reasonIndex finds an entry by its code.
var reasonIndex = func() map[reason]*reasonEntry {
	m := make(map[reason]*reasonEntry, len(reasonTable))
	for i := range reasonTable {
		m[reasonTable[i].code] = &reasonTable[i]
	}
	return m
}()

// entryOf is the entry of a reason the table has; nil for any other.
func entryOf(r reason) *reasonEntry { return reasonIndex[r] }

// kindIndex is the entries of each recognised kind, in the table's order.
var kindIndex = func() (m [openrouter.Kinds][]*reasonEntry) {
	for i := range reasonTable {
		if e := &reasonTable[i]; e.kind != openrouter.KindUnrecognised {
			m[e.kind] = append(m[e.kind], e)
		}
	}
	return m
}()

// entryOfKind is the entry that explains a recognised failure of kind k:
// the first of that kind that applies to f; nil when none does.
func entryOfKind(k openrouter.Kind, f *openrouter.Failure) *reasonEntry {
	if int(k) >= len(kindIndex) {
		return nil
	}
	for _, e := range kindIndex[k] {
		if e.applies == nil || e.applies(f) {
			return e
		}
	}
	return nil
}

// explained says which statuses beside 401 a reason of the table
// explains: with explain_limits, the holding writer holds them.
var explained = func() (s [600]bool) {
	for _, e := range reasonTable {
		if e.status != http.StatusUnauthorized {
			s[e.status] = true
		}
		for _, st := range e.statuses {
			s[st] = true
		}
	}
	return s
}()

// explainsStatus reports whether a reason of the table explains a
// failure of this status other than 401 (response.go holds it with
// explain_limits).
func explainsStatus(status int) bool {
	return status >= 0 && status < len(explained) && explained[status]
}

// byBYOK and notBYOK tell the provider pool's reasons apart: with
// metadata.is_byok the limit is the user's own provider key's.
func byBYOK(f *openrouter.Failure) bool  { return f.BYOK }
func notBYOK(f *openrouter.Failure) bool { return !f.BYOK }

// acceptedBy reports whether the body shows that OpenRouter authenticated
// the key: a top-level user_id names the account the key belongs to.
func acceptedBy(eb *errbody.Body) bool {
	id, ok := eb.Top("user_id").Raw()
	return ok && string(id) != "null"
}

// decide is the whole decision for a failure: the reason the failure
// itself shows; or, when none does and only evidence about the key can
// tell (an entry of the status is decided by evidence, and OpenRouter
// refused an OpenRouter key without saying why), needsEvidence; or the
// class under which it stays unexplained.
func decide(f refusal) (v verdict, needsEvidence bool, class string) {
	byEvidence := false
	for i := range reasonTable {
		e := &reasonTable[i]
		if e.status != f.status {
			continue
		}
		byEvidence = byEvidence || e.evidence
		if e.decide == nil {
			continue
		}
		if v, ok := e.decide(f); ok {
			return v, false, ""
		}
	}
	switch {
	case f.cred.kind == credNone:
		return verdict{}, false, classNoCredentials
	case f.msg == openrouter.AuthOther:
		return verdict{}, false, classUnrecognizedMessage
	case byEvidence && f.cred.isKey() && (f.msg == openrouter.AuthUserNotFound || f.msg == openrouter.AuthNoCredentials):
		return verdict{}, true, ""
	case f.cred.isKey():
		return verdict{}, false, classNoEvidence
	}
	return verdict{}, false, classOtherCredential
}

// tokenVerdict is what the token alone says of a refused credential, as
// if OpenRouter had answered "User not found.": for the edge and the key
// check, which have no upstream answer. Only entries allowed by use count.
func tokenVerdict(c credential, now time.Time, use func(*reasonEntry) bool) verdict {
	f := refusal{status: http.StatusUnauthorized, msg: openrouter.AuthUserNotFound, cred: c, now: now}
	for i := range reasonTable {
		e := &reasonTable[i]
		if e.decide == nil || !use(e) {
			continue
		}
		if v, ok := e.decide(f); ok {
			return v
		}
	}
	return verdict{}
}

// malformationText completes "this one ..." in key_malformed's message.
var malformationText = map[malformation]string{
	malformedLength:      "has the wrong length",
	malformedUpperCase:   "has upper-case letters",
	malformedDigits:      "has characters other than 0-9 and a-f after the prefix",
	malformedSpace:       "contains whitespace, control or invisible characters",
	malformedQuotes:      "is wrapped in quotes",
	malformedBearerTwice: `says "Bearer" twice`,
	malformedPlaceholder: "is a placeholder or an unexpanded variable, not a key",
}
