package caddymodule

// records.go owns the management API's word on one key: the compact index
// a listing keeps (not the records) and its builder, matching a key to its
// record with the identity rules (findRecord, label verdicts), and the way
// the account finds a key's record (recordsFor: a fresh listing, GET
// /keys/{hash}, then a listing) and completes one.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// keyRecord is a key's management record.
type keyRecord = openrouter.KeyRecord

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
	complete bool
	// requests is how many requests reading it took: what reading the
	// account again costs the management budget (listingFits).
	requests   int
	workspaces []workspace
	entries    []indexEntry // by hash
	byLabel    []int32      // positions in entries of labeled ones, by label
}

// size is how many records the listing read.
func (l *keyListing) size() int { return len(l.entries) }

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
	if e, ok := l.byHash(openrouter.RecordHashSum(key)); ok {
		m.record, m.partial = l.recordOf(e), true
		m.workspace = openrouter.WorkspaceName(l.workspaces, m.record.WorkspaceID)
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

// listing sorts the index of a listing read from startedAt to readAt.
func (b *indexBuilder) listing(wss []workspace, startedAt, readAt time.Time, complete bool) *keyListing {
	n := 0
	for _, es := range b.entries {
		n += len(es)
	}
	l := &keyListing{startedAt: startedAt, readAt: readAt, complete: complete, workspaces: wss, entries: make([]indexEntry, 0, n)}
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
	return l
}

// recordsFor finds what the account's records say of key, within ctx:
// a fresh listing's index; GET /keys/{hash}, whose 404 proves the key
// absent once the lookup is proven to reach every workspace (absentByHash);
// then a listing. lifetime bounds work that outlives the caller (a
// listing). A record matched by hash proves the hash scheme. seen is when
// the key was first seen: only a listing started after it can prove the
// key absent, so an older one is read again when it may be.
func (a *account) recordsFor(lifetime, ctx context.Context, key string, seen time.Time) (match, error) {
	if l := a.freshListing(); l != nil {
		if m := l.findRecord(key, a.schemeProven.Load()); m.record != nil {
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
	rec, res := a.askRecord(ctx, key)
	if rec != nil {
		return match{record: rec, workspace: a.workspaceName(ctx, rec.WorkspaceID), listStarted: asked}, nil
	}
	if res.Err == nil && res.Status == http.StatusNotFound {
		if m, ok := a.absentByHash(ctx, key, asked, seen); ok {
			return m, nil
		}
		a.probeReach()
	}
	return a.listed(lifetime, ctx, key, seen, res.Err)
}

// workspaceName names a workspace for people: from the last listing, or
// the workspaces last read, or read now if the management budget allows.
func (a *account) workspaceName(ctx context.Context, id string) string {
	if l := a.lastListing(); l != nil {
		return openrouter.WorkspaceName(l.workspaces, id)
	}
	// Without them the workspace is named by its id.
	wss, _, _ := a.workspaces(ctx, time.Time{})
	return openrouter.WorkspaceName(wss, id)
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
	if rec, _ := a.askRecord(ctx, key); rec != nil {
		m.record, m.partial = rec, false
	}
	return m
}
