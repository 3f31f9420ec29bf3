package integration

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/caddymodule/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// TestLargeAccount: an account of 20,000 keys (OPENROUTER_KEYS_ACCOUNT;
// computed by the emulator, not held, so a million is possible) in 4
// workspaces, behind a management API that takes 50 ms per page. The
// first failure of a deleted key is answered within lookup_timeout,
// explained or not; the listing goes on under its own deadline, and once it
// is read a deleted, a disabled and an expired key are explained within
// lookup_timeout, and with hashes proven to be sha256(key) a key deleted
// after the listing is explained by GET /keys/{hash} alone. With record
// hashes that are sha256(key) and with opaque ones (only labels match: the
// verdict says so). It reports the gateway's heap beside an idle one's.
func TestLargeAccount(t *testing.T) {
	n := envInt("OPENROUTER_KEYS_ACCOUNT", 20000)
	const lookupTimeout = time.Second
	const pageDelay = 50 * time.Millisecond
	const workspaces = 4
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
			account := emulator.SyntheticAccount{Keys: n, Seed: name, DisabledEvery: 7, ExpiredEvery: 11}
			created := time.Now()
			e := start(t, options{management: true, module: fmt.Sprintf("lookup_timeout %s", lookupTimeout), emulator: func(s *emulator.Server) {
				s.ListPageDelay = pageDelay
				s.OpaqueHashes = opaque
				for i := 1; i < workspaces; i++ {
					s.NewWorkspace("Team " + string(rune('A'+i)))
				}
				s.Synthesize(account)
				s.OnListPage(func(string, int) {
					pagesMu.Lock()
					if firstPage.IsZero() {
						firstPage = time.Now().Add(-pageDelay)
					}
					lastPage = time.Now()
					pagesMu.Unlock()
				})
			}})
			t.Logf("%d keys in %d workspaces computed in %v", n, workspaces, time.Since(created).Round(time.Millisecond))

			// The keys used: of the workspace they are in (key i is in
			// workspace i%4), with a label no other key has, so that labels
			// can tell them apart when hashes cannot.
			labels := make(map[string]int, n)
			for i := range n {
				labels[openrouter.Label(account.Key(i))]++
			}
			pick := func(from, step int, want func(i int) bool) int {
				for i := from; i >= 0 && i < n; i += step {
					if labels[openrouter.Label(account.Key(i))] == 1 && want(i) {
						return i
					}
				}
				t.Fatalf("no key fits")
				return 0
			}
			plain := func(i int) bool { return !account.Disabled(i) && !account.Expired(i) }
			deleted := []int{pick(n/2+1, 4, plain)}
			deleted = append(deleted, pick(deleted[0]+4, 4, plain))
			deleted = append(deleted, pick(deleted[1]+4, 4, plain))
			// The oldest disabled key of the last workspace: on its last page.
			disabled := pick(workspaces-1, workspaces, func(i int) bool { return account.Disabled(i) && !account.Expired(i) })
			expired := pick(n/3-n/3%workspaces+2, workspaces, func(i int) bool { return account.Expired(i) && !account.Disabled(i) })
			labels = nil
			for _, i := range deleted[:2] {
				e.emu.DeleteSynthetic(i)
			}
			idle := heapAfterGC()

			body := `{"model":"openai/gpt-4o","messages":[]}`
			listed := `caddy_openrouter_keys_lookups_total{endpoint="keys_list"`
			pagesBefore := metricSum(t, listed)

			// (a) The first failure starts the listing and waits for it at
			// most lookup_timeout.
			begin := time.Now()
			resp, b := raw(t, "POST", gatewayBase+"/chat/completions", e.emu.SyntheticKey(deleted[0]), body)
			took := time.Since(begin)
			t.Logf("first failure of a deleted key: %v, %s %s", took.Round(time.Millisecond), resp.Header.Get("X-OpenRouter-Key-Status"), b)
			if took > lookupTimeout+600*time.Millisecond {
				t.Errorf("the first failure waited %v; lookup_timeout is %v", took, lookupTimeout)
			}
			if status := resp.Header.Get("X-OpenRouter-Key-Status"); resp.StatusCode != 401 || (status != "" && status != "key_not_found") ||
				(status == "" && string(b) != `{"error":{"message":"User not found.","code":401}}`) {
				t.Errorf("first failure of a deleted key: %d %q %s", resp.StatusCode, status, b)
			}

			// The listing goes on under its own deadline. Once it is read,
			// the first key is explained from it without another lookup
			// (it is within its explain backoff): that is the sign.
			deadline := time.Now().Add(2*time.Minute + time.Duration(n/2)*time.Millisecond)
			for {
				resp, _ := raw(t, "POST", gatewayBase+"/chat/completions", e.emu.SyntheticKey(deleted[0]), body)
				if resp.Header.Get("X-OpenRouter-Key-Status") == "key_not_found" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the listing was not read after %v", time.Since(begin).Round(time.Second))
				}
				time.Sleep(200 * time.Millisecond)
			}
			pages := metricSum(t, listed) - pagesBefore
			pagesMu.Lock()
			listing := lastPage.Sub(firstPage)
			pagesMu.Unlock()
			t.Logf("listing of %d keys in %d workspaces: pages read in %v, explaining from it after %v; %v page requests (%d per page served, %v each, %d at a time)",
				n, workspaces, listing.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond), pages, emulator.PageSize, pageDelay, 8)
			if minimum := float64(n / (emulator.PageSize - 1)); pages < minimum || pages > 1.5*minimum+float64(10*workspaces) {
				t.Errorf("%v page requests for %d keys", pages, n)
			}
			// Deleted after the listing: only the hash lookup can tell.
			e.emu.DeleteSynthetic(deleted[2])

			// (b) Now the listing, or the hash lookup, explains within
			// lookup_timeout. A listing proves absent only a key seen before
			// it started (a key first seen later may be newer than the
			// listing); a 404 of GET /keys/{hash}, once proven to reach every
			// workspace, proves it at the time it is asked. With opaque
			// hashes nothing proves a key first seen after the listing
			// absent.
			notFoundByHash := "key_not_found"
			if opaque {
				notFoundByHash = ""
			}
			for _, c := range []struct {
				what   string
				key    int
				reason string
			}{
				{"a deleted key first seen after the listing started", deleted[1], notFoundByHash},
				{"a disabled key of the last workspace", disabled, "key_disabled"},
				{"an expired key", expired, "key_expired"},
				{"a key deleted after the listing", deleted[2], notFoundByHash},
			} {
				pagesBefore := metricSum(t, listed)
				begin := time.Now()
				resp, b := raw(t, "POST", gatewayBase+"/chat/completions", e.emu.SyntheticKey(c.key), body)
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
				if listed := metricSum(t, listed) - pagesBefore; listed != 0 {
					t.Errorf("%s: %v pages listed again", c.what, listed)
				}
				// Only a record matched by hash is the key's own; what a
				// label matched says so.
				if byLabel := c.reason != "key_not_found" && c.reason != "" && opaque; (got.Error.Metadata.MatchedBy == "label") != byLabel ||
					strings.Contains(got.Error.Message, "matched by label") != byLabel {
					t.Errorf("%s: matched_by %q, message %q; matched by label: %v", c.what, got.Error.Metadata.MatchedBy, got.Error.Message, byLabel)
				}
			}
			busy := heapAfterGC()
			t.Logf("gateway heap after GC: idle %.1f MB, with the account's listing %.1f MB: +%.1f MB (%.0f bytes a key)",
				mb(idle), mb(busy), mb(busy-idle), float64(busy-idle)/float64(n))
			if busy-idle > 300<<20 {
				t.Errorf("the gateway holds %.0f MB more than an idle one", mb(busy-idle))
			}
		})
	}
}

// heapAfterGC is the Go heap in use after a collection: the gateway's,
// the emulator's (which holds 16 bytes a synthetic key) and the test's.
func heapAfterGC() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
