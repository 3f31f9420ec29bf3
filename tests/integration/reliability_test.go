package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// envInt reads a size from the environment, so that CI runs the long
// checks reduced and a person can run them in full.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// unexplained reads caddy_openrouter_keys_unexplained_total by class.
func unexplained(t *testing.T, class string) float64 {
	t.Helper()
	return metric(t, `caddy_openrouter_keys_unexplained_total{class="`+class+`"}`)
}

func TestMetadataFaults(t *testing.T) {
	for _, f := range []struct {
		name  string
		fault emulator.Fault
	}{
		{"hang", emulator.FaultHang}, {"500", emulator.FaultStatus500}, {"reset", emulator.FaultReset},
		{"invalid JSON", emulator.FaultInvalidJSON}, {"huge body", emulator.FaultHugeBody},
		{"slow body", emulator.FaultSlowBody}, {"cut body", emulator.FaultCutBody}, {"404", emulator.Fault404},
	} {
		t.Run(f.name, func(t *testing.T) {
			// A lookup timeout long enough that a request waiting for a
			// hanging lookup is plainly told from one that does not wait.
			e := start(t, options{module: "lookup_timeout 2s"})
			e.emu.SetFault("/key", f.fault)
			works := e.emu.NewKey(emulator.KeyOptions{})
			dead := e.emu.NewKey(emulator.KeyOptions{})
			e.emu.Delete(dead)
			body := `{"model":"openai/gpt-4o","messages":[]}`
			_, plain := raw(t, "POST", plainBase+"/chat/completions", dead, body, "Accept-Encoding", "gzip")
			failed, noEvidence := unexplained(t, "lookup_failed"), unexplained(t, "no_evidence")
			for i := 0; i < 5; i++ {
				begin := time.Now()
				resp, _ := raw(t, "POST", gatewayBase+"/chat/completions", works, body)
				if took := time.Since(begin); resp.StatusCode != 200 || took > time.Second {
					t.Errorf("working request %d: %d after %v: it waited for a lookup", i, resp.StatusCode, took)
				}
				begin = time.Now()
				resp, b := raw(t, "POST", gatewayBase+"/chat/completions", dead, body, "Accept-Encoding", "gzip")
				if resp.StatusCode != 401 || string(b) != string(plain) || resp.Header.Get("X-OpenRouter-Key-Status") != "" {
					t.Errorf("failing request %d: a reason claimed without evidence: %v", i, resp.Header)
				}
				if took := time.Since(begin); took > 4*time.Second {
					t.Errorf("failing request %d waited %v, past lookup_timeout", i, took)
				}
			}
			// The first failure waited for the failed lookup; the next four
			// did not wait at all (once per key per 30 s).
			if got := unexplained(t, "lookup_failed") - failed; got != 1 {
				t.Errorf("%v failures waited for a lookup, want 1", got)
			}
			if got := unexplained(t, "no_evidence") - noEvidence; got != 4 {
				t.Errorf("%v failures left at once, want 4", got)
			}
			// One background lookup per key, and the failing request joined
			// it; then backoff. (Go retries a GET on a connection reset once.)
			limit := 2
			if f.fault == emulator.FaultReset {
				limit = 4
			}
			if n := e.emu.Count("/key"); n > limit {
				t.Errorf("a dead metadata endpoint got %d lookups for 2 keys in 10 requests", n)
			}
		})
	}
	t.Run("listing fails on page 3", func(t *testing.T) {
		e := start(t, options{management: true, module: "lookup_timeout 2s"})
		e.emu.NewKeys(3*emulator.PageSize, emulator.KeyOptions{})
		e.emu.SetListFailsOnPage(3)
		deleted := e.emu.NewKey(emulator.KeyOptions{})
		e.emu.Delete(deleted)
		_, err := chat(gatewayBase, deleted)
		if ke := asKeyError(t, err); ke.reason != "" || ke.message != "User not found." {
			t.Errorf("an incomplete listing was taken as proof: %+v", ke)
		}
		if n := e.emu.Count("/keys"); n < 3 {
			t.Errorf("listing pages read: %d", n)
		}
	})
}

func randomKey() string {
	var b [32]byte
	rand.Read(b[:])
	return "sk-or-v1-" + hex.EncodeToString(b[:])
}

// requestGoroutines counts the goroutines still at work on a request or a
// lookup: in this module, in reverse_proxy's handler, or in the emulator.
// Idle keep-alive connections (net/http's pools) are not leaks and are not
// counted.
func requestGoroutines() (int, string) {
	var buf strings.Builder
	pprof.Lookup("goroutine").WriteTo(&buf, 2)
	n, example := 0, ""
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(g, "caddymodule.") || strings.Contains(g, "reverseproxy.(*Handler).ServeHTTP") || strings.Contains(g, "emulator.(*Server)") {
			n++
			example = g
		}
	}
	return n, example
}

// settle waits until no goroutine is at work on a request, and returns how
// many are, with one of their stacks.
func settle() (int, string) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, example := requestGoroutines()
		if n == 0 || time.Now().After(deadline) {
			return n, example
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestKeyFlood: many distinct random well-formed keys as fast as the
// machine allows. OPENROUTER_KEYS_FLOOD sets how many (CI: 5,000; the
// README's figure: 50,000).
func TestKeyFlood(t *testing.T) {
	n := envInt("OPENROUTER_KEYS_FLOOD", 5000)
	const cacheSize, rate = 1000, 20
	e := start(t, options{module: fmt.Sprintf("cache_size %d\n lookup_rate %d\n lookup_timeout 1s", cacheSize, rate)})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	send := func(key string) int {
		req, _ := http.NewRequest("POST", gatewayBase+"/chat/completions", strings.NewReader(`{"model":"openai/gpt-4o","messages":[]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	send(randomKey()) // warm
	client.CloseIdleConnections()
	settle()
	goroutinesBefore, heapBefore := runtime.NumGoroutine(), heap()

	keys := make(chan string, 1024)
	go func() {
		for i := 0; i < n; i++ {
			keys <- randomKey()
		}
		close(keys)
	}()
	var unauthorized, other atomic.Int64
	begin := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				if send(k) == 401 {
					unauthorized.Add(1)
				} else {
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	lookups := e.emu.Count("/key")
	entries := metric(t, "caddy_openrouter_keys_cache_entries")
	client.CloseIdleConnections()
	busy, stack := settle()
	goroutinesAfter, heapAfter := runtime.NumGoroutine(), heap()

	t.Logf("flood: %d keys in %v (%.0f req/s); %d GET /key (rate %d/s); cache %v of %d; goroutines %d -> %d (idle connection pools included); heap %.1f -> %.1f MB",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), lookups, rate, entries, cacheSize,
		goroutinesBefore, goroutinesAfter, float64(heapBefore)/1e6, float64(heapAfter)/1e6)
	if unauthorized.Load() != int64(n) {
		t.Errorf("%d of %d flood requests were not answered 401 (%d other)", int64(n)-unauthorized.Load(), n, other.Load())
	}
	if entries > cacheSize || entries < 1 {
		t.Errorf("cache holds %v entries; cache_size %d", entries, cacheSize)
	}
	if limit := int(float64(rate)*elapsed.Seconds()) + 2*rate + 1; lookups > limit {
		t.Errorf("%d lookups in %v exceed the lookup rate (%d allowed)", lookups, elapsed, limit)
	}
	if busy > 0 {
		t.Errorf("%d goroutines still at work after the flood, such as:\n%s", busy, stack)
	}
	if heapAfter > heapBefore+32<<20 {
		t.Errorf("heap grew from %d to %d bytes", heapBefore, heapAfter)
	}
}

// TestStreamsUnderStress: many concurrent streams, clients that hang up
// mid-stream, and slow readers. OPENROUTER_KEYS_STREAMS sets how many (CI:
// 200; the README's figure: 1,000).
func TestStreamsUnderStress(t *testing.T) {
	n := envInt("OPENROUTER_KEYS_STREAMS", 200)
	e := start(t, options{emulator: func(s *emulator.Server) { s.EventGap = 10 * time.Millisecond }})
	key := e.emu.NewKey(emulator.KeyOptions{})
	e.learn(key)
	transport := &http.Transport{MaxIdleConnsPerHost: n}
	client := &http.Client{Transport: transport}
	body := `{"model":"openai/gpt-4o","stream":true,"messages":[]}`
	stream := func(ctx context.Context) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", gatewayBase+"/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		return client.Do(req)
	}
	_, want := raw(t, "POST", plainBase+"/chat/completions", key, body)

	var wg sync.WaitGroup
	var complete, hungUp, slow atomic.Int64
	var mismatch atomic.Value
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			resp, err := stream(ctx)
			if err != nil {
				mismatch.Store(err.Error())
				return
			}
			defer resp.Body.Close()
			switch {
			case i%10 == 1: // hangs up after the first event
				bufio.NewReader(resp.Body).ReadString('\n')
				cancel()
				hungUp.Add(1)
			case i%10 == 2: // reads a byte at a time, slowly
				var got []byte
				buf := make([]byte, 16)
				for {
					k, err := resp.Body.Read(buf)
					got = append(got, buf[:k]...)
					if err != nil {
						break
					}
					time.Sleep(2 * time.Millisecond)
				}
				if string(got) == string(want) {
					slow.Add(1)
				} else {
					mismatch.Store("slow reader got a different stream")
				}
			default:
				got, _ := io.ReadAll(resp.Body)
				if string(got) == string(want) {
					complete.Add(1)
				} else {
					mismatch.Store("stream differs from plain reverse_proxy")
				}
			}
		}(i)
	}
	wg.Wait()
	if m := mismatch.Load(); m != nil {
		t.Error(m)
	}
	wantHungUp := int64(0)
	for i := 0; i < n; i++ {
		if i%10 == 1 {
			wantHungUp++
		}
	}
	if got := complete.Load() + slow.Load() + hungUp.Load(); got != int64(n) || hungUp.Load() != wantHungUp {
		t.Errorf("%d complete, %d slow, %d hung up of %d", complete.Load(), slow.Load(), hungUp.Load(), n)
	}
	transport.CloseIdleConnections()
	waitFor(t, "the upstream to finish every stream", func() bool { return e.emu.ActiveStreams() == 0 })
	if busy, stack := settle(); busy > 0 {
		t.Errorf("%d goroutines still at work after the streams, such as:\n%s", busy, stack)
	}
	t.Logf("%d concurrent streams: %d complete, %d slow readers, %d hung up; no goroutine left at work", n, complete.Load(), slow.Load(), hungUp.Load())
}

func TestReloadUnderLoad(t *testing.T) {
	e := start(t, options{})
	expiring, expiry := e.keyExpiringIn(3 * time.Second)
	works := e.emu.NewKey(emulator.KeyOptions{})

	stop := make(chan struct{})
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// With the SDK's default retries, as users run it: a POST on a
				// keep-alive connection that the old server closes can fail
				// with EOF, for plain reverse_proxy alike, and is retried.
				c := openai.NewClient(option.WithBaseURL(gatewayBase+"/"), option.WithAPIKey(works))
				if _, err := c.Chat.Completions.New(context.Background(), chatParams("openai/gpt-4o")); err != nil {
					t.Logf("failed: %v", err)
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	for i := 0; i < 3; i++ {
		time.Sleep(200 * time.Millisecond)
		e.reload(fmt.Sprintf("lookup_rate %d", 21+i)) // a real change: Caddy skips identical configs
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() > 0 || ok.Load() == 0 {
		t.Errorf("during 3 reloads: %d requests failed, %d succeeded", failed.Load(), ok.Load())
	}
	// The expiry learned before the reloads is still known after them:
	// nothing could be learned about the key since (it is not used, and
	// GET /key answers an expired key with 401).
	sleepUntil(expiry)
	_, err := chat(gatewayBase, expiring)
	if ke := asKeyError(t, err); ke.reason != "key_expired" {
		t.Errorf("after reloads: %+v", ke)
	}
	t.Logf("3 reloads under load: %d requests, none failed", ok.Load())
}

func TestLookupsGoOnlyToTheUpstream(t *testing.T) {
	var decoyHits atomic.Int64
	decoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { decoyHits.Add(1) }))
	defer decoy.Close()
	e := start(t, options{management: true})
	dead := e.emu.NewKey(emulator.KeyOptions{})
	e.emu.Delete(dead)
	decoyHost := strings.TrimPrefix(decoy.URL, "http://")
	_, b := raw(t, "POST", gatewayBase+"/chat/completions", dead, `{}`,
		"X-Forwarded-Host", decoyHost, "X-Forwarded-Proto", "http", "Forwarded", "host="+decoyHost, "X-Original-URL", decoy.URL)
	if !strings.Contains(string(b), "key_not_found") {
		t.Errorf("dead key not explained: %s", b)
	}
	if decoyHits.Load() != 0 || e.emu.Count("/keys/{hash}") == 0 {
		t.Errorf("lookups went to the decoy (%d) instead of the upstream", decoyHits.Load())
	}
}
