package caddymodule

// account.go owns what is shared about one OpenRouter account (an upstream
// and a management key) by every handler of a Caddy that uses it: the pool
// of accounts, the metadata client, the budget of management requests and
// the rates that set it, the key caches of the gateways (which the key
// check reads), the key watch's link, and the caches of the account's
// credits and the model catalogue. Listings are in listing.go, what GET
// /keys/{hash} reaches and the hash-scheme proof in reach.go, the way to a
// key's record in records.go, the clock and flight in clock.go.

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"golang.org/x/time/rate"
)

// Timing of the account's caches.
const (
	// creditsFresh and modelsFresh are how long the key check reuses the
	// account's credits and the model catalogue.
	creditsFresh = time.Minute
	modelsFresh  = 5 * time.Minute
)

// accounts are shared across handlers and config reloads.
var accounts = caddy.NewUsagePool()

// accountOf loads the account for the options, or makes it: handlers that
// agree on upstream and management key share one, whatever their
// management_rate. The lowest rate of the handlers using the account
// applies to it, so that adding a handler can only make the account ask
// less. release must be called when the handler is cleaned up.
func accountOf(s upstreamSettings) (*account, func(), error) {
	poolKey := fmt.Sprintf("%s|%s", s.base, fingerprintOf(s.managementKey).short())
	v, _, err := accounts.LoadOrNew(poolKey, func() (caddy.Destructor, error) {
		return newAccount(s), nil
	})
	if err != nil {
		return nil, nil, err
	}
	a := v.(*account)
	user := a.useRate(s.managementRate)
	return a, func() {
		a.dropRate(user)
		_, _ = accounts.Delete(poolKey)
	}, nil
}

// useRate records the management_rate of a handler that uses the account
// and applies the lowest; the handler gives the returned id back to
// dropRate when it is cleaned up.
func (a *account) useRate(r float64) uint64 {
	a.ratesMu.Lock()
	defer a.ratesMu.Unlock()
	a.lastUser++
	a.rates[a.lastUser] = r
	a.applyLowestRate()
	return a.lastUser
}

func (a *account) dropRate(user uint64) {
	a.ratesMu.Lock()
	defer a.ratesMu.Unlock()
	delete(a.rates, user)
	if len(a.rates) > 0 {
		a.applyLowestRate()
	}
}

// applyLowestRate sets the management budget to the lowest rate in use;
// a.ratesMu is held.
func (a *account) applyLowestRate() {
	lowest := math.Inf(1)
	for _, r := range a.rates {
		lowest = min(lowest, r)
	}
	a.management.SetLimit(rate.Limit(lowest))
	a.management.SetBurst(max(1, int(2*lowest)))
}

// account is one OpenRouter account as the gateway knows it.
type account struct {
	// clock is where the account, its gateways, their key watch and the
	// key check read the time.
	clock clock

	// life ends when no handler uses the account (Destruct): work the
	// account does for itself (the probe of reach) runs within it.
	life    context.Context
	endLife context.CancelFunc

	client        *openrouter.Client
	managementKey string
	// management bounds management requests made one key at a time
	// (GET /keys/{hash}, GET /credits), whoever asks: no number of
	// failures or anonymous key checks makes more. Its rate is the lowest
	// management_rate among the handlers using the account (rates).
	management *rate.Limiter
	ratesMu    sync.Mutex
	rates      map[uint64]float64 // management_rate per handler using the account
	lastUser   uint64

	// hashProven: a record's hash was seen to be sha256 of its key, so
	// this account's hashes are sha256(key) and labels never identify.
	hashProven atomic.Bool
	// reach is what GET /keys/{hash} was seen to find.
	reach hashReach
	// probeMu guards probe, the last probe of reach (probeReach), and
	// probeNext, the earliest time another may start.
	probeMu   sync.Mutex
	probe     *flight[struct{}]
	probeNext time.Time

	// envelopes seen in the upstream's 401s, per endpoint family.
	envelopes envelopes

	listMu     sync.Mutex
	listing    *keyListing
	listFlight *flight[*keyListing]
	// listNext is the earliest time another listing may start for
	// explanations.
	listNext time.Time

	creditsMu sync.Mutex
	credits   cached[*openrouter.Credits]
	modelsMu  sync.Mutex
	models    cached[[]string]

	cachesMu sync.Mutex
	caches   map[*keyCache]freshness

	// watch is the key watch of a gateway of this account, if one runs.
	watch atomic.Pointer[keyWatch]

	// Misconfiguration is logged once per account.
	warnedKeyEndpoint atomic.Bool
}

// cached is a value read at a time.
type cached[T any] struct {
	at    time.Time
	value T
}

func newAccount(s upstreamSettings) *account {
	life, endLife := context.WithCancel(context.Background())
	return &account{
		life:          life,
		endLife:       endLife,
		client:        newMetadataClient(s.base),
		managementKey: s.managementKey,
		management:    rate.NewLimiter(rate.Limit(s.managementRate), max(1, int(2*s.managementRate))),
		caches:        make(map[*keyCache]freshness),
		rates:         make(map[uint64]float64),
	}
}

// Destruct runs when no handler uses the account any more.
func (a *account) Destruct() error {
	a.endLife()
	a.client.Close()
	return nil
}

// hasManagementKey reports whether the account's records can be read.
func (a *account) hasManagementKey() bool { return a.managementKey != "" }

// attach makes a gateway's cache readable by the key check.
func (a *account) attach(c *keyCache, f freshness) {
	a.cachesMu.Lock()
	a.caches[c] = f
	a.cachesMu.Unlock()
}

func (a *account) detach(c *keyCache) {
	a.cachesMu.Lock()
	delete(a.caches, c)
	a.cachesMu.Unlock()
}

// learned is what each gateway of this account that knows the key has
// learned of it, with the freshness that gateway trusts it for. Gateways
// may trust facts for different times (cache_ttl): the caller weighs all of
// them (agreedVerdict), never one picked by map order.
func (a *account) learned(fp fingerprint) []learnedState {
	a.cachesMu.Lock()
	defer a.cachesMu.Unlock()
	var out []learnedState
	for c, f := range a.caches {
		if st, ok := c.get(fp); ok {
			out = append(out, learnedState{st, f})
		}
	}
	return out
}

// errNoBudget means the management budget is used up right now.
var errNoBudget = notAsked("management", failRefused)

// accountCredits reads the account's credits with the management key,
// reusing a recent read.
func (a *account) accountCredits(ctx context.Context) (*openrouter.Credits, error) {
	a.creditsMu.Lock()
	if c := a.credits; c.value != nil && a.clock.now().Sub(c.at) < creditsFresh {
		a.creditsMu.Unlock()
		return c.value, nil
	}
	a.creditsMu.Unlock()
	if !a.management.Allow() {
		return nil, errNoBudget
	}
	cr, res := a.client.Credits(ctx, a.managementKey)
	if cr == nil {
		return nil, res.Err
	}
	a.creditsMu.Lock()
	a.credits = cached[*openrouter.Credits]{a.clock.now(), cr}
	a.creditsMu.Unlock()
	return cr, nil
}

// modelIDs reads the model catalogue, reusing a recent read.
func (a *account) modelIDs(ctx context.Context) ([]string, error) {
	a.modelsMu.Lock()
	if m := a.models; m.value != nil && a.clock.now().Sub(m.at) < modelsFresh {
		a.modelsMu.Unlock()
		return m.value, nil
	}
	a.modelsMu.Unlock()
	ids, res := a.client.ModelIDs(ctx)
	if res.Err != nil {
		return nil, res.Err
	}
	a.modelsMu.Lock()
	a.models = cached[[]string]{a.clock.now(), ids}
	a.modelsMu.Unlock()
	return ids, nil
}
