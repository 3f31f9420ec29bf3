package openrouter

import (
	"fmt"
	"slices"
	"testing"
)

// account is a workspace's records, most recent first, as GET /keys pages
// over them.
type account []KeyRecord

func newAccount(n int) account {
	a := make(account, n)
	for i := range a {
		a[i] = KeyRecord{Hash: fmt.Sprintf("%064x", n-i)}
	}
	return a
}

func (a account) page(offset int) []KeyRecord {
	if offset >= len(a) {
		return nil
	}
	return slices.Clone(a[offset:min(offset+KeysPageSize, len(a))])
}

// walk reads every page in order until the walk ends, calling between
// after each page; it returns what was seen fresh and whether every
// overlap held.
func walk(a *account, between func(page int)) (fresh []KeyRecord, ok bool, pages int) {
	var w KeysWalk
	ok = true
	for !w.Ended() {
		f, good := w.Take(a.page(w.Next()))
		fresh, ok = append(fresh, f...), ok && good
		pages++
		if between != nil {
			between(pages)
		}
	}
	return fresh, ok, pages
}

func TestKeysWalkQuiet(t *testing.T) {
	for _, n := range []int{0, 1, 99, 100, 101, 198, 199, 250} {
		a := newAccount(n)
		fresh, ok, pages := walk(&a, nil)
		if !ok || !slices.Equal(fresh, a) {
			t.Errorf("%d keys: %d seen (ok %v), want each once", n, len(fresh), ok)
		}
		// Pages overlap by one: the walk ends at the first page that is
		// not full.
		if want := (n-1)/keysPageStep + 1; pages != want {
			t.Errorf("%d keys: %d pages, want %d", n, pages, want)
		}
	}
}

func TestKeysWalkShifted(t *testing.T) {
	// A key created after the first page shifts every record down: the
	// second page begins with the record that ended the first, again.
	a := newAccount(250)
	created := KeyRecord{Hash: fmt.Sprintf("%064x", 999)}
	fresh, ok, _ := walk(&a, func(page int) {
		if page == 1 {
			a = append(account{created}, a...)
		}
	})
	if ok {
		t.Error("a key created while pages were read went unseen")
	}
	if len(fresh) != 250 {
		t.Errorf("%d records seen fresh, want the 250 there were (none twice)", len(fresh))
	}

	// A key deleted before the second page shifts every record up: one
	// record is skipped, and the overlap shows it.
	a = newAccount(250)
	if _, ok, _ := walk(&a, func(page int) {
		if page == 1 {
			a = slices.Delete(a, 3, 4)
		}
	}); ok {
		t.Error("a key deleted while pages were read went unseen")
	}

	// Records after the last page: the listing grew past a short page.
	var w KeysWalk
	if _, ok := w.Take(newAccount(5)); !ok || !w.Ended() {
		t.Fatal("a short first page does not end the walk")
	}
	if _, ok := w.Take(newAccount(1)); ok {
		t.Error("records after the last page went unseen")
	}
	// An empty page after a full one: the record that ended it is gone,
	// but nothing after it can have been skipped.
	w = KeysWalk{}
	full := newAccount(KeysPageSize)
	w.Take(full)
	if _, ok := w.Take(nil); !ok || !w.Ended() {
		t.Error("an empty page after a full one is a shift")
	}
}

func TestKeysWalkFirstUnchanged(t *testing.T) {
	a := newAccount(150)
	var w KeysWalk
	for !w.Ended() {
		w.Take(a.page(w.Next()))
	}
	if !w.FirstUnchanged(a.page(0)) {
		t.Error("the first page read again differs")
	}
	a = append(account{{Hash: "new"}}, a...)
	if w.FirstUnchanged(a.page(0)) {
		t.Error("a key created at the top went unseen")
	}
}
