package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Report is the key check's answer. Field names are the API's; a part
// that is unavailable is null, and its *_unavailable sibling says why.
type Report struct {
	// Status is "valid", one of the gateway's reasons (key_malformed,
	// key_expired, key_disabled, key_not_found, management_key), or
	// "unknown" when OpenRouter says only "User not found.".
	Status  string `json:"status"`
	Message string `json:"message"`

	Key            *KeyReport `json:"key"`
	KeyUnavailable string     `json:"key_unavailable,omitempty"`

	Credits            *CreditsReport `json:"credits"`
	CreditsUnavailable string         `json:"credits_unavailable,omitempty"`

	Models            *ModelsReport `json:"models"`
	ModelsUnavailable string        `json:"models_unavailable,omitempty"`

	Advice []string `json:"advice"`
}

// KeyReport is what is known of the key; unknown values are null.
type KeyReport struct {
	Label            string        `json:"label"`
	IsManagementKey  *bool         `json:"is_management_key"`
	IsFreeTier       *bool         `json:"is_free_tier"`
	Limit            *float64      `json:"limit"`
	LimitRemaining   *float64      `json:"limit_remaining"`
	LimitReset       *string       `json:"limit_reset"`
	Usage            *UsageReport  `json:"usage"`
	ExpiresAt        *time.Time    `json:"expires_at"`
	ExpiresInSeconds *int64        `json:"expires_in_seconds"`
	RateLimit        *RateLimitRep `json:"rate_limit"`
}

// UsageReport is the key's spending in credits.
type UsageReport struct {
	Total   float64 `json:"total"`
	Daily   float64 `json:"daily"`
	Weekly  float64 `json:"weekly"`
	Monthly float64 `json:"monthly"`
}

// RateLimitRep is the key's request rate limit as OpenRouter reports it.
type RateLimitRep struct {
	Requests int    `json:"requests"`
	Interval string `json:"interval"`
}

// CreditsReport is the account's balance.
type CreditsReport struct {
	TotalCredits float64 `json:"total_credits"`
	TotalUsage   float64 `json:"total_usage"`
	Remaining    float64 `json:"remaining"`
}

// ModelsReport is the size of the model catalogue and a few of its ids.
type ModelsReport struct {
	Count  int      `json:"count"`
	Sample []string `json:"sample"`
}

// StatusValid and StatusUnknown complete the reasons as report statuses.
const (
	StatusValid   = "valid"
	StatusUnknown = "unknown"
)

// errUpstream means OpenRouter could not be asked about the key: the check
// has no answer, which is not the same as an answer about the key.
var errUpstream = errors.New("OpenRouter could not be asked")

// checker builds reports. It reads what a gateway in the same Caddy has
// learned, but never adds to it: a key check is no evidence for others.
type checker struct {
	client *metadataClient
	models modelsCache
}

type modelsCache struct {
	mu     sync.Mutex
	at     time.Time
	report *ModelsReport
}

// modelsFresh is how long a read of the catalogue serves key checks.
const modelsFresh = 5 * time.Minute

func (m *modelsCache) get(ctx context.Context, c *metadataClient) (*ModelsReport, string) {
	m.mu.Lock()
	if m.report != nil && time.Since(m.at) < modelsFresh {
		r := m.report
		m.mu.Unlock()
		return r, ""
	}
	m.mu.Unlock()
	ids, res := c.modelIDs(ctx)
	if ids == nil {
		return nil, "the model catalogue could not be read: " + describe(res)
	}
	r := &ModelsReport{Count: len(ids), Sample: ids[:min(len(ids), 5)]}
	m.mu.Lock()
	m.at, m.report = time.Now(), r
	m.mu.Unlock()
	return r, ""
}

func describe(res lookupResult) string {
	if res.err != nil {
		return res.err.Error()
	}
	return fmt.Sprintf("OpenRouter answered %d %s", res.status, http.StatusText(res.status))
}

// check builds the report for key, within ctx's deadline.
func (c *checker) check(ctx context.Context, key string, now time.Time) (*Report, error) {
	rep := &Report{}
	// The catalogue is read beside everything else, and awaited last.
	modelsDone := make(chan struct{})
	go func() {
		defer close(modelsDone)
		rep.Models, rep.ModelsUnavailable = c.models.get(ctx, c.client)
	}()
	defer func() { <-modelsDone }()

	if !wellFormedKey(key) {
		v := verdict{reason: reasonMalformed}
		rep.Status, rep.Message = string(v.reason), reasonMessage(v)
		rep.KeyUnavailable = "the key is malformed, so OpenRouter was not asked about it"
		rep.CreditsUnavailable = rep.KeyUnavailable
		rep.Advice = adviceFor(rep, now)
		return rep, nil
	}

	// GET /key and, with a management key, the key's record, at once.
	var (
		md     *keyMetadata
		keyRes lookupResult
		rec    *keyRecord
		found  bool
		recErr error
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		md, keyRes = c.client.keyInfo(ctx, key, false)
	}()
	if c.client.managementKey != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, found, recErr = c.findRecord(ctx, key)
		}()
	}
	wg.Wait()

	switch {
	case md != nil:
		rep.Key = keyReportOf(key, md, now)
		if md.management() {
			v := verdict{reason: reasonManagementKey}
			rep.Status, rep.Message = string(v.reason), reasonMessage(v)
		} else {
			rep.Status, rep.Message = StatusValid, "Key is valid."
		}
	case keyRes.err == nil && keyRes.status == http.StatusUnauthorized:
		c.explainDead(rep, key, rec, found, recErr, now)
	default:
		return nil, fmt.Errorf("%w: %s", errUpstream, describe(keyRes))
	}
	c.addCredits(ctx, rep, key, md, rec, found)
	rep.Advice = adviceFor(rep, now)
	return rep, nil
}

// findRecord looks the key up in the management key's account: by hash,
// then in the listing. found reports that the account has the key; rec is
// nil when a shared label makes the record uncertain.
func (c *checker) findRecord(ctx context.Context, key string) (*keyRecord, bool, error) {
	rec, res := c.client.record(ctx, key)
	if rec != nil {
		return rec, true, nil
	}
	if res.err != nil || res.status != http.StatusNotFound {
		return nil, false, errors.New(describe(res))
	}
	l, err := c.client.listing(ctx)
	if err != nil {
		return nil, false, err
	}
	rec, found := l.find(key)
	return rec, found, nil
}

// explainDead says what is known of a key OpenRouter does not accept:
// from the management record, and from what a gateway in this Caddy has
// learned, read by fingerprint.
func (c *checker) explainDead(rep *Report, key string, rec *keyRecord, found bool, recErr error, now time.Time) {
	st, _ := learnedState(fingerprintOf(key))
	if rec != nil {
		// The record is the account's own word: it outranks what was learned.
		st.flags &^= flagDisabled | flagNotFound
		if rec.Disabled {
			st.flags |= flagDisabled
		}
		if rec.ExpiresAt != nil {
			st.flags |= flagHasExpiry
			st.expiresAt = rec.ExpiresAt.Unix()
		}
		st.verdictAt = now.UnixNano()
	} else if c.client.managementKey != "" && recErr == nil && !found {
		st.flags |= flagNotFound
		st.verdictAt = now.UnixNano()
	}
	v := explainState(st, now, true, time.Hour)
	rep.Key = &KeyReport{Label: keyLabel(key)}
	if st.has(flagHasExpiry) {
		exp := st.expiry()
		rep.Key.ExpiresAt = &exp
	}
	if v.known() {
		rep.Status, rep.Message = string(v.reason), reasonMessage(v)
		return
	}
	rep.Status = StatusUnknown
	rep.Message = `OpenRouter says only "User not found.": the key is expired, deleted or disabled. ` +
		"Nothing more is known without a management key of its account."
	if recErr != nil {
		rep.Message += " The management API could not be asked: " + recErr.Error() + "."
	}
}

// learnedState is what any gateway in this Caddy has learned of a key.
func learnedState(fp fingerprint) (keyState, bool) {
	liveCaches.Lock()
	defer liveCaches.Unlock()
	for c := range liveCaches.set {
		if st, ok := c.get(fp); ok {
			return st, true
		}
	}
	return keyState{}, false
}

// addCredits adds the account balance when the checked key may see it:
// a management key reads its own; otherwise the configured management key
// reads it, but only for a key of its own account, so that nobody sees
// another account's balance.
func (c *checker) addCredits(ctx context.Context, rep *Report, key string, md *keyMetadata, rec *keyRecord, found bool) {
	var bearer string
	switch {
	case md != nil && md.management():
		bearer = key
	case c.client.managementKey == "":
		rep.CreditsUnavailable = "OpenRouter shows credits to management keys only; this key is not one, and no management key is configured here"
		return
	case !found || rec == nil:
		rep.CreditsUnavailable = "OpenRouter shows credits to management keys only; this key is not one, and it is not a key of the configured management key's account"
		return
	default:
		bearer = c.client.managementKey
	}
	cr, res := c.client.credits(ctx, bearer)
	if cr == nil {
		rep.CreditsUnavailable = "the credits could not be read: " + describe(res)
		return
	}
	rep.Credits = &CreditsReport{TotalCredits: cr.TotalCredits, TotalUsage: cr.TotalUsage, Remaining: cr.TotalCredits - cr.TotalUsage}
}

func keyReportOf(key string, md *keyMetadata, now time.Time) *KeyReport {
	mgmt, free := md.management(), md.IsFreeTier
	kr := &KeyReport{
		Label: md.Label, IsManagementKey: &mgmt, IsFreeTier: &free,
		Limit: md.Limit, LimitRemaining: md.LimitRemaining, LimitReset: md.LimitReset,
		Usage: &UsageReport{Total: md.Usage, Daily: md.UsageDaily, Weekly: md.UsageWeekly, Monthly: md.UsageMonthly},
	}
	if kr.Label == "" {
		kr.Label = keyLabel(key)
	}
	if md.ExpiresAt != nil {
		exp := md.ExpiresAt.UTC()
		in := int64(exp.Sub(now) / time.Second)
		kr.ExpiresAt, kr.ExpiresInSeconds = &exp, &in
	}
	if md.RateLimit != nil {
		kr.RateLimit = &RateLimitRep{Requests: md.RateLimit.Requests, Interval: md.RateLimit.Interval}
	}
	return kr
}

// commonErrors are the HTTP errors OpenRouter clients meet, with fixes.
var commonErrors = []string{
	"401 Unauthorized: the key is missing, malformed, expired, disabled or deleted; check it here.",
	"402 Payment Required: the account is out of credits, or max_tokens asks for more than it can pay for; add credits or lower max_tokens.",
	"403 Forbidden: the key's own spending limit is reached (or the input was moderated); raise the key's limit in the key settings.",
	"429 Too Many Requests: rate limited; wait as Retry-After says, slow down, or use a paid model.",
	"5xx: OpenRouter or the provider failed; retry with backoff, or choose another provider.",
}

// adviceFor is what to do about the report's status, then the common
// errors.
func adviceFor(rep *Report, now time.Time) []string {
	var advice []string
	switch rep.Status {
	case StatusValid:
		advice = append(advice, "The key works. If requests still fail, the errors below say why.")
		if k := rep.Key; k != nil && k.LimitRemaining != nil && *k.LimitRemaining <= 0 {
			advice = append(advice, "The key's spending limit is used up: raise the key's limit in the key settings, or wait for its reset.")
		}
		if k := rep.Key; k != nil && k.ExpiresAt != nil && k.ExpiresAt.Sub(now) < 7*24*time.Hour {
			advice = append(advice, "The key expires at "+k.ExpiresAt.Format(time.RFC3339)+": create a new key before then; an expiry cannot be extended.")
		}
	case string(reasonExpired):
		advice = append(advice, "Create a new key: an expiry cannot be extended or removed.")
	case string(reasonDisabled):
		advice = append(advice, "Re-enable the key in the key settings (openrouter.ai/settings/keys), or use another key.")
	case string(reasonMalformed):
		advice = append(advice, `Check the key for whitespace, quotes or a truncated paste: it is "sk-or-v1-" followed by 64 lowercase hex digits.`)
	case string(reasonNotFound):
		advice = append(advice, "The key was deleted, never issued, or belongs to another account: create a new key, or use one of this account.")
	case string(reasonManagementKey):
		advice = append(advice, "Management keys manage keys and credits only: use an API key for inference.")
	case StatusUnknown:
		advice = append(advice, "Look the key up in the key settings, or configure a management key of its account so the check can tell expired, disabled and deleted keys apart.")
	}
	return append(advice, commonErrors...)
}
