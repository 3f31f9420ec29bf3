package caddymodule

// account.go owns what is shared about one OpenRouter account (an upstream
// and a management key) by every handler of a Caddy that uses it: the pool
// of accounts, the metadata client, the budget of management requests and
// the rates that set it, the links of its gateways (what they learned of
// keys, their key watch and shared store, for the key check and for proofs
// about the account), and the caches of the account's credits and the
// model catalogue. Listings are listing.go's, what GET /keys/{hash}
// reaches and the proof of the hash scheme reach.go's, the way to a key's
// record records.go's, the clock and flight clock.go's.

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
	// clock is where the account, its gateways, their key watch and
	// shared store, and the key check read the time and time their waits.
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

	// schemeProven: a record's hash was seen to be sha256 of its key, so
	// this account's hashes are sha256(key) and labels never identify.
	// proveScheme is its one writer.
	schemeProven atomic.Bool
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

	// links are the account's gateways, each linked while its config is
	// loaded (link).
	linksMu sync.Mutex
	links   map[*gatewayLink]struct{}

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
		links:         make(map[*gatewayLink]struct{}),
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

// gatewayLink is what one gateway (one openrouter_keys handler in one
// config) lends the other users of its account, from its Provision to its
// Cleanup: what it learned of keys, which the key check reads under the
// freshness the gateway trusts; its key watch, which saw keys used; and its
// shared store, through which a proof about the account reaches the other
// replicas. A reload's new gateway keeps the old one's cache under a link
// of its own: the old one's cleanup ends only its own.
type gatewayLink struct {
	cache  *keyCache
	fresh  freshness
	shared *sharedStore // nil without shared_storage
	watch  *keyWatch    // nil without watch_keys
	// retirement is what the gateway saw keys use of models about to
	// retire (retirement.go); nil with warn_model_retirement off.
	retirement *modelRetirement
}

// link makes a gateway's link known to the account's other users until
// unlink is called. A proof of the hash scheme made before goes to the
// gateway's shared store now.
func (a *account) link(g *gatewayLink) (unlink func()) {
	a.linksMu.Lock()
	a.links[g] = struct{}{}
	a.linksMu.Unlock()
	if g.shared != nil && a.schemeProven.Load() {
		g.shared.storeSchemeProof()
	}
	return func() {
		a.linksMu.Lock()
		delete(a.links, g)
		a.linksMu.Unlock()
	}
}

// linked is the account's gateways now.
func (a *account) linked() []*gatewayLink {
	a.linksMu.Lock()
	defer a.linksMu.Unlock()
	out := make([]*gatewayLink, 0, len(a.links))
	for g := range a.links {
		out = append(out, g)
	}
	return out
}

// learned is what each gateway of this account that knows the key has
// learned of it, with the freshness that gateway trusts it for. Gateways
// may trust facts for different times (cache_ttl): the caller weighs all of
// them (agreedVerdict), never one picked by map order.
func (a *account) learned(fp fingerprint) []learnedState {
	var out []learnedState
	for _, g := range a.linked() {
		if st, ok := g.cache.get(fp); ok {
			out = append(out, learnedState{st, g.fresh})
		}
	}
	return out
}

// lastUsed is when a key watch of a gateway of this account last saw the
// key of a record hash used, the latest of them.
func (a *account) lastUsed(recordHashOf string) (time.Time, bool) {
	var last time.Time
	for _, g := range a.linked() {
		if g.watch == nil {
			continue
		}
		if at, ok := g.watch.lastUsed(recordHashOf); ok && at.After(last) {
			last = at
		}
	}
	return last, !last.IsZero()
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
