package integration

// The key watch (watch_keys), seen from where operators see it: Caddy's
// admin /metrics, a second replica's /metrics, and a real Prometheus
// loading monitoring/alerts.yml.

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// keySeries names one key's series as Caddy's /metrics exposes it (labels
// sorted by name).
func keySeries(metric, workspace, name, label string) string {
	return fmt.Sprintf("caddy_openrouter_keys_%s{label=%q,name=%q,workspace=%q}", metric, label, name, workspace)
}

// poll polls cond until it holds (true) or within has passed (false).
func poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// eventually polls cond until it holds, and fails the test if it does not
// within.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(within, cond) {
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}

// watchedKey is a key of the emulated account and what the watch must say
// of it.
type watchedKey struct {
	secret    string
	workspace string // name
	name      string
	expires   *time.Time
	limit     *float64
	window    string // limit_reset: daily, weekly, monthly; "" never
	usage     float64
	disabled  bool
	used      bool // sent through the gateway by the test
}

func (k *watchedKey) series(metric string) string {
	return keySeries(metric, k.workspace, k.name, openrouter.Label(k.secret))
}

// wantKeySeries is every caddy_openrouter_keys_key_* series the watch must
// export for keys, but the last-use values, which are checked against
// usedFrom..usedTo and then taken as read from got.
func wantKeySeries(t *testing.T, keys []*watchedKey, got map[string]float64, usedFrom, usedTo int64) map[string]float64 {
	t.Helper()
	want := map[string]float64{}
	for _, k := range keys {
		want[k.series("key_disabled")] = map[bool]float64{false: 0, true: 1}[k.disabled]
		if k.expires != nil {
			want[k.series("key_expiry_timestamp_seconds")] = float64(k.expires.Unix())
		}
		if k.limit != nil {
			want[k.series("key_limit")] = *k.limit
			want[k.series("key_limit_remaining")] = *k.limit - k.usage
			if resets, ok := openrouter.ParseWindow(k.window).ResetsAt(time.Now()); ok {
				s := fmt.Sprintf("caddy_openrouter_keys_key_limit_reset_timestamp_seconds{label=%q,name=%q,window=%q,workspace=%q}",
					openrouter.Label(k.secret), k.name, k.window, k.workspace)
				want[s] = float64(resets.Unix())
			}
		}
		if k.used {
			s := k.series("key_last_used_timestamp_seconds")
			if v, ok := got[s]; ok && (v < float64(usedFrom) || v > float64(usedTo)) {
				t.Errorf("%s = %v, want between %d and %d (when the test sent it)", s, v, usedFrom, usedTo)
			}
			want[s] = got[s]
		}
	}
	return want
}

// sameSeries reports every series missing, unexpected or with another
// value.
func sameSeries(t *testing.T, when string, got, want map[string]float64) {
	t.Helper()
	var problems []string
	for s, v := range want {
		g, ok := got[s]
		switch {
		case !ok:
			problems = append(problems, "missing "+s)
		case g != v:
			problems = append(problems, fmt.Sprintf("%s = %v, want %v", s, g, v))
		}
	}
	for s := range got {
		if _, ok := want[s]; !ok {
			problems = append(problems, "unexpected "+s)
		}
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Errorf("%s: %s", when, p)
	}
}

func noKeyMaterial(t *testing.T, where, text string, secrets []string) {
	t.Helper()
	for _, key := range secrets {
		for _, m := range keyMaterial(key) {
			if strings.Contains(text, m) {
				t.Errorf("%s carries a form of key %s... (%d bytes)", where, key[:12], len(m))
			}
		}
	}
}

func TestWatchKeysExportsEveryKey(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	credits := func(v float64) *float64 { return &v }
	var keys []*watchedKey
	var notebook, scratch *watchedKey
	e := start(t, options{management: true, module: "watch_keys 2s", emulator: func(emu *emulator.Server) {
		workspaces := map[string]string{"Default": "", "Production": emu.NewWorkspace("Production"), "Research": emu.NewWorkspace("Research")}
		keys = []*watchedKey{
			{workspace: "Production", name: "deploy", expires: at(2 * time.Hour), limit: credits(10), usage: 9.5, used: true},
			{workspace: "Research", name: "batch", expires: at(48 * time.Hour), used: true},
			{workspace: "Research", name: "notebook", expires: at(20 * 24 * time.Hour), limit: credits(50)},
			{workspace: "Default", name: "ops"},
			{workspace: "Default", name: "legacy", disabled: true, limit: credits(5), usage: 1, used: true},
			{workspace: "Production", name: "scratch", used: true},
			{workspace: "Production", name: "nightly", limit: credits(20), window: "daily", usage: 19, used: true},
		}
		notebook, scratch = keys[2], keys[5]
		for _, k := range keys {
			k.secret = emu.NewKey(emulator.KeyOptions{Name: k.name, Workspace: workspaces[k.workspace],
				ExpiresAt: k.expires, Limit: k.limit, LimitReset: k.window, Usage: k.usage, Disabled: k.disabled})
		}
	}})
	// The gateway's own management key is a key of the account too.
	keys = append(keys, &watchedKey{secret: e.mgmtKey, workspace: "Default", name: "gateway"})

	usedFrom := time.Now().Unix()
	for _, k := range keys {
		if !k.used {
			continue
		}
		_, err := chat(gatewayBase, k.secret)
		if k.disabled {
			if ke := asKeyError(t, err); ke.reason != "key_disabled" {
				t.Errorf("disabled key: %+v", ke)
			}
		} else if err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
	}
	usedTo := time.Now().Unix()

	// The next read ties every key sent to its record (or the comparison
	// below says what is missing).
	var all string
	poll(10*time.Second, func() bool {
		all = scrape(t)
		got := samples(t, all, "caddy_openrouter_keys_key_last_used")
		for _, k := range keys {
			if _, ok := got[k.series("key_last_used_timestamp_seconds")]; k.used && !ok {
				return false
			}
		}
		return true
	})
	got := samples(t, all, "caddy_openrouter_keys_key_")
	sameSeries(t, "first read", got, wantKeySeries(t, keys, got, usedFrom, usedTo))
	noKeyMaterial(t, "/metrics", all, e.emu.Secrets())

	watch := samples(t, scrape(t), "caddy_openrouter_keys_watch_")
	success := watch["caddy_openrouter_keys_watch_last_success_timestamp_seconds"]
	if age := float64(time.Now().Unix()) - success; age < 0 || age > 4 {
		t.Errorf("watch_last_success_timestamp_seconds is %v s old with a 2s interval", age)
	}
	if d := watch["caddy_openrouter_keys_watch_duration_seconds"]; d <= 0 || d > 2 {
		t.Errorf("watch_duration_seconds = %v", d)
	}
	sameSeries(t, "watch", watch, map[string]float64{
		"caddy_openrouter_keys_watch_last_success_timestamp_seconds": success,
		"caddy_openrouter_keys_watch_duration_seconds":               watch["caddy_openrouter_keys_watch_duration_seconds"],
		"caddy_openrouter_keys_watch_interval_seconds":               2,
		"caddy_openrouter_keys_watch_keys":                           float64(len(keys)),
		// An account within watch_max_keys: every key has its series.
		"caddy_openrouter_keys_watch_keys_exported": float64(len(keys)),
		"caddy_openrouter_keys_watch_keys_dropped":  0,
	})

	// Between two reads a key is deleted and another spends credits: the
	// first read that starts after that has neither the deleted key's
	// series nor the old remaining credit. Two reads published after the
	// change include one that started after it.
	e.emu.Delete(scratch.secret)
	e.emu.SetUsage(notebook.secret, 12)
	keys = slices.DeleteFunc(keys, func(k *watchedKey) bool { return k == scratch })
	notebook.usage = 12
	reads := map[float64]bool{}
	eventually(t, 10*time.Second, "two reads after the key was deleted", func() bool {
		if s := samples(t, scrape(t), "caddy_openrouter_keys_watch_last_success")["caddy_openrouter_keys_watch_last_success_timestamp_seconds"]; s > success {
			reads[s] = true
		}
		return len(reads) >= 2
	})
	all = scrape(t)
	got = samples(t, all, "caddy_openrouter_keys_key_")
	sameSeries(t, "after the deletion", got, wantKeySeries(t, keys, got, usedFrom, usedTo))
	if n := samples(t, all, "caddy_openrouter_keys_watch_keys")["caddy_openrouter_keys_watch_keys"]; n != float64(len(keys)) {
		t.Errorf("watch_keys = %v after the deletion, want %d", n, len(keys))
	}
	noKeyMaterial(t, "/metrics", all, e.emu.Secrets())
}

// TestWatchKeysPastTheCap: an account with more keys than watch_max_keys
// names the most urgent keys (the key in use that expires soonest first)
// and counts every key, so that the alerts of monitoring/ can fire for the
// others by count.
func TestWatchKeysPastTheCap(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	const idle = 40
	var soon, later, busy, unused *watchedKey
	e := start(t, options{management: true, module: "watch_keys 1s\nwatch_max_keys 2", emulator: func(emu *emulator.Server) {
		team := emu.NewWorkspace("Team")
		for i := range idle {
			emu.NewKey(emulator.KeyOptions{Name: fmt.Sprintf("user-%d", i), Workspace: team})
		}
		// In use: expires in 2 h (critical), in 50 h (warning), never.
		// Not in use: expires in 5 days (info).
		soon = &watchedKey{workspace: "Team", name: "soon", expires: at(2 * time.Hour), used: true}
		later = &watchedKey{workspace: "Team", name: "later", expires: at(50 * time.Hour), used: true}
		busy = &watchedKey{workspace: "Default", name: "busy", used: true}
		unused = &watchedKey{workspace: "Team", name: "unused", expires: at(5 * 24 * time.Hour)}
		for _, k := range []*watchedKey{soon, later, busy, unused} {
			ws := team
			if k.workspace == "Default" {
				ws = ""
			}
			k.secret = emu.NewKey(emulator.KeyOptions{Name: k.name, Workspace: ws, ExpiresAt: k.expires})
		}
	}})
	usedFrom := time.Now().Unix()
	for _, k := range []*watchedKey{busy, later, soon} {
		if _, err := chat(gatewayBase, k.secret); err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
	}
	usedTo := time.Now().Unix()
	total := idle + 4 + 1 // and the gateway's management key

	// Once a read has seen the uses, the two keys in use that expire
	// soonest have their series, and no other key does.
	var all string
	eventually(t, 10*time.Second, "a read with the uses", func() bool {
		all = scrape(t)
		_, ok := samples(t, all, "caddy_openrouter_keys_key_last_used")[soon.series("key_last_used_timestamp_seconds")]
		return ok
	})
	got := samples(t, all, "caddy_openrouter_keys_key_")
	sameSeries(t, "keys named", got, wantKeySeries(t, []*watchedKey{soon, later}, got, usedFrom, usedTo))

	counts := func(metric string, labels ...string) string {
		return "caddy_openrouter_keys_" + metric + "{" + strings.Join(labels, ",") + "}"
	}
	watch := samples(t, all, "caddy_openrouter_keys_watch_keys")
	acct := samples(t, all, "caddy_openrouter_keys_account_keys")
	for s, want := range map[string]float64{
		"caddy_openrouter_keys_watch_keys":          float64(total),
		"caddy_openrouter_keys_watch_keys_exported": 2,
		// busy (in use) and unused (expires within 14 days) matter.
		"caddy_openrouter_keys_watch_keys_dropped": 2,
	} {
		if watch[s] != want {
			t.Errorf("%s = %v, want %v", s, watch[s], want)
		}
	}
	for s, want := range map[string]float64{
		counts("account_keys", `named="yes"`, `state="active"`, `used="1h"`): 2,
		counts("account_keys", `named="no"`, `state="active"`, `used="1h"`):  1, // busy
		counts("account_keys", `named="no"`, `state="active"`, `used="no"`):  float64(idle + 2),
		// The alerts' counts: keys in use expiring, named or not.
		counts("account_keys_expiring", `named="yes"`, `used="1h"`, `within="24h"`): 1,
		counts("account_keys_expiring", `named="yes"`, `used="1h"`, `within="72h"`): 2,
		counts("account_keys_expiring", `named="no"`, `used="1h"`, `within="72h"`):  0,
		counts("account_keys_expiring", `named="no"`, `used="no"`, `within="14d"`):  1, // unused
		counts("account_keys_expiring", `named="no"`, `used="no"`, `within="72h"`):  0,
	} {
		if acct[s] != want {
			t.Errorf("%s = %v, want %v", s, acct[s], want)
		}
	}
	var sum float64
	for s, v := range acct {
		if strings.HasPrefix(s, "caddy_openrouter_keys_account_keys{") {
			sum += v
		}
	}
	if sum != float64(total) {
		t.Errorf("account_keys add up to %v, want every key of the account (%d)", sum, total)
	}
	t.Logf("/metrics: %d bytes with %d keys and watch_max_keys 2", len(all), total)
	noKeyMaterial(t, "/metrics", all, e.emu.Secrets())
}

// TestWatchKeysKeepUsesAcrossReloads: a config reload (`caddy reload`)
// forgets no key's last use; "in use" spans days, reloads happen any time.
func TestWatchKeysKeepUsesAcrossReloads(t *testing.T) {
	var used *watchedKey
	e := start(t, options{management: true, module: "watch_keys 1s", emulator: func(emu *emulator.Server) {
		used = &watchedKey{workspace: "Default", name: "used", used: true}
		used.secret = emu.NewKey(emulator.KeyOptions{Name: used.name})
	}})
	if _, err := chat(gatewayBase, used.secret); err != nil {
		t.Fatal(err)
	}
	series := used.series("key_last_used_timestamp_seconds")
	var before float64
	eventually(t, 5*time.Second, "the key's last use", func() bool {
		before = samples(t, scrape(t), series)[series]
		return before > 0
	})
	reloaded := time.Now().Unix()
	e.reload("warn_before 1h") // a config change
	// Two reads of the new config.
	reads := map[float64]bool{}
	eventually(t, 10*time.Second, "two reads after the reload", func() bool {
		s := samples(t, scrape(t), "caddy_openrouter_keys_watch_last_success")["caddy_openrouter_keys_watch_last_success_timestamp_seconds"]
		if s >= float64(reloaded) {
			reads[s] = true
		}
		return len(reads) >= 2
	})
	if after, ok := samples(t, scrape(t), series)[series]; after != before {
		t.Errorf("after a reload, the key's last use is %v (exported: %v); before, %v", after, ok, before)
	}
}

// TestWatchKeysAcrossReplicas runs two Caddy processes with watch_keys
// sharing a file_system storage: a key used only through one replica shows
// as used on the other's /metrics, and only one replica lists the account
// per interval.
func TestWatchKeysAcrossReplicas(t *testing.T) {
	const interval = 2 * time.Second
	emu := emulator.New()
	team := emu.NewWorkspace("Team")
	mk := emu.NewKey(emulator.KeyOptions{Name: "gateway", Management: true})
	// Each workspace has a key from the start: a listing reads as many
	// pages as it will later.
	idle := &watchedKey{workspace: "Team", name: "idle"}
	idle.secret = emu.NewKey(emulator.KeyOptions{Name: idle.name, Workspace: team})
	// Every GET /keys page, by when it was served.
	var mu sync.Mutex
	var pages []time.Time
	emu.OnListPage(func(string, int) {
		mu.Lock()
		pages = append(pages, time.Now())
		mu.Unlock()
	})
	served := func() []time.Time { mu.Lock(); defer mu.Unlock(); return slices.Clone(pages) }
	upstream := newUpstream(t, emu)
	storageDir := t.TempDir()
	opts := func(admin string) replicaOptions {
		return replicaOptions{admin: admin, module: "management_key {env.OPENROUTER_TEST_WATCH_MK}\nwatch_keys " + interval.String(),
			env: []string{"OPENROUTER_TEST_WATCH_MK=" + mk}}
	}
	adminA, adminB := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	a := startReplicaWith(t, "watch-a", upstream, storageDir, opts(adminA))
	eventually(t, 10*time.Second, "replica A's first listing", func() bool { return len(served()) > 0 })
	time.Sleep(interval / 4)
	// One listing: its pages come within milliseconds of each other.
	pagesPerListing := len(listings(served(), interval/4)[0])
	b := startReplicaWith(t, "watch-b", upstream, storageDir, opts(adminB))

	// Keys made once both replicas run, so that neither has listed them
	// before: whichever replica leaves the listing to the other must still
	// share the uses it sees.
	viaA := &watchedKey{workspace: "Team", name: "via-a", used: true}
	viaB := &watchedKey{workspace: "Default", name: "via-b", used: true}
	for _, k := range []*watchedKey{viaA, viaB} {
		ws := ""
		if k.workspace == "Team" {
			ws = team
		}
		k.secret = emu.NewKey(emulator.KeyOptions{Name: k.name, Workspace: ws})
	}
	if _, err := chat(a.base, viaA.secret); err != nil {
		t.Fatal(err)
	}
	if _, err := chat(b.base, viaB.secret); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ name, admin string }{{"A", adminA}, {"B", adminB}} {
		var got map[string]float64
		eventually(t, 4*interval, "replica "+r.name+" to show both uses", func() bool {
			got = samples(t, scrapeURL(t, "http://"+r.admin+"/metrics"), "caddy_openrouter_keys_key_last_used")
			_, a := got[viaA.series("key_last_used_timestamp_seconds")]
			_, b := got[viaB.series("key_last_used_timestamp_seconds")]
			return a && b
		})
		if len(got) != 2 {
			t.Errorf("replica %s: last use of keys not sent: %v", r.name, got)
		}
	}

	// Over a few intervals, one listing per interval whatever the number
	// of replicas.
	const intervals = 5
	from := time.Now()
	time.Sleep(intervals * interval)
	var last []time.Time
	for _, p := range served() {
		if p.After(from) {
			last = append(last, p)
		}
	}
	ls := listings(last, interval/4)
	var gaps []string
	for i := 1; i < len(ls); i++ {
		gaps = append(gaps, ls[i][0].Sub(ls[i-1][0]).Round(10*time.Millisecond).String())
	}
	t.Logf("over %d intervals of %s with two replicas: %d GET /keys pages in %d listings (%d pages each); gaps between listings: %v",
		intervals, interval, len(last), len(ls), pagesPerListing, gaps)
	if len(ls) > intervals+1 || len(ls) < intervals-1 {
		t.Errorf("%d listings over %d intervals; want one per interval", len(ls), intervals)
	}
	for _, l := range ls {
		if len(l) != pagesPerListing {
			t.Errorf("a listing of %d pages at %s; one listing reads %d (two replicas listing at once?)", len(l), l[0].Format(time.StampMilli), pagesPerListing)
		}
	}

	// What the replicas share names no key.
	_ = filepath.WalkDir(storageDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(path)
			noKeyMaterial(t, "shared storage "+strings.TrimPrefix(path, storageDir), path+"\n"+string(b), emu.Secrets())
		}
		return nil
	})
	noKeyMaterial(t, "replica A's /metrics", scrapeURL(t, "http://"+adminA+"/metrics"), emu.Secrets())
}

// listings groups page requests into listings: pages less than gap apart.
func listings(pages []time.Time, gap time.Duration) [][]time.Time {
	var out [][]time.Time
	for i, p := range pages {
		if i == 0 || p.Sub(pages[i-1]) >= gap {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], p)
	}
	return out
}

// promAlert is one alert as Prometheus's /api/v1/alerts lists it.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// shortenedRules is monitoring/alerts.yml with every `for:` set to 2s, so
// that an alert fires seconds after its condition holds (the real file
// waits 5 to 30 minutes).
func shortenedRules(t *testing.T) []byte {
	t.Helper()
	rules, err := os.ReadFile("../../monitoring/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	forLine := regexp.MustCompile(`(?m)^(\s+)for: [0-9]+[smhd]\s*$`)
	if n, all := len(forLine.FindAll(rules, -1)), strings.Count(string(rules), "for:"); n == 0 || n != all {
		t.Fatalf("alerts.yml: %d of %d `for:` lines can be shortened", n, all)
	}
	return forLine.ReplaceAll(rules, []byte("${1}for: 2s"))
}

// TestWatchAlertsInPrometheus runs a real Prometheus scraping the test
// Caddy's admin /metrics and loading the alert rules of monitoring/, with
// their `for:` shortened to 2s.
func TestWatchAlertsInPrometheus(t *testing.T) {
	begin := time.Now()
	now := time.Now().UTC().Truncate(time.Second)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	// soon is in use and expires within 24 h: critical (and the warning
	// and info alerts under it). idle expires as soon but is not in use:
	// the info alert only. later expires in 20 days, not in use: none.
	soon := &watchedKey{workspace: "Default", name: "soon", expires: at(2 * time.Hour), used: true}
	idle := &watchedKey{workspace: "Default", name: "idle", expires: at(20 * time.Hour)}
	later := &watchedKey{workspace: "Default", name: "later", expires: at(20 * 24 * time.Hour)}
	start(t, options{management: true, module: "watch_keys 1s", emulator: func(emu *emulator.Server) {
		for _, k := range []*watchedKey{soon, idle, later} {
			k.secret = emu.NewKey(emulator.KeyOptions{Name: k.name, ExpiresAt: k.expires})
		}
	}})
	if _, err := chat(gatewayBase, soon.secret); err != nil {
		t.Fatal(err)
	}

	byKey, promLog := startPrometheus(t)
	var alerts map[string]map[string]string
	var pendingSeen bool
	const critical = "OpenRouterKeyExpiringSoon/critical"
	deadline := time.Now().Add(45 * time.Second)
	for {
		alerts = byKey()
		state := alerts[soon.name][critical]
		pendingSeen = pendingSeen || state == "pending"
		if state == "firing" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the in-use key expiring in 2 h has no firing %s alert after 45s: %v\nprometheus:\n%s", critical, alerts, promLog())
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%s firing %s after the test began (pending seen: %v)", critical, time.Since(begin).Round(100*time.Millisecond), pendingSeen)

	names := func(m map[string]string) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	if got, want := names(alerts[soon.name]), []string{critical, "OpenRouterKeyExpiringSoon/warning", "OpenRouterKeyExpiryUpcoming/info"}; !slices.Equal(got, want) {
		t.Errorf("alerts of the in-use key expiring in 2 h: %v, want %v", got, want)
	}
	if got, want := names(alerts[idle.name]), []string{"OpenRouterKeyExpiryUpcoming/info"}; !slices.Equal(got, want) {
		t.Errorf("alerts of the unused key expiring in 20 h: %v, want %v", got, want)
	}
	for name, a := range alerts {
		if name != soon.name && name != idle.name {
			t.Errorf("unexpected alerts for %q: %v", name, a)
		}
	}
}

// TestWatchAlertsPastTheCapInPrometheus: in an account past
// watch_max_keys, a key in use that expires within 24 h alerts by name
// when it has series, and by count when it has none.
func TestWatchAlertsPastTheCapInPrometheus(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	// Both in use, expiring within 24 h; one series allowed: soon (2 h)
	// is named, after (3 h) only counted.
	soon := &watchedKey{workspace: "Default", name: "soon", expires: at(2 * time.Hour)}
	after := &watchedKey{workspace: "Default", name: "after", expires: at(3 * time.Hour)}
	start(t, options{management: true, module: "watch_keys 1s\nwatch_max_keys 1", emulator: func(emu *emulator.Server) {
		for i := range 20 {
			emu.NewKey(emulator.KeyOptions{Name: fmt.Sprintf("user-%d", i)})
		}
		for _, k := range []*watchedKey{soon, after} {
			k.secret = emu.NewKey(emulator.KeyOptions{Name: k.name, ExpiresAt: k.expires})
		}
	}})
	for _, k := range []*watchedKey{soon, after} {
		if _, err := chat(gatewayBase, k.secret); err != nil {
			t.Fatal(err)
		}
	}
	byKey, promLog := startPrometheus(t)
	const named, counted = "OpenRouterKeyExpiringSoon/critical", "OpenRouterUnnamedKeysExpiringSoon/critical"
	var alerts map[string]map[string]string
	if !poll(45*time.Second, func() bool {
		alerts = byKey()
		return alerts[soon.name][named] == "firing" && alerts[""][counted] == "firing"
	}) {
		t.Fatalf("after 45s, alerts: %v\nprometheus:\n%s", alerts, promLog())
	}
	if len(alerts[after.name]) != 0 {
		t.Errorf("the key without series has alerts by name: %v", alerts[after.name])
	}
	var many []string
	for name := range alerts {
		if name != soon.name && name != "" {
			many = append(many, name)
		}
	}
	if len(many) > 0 {
		t.Errorf("alerts for keys not in use or not expiring: %v", many)
	}
}

// startPrometheus runs a real Prometheus scraping the test Caddy's admin
// /metrics every second with monitoring/alerts.yml (`for:` shortened to
// 2s). byKey lists its alerts by the key's name label ("" for alerts about
// no one key): "alertname/severity" -> state; promLog is its output.
func startPrometheus(t *testing.T) (byKey func() map[string]map[string]string, promLog func() string) {
	t.Helper()
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus is not installed, and CI must run the alerting test (.ci/run installs it)")
		}
		t.Skip("prometheus is not installed (apt-get install prometheus); skipping the alerting test")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), shortenedRules(t), 0o600); err != nil {
		t.Fatal(err)
	}
	config := `global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: caddy
    static_configs:
      - targets: ['localhost:2999']
`
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	out, err := os.Create(filepath.Join(dir, "prometheus.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	byKey = func() map[string]map[string]string {
		resp, err := http.Get("http://" + addr + "/api/v1/alerts")
		if err != nil {
			return nil // not up yet
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil // starting: "Service Unavailable"
		}
		var body struct {
			Data struct {
				Alerts []promAlert `json:"alerts"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("/api/v1/alerts: %v", err)
		}
		out := map[string]map[string]string{}
		for _, a := range body.Data.Alerts {
			name := a.Labels["name"]
			if out[name] == nil {
				out[name] = map[string]string{}
			}
			out[name][a.Labels["alertname"]+"/"+a.Labels["severity"]] = a.State
		}
		return out
	}
	promLog = func() string {
		b, _ := os.ReadFile(out.Name())
		var watchLog []string
		caddyLog, _ := os.ReadFile(logPath)
		for _, line := range strings.Split(string(caddyLog), "\n") {
			if strings.Contains(line, "watch") {
				watchLog = append(watchLog, line)
			}
		}
		return string(b) + "\ncaddy's log on the watch:\n" + strings.Join(watchLog[max(0, len(watchLog)-10):], "\n")
	}
	return byKey, promLog
}
