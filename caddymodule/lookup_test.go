package caddymodule

import (
	"strings"
	"testing"
	"time"
)

func TestListingFind(t *testing.T) {
	exp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	other := exp.Add(time.Hour)
	// Three keys sharing goodKey's label (first 12 and last 3 characters).
	twin := goodKey[:12] + strings.Repeat("f", keyLen-15) + goodKey[keyLen-3:]
	if keyLabel(twin) != keyLabel(goodKey) || twin == goodKey {
		t.Fatal("twin must share the label")
	}
	listing := func(recs ...keyRecord) *keyListing {
		l := &keyListing{byHash: map[string]keyRecord{}, byLabel: map[string][]keyRecord{}}
		for _, r := range recs {
			if r.Hash != "" {
				l.byHash[r.Hash] = r
			}
			l.byLabel[r.Label] = append(l.byLabel[r.Label], r)
		}
		return l
	}
	label := keyLabel(goodKey)

	// By hash, whatever the labels say.
	l := listing(keyRecord{Hash: recordHash(goodKey), Label: label, Disabled: true}, keyRecord{Hash: "x", Label: label})
	if rec, found := l.find(goodKey); !found || rec == nil || !rec.Disabled {
		t.Errorf("by hash: %+v %v", rec, found)
	}
	// By label, when every record with it says the same.
	l = listing(keyRecord{Hash: "a", Label: label, ExpiresAt: &exp}, keyRecord{Hash: "b", Label: label, ExpiresAt: &exp})
	if rec, found := l.find(goodKey); !found || rec == nil || !rec.ExpiresAt.Equal(exp) {
		t.Errorf("agreeing labels: %+v %v", rec, found)
	}
	// A label whose records disagree explains nothing, but is not "not found".
	for _, disagree := range [][2]keyRecord{
		{{Hash: "a", Label: label, ExpiresAt: &exp}, {Hash: "b", Label: label, ExpiresAt: &other}},
		{{Hash: "a", Label: label, ExpiresAt: &exp}, {Hash: "b", Label: label}},
		{{Hash: "a", Label: label, Disabled: true}, {Hash: "b", Label: label}},
	} {
		if rec, found := listing(disagree[0], disagree[1]).find(goodKey); !found || rec != nil {
			t.Errorf("disagreeing labels %+v: %+v %v", disagree, rec, found)
		}
	}
	// Neither hash nor label: not found.
	if rec, found := listing(keyRecord{Hash: "a", Label: "sk-or-v1-000...000"}).find(goodKey); found || rec != nil {
		t.Errorf("absent: %+v %v", rec, found)
	}
}
