package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// TestLargeAccount: an account of 20,000 keys (OPENROUTER_KEYS_ACCOUNT)
// in 4 workspaces, behind a management API that takes 50 ms per page. The
// first failure of a deleted key is answered within lookup_timeout,
// explained or not; the listing goes on under its own deadline, and once it
// is read a deleted key and a disabled key of the last workspace are
// explained within lookup_timeout. With record hashes that are sha256(key)
// and with opaque ones (only labels match: the verdict says so).
func TestLargeAccount(t *testing.T) {
	n := envInt("OPENROUTER_KEYS_ACCOUNT", 20000)
	const lookupTimeout = time.Second
	const pageDelay = 50 * time.Millisecond
	for _, opaque := range []bool{false, true} {
		name := "sha256 hashes"
		if opaque {
			name = "opaque hashes"
		}
		t.Run(name, func(t *testing.T) {
			var (
				pagesMu             sync.Mutex
				firstPage, lastPage time.Time
			)
			e := start(t, options{management: true, module: fmt.Sprintf("lookup_timeout %s", lookupTimeout), emulator: func(s *emulator.Server) {
				s.ListPageDelay = pageDelay
				s.OpaqueHashes = opaque
				s.OnListPage(func(string, int) {
					pagesMu.Lock()
					if firstPage.IsZero() {
						firstPage = time.Now().Add(-pageDelay)
					}
					lastPage = time.Now()
					pagesMu.Unlock()
				})
			}})
			workspaces := []string{e.emu.DefaultWorkspace(), e.emu.NewWorkspace("Team B"), e.emu.NewWorkspace("Team C"), e.emu.NewWorkspace("Team D")}
			created := time.Now()
			var deleted []string
			var disabled string
			for i, ws := range workspaces {
				if i == len(workspaces)-1 {
					// The oldest key of the last workspace: on its last page.
					disabled = e.emu.NewKey(emulator.KeyOptions{Disabled: true, Workspace: ws})
				}
				e.emu.NewKeys(n/len(workspaces)/2, emulator.KeyOptions{Workspace: ws})
				if i == 1 {
					deleted = e.emu.NewKeys(2, emulator.KeyOptions{Workspace: ws})
				}
				e.emu.NewKeys(n/len(workspaces)-n/len(workspaces)/2-1, emulator.KeyOptions{Workspace: ws})
			}
			for _, k := range deleted {
				e.emu.Delete(k)
			}
			t.Logf("%d keys in %d workspaces created in %v", n, len(workspaces), time.Since(created).Round(time.Millisecond))
			body := `{"model":"openai/gpt-4o","messages":[]}`
			listed := `caddy_openrouter_keys_lookups_total{endpoint="keys_list"`
			pagesBefore := metricSum(t, listed)

			// (a) The first failure starts the listing and waits for it at
			// most lookup_timeout.
			begin := time.Now()
			resp, b := raw(t, "POST", gatewayBase+"/chat/completions", deleted[0], body)
			took := time.Since(begin)
			t.Logf("first failure of a deleted key: %v, %s %s", took.Round(time.Millisecond), resp.Header.Get("X-OpenRouter-Key-Status"), b)
			if took > lookupTimeout+600*time.Millisecond {
				t.Errorf("the first failure waited %v; lookup_timeout is %v", took, lookupTimeout)
			}
			if status := resp.Header.Get("X-OpenRouter-Key-Status"); resp.StatusCode != 401 || (status != "" && status != "key_not_found") ||
				(status == "" && string(b) != `{"error":{"message":"User not found.","code":401}}`) {
				t.Errorf("first failure of a deleted key: %d %q %s", resp.StatusCode, status, b)
			}

			// The listing goes on under its own deadline; wait until its
			// pages stop coming.
			var pages float64
			for stable, deadline := 0, time.Now().Add(2*time.Minute); stable < 5; {
				if time.Now().After(deadline) {
					t.Fatalf("the listing was still being read after 2 minutes (%v pages)", pages)
				}
				time.Sleep(200 * time.Millisecond)
				now := metricSum(t, listed) - pagesBefore
				if now > 0 && now == pages {
					stable++
				} else {
					stable = 0
				}
				pages = now
			}
			pagesMu.Lock()
			listing := lastPage.Sub(firstPage)
			pagesMu.Unlock()
			t.Logf("listing of %d keys in %d workspaces: %v, %v page requests (%d per page served, %v each, %d at a time)",
				n, len(workspaces), listing.Round(time.Millisecond), pages, emulator.PageSize, pageDelay, 8)
			if minimum := float64(n / (emulator.PageSize - 1)); pages < minimum || pages > 1.5*minimum+float64(10*len(workspaces)) {
				t.Errorf("%v page requests for %d keys", pages, n)
			}

			// (b) Now the listing explains, within lookup_timeout: absence
			// only of a key seen before it started (a key first seen
			// later may be newer than the listing), records of any key.
			for _, c := range []struct{ what, key, reason string }{
				{"a deleted key", deleted[0], "key_not_found"},
				{"a deleted key first seen after the listing started", deleted[1], ""},
				{"a disabled key of the last workspace", disabled, "key_disabled"},
			} {
				begin := time.Now()
				resp, b := raw(t, "POST", gatewayBase+"/chat/completions", c.key, body)
				took := time.Since(begin)
				var got struct {
					Error struct {
						Message  string `json:"message"`
						Metadata struct {
							Reason    string `json:"reason"`
							MatchedBy string `json:"matched_by"`
						} `json:"metadata"`
					} `json:"error"`
				}
				_ = json.Unmarshal(b, &got)
				t.Logf("%s: %v, %s", c.what, took.Round(time.Millisecond), b)
				if resp.StatusCode != 401 || got.Error.Metadata.Reason != c.reason || resp.Header.Get("X-OpenRouter-Key-Status") != c.reason {
					t.Errorf("%s: %d %s; want %s", c.what, resp.StatusCode, b, c.reason)
				}
				if took > lookupTimeout {
					t.Errorf("%s: explained after %v; lookup_timeout is %v", c.what, took, lookupTimeout)
				}
				// Only a record matched by hash is the key's own; what a
				// label matched says so.
				if byLabel := c.reason == "key_disabled" && opaque; (got.Error.Metadata.MatchedBy == "label") != byLabel ||
					strings.Contains(got.Error.Message, "matched by label") != byLabel {
					t.Errorf("%s: matched_by %q, message %q; matched by label: %v", c.what, got.Error.Metadata.MatchedBy, got.Error.Message, byLabel)
				}
			}
		})
	}
}
