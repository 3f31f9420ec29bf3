package caddymodule

import (
	"context"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

func listingOf(complete bool, recs ...keyRecord) *keyListing {
	wss := []workspace{{ID: "w1", Name: "Default"}, {ID: "w2", Name: "Research"}}
	b := newIndexBuilder(len(wss))
	for _, r := range recs {
		ws := 0
		if r.WorkspaceID == "w2" {
			ws = 1
		}
		b.records(ws, []keyRecord{r})
	}
	now := time.Now()
	return b.listing(wss, now, now, complete)
}

// The identity rules: a record describes a key when matched by hash; a
// label match only while the hash scheme is unproven, only when every
// record with the label agrees; absence only from a complete listing.
func TestFindRecord(t *testing.T) {
	exp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	other := exp.Add(time.Hour)
	label := openrouter.Label(goodKey)
	// A forged key sharing goodKey's label.
	twin := goodKey[:12] + strings.Repeat("0", openrouter.KeyLen-15) + goodKey[openrouter.KeyLen-3:]
	if openrouter.Label(twin) != label || twin == goodKey {
		t.Fatal("twin must share the label")
	}
	own := keyRecord{Hash: recordHash(goodKey), Label: label, Disabled: true, WorkspaceID: "w2", Name: "ci"}
	for _, c := range []struct {
		name       string
		listing    *keyListing
		key        string
		proven     bool
		wantRecord bool
		wantLabel  bool
		wantAbsent bool
	}{
		{"by hash", listingOf(true, own, keyRecord{Hash: "x", Label: label}), goodKey, false, true, false, false},
		{"twin, scheme unproven, agreeing label", listingOf(true, own), twin, false, false, true, false},
		{"twin, scheme proven: absent", listingOf(true, own), twin, true, false, false, true},
		{"twin, scheme proven, incomplete listing: nothing", listingOf(false, own), twin, true, false, false, false},
		{"label records disagree", listingOf(true, keyRecord{Hash: "a", Label: label, ExpiresAt: &exp}, keyRecord{Hash: "b", Label: label, ExpiresAt: &other}), goodKey, false, false, false, false},
		{"label records disagree on disabled", listingOf(true, keyRecord{Hash: "a", Label: label, Disabled: true}, keyRecord{Hash: "b", Label: label}), goodKey, false, false, false, false},
		{"label records agree", listingOf(true, keyRecord{Hash: "a", Label: label, ExpiresAt: &exp}, keyRecord{Hash: "b", Label: label, ExpiresAt: &exp}), goodKey, false, false, true, false},
		{"neither hash nor label, complete", listingOf(true, keyRecord{Hash: "a", Label: "sk-or-v1-000...000"}), goodKey, false, false, false, true},
		{"neither hash nor label, incomplete", listingOf(false, keyRecord{Hash: "a", Label: "sk-or-v1-000...000"}), goodKey, false, false, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := c.listing.findRecord(c.key, c.proven)
			if (m.record != nil) != c.wantRecord || (len(m.labelRecords) > 0) != c.wantLabel || m.absent != c.wantAbsent {
				t.Errorf("record %v, label %d, absent %v", m.record != nil, len(m.labelRecords), m.absent)
			}
		})
	}
	// The index keeps what explains a key, not the whole record.
	m := listingOf(true, own).findRecord(goodKey, false)
	if m.workspace != "Research" || !m.record.Disabled || m.record.Hash != own.Hash || !m.partial {
		t.Errorf("workspace %q, record %+v, partial %v", m.workspace, m.record, m.partial)
	}
	// A label match says so, and never says more than the records.
	m = listingOf(true, own).findRecord(twin, false)
	if v := m.labelVerdict(time.Now()); v.reason != reasonDisabled || !v.byLabel {
		t.Errorf("label verdict %+v", v)
	}
}

func readFake(t *testing.T, f *fakeAccount) (*keyListing, error) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return readListing(ctx, newMetadataClient(srv.URL+"/api/v1"), "mk", &clock{})
}

func TestReadListing(t *testing.T) {
	t.Run("every workspace, every page", func(t *testing.T) {
		f := newFakeAccount("a", "b", "c")
		f.add("a", 0)
		f.add("b", 250)
		f.add("c", 99)
		l, err := readFake(t, f)
		if err != nil || !l.complete || l.size() != 349 {
			t.Fatalf("complete %v, %d records, %v", l != nil && l.complete, l.size(), err)
		}
		for i := range l.entries {
			if l.recordOf(&l.entries[i]).WorkspaceID == "" {
				t.Fatal("records lack their workspace")
			}
		}
	})
	t.Run("exactly a page, and one more", func(t *testing.T) {
		for _, n := range []int{1, 99, 100, 101, 199, 200, 1000} {
			f := newFakeAccount("a")
			f.add("a", n)
			l, err := readFake(t, f)
			if err != nil || !l.complete || l.size() != n {
				t.Errorf("%d keys: %v %v", n, l != nil && l.complete, err)
			}
		}
	})
	t.Run("a key deleted while pages are read", func(t *testing.T) {
		f := newFakeAccount("a")
		f.add("a", 450)
		f.afterPage = func(ws string, offset int) {
			if offset > 0 { // every time: the listing never holds still
				f.mu.Lock()
				f.keys["a"] = append(f.keys["a"][:10:10], f.keys["a"][11:]...)
				f.mu.Unlock()
			}
		}
		if l, err := readFake(t, f); err == nil && l.complete {
			t.Error("a listing that shifted is called complete")
		}
	})
	t.Run("a key created while pages are read", func(t *testing.T) {
		f := newFakeAccount("a")
		f.add("a", 150)
		f.afterPage = func(ws string, offset int) {
			if offset > 0 {
				f.add("a", 1)
			}
		}
		if l, err := readFake(t, f); err == nil && l.complete {
			t.Error("a listing that shifted is called complete")
		}
	})
	t.Run("a listing that shifts once is read again", func(t *testing.T) {
		f := newFakeAccount("a")
		f.add("a", 300)
		var once sync.Once
		f.afterPage = func(ws string, offset int) {
			if offset > 0 {
				once.Do(func() { f.add("a", 1) })
			}
		}
		if l, err := readFake(t, f); err != nil || !l.complete || l.size() != 301 {
			t.Errorf("complete %v, %v", l != nil && l.complete, err)
		}
	})
	t.Run("workspaces cannot be listed", func(t *testing.T) {
		f := newFakeAccount("a")
		f.failWS = true
		f.add("", 5)
		l, err := readFake(t, f)
		if err != nil || l.complete || l.size() != 5 {
			t.Errorf("complete %v, %d records, %v", l != nil && l.complete, l.size(), err)
		}
	})
	t.Run("pages read in parallel, bounded", func(t *testing.T) {
		f := newFakeAccount("a", "b")
		f.add("a", 3000)
		f.add("b", 3000)
		// Two workspaces, each listed from two pages at once: four.
		f.holdUntil, f.held = 4, make(chan struct{})
		l, err := readFake(t, f)
		if err != nil || !l.complete || l.size() != 6000 {
			t.Fatalf("%v %v", l != nil && l.complete, err)
		}
		if f.maxInFlight > listConcurrency {
			t.Errorf("%d requests in flight at most, want at most %d", f.maxInFlight, listConcurrency)
		}
	})
}

// BenchmarkListingMemory indexes listings of 100,000 and 1,000,000
// records, page by page as a listing is read, and reports what the index
// keeps per key (Go heap after GC); the records themselves are dropped
// page by page.
func BenchmarkListingMemory(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			exp := time.Now().Add(time.Hour)
			wss := []workspace{{ID: "w1"}, {ID: "w2"}}
			for i := 0; i < b.N; i++ {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				ib := newIndexBuilder(len(wss))
				page := make([]keyRecord, openrouter.KeysPageSize)
				for j := 0; j < n; j += openrouter.KeysPageSize {
					for p := range page {
						key := fmt.Sprintf("sk-or-v1-%064x", j+p)
						page[p] = keyRecord{Hash: recordHash(key), Label: openrouter.Label(key), Name: "user",
							Disabled: p%10 == 0, WorkspaceID: "w1"}
						if p%3 == 0 {
							page[p].ExpiresAt = &exp
						}
					}
					ib.records((j/openrouter.KeysPageSize)%len(wss), page)
				}
				l := ib.listing(wss, time.Now(), time.Now(), true)
				runtime.GC()
				runtime.ReadMemStats(&after)
				if l.size() != n {
					b.Fatalf("%d entries for %d records", l.size(), n)
				}
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "B/key")
				runtime.KeepAlive(l)
			}
		})
	}
}
