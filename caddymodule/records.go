package caddymodule

// records.go owns the management API's word on keys: reading records and
// complete listings of every workspace page by page, the compact index a
// listing keeps (not the records), matching a key to its record with the
// identity rules, and turning a record into facts about the key.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
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

// workspace is one workspace of the account.
type workspace = openrouter.Workspace

// indexEntry is what a listing keeps of one record to answer for its key
// later: 48 bytes, where the decoded record takes about ten times that.
type indexEntry struct {
	hash      [sha256.Size]byte // the record's hash, with entryHashed
	expires   int64             // unix seconds, rounded up, with entryExpires
	label     uint32            // labelBits of the record's label, with entryLabeled
	workspace uint16            // index in the listing's workspaces
	flags     uint8
}

// Flags of an indexEntry.
const (
	entryHashed   = 1 << iota // the record has a hash of 64 lowercase hex digits
	entryLabeled              // the record's label has OpenRouter's form
	entryDisabled             // the record is disabled
	entryExpires              // the record has an expiry
)

// indexEntryOf is what the index keeps of a record of workspace ws.
func indexEntryOf(r *keyRecord, ws int) indexEntry {
	e := indexEntry{workspace: uint16(ws)}
	if len(r.Hash) == 2*sha256.Size && r.Hash == strings.ToLower(r.Hash) {
		if _, err := hex.Decode(e.hash[:], []byte(r.Hash)); err == nil {
			e.flags |= entryHashed
		}
	}
	if bits, ok := labelBits(r.Label); ok {
		e.label, e.flags = bits, e.flags|entryLabeled
	}
	if r.Disabled {
		e.flags |= entryDisabled
	}
	if r.ExpiresAt != nil {
		// Rounded up: an expiry is never said to have passed early.
		e.expires = r.ExpiresAt.Unix()
		if r.ExpiresAt.Nanosecond() > 0 {
			e.expires++
		}
		e.flags |= entryExpires
	}
	return e
}

// labelBits packs a label of OpenRouter's form (sk-or-v1-0fa...240: 12
// bits of the key at each end) into 24 bits.
func labelBits(label string) (uint32, bool) {
	if len(label) != 18 || label[:len(openrouter.KeyPrefix)] != openrouter.KeyPrefix || label[12:15] != "..." {
		return 0, false
	}
	var bits uint32
	for _, c := range []byte(label[9:12] + label[15:18]) {
		switch {
		case c >= '0' && c <= '9':
			bits = bits<<4 | uint32(c-'0')
		case c >= 'a' && c <= 'f':
			bits = bits<<4 | uint32(c-'a'+10)
		default:
			return 0, false
		}
	}
	return bits, true
}

// sameAnswer reports whether two entries say the same about a key, which
// decides whether a label shared by several records may inform a message.
func (e *indexEntry) sameAnswer(o *indexEntry) bool {
	const answer = entryDisabled | entryExpires
	return e.flags&answer == o.flags&answer && (e.flags&entryExpires == 0 || e.expires == o.expires)
}

// keyListing is what a listing of every workspace, read at one time, keeps
// to explain keys: an index sorted by hash and one by label, not the
// records.
type keyListing struct {
	// startedAt and readAt are when the reading began and ended: a key
	// first seen after startedAt may be missing from it.
	startedAt, readAt time.Time
	// complete: every workspace was listed, every page read, and nothing
	// shifted while the pages were read. Only a complete listing can say
	// a key is not there.
	complete   bool
	workspaces []workspace
	entries    []indexEntry // by hash
	byLabel    []int32      // positions in entries of labeled ones, by label
}

// size is how many records the listing read.
func (l *keyListing) size() int { return len(l.entries) }

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

// byHash is the entry of the record whose hash is sum, if the listing has
// one.
func (l *keyListing) byHash(sum [sha256.Size]byte) (*indexEntry, bool) {
	i := sort.Search(len(l.entries), func(i int) bool { return compareHashes(&l.entries[i].hash, &sum) >= 0 })
	for ; i < len(l.entries) && l.entries[i].hash == sum; i++ {
		if l.entries[i].flags&entryHashed != 0 {
			return &l.entries[i], true
		}
	}
	return nil, false
}

// compareHashes orders hashes; the first 8 bytes nearly always decide.
func compareHashes(a, b *[sha256.Size]byte) int {
	if c := cmp.Compare(binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])); c != 0 {
		return c
	}
	return bytes.Compare(a[8:], b[8:])
}

// withLabel are the entries whose label is bits.
func (l *keyListing) withLabel(bits uint32) []int32 {
	i := sort.Search(len(l.byLabel), func(i int) bool { return l.entries[l.byLabel[i]].label >= bits })
	j := i
	for j < len(l.byLabel) && l.entries[l.byLabel[j]].label == bits {
		j++
	}
	return l.byLabel[i:j]
}

// recordOf is the part of a record an entry keeps: no name, no limits.
func (l *keyListing) recordOf(e *indexEntry) *keyRecord {
	r := &keyRecord{Disabled: e.flags&entryDisabled != 0, WorkspaceID: l.workspaces[e.workspace].ID}
	if e.flags&entryHashed != 0 {
		r.Hash = hex.EncodeToString(e.hash[:])
	}
	if e.flags&entryLabeled != 0 {
		r.Label = fmt.Sprintf("%s%03x...%03x", openrouter.KeyPrefix, e.label>>12, e.label&0xfff)
	}
	if e.flags&entryExpires != 0 {
		t := time.Unix(e.expires, 0).UTC()
		r.ExpiresAt = &t
	}
	return r
}

// match is what the records say of one key.
type match struct {
	// record is the key's own record, matched by hash, and the name of
	// its workspace. partial: it comes from a listing's index, which keeps
	// only the hash, workspace, disabled and expiry (no name, no limits).
	record    *keyRecord
	workspace string
	partial   bool
	// labelRecords are, while the account's hash scheme is unproven, the
	// records sharing the key's label, all saying the same (as far as the
	// index keeps them). They may inform a message that says it matched by
	// label; nothing more.
	labelRecords []*keyRecord
	// absent: a complete listing, or a hash lookup proven to reach every
	// workspace, has no such key, read from listStarted on (a listing's
	// start, or the lookup's); it proves the key absent only if the key
	// existed by then (keyState.listedAbsent).
	absent      bool
	listStarted time.Time
}

// findRecord matches a key to its record: by hash; then, only while the
// account's hashes are not proven to be sha256(key), by label when every
// record with that label agrees. Absence is claimed only from a complete
// listing: no record with the key's hash (scheme proven) or label.
func (l *keyListing) findRecord(key string, hashProven bool) match {
	m := match{listStarted: l.startedAt}
	if e, ok := l.byHash(sha256.Sum256([]byte(key))); ok {
		m.record, m.partial = l.recordOf(e), true
		m.workspace = l.workspaceName(m.record.WorkspaceID)
		return m
	}
	if hashProven {
		m.absent = l.complete
		return m
	}
	bits, _ := labelBits(openrouter.Label(key))
	same := l.withLabel(bits)
	if len(same) == 0 {
		m.absent = l.complete
		return m
	}
	first := &l.entries[same[0]]
	for _, i := range same[1:] {
		if !l.entries[i].sameAnswer(first) {
			return m
		}
	}
	for _, i := range same {
		m.labelRecords = append(m.labelRecords, l.recordOf(&l.entries[i]))
	}
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

// indexBuilder builds a listing's index from its pages, for several
// workspaces read at once.
type indexBuilder struct {
	mu      sync.Mutex
	entries [][]indexEntry // by workspace
}

func newIndexBuilder(workspaces int) *indexBuilder {
	return &indexBuilder{entries: make([][]indexEntry, workspaces)}
}

// records indexes records of workspace ws.
func (b *indexBuilder) records(ws int, recs []keyRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range recs {
		b.entries[ws] = append(b.entries[ws], indexEntryOf(&recs[i], ws))
	}
}

// restart drops what was indexed of workspace ws: it shifted while read
// and is read again.
func (b *indexBuilder) restart(ws int) {
	b.mu.Lock()
	b.entries[ws] = nil
	b.mu.Unlock()
}

// listing sorts the index.
func (b *indexBuilder) listing(wss []workspace, startedAt time.Time, complete bool) *keyListing {
	n := 0
	for _, es := range b.entries {
		n += len(es)
	}
	l := &keyListing{startedAt: startedAt, complete: complete, workspaces: wss, entries: make([]indexEntry, 0, n)}
	for ws := range b.entries {
		l.entries = append(l.entries, b.entries[ws]...)
		b.entries[ws] = nil
	}
	slices.SortFunc(l.entries, func(a, b indexEntry) int { return compareHashes(&a.hash, &b.hash) })
	for i := range l.entries {
		if l.entries[i].flags&entryLabeled != 0 {
			l.byLabel = append(l.byLabel, int32(i))
		}
	}
	slices.SortFunc(l.byLabel, func(a, b int32) int { return cmp.Compare(l.entries[a].label, l.entries[b].label) })
	l.readAt = time.Now()
	return l
}

// readListing reads every workspace and every page of each, and checks that
// nothing shifted, keeping an index of the records. A listing that cannot
// be proven complete is returned with complete false (it can still find
// records by hash), or an error when nothing usable was read.
func readListing(ctx context.Context, c *metadataClient, managementKey string) (*keyListing, error) {
	startedAt := time.Now()
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
	l := index.listing(wss, startedAt, complete && len(errs) == 0)
	if len(errs) > 0 && (l.size() == 0 || failureOf(errs[0]) == failCancelled) {
		return nil, errs[0]
	}
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
// of listConcurrency pages at a time, until an empty page, telling visit
// each page's new records once its overlap with the page before is
// checked; then reads the first page again, which must be unchanged (a key
// created meanwhile would have shifted it). Only a wave of pages is held
// at a time.
func readWorkspaceKeys(ctx context.Context, c *metadataClient, managementKey, workspaceID string, ws int, index *indexBuilder,
	sem chan struct{}, mu *sync.Mutex, budget *int) error {
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
		return readKeysPage(ctx, c, managementKey, workspaceID, page*listStep)
	}

	// Waves grow from 2 pages to listConcurrency, so that a small
	// workspace costs few requests and a large one is read in parallel;
	// after a short page, one more page proves the end.
	var (
		first    []string // identities of the first page
		last     string   // identity of the record that ended the page before
		lastFull = true   // the page before was full
		pages    int
	)
	for size, done := 2, false; !done; {
		wave := make([][]keyRecord, size)
		errs := make([]error, size)
		var wg sync.WaitGroup
		for i := range wave {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wave[i], errs[i] = readPage(pages + i)
			}()
		}
		wg.Wait()
		for i, page := range wave {
			switch {
			case errs[i] != nil:
				return errs[i]
			case done && len(page) > 0:
				return errListingShifted // a page after an empty one
			case len(page) == 0:
				done = true
				continue
			case !lastFull:
				return errListingShifted // a short page before this one
			}
			// Every page but the first begins with the record that ended
			// the page before.
			fresh := page
			if pages > 0 {
				if recordIdentity(&page[0]) != last {
					return errListingShifted
				}
				fresh = page[1:]
			} else {
				first = identities(page)
			}
			index.records(ws, fresh)
			pages++
			last, lastFull = recordIdentity(&page[len(page)-1]), len(page) == openrouter.KeysPageSize
		}
		size = min(size*2, listConcurrency)
		if !lastFull {
			size = 1
		}
	}
	if pages > 0 {
		again, err := readPage(0)
		if err != nil {
			return err
		}
		if !slices.Equal(identities(again), first) {
			return errListingShifted
		}
	}
	return nil
}

// identities are the identities of a page's records.
func identities(page []keyRecord) []string {
	ids := make([]string, len(page))
	for i := range page {
		ids[i] = recordIdentity(&page[i])
	}
	return ids
}

// recordByHash asks GET /keys/{hash} for the record whose hash is
// sha256(key). A 404 is a normal answer: the key may be of another account,
// deleted, or the account's hashes may be something else.
func recordByHash(ctx context.Context, c *metadataClient, managementKey, key string) (*keyRecord, lookupResult) {
	return recordWithHash(ctx, c, managementKey, recordHash(key))
}

// recordWithHash asks GET /keys/{hash} for the record with that hash.
func recordWithHash(ctx context.Context, c *metadataClient, managementKey, hash string) (*keyRecord, lookupResult) {
	var rec keyRecord
	res := c.get(ctx, endpointKeyRecord, "/keys/"+hash, managementKey, maxKeyResponse, &rec, http.StatusNotFound)
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
