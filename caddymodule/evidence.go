package caddymodule

// evidence.go owns the evidence a 402, 403 or 429 gathers at failure time:
// the key's own GET /key (single-flight per key, kept briefly in a small
// bounded cache), and with a management key the account's balance and the
// workspace's budgets. A failure waits for it at most its own short
// deadline; lookups go on within the config's lifetime, so what arrives
// late serves the next failure. A working request never waits for any of
// it and never starts any of it.

import (
	"context"
	"errors"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

const (
	// evidenceFresh is how long a key's GET /key answer serves failures:
	// a burst of 429s asks once. OpenRouter's own figures lag by about a
	// minute anyway.
	evidenceFresh = 10 * time.Second
	// evidenceKeys bounds the keys whose answers are kept.
	evidenceKeys = 4096
)

// keyEvidence is one GET /key answer and when it came.
type keyEvidence struct {
	md *keyMetadata
	at time.Time
}

// limitLookups is what a gateway keeps for failure-time evidence. The
// cache is golang-lru's locked LRU with the age checked on read: the
// expirable LRU runs a goroutine that never ends, one per config load.
type limitLookups struct {
	keys *lru.Cache[fingerprint, keyEvidence]
	// management runs one management lookup per question at a time
	// (the balance; a key's workspace budgets by fingerprint).
	management singleflight.Group
	// timeout is the longest a failure waits (limit_lookup_timeout, never
	// over lookup_timeout).
	timeout time.Duration
}

func newLimitLookups(timeout time.Duration) *limitLookups {
	keys, err := lru.New[fingerprint, keyEvidence](evidenceKeys)
	if err != nil {
		panic("a positive size is always accepted: " + err.Error())
	}
	return &limitLookups{keys: keys, timeout: timeout}
}

// remember keeps a GET /key answer for the failures that follow.
func (l *limitLookups) remember(fp fingerprint, md *keyMetadata, at time.Time) {
	if l != nil && md != nil {
		l.keys.Add(fp, keyEvidence{md, at})
	}
}

// known is the key's GET /key answer while it is fresh.
func (l *limitLookups) known(fp fingerprint, now time.Time) *keyMetadata {
	if e, ok := l.keys.Get(fp); ok && now.Sub(e.at) < evidenceFresh {
		return e.md
	}
	return nil
}

// needs says which evidence a failure of kind k can use.
func needs(k openrouter.Kind) (key, balance, budgets bool) {
	switch k {
	case openrouter.KindKeyCapHeadroom, openrouter.KindKeyCapSpent, openrouter.KindFreeDaily:
		return true, false, false
	case openrouter.KindCreditsUnscoped:
		return true, true, false
	case openrouter.KindAccountBalance:
		return false, true, false
	case openrouter.KindWorkspaceBudget:
		return false, false, true
	}
	return false, false, false
}

// limitEvidence gathers what the failure of key (kind k) can use, waiting
// at most the failure deadline. Each piece is asked at once and in
// parallel; what is not had in time is left out.
func (k *knowledge) limitEvidence(ctx context.Context, c credential, fp fingerprint, kind openrouter.Kind, now time.Time) limitEvidence {
	var ev limitEvidence
	wantKey, wantBalance, wantBudgets := needs(kind)
	if !c.isKey() {
		// Only a key can be matched to its record, which the balance and
		// the budgets need.
		wantKey, wantBalance, wantBudgets = false, false, false
	}
	if wantKey {
		ev.key = k.limits.known(fp, now)
		wantKey = ev.key == nil
	}
	if !k.acct.hasManagementKey() {
		wantBalance, wantBudgets = false, false
	}
	if !wantKey && !wantBalance && !wantBudgets {
		return ev
	}
	// The deadline is timed by the account's clock, which tests step.
	deadline := k.acct.clock.after(k.limits.timeout)
	var (
		keyDone     <-chan keyAnswer
		balanceDone <-chan singleflight.Result
		budgetsDone <-chan singleflight.Result
	)
	if wantKey {
		keyDone = k.limitKeyLookup(c.token, fp)
	}
	if wantBalance {
		key := c.token
		balanceDone = k.limits.management.DoChan("credits\x00"+string(fp[:]), func() (any, error) {
			lctx, lcancel := context.WithTimeout(k.life, k.timeout)
			defer lcancel()
			return k.acct.keyBalance(lctx, key)
		})
	}
	if wantBudgets {
		key := c.token
		budgetsDone = k.limits.management.DoChan("budgets\x00"+string(fp[:]), func() (any, error) {
			lctx, lcancel := context.WithTimeout(k.life, k.timeout)
			defer lcancel()
			return k.acct.keyBudgets(lctx, key)
		})
	}
	for keyDone != nil || balanceDone != nil || budgetsDone != nil {
		select {
		case <-ctx.Done():
			return ev
		case <-deadline:
			return ev
		case a := <-keyDone:
			keyDone = nil
			ev.key = a.md
		case r := <-balanceDone:
			balanceDone = nil
			if cr, ok := r.Val.(*openrouter.Credits); ok && r.Err == nil && cr != nil {
				ev.balance = ptr(cr.TotalCredits - cr.TotalUsage)
			}
		case r := <-budgetsDone:
			budgetsDone = nil
			if b, ok := r.Val.([]workspaceBudget); ok && r.Err == nil {
				ev.budgets = b
			}
		}
	}
	return ev
}

// limitKeyLookup joins the key's GET /key in flight, or starts one if the
// lookup rate allows and lookups of the key are not backing off after
// failures. The channel yields the answer once (nil when none can be had
// now, which leaves the failure with its body alone).
func (k *knowledge) limitKeyLookup(key string, fp fingerprint) <-chan keyAnswer {
	f, _ := k.lookupKey(key, fp, time.Time{}, true, nil)
	if f == nil {
		return nil
	}
	out := make(chan keyAnswer, 1)
	go func() {
		<-f.done
		out <- f.value
	}()
	return out
}

// workspaceBudget is one budget of GET /workspaces/{id}/budgets.
type workspaceBudget = openrouter.WorkspaceBudget

// ownRecord is key's own record (matched by hash) in the management key's
// account: from a fresh listing, else GET /keys/{hash} within the
// management budget. nil, with the lookup's error if any, when the account
// has no such record.
func (a *account) ownRecord(ctx context.Context, key string) (*keyRecord, error) {
	if l := a.freshListing(); l != nil {
		if m := l.findRecord(key, true); m.record != nil {
			a.proveScheme()
			return m.record, nil
		}
	}
	if !a.management.Allow() {
		return nil, errNoBudget
	}
	rec, res := a.askRecord(ctx, key)
	return rec, res.Err
}

// errNotInAccount means the key's own record is not in the management
// key's account: nothing of that account may be said to its client.
var errNotInAccount = errors.New("the key is not one of the management key's account")

// keyBalance is the account's balance, for a key whose own record is in
// the management key's account: another account's key is never told this
// account's balance.
func (a *account) keyBalance(ctx context.Context, key string) (*openrouter.Credits, error) {
	rec, err := a.ownRecord(ctx, key)
	if rec == nil {
		if err == nil {
			err = errNotInAccount
		}
		return nil, err
	}
	return a.accountCredits(ctx)
}

// keyBudgets finds the budgets of key's workspace: the key's own record,
// then its workspace's budgets. Empty, not nil, when the workspace has
// none.
func (a *account) keyBudgets(ctx context.Context, key string) ([]workspaceBudget, error) {
	rec, err := a.ownRecord(ctx, key)
	if rec == nil {
		if err == nil {
			err = errNotInAccount
		}
		return nil, err
	}
	if rec.WorkspaceID == "" || !a.management.Allow() {
		return nil, errNoBudget
	}
	b, res := a.client.WorkspaceBudgets(ctx, a.managementKey, rec.WorkspaceID)
	if res.Err != nil {
		return nil, res.Err
	}
	if b == nil {
		b = []workspaceBudget{}
	}
	return b, nil
}
