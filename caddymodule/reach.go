package caddymodule

// reach.go owns GET /keys/{hash} for the account: asking it for a key's
// record (askRecord), what it was seen to reach (hashReach), what its 404
// proves (absentByHash), the account's workspaces as read for it, the probe
// of reach (proveReach, probeReach), and the proof of the hash scheme with
// its one writer (proveScheme).

import (
	"context"
	"encoding/hex"
	"sync"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

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

// workspacesFresh is how long the account's workspaces, as read for an
// absence proven by GET /keys/{hash}, are trusted.
const workspacesFresh = time.Minute

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
	if !a.schemeProven.Load() {
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
		l := listed.listing(wss, since, a.clock.now(), true)
		if found := l.findRecord(key, true); !found.absent {
			return found, found.record != nil
		}
		m.listStarted = minTime(m.listStarted, since)
	}
	return m, true
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
	wss, err := a.client.Workspaces(ctx, a.managementKey, maxWorkspaces)
	if err != nil {
		return nil, time.Time{}, err
	}
	r.keepWorkspaces(wss, started)
	return wss, started, nil
}

// keepWorkspaces keeps the account's workspaces as read from at (by
// readWorkspaces, or a complete listing), unless those kept are newer.
func (r *hashReach) keepWorkspaces(wss []workspace, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current.value == nil || !at.Before(r.current.at) {
		r.current = cached[[]workspace]{at, wss}
	}
}

// proveReach asks GET /keys/{hash}, as far as the management budget
// allows now, for one record of each workspace the lookup has not been
// seen to reach and for a disabled record, taken from a listing just read
// of an account whose hashes are sha256(key); after that a 404 answers for
// the account without another listing.
func (a *account) proveReach(ctx context.Context, l *keyListing) {
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
		if rec, _ := a.client.KeyRecord(ctx, a.managementKey, hex.EncodeToString(e.hash[:])); rec != nil {
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
	if !a.schemeProven.Load() || a.reach.complete() {
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
		var walk openrouter.KeysWalk
		for !walk.Ended() && walk.Pages() < probePages {
			r.mu.Lock()
			reached, disabled := r.workspaces[ws.ID], r.disabled
			r.mu.Unlock()
			if reached && disabled {
				break
			}
			if err := a.probeWait(ctx); err != nil {
				return err
			}
			page, err := a.client.KeysPage(ctx, a.managementKey, ws.ID, walk.Next())
			if err != nil {
				return err
			}
			// A shift costs the probe nothing: any record of the
			// workspace serves.
			recs, _ := walk.Take(page)
			if err := a.askForReach(ctx, recs, !reached, !disabled); err != nil {
				return err
			}
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
		case <-a.clock.after(time.Duration(float64(time.Second) / float64(limit))):
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
		got, _ := a.client.KeyRecord(ctx, a.managementKey, rec.Hash)
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

// proveScheme is the one writer of the proof that the account's record
// hashes are sha256(key) (a record matched by hash, the management key's
// own record in a listing, a 402 or 403 holding its key's record hash, or
// the proof of another replica): labels never identify a key after it.
// The first time, it gives the proof to the shared store of each gateway
// of the account, for the other replicas, and starts a probe of what GET
// /keys/{hash} reaches.
func (a *account) proveScheme() {
	if a.schemeProven.Swap(true) {
		return
	}
	for _, g := range a.linked() {
		if g.shared != nil {
			g.shared.storeSchemeProof()
		}
	}
	a.probeReach()
}

// askRecord asks GET /keys/{hash} for key's own record, the management
// budget taken by the caller. A record found proves the hash scheme and
// that the lookup reaches its workspace.
func (a *account) askRecord(ctx context.Context, key string) (*keyRecord, openrouter.Result) {
	rec, res := recordByHash(ctx, a.client, a.managementKey, key)
	if rec != nil {
		a.reach.found(rec)
		a.proveScheme()
	}
	return rec, res
}

// recordByHash asks GET /keys/{hash} for the record whose hash is
// sha256(key). A 404 is a normal answer: the key may be of another account,
// deleted, or the account's hashes may be something else.
func recordByHash(ctx context.Context, c *openrouter.Client, managementKey, key string) (*keyRecord, openrouter.Result) {
	return c.KeyRecord(ctx, managementKey, openrouter.RecordHashOf(key))
}
