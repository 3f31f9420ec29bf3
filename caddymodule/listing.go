package caddymodule

// listing.go owns listings of the account's keys: their timing, the cached
// listing and the flight that reads it (lastListing, freshListing,
// currentListing with its rule for small accounts, startListing, listed),
// and the reader that pages through every workspace's keys and checks that
// nothing shifted (readListing, readWorkspaceKeys, over
// openrouter.KeysWalk).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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
)

// listed is what a listing says of key; lastErr is why nothing cheaper
// answered.
func (a *account) listed(lifetime, ctx context.Context, key string, seen time.Time, lastErr error) (match, error) {
	l, err := a.currentListing(lifetime, ctx, seen)
	if err != nil {
		return match{}, errors.Join(lastErr, err)
	}
	m := l.findRecord(key, a.schemeProven.Load())
	if m.record != nil {
		a.proveScheme()
	}
	return m, nil
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
var errListingPaused = notAsked(endpointKeysList, failRefused)

// currentListing returns a fresh listing started at or after since,
// reading one when there is none: once, however many callers ask at the
// same time, under its own deadline within lifetime; at most once per
// listingRetry, unless the account is small enough that reading it again
// fits in the caller's wait and the management budget (listingFits). The
// caller waits for it until ctx is done. While no new listing may start, a
// fresh older one (or one in flight) is returned: it can still find
// records, though not prove a key absent.
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
	case f == nil && !now.Before(a.listNext), a.listingFits(ctx):
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

// listingFits reports whether a listing may start at once for a key first
// seen after the last one began, before listingRetry has passed: the
// account is small, so that reading it again fits in what is left of the
// caller's wait (ctx, the request's lookup_timeout) and in the management
// budget, which it takes. The last listing, if complete, tells the cost:
// the requests it took and how long. A large account (a listing of more
// requests than the budget's burst, or longer than the wait) keeps the
// pause. a.listMu is held.
func (a *account) listingFits(ctx context.Context) bool {
	last := a.listing
	if last == nil || !last.complete || last.requests == 0 {
		return false
	}
	// A context's deadline is on the system's clock.
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < last.readAt.Sub(last.startedAt) {
		return false
	}
	return a.management.AllowN(time.Now(), last.requests)
}

// startListing starts reading the listing; a.listMu is held. Another
// listing may be in flight (listingFits): the newest read is kept. Once
// read, a complete listing's workspaces serve absentByHash; the listing
// proves the hash scheme if it has the management key's own record, and
// with the scheme proven serves to prove what GET /keys/{hash} reaches.
func (a *account) startListing(lifetime context.Context) *flight[*keyListing] {
	f := newFlight[*keyListing](a.clock.now())
	a.listFlight, a.listNext = f, f.started.Add(listingRetry)
	go func() {
		ctx, cancel := context.WithTimeout(lifetime, listingTimeout)
		defer cancel()
		l, err := readListing(ctx, a.client, a.managementKey, &a.clock)
		if err == nil {
			if l.complete {
				a.reach.keepWorkspaces(l.workspaces, l.startedAt)
			}
			_, own := l.byHash(openrouter.RecordHashSum(a.managementKey))
			if own || a.schemeProven.Load() {
				a.proveReach(ctx, l)
			}
			if own {
				a.proveScheme()
			}
		}
		a.listMu.Lock()
		if err == nil && (a.listing == nil || !l.startedAt.Before(a.listing.startedAt)) {
			a.listing = l
		}
		if now := a.clock.now(); now.Sub(f.started) > listingRetry {
			a.listNext = now.Add(now.Sub(f.started))
		}
		if a.listFlight == f {
			a.listFlight = nil
		}
		a.listMu.Unlock()
		f.finish(l, err)
	}()
	return f
}

// Limits of a listing.
const (
	// maxListPages bounds a listing across all workspaces (about 2.5
	// million keys, an index of about 130 MB); past it the listing is
	// incomplete.
	maxListPages = 25000
	// maxWorkspaces bounds the workspaces a listing reads; an account
	// with more is listed without them, and absence is never proven.
	maxWorkspaces = 1000
	// listConcurrency is how many pages are read at once.
	listConcurrency = 8
)

// errListingShifted means records moved between pages while the listing
// was read (a key created or deleted meanwhile): the listing proves nothing
// about absence.
var errListingShifted = errors.New("the listing changed while it was read")

// readListing reads every workspace and every page of each, and checks that
// nothing shifted, keeping an index of the records. A listing that cannot
// be proven complete is returned with complete false (it can still find
// records by hash), or an error when nothing usable was read. Its start and
// end are stamped by clk.
func readListing(ctx context.Context, c *openrouter.Client, managementKey string, clk *clock) (*keyListing, error) {
	startedAt := clk.now()
	complete := true
	wss, err := c.Workspaces(ctx, managementKey, maxWorkspaces)
	if err != nil {
		if failureOf(err) == failCancelled {
			return nil, err
		}
		// Without the workspaces, the default one is all that can be read,
		// and absence cannot be proven.
		complete = false
		wss = []workspace{{}}
	}
	index := newIndexBuilder(len(wss))

	var (
		mu     sync.Mutex
		errs   []error
		wg     sync.WaitGroup
		sem    = make(chan struct{}, listConcurrency)
		budget = maxListPages
	)
	for i, ws := range wss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := readWorkspaceKeys(ctx, c, managementKey, ws.ID, i, index, sem, &mu, &budget)
			if errors.Is(err, errListingShifted) {
				// Keys come and go: a second read usually finds a quiet
				// moment.
				index.restart(i)
				err = readWorkspaceKeys(ctx, c, managementKey, ws.ID, i, index, sem, &mu, &budget)
			}
			if err != nil {
				// What was read of it still finds records by hash.
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	l := index.listing(wss, startedAt, clk.now(), complete && len(errs) == 0)
	// Pages of keys read, and of workspaces until an empty one.
	l.requests = maxListPages - budget + openrouter.WorkspacesRequests(len(wss))
	if len(errs) > 0 && (l.size() == 0 || failureOf(errs[0]) == failCancelled) {
		return nil, errs[0]
	}
	return l, nil
}

// readWorkspaceKeys reads one workspace's keys in overlapping pages
// (openrouter.KeysWalk), a wave of listConcurrency pages at a time, until
// an empty page, indexing each page's new records once its overlap with
// the page before is checked; then reads the first page again, which must
// be unchanged (a key created meanwhile would have shifted it). Only a
// wave of pages is held at a time.
func readWorkspaceKeys(ctx context.Context, c *openrouter.Client, managementKey, workspaceID string, ws int, index *indexBuilder,
	sem chan struct{}, mu *sync.Mutex, budget *int) error {
	var walk openrouter.KeysWalk
	readPage := func(page int) ([]keyRecord, error) {
		mu.Lock()
		if *budget == 0 {
			mu.Unlock()
			return nil, fmt.Errorf("the listing has more than %d pages", maxListPages)
		}
		*budget--
		mu.Unlock()
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil, openrouter.ContextError(ctx, endpointKeysList, ctx.Err())
		}
		defer func() { <-sem }()
		return c.KeysPage(ctx, managementKey, workspaceID, walk.Offset(page))
	}

	// Waves grow from 2 pages to listConcurrency, so that a small
	// workspace costs few requests and a large one is read in parallel;
	// after a short page, one more page proves the end.
	for size, done := 2, false; !done; {
		wave := make([][]keyRecord, size)
		errs := make([]error, size)
		next := walk.Pages()
		var wg sync.WaitGroup
		for i := range wave {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wave[i], errs[i] = readPage(next + i)
			}()
		}
		wg.Wait()
		for i, page := range wave {
			if errs[i] != nil {
				return errs[i]
			}
			fresh, ok := walk.Take(page)
			if !ok {
				return errListingShifted
			}
			index.records(ws, fresh)
			done = done || len(page) == 0
		}
		size = min(size*2, listConcurrency)
		if walk.Ended() {
			size = 1
		}
	}
	if walk.Pages() > 0 {
		again, err := readPage(0)
		if err != nil {
			return err
		}
		if !walk.FirstUnchanged(again) {
			return errListingShifted
		}
	}
	return nil
}
