package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

func TestMetadataFaults(t *testing.T) {
	for _, fault := range emulator.Faults {
		t.Run(fault.String(), func(t *testing.T) {
			// A lookup timeout long enough that a request waiting for a
			// hanging lookup is plainly told from one that does not wait.
			e := start(t, options{module: "lookup_timeout 2s"})
			e.emu.SetFault("/key", fault)
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
			if fault == emulator.FaultReset {
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

// requestGoroutines counts the goroutines still at work on a request or a
// lookup: in this module, in reverse_proxy's handler, or in the emulator.
// Idle keep-alive connections (net/http's pools) are not leaks and are not
// counted.
func requestGoroutines() (int, string) {
	var buf strings.Builder
	pprof.Lookup("goroutine").WriteTo(&buf, 2)
	n, example := 0, ""
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(g, "caddymodule.(*catalogue).loop") {
			continue // the model catalogue's refresh, at work on no request
		}
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

// TestKeyFlood: many distinct random well-formed keys from 32 connections,
// as fast as the machine allows, through the gateway and, for comparison,
// through plain reverse_proxy. Failing requests are answered at once,
// GET /key stays within lookup_rate, memory and goroutines stay bounded,
// and a key known to be dead is still explained during the flood.
// OPENROUTER_KEYS_FLOOD sets how many keys (CI: 3,000; the README's
// figure: 50,000).
func TestKeyFlood(t *testing.T) {
	n := envInt("OPENROUTER_KEYS_FLOOD", 3000)
	const cacheSize, rate, connections = 1000, 20, 32
	e := start(t, options{module: fmt.Sprintf("cache_size %d\n lookup_rate %d\n lookup_timeout 1s", cacheSize, rate)})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	send := func(base, key string) int {
		req, _ := http.NewRequest("POST", base+"/chat/completions", strings.NewReader(`{"model":"openai/gpt-4o","messages":[]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// flood sends n requests with new random keys through the gateway and
	// n through plain reverse_proxy, alternately from each of 32 workers,
	// so that both see the same load; it returns how long each request
	// took, and how many were not answered 401.
	flood := func() (gwTook, plTook []time.Duration, elapsed time.Duration, other int64) {
		keys := make(chan string, 1024)
		go func() {
			for i := 0; i < 2*n; i++ {
				keys <- randomKey()
			}
			close(keys)
		}()
		var notRefused atomic.Int64
		took := make([][2][]time.Duration, connections)
		begin := time.Now()
		var wg sync.WaitGroup
		for w := range connections {
			wg.Add(1)
			go func() {
				defer wg.Done()
				i := w
				for k := range keys {
					via := i % 2 // 0: the gateway, 1: plain reverse_proxy
					i++
					sent := time.Now()
					if send([]string{gatewayBase, plainBase}[via], k) != 401 {
						notRefused.Add(1)
					}
					took[w][via] = append(took[w][via], time.Since(sent))
				}
			}()
		}
		wg.Wait()
		elapsed = time.Since(begin)
		for _, d := range took {
			gwTook, plTook = append(gwTook, d[0]...), append(plTook, d[1]...)
		}
		return gwTook, plTook, elapsed, notRefused.Load()
	}

	// A key that expired, learned before the flood.
	dead, expiry := e.keyExpiringIn(time.Second)
	sleepUntil(expiry)
	send(gatewayBase, randomKey()) // warm
	client.CloseIdleConnections()
	settle()
	goroutinesBefore, heapBefore := runtime.NumGoroutine(), heap()
	lookupsBefore := e.emu.Count("/key")

	// During the flood, the dead key is explained every time.
	stop := make(chan struct{})
	var deadAsked, deadExplained atomic.Int64
	var deadWG sync.WaitGroup
	deadWG.Add(1)
	go func() {
		defer deadWG.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			_, err := chat(gatewayBase, dead)
			var apiErr *openai.Error
			deadAsked.Add(1)
			if errors.As(err, &apiErr) && strings.Contains(apiErr.RawJSON(), `"reason":"key_expired"`) {
				deadExplained.Add(1)
			}
		}
	}()
	waitedBefore := unexplained(t, "no_evidence") + unexplained(t, "lookup_failed")
	busyBefore := unexplained(t, "busy")
	gwTook, plainTook, elapsed, other := flood()
	close(stop)
	deadWG.Wait()
	entries := metric(t, "caddy_openrouter_keys_cache_entries")
	client.CloseIdleConnections()
	busy, stack := settle()
	lookups := e.emu.Count("/key") - lookupsBefore
	goroutinesAfter, heapAfter := runtime.NumGoroutine(), heap()

	gwP50, gwP99 := percentile(gwTook, 0.5), percentile(gwTook, 0.99)
	plP50, plP99 := percentile(plainTook, 0.5), percentile(plainTook, 0.99)
	t.Logf("flood of %d random keys through the gateway and %d through plain reverse_proxy, from %d connections, in %v (%.0f req/s in all): gateway p50 %v, p99 %v; plain p50 %v, p99 %v",
		n, n, connections, elapsed.Round(time.Millisecond), float64(2*n)/elapsed.Seconds(),
		gwP50.Round(100*time.Microsecond), gwP99.Round(100*time.Microsecond), plP50.Round(100*time.Microsecond), plP99.Round(100*time.Microsecond))
	t.Logf("%d GET /key in %v (lookup_rate %d/s); cache %v of %d; the dead key explained %d of %d times; goroutines %d -> %d (idle connection pools included); heap %.1f -> %.1f MB",
		lookups, elapsed.Round(time.Millisecond), rate, entries, cacheSize, deadExplained.Load(), deadAsked.Load(),
		goroutinesBefore, goroutinesAfter, float64(heapBefore)/1e6, float64(heapAfter)/1e6)
	if other != 0 {
		t.Errorf("%d of %d flood requests were not answered 401", other, 2*n)
	}
	// A failing request waits only for a lookup that can start at once
	// (lookup_rate), never in a queue: every refusal either had a lookup of
	// its own or left at once, counted busy. (The latency figures above are
	// for people; timings are no assertion on a shared machine.)
	waited := unexplained(t, "no_evidence") + unexplained(t, "lookup_failed") - waitedBefore
	left := unexplained(t, "busy") - busyBefore
	if waited > float64(lookups) || waited+left < float64(len(gwTook)) {
		t.Errorf("%v refusals waited for %d lookups, %v left at once, of %d", waited, lookups, left, len(gwTook))
	}
	if entries > cacheSize || entries < 1 {
		t.Errorf("cache holds %v entries; cache_size %d", entries, cacheSize)
	}
	// A token bucket: at most the burst (lookup_rate) at once, then the
	// rate.
	if limit := int(rate*elapsed.Seconds()) + rate + 1; lookups > limit {
		t.Errorf("%d lookups in %v exceed the lookup rate (%d allowed)", lookups, elapsed, limit)
	}
	if deadAsked.Load() == 0 || deadExplained.Load() != deadAsked.Load() {
		t.Errorf("the key known to have expired was explained %d of %d times during the flood", deadExplained.Load(), deadAsked.Load())
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

// TestReloadUnderLoad: 3 config reloads while 4 clients send requests,
// two with a working key and two with dead keys whose GET /key hangs, so
// that lookups and failing requests waiting for them are in flight at each
// reload. No request fails; what was learned before survives; a lookup cut
// by a reload is no failure: the key is not left backing off.
func TestReloadUnderLoad(t *testing.T) {
	e := start(t, options{})
	expiring, expiry := e.keyExpiringIn(3 * time.Second)
	works := e.emu.NewKey(emulator.KeyOptions{})
	dead := []string{randomKey(), randomKey()}
	// From here on, GET /key hangs until the gateway gives up on it.
	e.emu.SetKeyFault(emulator.FaultHang)

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
				if w >= 2 {
					// A dead key: OpenRouter's 401, unexplained (its lookup
					// hangs), and never a 502 or a dropped connection.
					status, b, err := post(gatewayBase+"/chat/completions", dead[w-2])
					if err != nil || status != 401 || b != `{"error":{"message":"User not found.","code":401}}` {
						t.Logf("failed: %d %s %v", status, b, err)
						failed.Add(1)
					} else {
						ok.Add(1)
					}
					continue
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
	// A working key not seen before, used just before the last reload: its
	// GET /key is in flight (hanging) when the reload cuts it.
	cut := e.emu.NewKey(emulator.KeyOptions{})
	const cancelled = `caddy_openrouter_keys_lookups_total{endpoint="key",outcome="cancelled"}`
	for i := 0; i < 3; i++ {
		time.Sleep(200 * time.Millisecond)
		if i == 2 {
			before := e.emu.Count("/key")
			if status, _, err := post(gatewayBase+"/chat/completions", cut); status != 200 {
				t.Fatalf("working key: %d %v", status, err)
			}
			waitFor(t, "the new key's lookup to reach the upstream", func() bool { return e.emu.Count("/key") > before })
		}
		cancelledBefore := metric(t, cancelled)
		e.reload(fmt.Sprintf("lookup_rate %d", 21+i)) // a real change: Caddy skips identical configs
		// Lookups are in flight at every reload: those the reload before
		// cut were started again by the keys' next requests.
		deadline := time.Now().Add(5 * time.Second)
		for metric(t, cancelled) == cancelledBefore && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if metric(t, cancelled) == cancelledBefore {
			t.Errorf("reload %d cut no lookup: none was in flight (keys left backing off after the reload before?)", i+1)
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() > 0 || ok.Load() == 0 {
		t.Errorf("during 3 reloads: %d requests failed, %d succeeded", failed.Load(), ok.Load())
	}

	// The key whose lookup the reload cut is looked up again by its next
	// request, not left backing off as after a failed lookup.
	time.Sleep(50 * time.Millisecond) // the cut lookup's end is recorded right after it is counted
	before := e.emu.Count("/key")
	if status, _, err := post(gatewayBase+"/chat/completions", cut); status != 200 {
		t.Fatalf("working key: %d %v", status, err)
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for e.emu.Count("/key") == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if e.emu.Count("/key") == before {
		t.Error("the key whose lookup the reload cut was not looked up again by its next request: it was left backing off")
	}

	// The expiry learned before the reloads is still known after them:
	// nothing could be learned about the key since (it is not used, and
	// GET /key hangs), and nothing is asked.
	sleepUntil(expiry)
	before = e.emu.Count("/key")
	_, err := chat(gatewayBase, expiring)
	if ke := asKeyError(t, err); ke.reason != "key_expired" {
		t.Errorf("after reloads: %+v", ke)
	}
	if n := e.emu.Count("/key") - before; n != 0 {
		t.Errorf("explaining the expired key took %d GET /key; the expiry learned before the reloads was lost", n)
	}
	t.Logf("3 reloads under load: %d requests, none failed", ok.Load())
}

// post sends a chat completion request with key and returns the status and
// body. Like the SDK, it may send the request again when a keep-alive
// connection turns out closed before any answer (as a server being
// reloaded closes idle connections): the Idempotency-Key header tells
// net/http it may.
func post(url, key string) (int, string, error) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(`{"model":"openai/gpt-4o","messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", randomKey()[len("sk-or-v1-"):][:32]) // any unique value
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	recordResponse(b)
	return resp.StatusCode, string(b), err
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
