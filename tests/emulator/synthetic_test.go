package emulator

import (
	"strconv"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// A synthetic account is served as an account of created keys would be:
// every key not deleted listed exactly once, after the explicit ones, the
// most recent first; GET /keys/{hash} and GET /key answer per key, by
// formula for disabled and expired ones.
func TestSyntheticAccount(t *testing.T) {
	a := SyntheticAccount{Keys: 1000, Seed: "test", DisabledEvery: 7, ExpiredEvery: 11, ExpiringEvery: 13}
	s, base := start(t)
	management := s.NewKey(KeyOptions{Management: true})
	second := s.NewWorkspace("Team B")
	s.Synthesize(a)
	explicit := s.NewKey(KeyOptions{Workspace: second})
	for _, i := range []int{999, 998, 500, 3} { // 998 and 999 are the newest of their workspaces
		s.DeleteSynthetic(i)
	}

	list := func(workspace string, includeDisabled bool) []openrouter.KeyRecord {
		t.Helper()
		var all []openrouter.KeyRecord
		for offset := 0; ; offset += PageSize {
			q := "?workspace_id=" + workspace + "&offset=" + strconv.Itoa(offset) + "&include_disabled=" + strconv.FormatBool(includeDisabled)
			var page []openrouter.KeyRecord
			call(t, "GET", base+"/keys"+q, management, "").data(t, &page)
			if len(page) == 0 {
				return all
			}
			all = append(all, page...)
		}
	}
	seen := map[string]bool{}
	for _, ws := range []string{s.DefaultWorkspace(), second} {
		recs := list(ws, true)
		for n, r := range recs {
			if seen[r.Hash] {
				t.Fatalf("%s listed twice", r.Name)
			}
			seen[r.Hash] = true
			if n > 0 && r.CreatedAt > recs[n-1].CreatedAt {
				t.Errorf("%s listed after an older key", r.Name)
			}
		}
		if enabled := list(ws, false); len(enabled) >= len(recs) || enabled[len(enabled)-1].Disabled {
			t.Errorf("without include_disabled: %d of %d", len(enabled), len(recs))
		}
	}
	if want := a.Keys - 4 + 2; len(seen) != want { // the explicit ones too
		t.Errorf("%d keys listed, want %d", len(seen), want)
	}
	if !seen[s.hashOf(explicit)] {
		t.Error("the explicit key is not listed")
	}

	for _, c := range []struct {
		i      int
		status int // of GET /key
		found  bool
	}{{1, 200, true}, {6, 401, true}, {5, 401, true}, {26, 200, true}, {500, 401, false}, {999, 401, false}} {
		key := s.SyntheticKey(c.i)
		if got := call(t, "GET", base+"/key", key, ""); got.status != c.status {
			t.Errorf("key %d: GET /key %d, want %d", c.i, got.status, c.status)
		}
		got := call(t, "GET", base+"/keys/"+s.hashOf(key), management, "")
		if (got.status == 200) != c.found {
			t.Errorf("key %d: GET /keys/{hash} %d", c.i, got.status)
		}
		if c.found {
			var rec openrouter.KeyRecord
			got.data(t, &rec)
			if rec.Disabled != a.Disabled(c.i) || (rec.ExpiresAt != nil) != (a.Expired(c.i) || a.Expiring(c.i)) || rec.Name != "user "+strconv.Itoa(c.i) {
				t.Errorf("key %d: record %+v", c.i, rec)
			}
			// An expiring key (26) expires 10 days from now.
			if a.Expiring(c.i) && (rec.ExpiresAt == nil || time.Until(*rec.ExpiresAt) < ExpiringIn-time.Minute || time.Until(*rec.ExpiresAt) > ExpiringIn) {
				t.Errorf("key %d: expires at %v, want in %v", c.i, rec.ExpiresAt, ExpiringIn)
			}
		}
	}
	if got := call(t, "GET", base+"/key", s.SyntheticKey(2)[:60]+"0123456789abc", ""); got.status != 401 {
		t.Errorf("a forged key: %d", got.status)
	}
}
