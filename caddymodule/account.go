package caddymodule

// account.go owns what is shared about one OpenRouter account (an upstream
// and a management key) by every handler of a Caddy that uses it: the
// metadata client, the budget of management requests, the listing and its
// cache, the proofs of the hash scheme and of what GET /keys/{hash}
// reaches, the envelopes seen, and the key caches of the gateways, which
// the key check reads.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/time/rate"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Timing of the management listing.
const (
	// listingFresh is how long a listing serves explanations: a burst of
	// failures reads it once.
	listingFresh = time.Minute
	// listingTimeout is a listing's own deadline, separate from any
	// request's: a request waits for it at most its lookup_timeout, and
	// the listing goes on, to serve the next failure. A million keys are
	// about 10,000 pages: minutes at OpenRouter's pace.
	listingTimeout = 10 * time.Minute
	// listingRetry is the least time between two listings started for
	// explanations, so that failures cannot make the gateway list the
	// account over and over; after a long listing, the pause is as long
	// as the listing took.
	listingRetry = 30 * time.Second
	// workspacesFresh is how long the account's workspaces, as read for
	// an absence proven by GET /keys/{hash}, are trusted.
	workspacesFresh = time.Minute
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

// recordsFor finds what the account's records say of key, within ctx:
// a fresh listing's index; GET /keys/{hash}, whose 404 proves the key
// absent once the lookup is proven to reach every workspace (absentByHash);
// then a listing. lifetime bounds work that outlives the caller (a
// listing). A record matched by hash proves the hash scheme. seen is when
// the key was first seen: only a listing started after it can prove the
// key absent, so an older one is read again when it may be.
func (a *account) recordsFor(lifetime, ctx context.Context, key string, seen time.Time) (match, error) {
	if l := a.freshListing(); l != nil {
		if m := l.findRecord(key, a.hashProven.Load()); m.record != nil {
			a.proveScheme()
			// A record that does not explain the refusal saw the key
			// working, a minute ago at most: its own record may say more
			// now, if it can be asked.
			if explainsRefusal(m.record, a.clock.now()) || !a.management.Allow() {
				return m, nil
			}
			return a.askByHash(lifetime, ctx, key, seen)
		}
	}
	if !a.management.Allow() {
		return a.listed(lifetime, ctx, key, seen, errNoBudget)
	}
	return a.askByHash(lifetime, ctx, key, seen)
}

// askByHash asks GET /keys/{hash} (its budget taken), then a listing
// when the answer proves nothing.
func (a *account) askByHash(lifetime, ctx context.Context, key string, seen time.Time) (match, error) {
	asked := a.clock.now()
	rec, res := recordByHash(ctx, a.client, a.managementKey, key)
	if rec != nil {
		a.reach.found(rec)
		a.proveScheme()
		return match{record: rec, workspace: a.workspaceName(ctx, rec.WorkspaceID), listStarted: asked}, nil
	}
	if res.err == nil && res.status == http.StatusNotFound {
		if m, ok := a.absentByHash(ctx, key, asked, seen); ok {
			return m, nil
		}
		a.probeReach()
	}
	return a.listed(lifetime, ctx, key, seen, res.err)
}

// workspaceName names a workspace for people: from the last listing, or
// the workspaces last read, or read now if the management budget allows.
func (a *account) workspaceName(ctx context.Context, id string) string {
	if l := a.lastListing(); l != nil {
		return l.workspaceName(id)
	}
	wss, _, err := a.workspaces(ctx, time.Time{})
	if err != nil {
		return id
	}
	return (&keyListing{workspaces: wss}).workspaceName(id)
}

// workspaces are the account's workspaces, as read after since, or read
// now if the management budget allows.
func (a *account) workspaces(ctx context.Context, since time.Time) ([]workspace, time.Time, error) {
	r := &a.reach
	r.mu.Lock()
	cur := r.current
	r.mu.Unlock()
	if cur.value != nil && cur.at.After(since) {
		return cur.value, cur.at, nil
	}
	if !a.management.Allow() {
		return nil, time.Time{}, errNoBudget
	}
	return a.readWorkspaces(ctx)
}

// readWorkspaces reads the account's workspaces now, its management
// budget taken, and keeps them for workspaces.
func (a *account) readWorkspaces(ctx context.Context) ([]workspace, time.Time, error) {
	r := &a.reach
	// The list's time is when it began to be read: a workspace created
	// while it was read may be missing from it.
	started := a.clock.now()
	wss, err := readWorkspaces(ctx, a.client, a.managementKey)
	if err != nil {
		return nil, time.Time{}, err
	}
	r.mu.Lock()
	r.current = cached[[]workspace]{started, wss}
	r.mu.Unlock()
	return wss, started, nil
}

// listed is what a listing says of key; lastErr is why nothing cheaper
// answered.
func (a *account) listed(lifetime, ctx context.Context, key string, seen time.Time, lastErr error) (match, error) {
	l, err := a.currentListing(lifetime, ctx, seen)
	if err != nil {
		return match{}, errors.Join(lastErr, err)
	}
	m := l.findRecord(key, a.hashProven.Load())
	a.proveHash(m)
	return m, nil
}

// explainsRefusal reports whether a record says its key is refused:
// disabled, or expired.
func explainsRefusal(r *keyRecord, now time.Time) bool {
	return r.Disabled || r.ExpiresAt != nil && !now.Before(*r.ExpiresAt)
}

// completeRecord replaces a record from a listing's index (no name, no
// limits) by the key's own record from GET /keys/{hash}, when the
// management budget allows; otherwise m is returned as it is.
func (a *account) completeRecord(ctx context.Context, key string, m match) match {
	if m.record == nil || !m.partial || !a.management.Allow() {
		return m
	}
	if rec, _ := recordByHash(ctx, a.client, a.managementKey, key); rec != nil {
		a.reach.found(rec)
		m.record, m.partial = rec, false
	}
	return m
}

// hashReach is what GET /keys/{hash} was seen to find in this account:
// records of which workspaces, and whether disabled ones. The lookup takes
// no workspace_id, and management keys act across workspaces, but nothing
// documents that it finds a key of every workspace, nor disabled keys; so
// its 404 answers only for the workspaces it was seen to reach, and only
// once it was seen to find a disabled key.
type hashReach struct {
	mu         sync.Mutex
	workspaces map[string]bool
	disabled   bool
	// current is the account's workspaces as read last (for absentByHash
	// and workspace names).
	current cached[[]workspace]
}

// found records that GET /keys/{hash} found rec.
func (r *hashReach) found(rec *keyRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec.WorkspaceID != "" && len(r.workspaces) < maxWorkspaces {
		if r.workspaces == nil {
			r.workspaces = make(map[string]bool)
		}
		r.workspaces[rec.WorkspaceID] = true
	}
	r.disabled = r.disabled || rec.Disabled
}

// smallWorkspacePages bounds the listing of one workspace that GET
// /keys/{hash} has not been seen to reach (an empty one, or one created
// since the last listing), read to complete a 404's evidence.
const smallWorkspacePages = 5

// absentByHash says what a 404 of GET /keys/{hash} for key, just
// answered, proves: with the hash scheme proven and the lookup seen to
// find a disabled key, the key is absent from every workspace the lookup
// was seen to reach; each other workspace of the account (as read at most
// workspacesFresh ago) is listed now, if it is small, and must not have
// the key either. ok is false when that evidence cannot be had. The
// workspaces are read after seen, when the key was first seen: a key
// existed then, and so did its workspace, so a list read before it could
// miss the workspace of a key created since.
func (a *account) absentByHash(ctx context.Context, key string, asked, seen time.Time) (m match, ok bool) {
	if !a.hashProven.Load() {
		return match{}, false
	}
	r := &a.reach
	r.mu.Lock()
	ready := r.disabled
	r.mu.Unlock()
	if !ready {
		return match{}, false
	}
	wss, readAt, err := a.workspaces(ctx, maxTime(a.clock.now().Add(-workspacesFresh), seen))
	if err != nil {
		return match{}, false
	}
	m = match{absent: true, listStarted: minTime(asked, readAt)}
	for i, ws := range wss {
		r.mu.Lock()
		reached := r.workspaces[ws.ID]
		r.mu.Unlock()
		if reached {
			continue
		}
		if !a.management.Allow() {
			return match{}, false
		}
		listed, since := newIndexBuilder(len(wss)), a.clock.now()
		budget := smallWorkspacePages
		var mu sync.Mutex
		if err := readWorkspaceKeys(ctx, a.client, a.managementKey, ws.ID, i, listed, make(chan struct{}, 1), &mu, &budget); err != nil {
			return match{}, false
		}
		l := listed.listing(wss, since, true)
		if found := l.findRecord(key, true); !found.absent {
			return found, found.record != nil
		}
		m.listStarted = minTime(m.listStarted, since)
	}
	return m, true
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// proveReach asks GET /keys/{hash}, as far as the management budget
// allows now, for one record of each workspace the lookup has not been
// seen to reach and for a disabled record, taken from a complete listing
// just read; after that a 404 answers for the account without another
// listing.
func (a *account) proveReach(ctx context.Context, l *keyListing) {
	if !a.hashProven.Load() {
		return
	}
	r := &a.reach
	r.mu.Lock()
	probes := make(map[uint16]*indexEntry)
	var disabled *indexEntry
	for i := range l.entries {
		e := &l.entries[i]
		if e.flags&entryHashed == 0 {
			continue
		}
		if !r.disabled && disabled == nil && e.flags&entryDisabled != 0 {
			disabled = e
		}
		if id := l.workspaces[e.workspace].ID; id != "" && !r.workspaces[id] && probes[e.workspace] == nil {
			probes[e.workspace] = e
		}
	}
	r.mu.Unlock()
	if disabled != nil {
		probes[disabled.workspace] = disabled
	}
	for _, e := range probes {
		if !a.management.Allow() {
			return
		}
		if rec, _ := recordWithHash(ctx, a.client, a.managementKey, hex.EncodeToString(e.hash[:])); rec != nil {
			r.found(rec)
		}
	}
}

// Bounds of a probe of reach (probeReach).
const (
	// probePages is how many pages of one workspace a probe reads at
	// most, looking for a disabled record.
	probePages = 3
	// probeTimeout is a probe's own deadline.
	probeTimeout = time.Minute
)

// complete reports whether GET /keys/{hash} was seen to find a disabled
// record and records of every workspace as read last.
func (r *hashReach) complete() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.disabled || r.current.value == nil {
		return false
	}
	for _, ws := range r.current.value {
		if !r.workspaces[ws.ID] {
			return false
		}
	}
	return true
}

// probeReach starts, in the background within the account's life, a probe of what
// GET /keys/{hash} reaches, when the hash scheme is proven and the reach is
// not: so that a 404 can prove a key absent without a listing of the whole
// account. One probe runs at a time, at most one per listingRetry, and
// each of its requests waits for the management budget; no request waits
// for it.
func (a *account) probeReach() {
	if !a.hashProven.Load() || a.reach.complete() {
		return
	}
	a.probeMu.Lock()
	defer a.probeMu.Unlock()
	now := a.clock.now()
	if now.Before(a.probeNext) {
		return
	}
	if a.probe != nil {
		select {
		case <-a.probe.done:
		default:
			return
		}
	}
	f := newFlight[struct{}](now)
	a.probe, a.probeNext = f, now.Add(listingRetry)
	go func() {
		ctx, cancel := context.WithTimeout(a.life, probeTimeout)
		defer cancel()
		f.finish(struct{}{}, a.probeWorkspaces(ctx))
	}()
}

// probeWorkspaces reads the account's workspaces and, in each one the
// lookup has not been seen to reach, the first page of keys, and asks GET
// /keys/{hash} for one record of it; while no disabled record was seen
// found, it reads up to probePages pages of each workspace for one and
// asks for it too.
func (a *account) probeWorkspaces(ctx context.Context) error {
	if err := a.probeWait(ctx); err != nil {
		return err
	}
	wss, _, err := a.readWorkspaces(ctx)
	if err != nil {
		return err
	}
	r := &a.reach
	for _, ws := range wss {
		for page, offset := 0, 0; page < probePages; page++ {
			r.mu.Lock()
			reached, disabled := r.workspaces[ws.ID], r.disabled
			r.mu.Unlock()
			if reached && disabled {
				break
			}
			if err := a.probeWait(ctx); err != nil {
				return err
			}
			recs, err := readKeysPage(ctx, a.client, a.managementKey, ws.ID, offset)
			if err != nil {
				return err
			}
			if err := a.askForReach(ctx, recs, !reached, !disabled); err != nil {
				return err
			}
			if len(recs) < openrouter.KeysPageSize {
				break
			}
			offset += len(recs)
		}
	}
	return nil
}

// probeWait takes a request of the management budget for the probe once
// the budget holds more than half its burst: the probe never leaves the
// failures it serves without the budget they need.
func (a *account) probeWait(ctx context.Context) error {
	limit, burst := a.management.Limit(), float64(a.management.Burst())
	if limit <= 0 {
		return errNoBudget
	}
	for a.management.Tokens() < min(burst, burst/2+1) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(float64(time.Second) / float64(limit))):
		}
	}
	return a.management.Wait(ctx)
}

// askForReach asks GET /keys/{hash} for the first hashed record of recs,
// if any is wanted, and for the first disabled one, if wanted, recording
// what it finds.
func (a *account) askForReach(ctx context.Context, recs []keyRecord, anyWanted, disabledWanted bool) error {
	for i := range recs {
		rec := &recs[i]
		wanted := anyWanted || disabledWanted && rec.Disabled
		if !wanted || indexEntryOf(rec, 0).flags&entryHashed == 0 {
			continue
		}
		if err := a.probeWait(ctx); err != nil {
			return err
		}
		// One request for each wanted record: a record deleted since the
		// page was read leaves the want for the next probe.
		got, _ := recordWithHash(ctx, a.client, a.managementKey, rec.Hash)
		if got != nil {
			a.reach.found(got)
		}
		anyWanted = false
		disabledWanted = disabledWanted && !rec.Disabled
		if !anyWanted && !disabledWanted {
			return nil
		}
	}
	return nil
}

// proveHash records that a record was matched by hash.
func (a *account) proveHash(m match) {
	if m.record != nil {
		a.proveScheme()
	}
}

// proveScheme records that a record was matched by sha256(key): the
// account's hashes are sha256(key). The first time, it starts a probe of
// what GET /keys/{hash} reaches.
func (a *account) proveScheme() {
	if !a.hashProven.Swap(true) {
		a.probeReach()
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
	case f == nil && !now.Before(a.listNext):
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

// startListing starts reading the listing; a.listMu is held. Once read,
// the listing proves the hash scheme if it has the management key's own
// record, and serves to prove what GET /keys/{hash} reaches.
func (a *account) startListing(lifetime context.Context) *flight[*keyListing] {
	f := newFlight[*keyListing](a.clock.now())
	a.listFlight, a.listNext = f, f.started.Add(listingRetry)
	go func() {
		ctx, cancel := context.WithTimeout(lifetime, listingTimeout)
		defer cancel()
		l, err := readListing(ctx, a.client, a.managementKey)
		if err == nil {
			if _, ok := l.byHash(sha256.Sum256([]byte(a.managementKey))); ok {
				a.hashProven.Store(true)
			}
			a.proveReach(ctx, l)
		}
		a.listMu.Lock()
		if err == nil {
			l.startedAt, l.readAt = f.started, a.clock.now()
			a.listing = l
		}
		if now := a.clock.now(); now.Sub(f.started) > listingRetry {
			a.listNext = now.Add(now.Sub(f.started))
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
