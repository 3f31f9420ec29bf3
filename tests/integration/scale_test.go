package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// TestLargeAccount: an account of 20,000 keys (OPENROUTER_KEYS_ACCOUNT;
// computed by the emulator, not held, so a million is possible) in 4
// workspaces, behind a management API that takes 50 ms per page. With
// record hashes that are sha256(key), a disabled key explained from its own
// record proves the scheme and starts a probe of what GET /keys/{hash}
// reaches (a few pages, never the whole account); once it ran, deleted keys,
// the first included, are explained by the 404 within lookup_timeout and no
// listing is read. With opaque hashes (only labels match: the verdict says
// so), the first failure of a deleted key is answered within
// lookup_timeout, unexplained; the listing goes on under its own deadline,
// and once it is read a disabled and an expired key are explained within
// lookup_timeout. It reports the gateway's heap beside an idle one's.
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

			if opaque {
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
			} else {
				// (a) With sha256 hashes, a disabled key explained from its
				// own record proves the hash scheme and starts a probe of
				// what GET /keys/{hash} reaches: the first page of each
				// workspace and one record of each asked by hash. Once it
				// ran, a deleted key is explained by the 404 within
				// lookup_timeout, and no listing is read.
				begin := time.Now()
				records := `caddy_openrouter_keys_lookups_total{endpoint="key_record"`
				resp, b := raw(t, "POST", gatewayBase+"/chat/completions", e.emu.SyntheticKey(disabled), body)
				if status := resp.Header.Get("X-OpenRouter-Key-Status"); status != "key_disabled" {
					t.Fatalf("a disabled key before any listing: %d %q %s", resp.StatusCode, status, b)
				}
				// The probe is done when it has read a page of every
				// workspace but the disabled key's (reached by its lookup)
				// and asks GET /keys/{hash} no more.
				last := -1.0
				for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
					asked := metricSum(t, records)
					if metricSum(t, listed)-pagesBefore >= workspaces-1 && asked == last {
						break
					}
					last = asked
					if time.Now().After(deadline) {
						t.Fatalf("the probe read %v pages in a minute", metricSum(t, listed)-pagesBefore)
					}
				}
				probePages, probeTook := metricSum(t, listed)-pagesBefore, time.Since(begin)
				t.Logf("probe of reach: %v page requests, done within %v of the disabled key's refusal", probePages, probeTook.Round(10*time.Millisecond))
				// The probe took from the management budget (10 requests,
				// 5 a second), leaving half: let it fill again, as it does
				// between failures, for the burst of lookups below.
				time.Sleep(2 * time.Second)
				if probePages > 3*workspaces {
					t.Errorf("the probe read %v pages", probePages)
				}
				pagesBefore := metricSum(t, listed)
				begin = time.Now()
				resp, b = raw(t, "POST", gatewayBase+"/chat/completions", e.emu.SyntheticKey(deleted[0]), body)
				took := time.Since(begin)
				t.Logf("first failure of a deleted key, after the probe: %v, %s %s", took.Round(time.Millisecond), resp.Header.Get("X-OpenRouter-Key-Status"), b)
				if status := resp.Header.Get("X-OpenRouter-Key-Status"); resp.StatusCode != 401 || status != "key_not_found" || took > lookupTimeout {
					t.Errorf("first failure of a deleted key after the probe: %d %q after %v", resp.StatusCode, status, took)
				}
				if pages := metricSum(t, listed) - pagesBefore; pages != 0 {
					t.Errorf("first failure of a deleted key after the probe: %v pages listed", pages)
				}
			}
			// Deleted after the listing or the probe: only the hash lookup
			// can tell.
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
				{"a deleted key first seen after the listing or the probe", deleted[1], notFoundByHash},
				{"a disabled key of the last workspace", disabled, "key_disabled"},
				{"an expired key", expired, "key_expired"},
				{"a key deleted after the listing or the probe", deleted[2], notFoundByHash},
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

// TestWatchAtScale: watch_keys (watch_max_keys at its default) in front of
// an account of 20,000 keys (OPENROUTER_KEYS_ACCOUNT; a million is the
// figure the README gives), with management_rate 20000 so that a full read
// is quick here (at the default 5 a second a million keys take over an
// hour to read: pages of 100, the watch pacing itself at half the rate).
// One key in use expires within 24 h among keys disabled, expired and
// expiring in 10 days (unused). It reports the gateway's heap beside an
// idle gateway's, /metrics' size and scrape time and a full read's
// duration; the key in use has its own series, /metrics stays under 5 MB,
// the account-wide counts and the dropped count are the account's, and a
// real Prometheus with monitoring/alerts.yml fires the 24 h alert for the
// key.
func TestWatchAtScale(t *testing.T) {
	n := envInt("OPENROUTER_KEYS_ACCOUNT", 20000)
	const maxKeys = 1000 // watch_max_keys' default
	const workspaces = 4
	account := emulator.SyntheticAccount{Keys: n, Seed: "watch at scale", DisabledEvery: 7, ExpiredEvery: 11, ExpiringEvery: 13}
	soon := &watchedKey{workspace: "Team B", name: "soon", expires: new(time.Time), used: true}
	*soon.expires = time.Now().UTC().Add(5 * time.Hour).Truncate(time.Second)
	created := time.Now()
	// The account's budget is the lowest of its handlers': the key check's
	// too.
	e := start(t, options{management: true, module: "management_rate 20000", keycheck: "management_rate 20000", emulator: func(s *emulator.Server) {
		team := s.NewWorkspace("Team B")
		for i := 2; i < workspaces; i++ {
			s.NewWorkspace("Team " + string(rune('A'+i)))
		}
		s.Synthesize(account)
		soon.secret = s.NewKey(emulator.KeyOptions{Name: soon.name, Workspace: team, ExpiresAt: soon.expires})
	}})
	t.Logf("%d keys in %d workspaces computed in %v", n, workspaces, time.Since(created).Round(time.Millisecond))
	idle := heapAfterGC()

	// The watch starts with the reload; the key is used after it, and the
	// figures are those of the first read that began after the use.
	e.reload("watch_keys 1s")
	if _, err := chat(gatewayBase, soon.secret); err != nil {
		t.Fatal(err)
	}
	used := time.Now()
	const success, duration = "caddy_openrouter_keys_watch_last_success_timestamp_seconds", "caddy_openrouter_keys_watch_duration_seconds"
	var watch map[string]float64
	if !poll(time.Minute+time.Duration(n/2)*time.Millisecond, func() bool {
		watch = samples(t, scrape(t), "caddy_openrouter_keys_watch_")
		// The success is in whole seconds: the read began no earlier.
		return watch[success]-watch[duration] > float64(used.UnixNano())/1e9
	}) {
		log, _ := os.ReadFile(logPath)
		var lines []string
		for _, l := range strings.Split(string(log), "\n") {
			if strings.Contains(l, "watch") {
				lines = append(lines, l)
			}
		}
		t.Fatalf("no read of the account begun after the use (at %d): %v\ncaddy's log on the watch:\n%s", used.Unix(), watch, strings.Join(lines[max(0, len(lines)-10):], "\n"))
	}
	busy := heapAfterGC()

	var all string
	var scrapes []time.Duration
	for range 5 {
		begin := time.Now()
		all = scrape(t)
		scrapes = append(scrapes, time.Since(begin))
	}
	t.Logf("%d keys, watch_max_keys %d: a full read took %.1f s; %v keys exported, %v that matter only counted; /metrics %d bytes (%.2f MB), scraped in %v (median of 5, a read running)",
		n, maxKeys, watch[duration], watch["caddy_openrouter_keys_watch_keys_exported"], watch["caddy_openrouter_keys_watch_keys_dropped"],
		len(all), float64(len(all))/(1<<20), percentile(scrapes, 0.5).Round(time.Millisecond))
	t.Logf("gateway heap after GC: idle %.1f MB, watching %.1f MB: +%.1f MB", mb(idle), mb(busy), mb(busy-idle))
	if busy-idle > 300<<20 {
		t.Errorf("the watching gateway holds %.0f MB more than an idle one", mb(busy-idle))
	}
	if len(all) >= 5<<20 {
		t.Errorf("/metrics is %d bytes; want under 5 MB", len(all))
	}
	noKeyMaterial(t, "/metrics", all, []string{soon.secret, e.mgmtKey, e.emu.SyntheticKey(0), e.emu.SyntheticKey(n - 1)})

	// The key in use has its own series.
	got := samples(t, all, "caddy_openrouter_keys_key_")
	mine := map[string]float64{}
	for s, v := range got {
		if strings.Contains(s, `name="soon"`) {
			mine[s] = v
		}
	}
	sameSeries(t, "the key in use", mine, wantKeySeries(t, []*watchedKey{soon}, mine, used.Unix()-2, used.Unix()+1))

	// The account's counts, from its formulas: the synthetic keys, the
	// gateway's management key and soon.
	var disabled, expired, expiring int
	for i := range n {
		switch {
		case account.Expired(i):
			expired++
		case account.Disabled(i):
			disabled++
		case account.Expiring(i):
			expiring++
		}
	}
	total := n + 2
	matter := expiring + 1 // soon: in use; the others expire within 14 days
	exported := min(maxKeys, matter)
	counts := func(metric string, labels ...string) string {
		return "caddy_openrouter_keys_" + metric + "{" + strings.Join(labels, ",") + "}"
	}
	acct := samples(t, all, "caddy_openrouter_keys_account_keys")
	sum := func(metric string, labels ...string) float64 {
		var s float64
		for series, v := range acct {
			if !strings.HasPrefix(series, "caddy_openrouter_keys_"+metric+"{") {
				continue
			}
			matches := true
			for _, l := range labels {
				matches = matches && strings.Contains(series, l)
			}
			if matches {
				s += v
			}
		}
		return s
	}
	for what, c := range map[string]struct{ got, want float64 }{
		"keys read":                       {samples(t, all, "caddy_openrouter_keys_watch_keys ")["caddy_openrouter_keys_watch_keys"], float64(total)},
		"keys exported":                   {samples(t, all, "caddy_openrouter_keys_watch_keys_exported")["caddy_openrouter_keys_watch_keys_exported"], float64(exported)},
		"keys that matter without series": {samples(t, all, "caddy_openrouter_keys_watch_keys_dropped")["caddy_openrouter_keys_watch_keys_dropped"], float64(matter - exported)},
		"active keys":                     {sum("account_keys", `state="active"`), float64(n - disabled - expired + 2)},
		"disabled keys":                   {sum("account_keys", `state="disabled"`), float64(disabled)},
		"expired keys":                    {sum("account_keys", `state="expired"`), float64(expired)},
		"keys in use":                     {sum("account_keys", `used="1h"`), 1},
		"keys in use, named":              {acct[counts("account_keys", `named="yes"`, `state="active"`, `used="1h"`)], 1},
		"in use expiring within 24h":      {sum("account_keys_expiring", `used="1h"`, `within="24h"`), 1},
		"unused expiring within 72h":      {sum("account_keys_expiring", `used="no"`, `within="72h"`), 0},
		"unused expiring within 14d":      {sum("account_keys_expiring", `used="no"`, `within="14d"`), float64(expiring)},
		"named, expiring within 14d":      {sum("account_keys_expiring", `named="yes"`, `within="14d"`), float64(exported)},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", what, c.got, c.want)
		}
	}

	// A real Prometheus with monitoring/alerts.yml fires the 24 h alert
	// for the key by name.
	begin := time.Now()
	byKey, promLog := startPrometheus(t)
	const critical = "OpenRouterKeyExpiringSoon/critical"
	var alerts map[string]map[string]string
	if !poll(time.Minute, func() bool {
		alerts = byKey()
		return alerts[soon.name][critical] == "firing"
	}) {
		t.Fatalf("after a minute, the in-use key expiring in 5 h has no firing %s alert: %v\nprometheus:\n%s", critical, alerts[soon.name], promLog())
	}
	t.Logf("%s firing for the key in use %v after Prometheus started", critical, time.Since(begin).Round(100*time.Millisecond))
	if a := alerts[""]; a["OpenRouterUnnamedKeysExpiringSoon/critical"] != "" {
		t.Errorf("keys in use expiring without names: %v", a)
	}
}
