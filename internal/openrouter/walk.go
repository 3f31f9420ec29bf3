package openrouter

// walk.go owns how a workspace's keys are read through GET /keys: pages
// by offset, most recent first, overlapping by one record so that a
// listing that shifts while it is read (a key created or deleted between
// two pages) is seen, and the one check of that overlap. The listing, the
// key watch and the probe of what GET /keys/{hash} reaches all walk this
// way; each decides what a shift costs it.

import "slices"

// keysPageStep is the offset between two pages of a walk: one less than a
// page, so that each page repeats the record that ended the page before.
const keysPageStep = KeysPageSize - 1

// KeysWalk is one walk through a workspace's GET /keys pages, taken in
// order of their offsets: page n is read at Offset(n). Its zero value
// starts a walk. It reads nothing itself: the caller reads the pages (one
// at a time, or several ahead at once) and gives them to Take in order.
type KeysWalk struct {
	pages int      // non-empty pages taken
	first []string // identities of the first page
	last  string   // identity of the record that ended the page before
	ended bool     // a short or empty page was taken
}

// Offset is where page n of the walk is read.
func (*KeysWalk) Offset(n int) int { return n * keysPageStep }

// Next is where the page after those taken is read.
func (w *KeysWalk) Next() int { return w.Offset(w.pages) }

// Pages is how many pages with records were taken.
func (w *KeysWalk) Pages() int { return w.pages }

// Ended reports whether the workspace's last page was taken: one shorter
// than KeysPageSize, or empty. A page with records after it means the
// listing shifted (Take says so).
func (w *KeysWalk) Ended() bool { return w.ended }

// Take takes the next page, read at Next(). fresh are its records the
// walk had not seen: all of the first page, the rest of each other one
// but the record it repeats. ok is false when the listing shifted between
// two reads: a page that does not begin with the record that ended the
// page before (then fresh are the records after that one, if the page has
// it, or the whole page: records may have been skipped or seen twice), or
// records after the last page. An empty page ends the walk: nothing after
// the page before was there to be skipped.
func (w *KeysWalk) Take(page []KeyRecord) (fresh []KeyRecord, ok bool) {
	switch {
	case len(page) == 0:
		w.ended = true
		return nil, true
	case w.ended:
		return nil, false
	}
	fresh, ok = page, true
	if w.pages == 0 {
		w.first = identities(page)
	} else {
		at := slices.IndexFunc(page, func(r KeyRecord) bool { return r.Identity() == w.last })
		ok, fresh = at == 0, page[at+1:] // at -1: all of it
	}
	w.pages++
	w.last = page[len(page)-1].Identity()
	w.ended = len(page) < KeysPageSize
	return fresh, ok
}

// FirstUnchanged reports whether the first page, read again once the walk
// ended, holds what it held: a key created while the walk went on would
// have shifted every page, the first included, and the overlap of later
// pages cannot see a shift that happened before they were read.
func (w *KeysWalk) FirstUnchanged(again []KeyRecord) bool {
	return slices.Equal(identities(again), w.first)
}

// identities are the identities of a page's records.
func identities(page []KeyRecord) []string {
	ids := make([]string, len(page))
	for i := range page {
		ids[i] = page[i].Identity()
	}
	return ids
}
