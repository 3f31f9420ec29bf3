package integration

// A Caddy storage module that stalls or fails, configured as Caddy's
// storage under a gateway with shared_storage: what a Redis that stops
// answering or a full disk does to requests.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

func init() {
	caddy.RegisterModule(storageDouble{})
}

// storageDouble is caddy.storage.test_double: Caddy storage whose every
// call stalls, ignoring its context, until the test ends ("stall"), or
// fails at once ("fail"). The calls it gets are counted in doubleCalls.
//
//	storage test_double stall|fail
type storageDouble struct {
	Mode string `json:"mode"`
}

// CaddyModule returns the Caddy module information.
func (storageDouble) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.test_double", New: func() caddy.Module { return new(storageDouble) }}
}

// UnmarshalCaddyfile reads the mode.
func (s *storageDouble) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module's name
	if !d.NextArg() || (d.Val() != "stall" && d.Val() != "fail") {
		return d.Err("test_double: want stall or fail")
	}
	s.Mode = d.Val()
	return nil
}

// CertMagicStorage makes the module Caddy's storage.
func (s *storageDouble) CertMagicStorage() (certmagic.Storage, error) { return s, nil }

// doubleCalls records the calls of every storageDouble; release ends the
// stalls.
var doubleCalls = struct {
	sync.Mutex
	ops     []string // "op key"
	release chan struct{}
}{release: make(chan struct{})}

// resetStorageDouble forgets the calls so far and, when the test ends,
// lets every stalled call return.
func resetStorageDouble(t *testing.T) {
	doubleCalls.Lock()
	doubleCalls.ops = nil
	release := make(chan struct{})
	doubleCalls.release = release
	doubleCalls.Unlock()
	t.Cleanup(func() { close(release) })
}

// storageCalls counts the calls of op on keys starting with prefix.
func storageCalls(op, prefix string) int {
	doubleCalls.Lock()
	defer doubleCalls.Unlock()
	n := 0
	for _, c := range doubleCalls.ops {
		if c == op+" "+prefix || strings.HasPrefix(c, op+" "+prefix) {
			n++
		}
	}
	return n
}

var errDisk = errors.New("storage double: the disk is on fire")

// call records a call and stalls or fails as the mode says.
func (s *storageDouble) call(op, key string) error {
	doubleCalls.Lock()
	doubleCalls.ops = append(doubleCalls.ops, op+" "+key)
	release := doubleCalls.release
	doubleCalls.Unlock()
	if s.Mode == "stall" {
		<-release // the context is ignored, as a storage driver stuck in I/O does
	}
	return errDisk
}

func (s *storageDouble) Lock(_ context.Context, name string) error   { return s.call("lock", name) }
func (s *storageDouble) Unlock(_ context.Context, name string) error { return s.call("unlock", name) }
func (s *storageDouble) Store(_ context.Context, key string, _ []byte) error {
	return s.call("store", key)
}
func (s *storageDouble) Load(_ context.Context, key string) ([]byte, error) {
	return nil, s.call("load", key)
}
func (s *storageDouble) Delete(_ context.Context, key string) error { return s.call("delete", key) }
func (s *storageDouble) Exists(_ context.Context, key string) bool {
	return s.call("exists", key) == nil
}
func (s *storageDouble) List(_ context.Context, path string, _ bool) ([]string, error) {
	return nil, s.call("list", path)
}
func (s *storageDouble) Stat(_ context.Context, key string) (certmagic.KeyInfo, error) {
	return certmagic.KeyInfo{}, s.call("stat", key)
}

var (
	_ caddy.StorageConverter = (*storageDouble)(nil)
	_ caddyfile.Unmarshaler  = (*storageDouble)(nil)
)

// logSince is what Caddy logged after offset (a size of the log file).
func logSince(t *testing.T, offset int64) string {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[min(offset, int64(len(b))):])
}

func logSize() int64 {
	if fi, err := os.Stat(logPath); err == nil {
		return fi.Size()
	}
	return 0
}

// TestStorageThatStallsOrFails: shared storage that stops answering (and
// ignores every deadline) or fails costs a failing request at most its
// lookup_timeout, once: the breaker opens, later failures do not touch
// the storage, /metrics and the log say so once, and working requests
// never wait for it.
func TestStorageThatStallsOrFails(t *testing.T) {
	const lookupTimeout = time.Second
	const entries = "openrouter_keys/v1/keys/"
	for _, mode := range []string{"stall", "fail"} {
		t.Run(mode, func(t *testing.T) {
			resetStorageDouble(t)
			logStart := logSize()
			e := start(t, options{
				module: fmt.Sprintf("shared_storage\n lookup_timeout %s", lookupTimeout),
				global: "storage test_double " + mode,
			})
			body := `{"model":"openai/gpt-4o","messages":[]}`
			failing := func() (time.Duration, string) {
				key := e.emu.NewKey(emulator.KeyOptions{})
				e.emu.Delete(key)
				begin := time.Now()
				resp, b := raw(t, "POST", gatewayBase+"/chat/completions", key, body)
				took := time.Since(begin)
				if resp.StatusCode != 401 || !strings.Contains(string(b), "User not found.") {
					t.Errorf("failing request: %d %s; want the upstream's 401", resp.StatusCode, b)
				}
				return took, string(b)
			}

			// A failure reads the shared entry, which stalls (or fails): the
			// request waits at most its lookup_timeout. (The storage's health
			// check, at start, may have opened the breaker already: failures
			// go on until the breaker lets one through to the storage.)
			var first time.Duration
			var tries int
			for deadline := time.Now().Add(15 * time.Second); storageCalls("load", entries) == 0; tries++ {
				if time.Now().After(deadline) {
					t.Fatalf("no failing request read the shared entry in 15s (%d tries)", tries)
				}
				if tries > 0 {
					time.Sleep(100 * time.Millisecond)
				}
				first, _ = failing()
			}
			loads := storageCalls("load", entries)
			t.Logf("%s: the failing request that met the storage was answered in %v (after %d that found the breaker open)", mode, first.Round(time.Millisecond), tries-1)
			if first > lookupTimeout*16/10 {
				t.Errorf("the failing request waited %v for the storage; lookup_timeout is %v", first, lookupTimeout)
			}
			if loads != 1 {
				t.Fatalf("one failing request read %d shared entries", loads)
			}

			// The breaker is open: later failures neither touch the storage
			// nor wait for it, only for their own GET /key.
			var later []time.Duration
			for range 5 {
				took, _ := failing()
				later = append(later, took)
			}
			t.Logf("%s: 5 later failing requests: slowest %v", mode, percentile(later, 1).Round(time.Millisecond))
			if n := storageCalls("load", entries); n != loads {
				t.Errorf("later failing requests read the storage %d more times while the breaker was open", n-loads)
			}
			if slowest := percentile(later, 1); slowest > 300*time.Millisecond {
				t.Errorf("a later failing request took %v: it waited for the storage again", slowest)
			}

			// Working requests never wait for the storage: as fast as
			// through plain reverse_proxy.
			works := e.emu.NewKey(emulator.KeyOptions{})
			var viaGateway, viaPlain []time.Duration
			for range 20 {
				for _, base := range []string{gatewayBase, plainBase} {
					begin := time.Now()
					resp, _ := raw(t, "POST", base+"/chat/completions", works, body)
					if resp.StatusCode != 200 {
						t.Fatalf("working request through %s: %d", base, resp.StatusCode)
					}
					if base == gatewayBase {
						viaGateway = append(viaGateway, time.Since(begin))
					} else {
						viaPlain = append(viaPlain, time.Since(begin))
					}
				}
			}
			gwMedian, plMedian := percentile(viaGateway, 0.5), percentile(viaPlain, 0.5)
			gwMax, plMax := percentile(viaGateway, 1), percentile(viaPlain, 1)
			t.Logf("%s: 20 working requests: median %v (plain %v), slowest %v (plain %v)", mode,
				gwMedian.Round(100*time.Microsecond), plMedian.Round(100*time.Microsecond), gwMax.Round(100*time.Microsecond), plMax.Round(100*time.Microsecond))
			if gwMedian > plMedian+20*time.Millisecond || gwMax > plMax+250*time.Millisecond {
				t.Errorf("working requests were slowed: median %v (plain %v), slowest %v (plain %v)", gwMedian, plMedian, gwMax, plMax)
			}

			// Whoever watches sees it: the gauge, and one warning.
			if v := metric(t, "caddy_openrouter_keys_storage_available"); v != 0 {
				t.Errorf("caddy_openrouter_keys_storage_available is %v; want 0", v)
			}
			logs := logSince(t, logStart)
			if n := strings.Count(logs, `"msg":"shared storage unavailable`); n != 1 {
				t.Errorf("%d \"shared storage unavailable\" lines logged; want 1", n)
			}
		})
	}
}
