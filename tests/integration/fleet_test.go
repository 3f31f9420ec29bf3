package integration

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// replica is a separate Caddy process (the test binary run as Caddy).
type replica struct {
	base string
	cmd  *exec.Cmd
}

// startReplica runs a Caddy gateway in front of upstream that shares
// storage in storageDir.
func startReplica(t *testing.T, name, upstream, storageDir string) *replica {
	t.Helper()
	return startReplicaWith(t, name, upstream, storageDir, replicaOptions{})
}

func sharedEntries(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "openrouter_keys", "v1", "keys", "*"))
	return files
}

func TestReplicasShareWhatTheyLearn(t *testing.T) {
	emu := emulator.New()
	upstream := newUpstream(t, emu)
	storageDir := t.TempDir()
	a := startReplica(t, "replica-a", upstream, storageDir)
	b := startReplica(t, "replica-b", upstream, storageDir)

	// The key works through replica A, which learns its expiry.
	key := emu.NewKey(emulator.KeyOptions{})
	remember(key)
	emu.ExpireIn(key, 2*time.Second)
	if _, err := chat(a.base, key); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replica A to share the key's expiry", func() bool { return len(sharedEntries(storageDir)) > 0 })
	time.Sleep(2100 * time.Millisecond)

	// It expires, and the next call lands on replica B, which never saw it.
	_, err := chat(b.base, key)
	ke := asKeyError(t, err)
	if ke.status != 401 || ke.reason != "key_expired" || !strings.HasPrefix(ke.message, "Key expired.") {
		t.Fatalf("replica B: %+v", ke)
	}
	// What is shared names no key: only fingerprints and facts.
	for _, f := range sharedEntries(storageDir) {
		content, _ := os.ReadFile(f)
		for _, m := range keyMaterial(key) {
			if strings.Contains(string(content)+filepath.Base(f), m) {
				t.Errorf("shared entry %s carries key material", filepath.Base(f))
			}
		}
		if !strings.Contains(string(content), `"expires_at":`) || !strings.Contains(string(content), `"keep_until":`) {
			t.Errorf("shared entry: %s", content)
		}
	}
}

func TestSharedStorageCleansUpOldEntries(t *testing.T) {
	emu := emulator.New()
	upstream := newUpstream(t, emu)
	storageDir := t.TempDir()
	keys := filepath.Join(storageDir, "openrouter_keys", "v1", "keys")
	os.MkdirAll(keys, 0o700)
	old := filepath.Join(keys, strings.Repeat("ab", 32))
	live := filepath.Join(keys, strings.Repeat("cd", 32))
	past, future := time.Now().Add(-31*24*time.Hour).Unix(), time.Now().Add(time.Hour).Unix()
	os.WriteFile(old, []byte(fmt.Sprintf(`{"expires_at":%d,"learned_at":%d,"keep_until":%d}`, past-3600, past-7200, past)), 0o600)
	os.WriteFile(live, []byte(fmt.Sprintf(`{"expires_at":%d,"learned_at":%d,"keep_until":%d}`, future, future-7200, future)), 0o600)
	startReplica(t, "replica-cleanup", upstream, storageDir)
	waitFor(t, "the expired entry to be cleaned up", func() bool { _, err := os.Stat(old); return os.IsNotExist(err) })
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live entry was deleted: %v", err)
	}
}

func TestBrokenStorageDegradesToLocal(t *testing.T) {
	e := start(t, options{module: "shared_storage", global: "storage file_system /dev/null/not-a-directory"})
	key, expiry := e.keyExpiringIn(1500 * time.Millisecond)
	sleepUntil(expiry)
	_, err := chat(gatewayBase, key)
	if ke := asKeyError(t, err); ke.reason != "key_expired" {
		t.Errorf("with broken storage: %+v", ke)
	}
	if v := metric(t, `caddy_openrouter_keys_storage_available`); v != 0 {
		t.Errorf("storage_available is %v with a broken storage", v)
	}
	errors := 0.0
	for _, op := range []string{"health", "store", "load"} {
		errors += metric(t, `caddy_openrouter_keys_storage_operations_total{op="`+op+`",outcome="error"}`)
	}
	if v := errors; v < 1 {
		t.Errorf("storage errors were not counted: %v", v)
	}
}

func TestMetrics(t *testing.T) {
	e := start(t, options{management: true, module: "expiry_skew 1s"})
	before := map[string]float64{}
	names := []string{
		`caddy_openrouter_keys_rewrites_total{reason="key_disabled"}`,
		`caddy_openrouter_keys_edge_answers_total{reason="key_disabled"}`,
		`caddy_openrouter_keys_lookups_total{endpoint="key",outcome="ok"}`,
		`caddy_openrouter_keys_lookups_total{endpoint="key",outcome="unauthorized"}`,
		`caddy_openrouter_keys_lookups_total{endpoint="key_record",outcome="ok"}`,
		`caddy_openrouter_keys_lookup_duration_seconds_count{endpoint="key"}`,
		`caddy_openrouter_keys_cache_hits_total`,
		`caddy_openrouter_keys_cache_misses_total`,
	}
	for _, n := range names {
		before[n] = metric(t, n)
	}
	works := e.emu.NewKey(emulator.KeyOptions{})
	e.learn(works)
	if _, err := chat(gatewayBase, works); err != nil {
		t.Fatal(err)
	}
	disabled := e.emu.NewKey(emulator.KeyOptions{Disabled: true})
	chat(gatewayBase, disabled) // rewritten
	chat(gatewayBase, disabled) // answered at the edge
	for _, n := range names {
		if after := metric(t, n); after <= before[n] {
			t.Errorf("%s did not move: %v -> %v", n, before[n], after)
		}
	}
	if v := metric(t, "caddy_openrouter_keys_cache_entries"); v < 2 {
		t.Errorf("cache_entries %v", v)
	}
	// No label carries key material.
	all := scrape(t)
	for _, k := range []string{works, disabled, e.mgmtKey} {
		for _, m := range keyMaterial(k) {
			if strings.Contains(all, m) {
				t.Errorf("/metrics carries key material")
			}
		}
	}
}

func TestExpiryWarning(t *testing.T) {
	e := start(t, options{module: "warn_before 72h"})
	soon := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	later := time.Now().Add(30 * 24 * time.Hour)
	key := e.emu.NewKey(emulator.KeyOptions{ExpiresAt: &soon})
	other := e.emu.NewKey(emulator.KeyOptions{ExpiresAt: &later})
	e.learn(key)
	e.learn(other)

	for i := 0; i < 3; i++ {
		resp, body := raw(t, "POST", gatewayBase+"/chat/completions", key, `{"model":"openai/gpt-4o","messages":[]}`)
		in, _ := strconv.Atoi(resp.Header.Get("X-OpenRouter-Key-Expires-In"))
		if resp.StatusCode != 200 || resp.Header.Get("X-OpenRouter-Key-Expires-At") != soon.Format(time.RFC3339) || in < 3500 || in > 3600 {
			t.Fatalf("warning headers: %d %v", resp.StatusCode, resp.Header)
		}
		if !strings.Contains(string(body), emulator.Reply) && !strings.Contains(resp.Header.Get("Content-Encoding"), "gzip") {
			t.Fatalf("body changed: %s", body)
		}
	}
	// Streams keep their body and timing; the header comes first.
	req, _ := http.NewRequest("POST", gatewayBase+"/chat/completions", strings.NewReader(`{"model":"openai/gpt-4o","stream":true,"messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if resp.Header.Get("X-OpenRouter-Key-Expires-At") == "" || first != ": OPENROUTER PROCESSING\n" {
		t.Errorf("stream: %v %q", resp.Header, first)
	}
	// A key expiring later than the window gets nothing.
	if resp, _ := raw(t, "POST", gatewayBase+"/chat/completions", other, `{"model":"openai/gpt-4o","messages":[]}`); resp.Header.Get("X-OpenRouter-Key-Expires-At") != "" {
		t.Errorf("key expiring in 30 days was warned about")
	}
	// One warning logged for the key, with its label, not one per request.
	logs, _ := os.ReadFile(logPath)
	label := key[:12] + "..." + key[len(key)-3:]
	if n := len(regexp.MustCompile(`"msg":"key expires soon"[^\n]*"key_label":"`+regexp.QuoteMeta(label)).FindAll(logs, -1)); n != 1 {
		t.Errorf("%d expiry warnings logged for the key; want 1", n)
	}
}
