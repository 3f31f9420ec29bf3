package caddymodule

// account.go owns what is shared about one OpenRouter account (an upstream
// and a management key) by every handler of a Caddy that uses it: the
// metadata client, the budget of management requests, the listing and its
// cache, the proof of the hash scheme, the envelopes seen, and the key
// caches of the gateways, which the key check reads.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/time/rate"

	"github.com/openrouter-keys/caddy-openrouter-keys/caddymodule/openrouter"
)

// Timing of the management listing.
const (
	// listingFresh is how long a listing serves explanations: a burst of
	// failures reads it once.
	listingFresh = time.Minute
	// listingTimeout is a listing's own deadline, separate from any
	// request's: a request waits for it at most its lookup_timeout, and
	// the listing goes on, to serve the next failure.
	listingTimeout = 2 * time.Minute
	// listingRetry is the least time between two listings started for
	// explanations, so that failures cannot make the gateway list the
	// account over and over.
	listingRetry = 30 * time.Second
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

	client        *metadataClient
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

	// envelopes seen in the upstream's 401s, per endpoint family.
	envelopes envelopes

	listMu        sync.Mutex
	listing       *keyListing
	listFlight    *flight[*keyListing]
	listStartedAt time.Time // of the last listing started

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
	return &account{
		client:        newMetadataClient(s.base),
		managementKey: s.managementKey,
		management:    rate.NewLimiter(rate.Limit(s.managementRate), max(1, int(2*s.managementRate))),
		caches:        make(map[*keyCache]freshness),
		rates:         make(map[uint64]float64),
	}
}

// Destruct runs when no handler uses the account any more.
func (a *account) Destruct() error {
	a.client.close()
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
var errNoBudget = &lookupError{endpoint: "management", kind: failRefused}

// recordsFor finds what the account's records say of key, within ctx.
// lifetime bounds work that outlives the caller (a listing). A record
// matched by hash proves the hash scheme. seen is when the key was first
// seen: only a listing started after it can prove the key absent, so an
// older one is read again when it may be.
func (a *account) recordsFor(lifetime, ctx context.Context, key string, seen time.Time) (match, error) {
	if l := a.freshListing(); l != nil {
		if m := l.findRecord(key, a.hashProven.Load()); m.record != nil {
			a.hashProven.Store(true)
			return m, nil
		}
	}
	var lastErr error
	if a.management.Allow() {
		rec, res := recordByHash(ctx, a.client, a.managementKey, key)
		if rec != nil {
			a.hashProven.Store(true)
			m := match{record: rec, workspace: rec.WorkspaceID}
			if l := a.lastListing(); l != nil {
				m.workspace = l.workspaceName(rec.WorkspaceID)
			}
			return m, nil
		}
		lastErr = res.err
	} else {
		lastErr = errNoBudget
	}
	l, err := a.currentListing(lifetime, ctx, seen)
	if err != nil {
		return match{}, errors.Join(lastErr, err)
	}
	m := l.findRecord(key, a.hashProven.Load())
	a.proveHash(m)
	return m, nil
}

// proveHash records that a record was matched by hash.
func (a *account) proveHash(m match) {
	if m.record != nil {
		a.hashProven.Store(true)
	}
}

// lastListing is the last listing read, however old.
func (a *account) lastListing() *keyListing {
	a.listMu.Lock()
	defer a.listMu.Unlock()
	return a.listing
}

// freshListing is the cached listing while it is fresh.
func (a *account) freshListing() *keyListing {
	a.listMu.Lock()
	defer a.listMu.Unlock()
	if a.listing != nil && a.clock.now().Sub(a.listing.readAt) < listingFresh {
		return a.listing
	}
	return nil
}

// errListingPaused means a listing was started moments ago and failed.
var errListingPaused = &lookupError{endpoint: endpointKeysList, kind: failRefused}

// currentListing returns a fresh listing started at or after since,
// reading one when there is none: once, however many callers ask at the
// same time, at most once per listingRetry, under its own deadline within
// lifetime. The caller waits for it until ctx is done. While no new listing
// may start, a fresh older one (or one in flight) is returned: it can
// still find records, though not prove a key absent.
func (a *account) currentListing(lifetime, ctx context.Context, since time.Time) (*keyListing, error) {
	now := a.clock.now()
	a.listMu.Lock()
	fresh := a.listing
	if fresh != nil && now.Sub(fresh.readAt) >= listingFresh {
		fresh = nil
	}
	if fresh != nil && !fresh.startedAt.Before(since) {
		a.listMu.Unlock()
		return fresh, nil
	}
	f := a.listFlight
	switch {
	case f != nil && !f.started.Before(since):
	case f == nil && now.Sub(a.lastListingStart()) >= listingRetry:
		f = a.startListing(lifetime)
	case fresh != nil:
		a.listMu.Unlock()
		return fresh, nil
	case f == nil:
		a.listMu.Unlock()
		return nil, errListingPaused
	}
	a.listMu.Unlock()
	return f.wait(ctx)
}

// lastListingStart is when the last listing started (zero: never); listMu
// is held.
func (a *account) lastListingStart() time.Time {
	if a.listFlight != nil {
		return a.listFlight.started
	}
	return a.listStartedAt
}

// refreshListing reads the listing now, for the key watch, whatever the
// age of the cached one, joining a listing in flight.
func (a *account) refreshListing(lifetime context.Context) (*keyListing, error) {
	a.listMu.Lock()
	f := a.listFlight
	if f == nil {
		f = a.startListing(lifetime)
	}
	a.listMu.Unlock()
	return f.wait(lifetime)
}

// startListing starts reading the listing; a.listMu is held.
func (a *account) startListing(lifetime context.Context) *flight[*keyListing] {
	f := newFlight[*keyListing](a.clock.now())
	a.listFlight, a.listStartedAt = f, f.started
	go func() {
		ctx, cancel := context.WithTimeout(lifetime, listingTimeout)
		defer cancel()
		l, err := readListing(ctx, a.client, a.managementKey)
		a.listMu.Lock()
		if err == nil {
			l.startedAt, l.readAt = f.started, a.clock.now()
			a.listing = l
			if _, ok := l.byHash[recordHash(a.managementKey)]; ok {
				a.hashProven.Store(true)
			}
		}
		a.listFlight = nil
		a.listMu.Unlock()
		f.finish(l, err)
	}()
	return f
}

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
	cr, res := a.client.credits(ctx, a.managementKey)
	if cr == nil {
		return nil, res.err
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
	ids, res := a.client.modelIDs(ctx)
	if res.err != nil {
		return nil, res.err
	}
	a.modelsMu.Lock()
	a.models = cached[[]string]{a.clock.now(), ids}
	a.modelsMu.Unlock()
	return ids, nil
}

// flight is one piece of work that several callers wait for, each until
// its own context is done; the work runs to its own deadline whoever
// stops waiting.
type flight[T any] struct {
	done    chan struct{}
	started time.Time
	value   T
	err     error
}

func newFlight[T any](started time.Time) *flight[T] {
	return &flight[T]{done: make(chan struct{}), started: started}
}

func (f *flight[T]) finish(v T, err error) {
	f.value, f.err = v, err
	close(f.done)
}

// wait returns the flight's result, or a cancelled or timed-out lookup
// error when ctx ends first.
func (f *flight[T]) wait(ctx context.Context) (T, error) {
	select {
	case <-f.done:
		return f.value, f.err
	case <-ctx.Done():
		var zero T
		return zero, &lookupError{endpoint: "wait", kind: transportFailure(ctx, ctx.Err())}
	}
}

// clock tells the time and times waits: the system's, unless a test set
// another. It is read on every request, so it is one atomic load.
type clock struct {
	set atomic.Pointer[func() time.Time]
	// timer times the key watch's waits between reads and a limit
	// failure's wait for evidence, from the same source as now, so that a
	// test moving the time steps them.
	timer atomic.Pointer[func(time.Duration) <-chan time.Time]
}

func (c *clock) now() time.Time {
	if f := c.set.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// after is a channel that receives the time once d has passed.
func (c *clock) after(d time.Duration) <-chan time.Time {
	if f := c.timer.Load(); f != nil {
		return (*f)(d)
	}
	return time.After(d)
}
