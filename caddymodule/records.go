package caddymodule

// records.go owns the management API's word on keys: reading records and
// complete listings of every workspace, matching a key to its record with
// the identity rules, and turning a record into facts about the key.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/caddymodule/openrouter"
)

// keyRecord is a key's management record.
type keyRecord = openrouter.KeyRecord

// recordIdentity is what tells records apart when pages are compared: the
// hash, or, for a record without one, what else names it.
func recordIdentity(r *keyRecord) string {
	if r.Hash != "" {
		return r.Hash
	}
	return r.Label + "|" + r.Name + "|" + r.CreatedAt
}

// sameAnswer reports whether two records say the same about a key, which
// decides whether a label shared by several records may inform a message.
func sameAnswer(a, b *keyRecord) bool {
	if a.Disabled != b.Disabled || (a.ExpiresAt == nil) != (b.ExpiresAt == nil) {
		return false
	}
	return a.ExpiresAt == nil || a.ExpiresAt.Equal(*b.ExpiresAt)
}

// workspace is one workspace of the account.
type workspace = openrouter.Workspace

// keyListing is every record of the account, read between two times.
type keyListing struct {
	// startedAt and readAt are when the reading began and ended: a key
	// first seen after startedAt may be missing from it.
	startedAt, readAt time.Time
	// complete: every workspace was listed, every page read, and nothing
	// shifted while the pages were read. Only a complete listing can say
	// a key is not there.
	complete   bool
	workspaces []workspace
	records    []keyRecord
	byHash     map[string]*keyRecord
	byLabel    map[string][]*keyRecord
}

// workspaceName is the name of a workspace for people (and metric labels).
func (l *keyListing) workspaceName(id string) string {
	for _, w := range l.workspaces {
		if w.ID == id {
			if w.Name != "" {
				return w.Name
			}
			return w.Slug
		}
	}
	if id == "" {
		return "default"
	}
	return id
}

// match is what the records say of one key.
type match struct {
	// record is the key's own record, matched by hash, and the name of
	// its workspace.
	record    *keyRecord
	workspace string
	// labelRecords are, while the account's hash scheme is unproven, the
	// records sharing the key's label, all saying the same. They may
	// inform a message that says it matched by label; nothing more.
	labelRecords []*keyRecord
	// absent: a complete listing, started at listStarted, has no such
	// key; it proves the key absent only if the key existed when the
	// listing started (keyState.listedAbsent).
	absent      bool
	listStarted time.Time
}

// findRecord matches a key to its record: by hash; then, only while the
// account's hashes are not proven to be sha256(key), by label when every
// record with that label agrees. Absence is claimed only from a complete
// listing: no record with the key's hash (scheme proven) or label.
func (l *keyListing) findRecord(key string, hashProven bool) match {
	m := match{listStarted: l.startedAt}
	if r, ok := l.byHash[recordHash(key)]; ok {
		m.record, m.workspace = r, l.workspaceName(r.WorkspaceID)
		return m
	}
	if hashProven {
		m.absent = l.complete
		return m
	}
	same := l.byLabel[openrouter.Label(key)]
	if len(same) == 0 {
		m.absent = l.complete
		return m
	}
	for _, r := range same[1:] {
		if !sameAnswer(r, same[0]) {
			return m
		}
	}
	m.labelRecords = same
	return m
}

// labelVerdict is what records matched by label say about a refused key:
// disabled, or expired, said as matched by label.
func (m match) labelVerdict(now time.Time) verdict {
	if len(m.labelRecords) == 0 {
		return verdict{}
	}
	r := m.labelRecords[0]
	switch {
	case r.ExpiresAt != nil && !now.Before(*r.ExpiresAt):
		return verdict{reason: reasonExpired, at: r.ExpiresAt.UTC(), byLabel: true}
	case r.Disabled:
		return verdict{reason: reasonDisabled, byLabel: true}
	}
	return verdict{}
}

// Limits of a listing.
const (
	// listStep is the offset between pages: one less than a page, so that
	// each page repeats the last record of the one before, which proves
	// that nothing shifted between the two reads.
	listStep = openrouter.KeysPageSize - 1
	// maxListPages bounds a listing across all workspaces (about 99,000
	// keys); past it the listing is incomplete.
	maxListPages = 1000
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
// nothing shifted. A listing that cannot be proven complete is returned
// with complete false (it can still find records by hash), or an error when
// nothing usable was read.
func readListing(ctx context.Context, c *metadataClient, managementKey string) (*keyListing, error) {
	l := &keyListing{byHash: make(map[string]*keyRecord), byLabel: make(map[string][]*keyRecord)}
	complete := true
	wss, err := readWorkspaces(ctx, c, managementKey)
	if err != nil {
		if failureOf(err) == failCancelled {
			return nil, err
		}
		// Without the workspaces, the default one is all that can be read,
		// and absence cannot be proven.
		complete = false
		wss = []workspace{{}}
	}
	l.workspaces = wss

	var (
		mu      sync.Mutex
		records []keyRecord
		errs    []error
		wg      sync.WaitGroup
		sem     = make(chan struct{}, listConcurrency)
		budget  = maxListPages
	)
	for _, ws := range wss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs, err := readWorkspaceKeys(ctx, c, managementKey, ws.ID, sem, &mu, &budget)
			if errors.Is(err, errListingShifted) {
				// Keys come and go: a second read usually finds a quiet
				// moment.
				recs, err = readWorkspaceKeys(ctx, c, managementKey, ws.ID, sem, &mu, &budget)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			records = append(records, recs...)
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		if len(records) == 0 || failureOf(errs[0]) == failCancelled {
			return nil, errs[0]
		}
		complete = false
	}
	l.records = records
	for i := range l.records {
		r := &l.records[i]
		if r.Hash != "" {
			l.byHash[r.Hash] = r
		}
		l.byLabel[r.Label] = append(l.byLabel[r.Label], r)
	}
	l.complete = complete
	return l, nil
}

// readWorkspaces pages through GET /workspaces until an empty page.
func readWorkspaces(ctx context.Context, c *metadataClient, managementKey string) ([]workspace, error) {
	var out []workspace
	for offset := 0; ; {
		var page []workspace
		res := c.get(ctx, endpointWorkspaces, "/workspaces?limit="+strconv.Itoa(openrouter.WorkspacesPageSize)+"&offset="+strconv.Itoa(offset),
			managementKey, maxPageResponse, &page)
		if res.err != nil {
			return nil, res.err
		}
		if len(page) == 0 {
			break
		}
		out = append(out, page...)
		offset += len(page)
		if len(out) > maxWorkspaces {
			return nil, fmt.Errorf("more than %d workspaces", maxWorkspaces)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no workspace listed")
	}
	return out, nil
}

// readWorkspaceKeys reads one workspace's keys in overlapping pages, a wave
// of listConcurrency pages at a time, until an empty page; then reads the
// first page again, which must be unchanged (a key created meanwhile would
// have shifted it).
func readWorkspaceKeys(ctx context.Context, c *metadataClient, managementKey, workspaceID string, sem chan struct{}, mu *sync.Mutex, budget *int) ([]keyRecord, error) {
	path := func(page int) string {
		q := url.Values{"include_disabled": {"true"}, "offset": {strconv.Itoa(page * listStep)}}
		if workspaceID != "" {
			q.Set("workspace_id", workspaceID)
		}
		return "/keys?" + q.Encode()
	}
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
			return nil, &lookupError{endpoint: endpointKeysList, kind: transportFailure(ctx, ctx.Err())}
		}
		defer func() { <-sem }()
		var recs []keyRecord
		res := c.get(ctx, endpointKeysList, path(page), managementKey, maxPageResponse, &recs)
		if res.err == nil && res.status != http.StatusOK {
			res.err = &lookupError{endpoint: endpointKeysList, kind: failStatus, status: res.status}
		}
		return recs, res.err
	}

	// Waves grow from 2 pages to listConcurrency, so that a small
	// workspace costs few requests and a large one is read in parallel;
	// after a short page, one more page proves the end.
	var pages [][]keyRecord
	for size, done := 2, false; !done; {
		first := len(pages)
		wave := make([][]keyRecord, size)
		errs := make([]error, size)
		var wg sync.WaitGroup
		for i := range wave {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wave[i], errs[i] = readPage(first + i)
			}()
		}
		wg.Wait()
		for i := range wave {
			if errs[i] != nil {
				return nil, errs[i]
			}
			if done && len(wave[i]) > 0 {
				return nil, errListingShifted // a page after an empty one
			}
			if len(wave[i]) == 0 {
				done = true
				continue
			}
			pages = append(pages, wave[i])
		}
		size = min(size*2, listConcurrency)
		if n := len(pages); n > 0 && len(pages[n-1]) < openrouter.KeysPageSize {
			size = 1
		}
	}
	// Every page but the last is full, and begins with the record that
	// ended the page before.
	for i := range pages {
		if i < len(pages)-1 && len(pages[i]) != openrouter.KeysPageSize {
			return nil, errListingShifted
		}
		if i > 0 && recordIdentity(&pages[i][0]) != recordIdentity(&pages[i-1][openrouter.KeysPageSize-1]) {
			return nil, errListingShifted
		}
	}
	if len(pages) > 0 {
		again, err := readPage(0)
		if err != nil {
			return nil, err
		}
		if !samePage(again, pages[0]) {
			return nil, errListingShifted
		}
	}
	var out []keyRecord
	for i, p := range pages {
		if i > 0 {
			p = p[1:] // repeated from the page before
		}
		out = append(out, p...)
	}
	for i := range out {
		if out[i].WorkspaceID == "" {
			out[i].WorkspaceID = workspaceID
		}
	}
	return out, nil
}

func samePage(a, b []keyRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if recordIdentity(&a[i]) != recordIdentity(&b[i]) {
			return false
		}
	}
	return true
}

// recordByHash asks GET /keys/{hash} for the record whose hash is
// sha256(key). A 404 is a normal answer: the key may be of another account,
// deleted, or the account's hashes may be something else.
func recordByHash(ctx context.Context, c *metadataClient, managementKey, key string) (*keyRecord, lookupResult) {
	var rec keyRecord
	res := c.get(ctx, endpointKeyRecord, "/keys/"+recordHash(key), managementKey, maxKeyResponse, &rec, http.StatusNotFound)
	if res.err != nil || res.status != http.StatusOK {
		return nil, res
	}
	return &rec, res
}

// readKeysPage reads one page of a workspace's keys (disabled ones
// included) from offset, for readers that go page by page and keep no
// listing (the key watch).
func readKeysPage(ctx context.Context, c *metadataClient, managementKey, workspaceID string, offset int) ([]keyRecord, error) {
	q := url.Values{"include_disabled": {"true"}, "offset": {strconv.Itoa(offset)}}
	if workspaceID != "" {
		q.Set("workspace_id", workspaceID)
	}
	var recs []keyRecord
	res := c.get(ctx, endpointKeysList, "/keys?"+q.Encode(), managementKey, maxPageResponse, &recs)
	if res.err == nil && res.status != http.StatusOK {
		res.err = &lookupError{endpoint: endpointKeysList, kind: failStatus, status: res.status}
	}
	for i := range recs {
		if recs[i].WorkspaceID == "" {
			recs[i].WorkspaceID = workspaceID
		}
	}
	return recs, res.err
}
