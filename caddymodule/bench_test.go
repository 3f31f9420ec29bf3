package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// Each benchmark has a baseline sub-benchmark that runs the same next
// handler without the module: the module's cost is the difference between
// the two lines of one run.

// discardWriter is a ResponseWriter that costs next to nothing, so that
// the figures show the module, not the recorder.
type discardWriter struct {
	h       http.Header
	flushes int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) FlushError() error           { d.flushes++; return nil }
func (d *discardWriter) reset() {
	for k := range d.h {
		delete(d.h, k)
	}
}

func benchHandler(b *testing.B, h *Handler) (*emulator.Server, func()) {
	emu := emulator.New()
	srv := httptest.NewServer(emu)
	h.Upstream = srv.URL + "/api/v1"
	if err := provision(b, h); err != nil {
		b.Fatal(err)
	}
	// Production logs at info: debug lines are checked and skipped.
	h.logger = zap.NewNop()
	h.knowledge.logger = h.logger
	return emu, srv.Close
}

// knownExpiredKey is a key the handler knows expired an hour ago.
func knownExpiredKey(h *Handler) string {
	key := randomKey()
	now := h.acct.clock.now()
	h.knowledge.cache.update(fingerprintOf(key), now, func(st *keyState, _ bool) bool {
		st.alive(expiringAt(now.Add(-time.Hour)), now.Add(-2*time.Hour))
		return true
	})
	return key
}

var okBody = []byte(`{"id":"gen-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"}}]}`)

// run measures next alone ("baseline") and behind the module ("gateway"),
// with a fresh request per iteration taken from reqs.
func run(b *testing.B, h *Handler, next caddyhttp.Handler, reqs func(i int) *http.Request) {
	w := &discardWriter{h: make(http.Header)}
	b.Run("baseline", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			w.reset()
			if err := next.ServeHTTP(w, reqs(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gateway", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			w.reset()
			if err := h.ServeHTTP(w, reqs(i), next); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func request(key string) *http.Request {
	r := httptest.NewRequest("POST", "/api/v1/chat/completions", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	return r
}

func BenchmarkPassThroughCachedKey(b *testing.B) {
	var h Handler
	emu, done := benchHandler(b, &h)
	defer done()
	key := emu.NewKey(emulator.KeyOptions{})
	learnNow(h.knowledge, key)
	req := request(key)
	run(b, &h, okNext, func(int) *http.Request { return req })
}

// BenchmarkCaddyRoute runs a working request as Caddy does: in the request
// context Caddy prepares (caddyhttp.PrepareRequest, with its replacer)
// through a route whose middleware chain Caddy compiles anew for every
// request, with static_response answering in reverse_proxy's place.
// "plain" is the route without openrouter_keys. The difference is all the
// module costs a working request inside Caddy, Caddy's own share included:
// one more handler in a route is one more link of the chain allocated per
// request and one more walk of the request's context, which the handler
// benchmarks above, calling ServeHTTP directly, cannot see.
func BenchmarkCaddyRoute(b *testing.B) {
	emu := emulator.New()
	srv := httptest.NewServer(emu)
	defer srv.Close()
	key := emu.NewKey(emulator.KeyOptions{})
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	static, _ := json.Marshal(map[string]any{"handler": "static_response", "status_code": 200,
		"headers": map[string][]string{"Content-Type": {"application/json"}}, "body": string(okBody)})
	module, _ := json.Marshal(map[string]any{"handler": "openrouter_keys", "upstream": srv.URL + "/api/v1"})
	// Both routes are provisioned before either runs: what provisioning
	// logs must not land inside a benchmark's line of figures.
	chains := make(map[string]caddyhttp.Handler)
	for name, handlers := range map[string][]json.RawMessage{"plain": {static}, "gateway": {module, static}} {
		route := caddyhttp.Route{HandlersRaw: handlers}
		if err := route.ProvisionHandlers(ctx, nil); err != nil {
			b.Fatal(err)
		}
		if h, ok := route.Handlers[0].(*Handler); ok {
			h.logger = zap.NewNop()
			h.knowledge.logger = h.logger
			learnNow(h.knowledge, key)
		}
		chains[name] = caddyhttp.RouteList{route}.Compile(caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil }))
	}
	for _, name := range []string{"plain", "gateway"} {
		b.Run(name, func(b *testing.B) {
			base := request(key)
			w := &discardWriter{h: make(http.Header)}
			b.ReportAllocs()
			for b.Loop() {
				w.reset()
				r := caddyhttp.PrepareRequest(base, caddy.NewReplacer(), w, nil)
				if err := chains[name].ServeHTTP(w, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPassThroughUnseenKey(b *testing.B) {
	var h Handler
	_, done := benchHandler(b, &h)
	defer done()
	reqs := make([]*http.Request, 1<<16)
	for i := range reqs {
		reqs[i] = request(randomKey())
	}
	// Past 65,536 iterations keys repeat, but by then the cache holds
	// each in backoff, which costs the same single read.
	run(b, &h, okNext, func(i int) *http.Request { return reqs[i%len(reqs)] })
}

func BenchmarkPassThroughSSE(b *testing.B) {
	var h Handler
	emu, done := benchHandler(b, &h)
	defer done()
	key := emu.NewKey(emulator.KeyOptions{})
	learnNow(h.knowledge, key)
	event := []byte(`data: {"id":"gen-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"word "}}]}` + "\n\n")
	sse := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for i := 0; i < 50; i++ {
			w.Write(event)
			if err := rc.Flush(); err != nil {
				return err
			}
		}
		return nil
	})
	req := request(key)
	run(b, &h, sse, func(int) *http.Request { return req })
}

func BenchmarkRewriteExpiredKey(b *testing.B) {
	for _, enc := range []string{"identity", "gzip"} {
		b.Run(enc, func(b *testing.B) {
			h := Handler{EdgeAnswers: EdgeAnswersOff}
			_, done := benchHandler(b, &h)
			defer done()
			key := knownExpiredKey(&h)
			body := encode(b, enc, []byte(userNotFound))
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "application/json")
				if enc != "identity" {
					w.Header().Set("Content-Encoding", enc)
				}
				w.WriteHeader(http.StatusUnauthorized)
				_, err := w.Write(body)
				return err
			})
			req := request(key)
			run(b, &h, next, func(int) *http.Request { return req })
		})
	}
}

// BenchmarkEdgeAnswer: the baseline is what the upstream call would have
// cost at the least (okNext); the gateway answers without calling it.
func BenchmarkEdgeAnswer(b *testing.B) {
	var h Handler
	_, done := benchHandler(b, &h)
	defer done()
	req := request(knownExpiredKey(&h))
	run(b, &h, okNext, func(int) *http.Request { return req })
}

// BenchmarkFailingSpray: 32 clients spray 3,000 random well-formed keys
// that OpenRouter refuses (a flood of stolen or guessed keys). Failing
// requests must never queue behind the lookup rate: the figures are the
// refusals answered per second, the p99 time the module adds to one, and
// the GET /key lookups per second (at most lookup_rate). A key known to
// have expired is still explained during the spray.
func BenchmarkFailingSpray(b *testing.B) {
	var h Handler
	emu, done := benchHandler(b, &h)
	defer done()
	// The catalogue reads /models in the background from the start; the
	// emulator's delay is set once that read is over, not while it runs.
	h.catalogue.await(context.Background())
	emu.Delay = 20 * time.Millisecond // a metadata lookup takes time
	keys := make([]string, 3000)
	for i := range keys {
		keys[i] = randomKey()
	}
	known := knownExpiredKey(&h)
	var (
		mu    sync.Mutex
		waits []time.Duration
		next  atomic.Int64
	)
	lookups := emu.Count("/key")
	b.SetParallelism(16) // 32 clients on 2 cores
	b.ResetTimer()
	begin := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			req := request(keys[next.Add(1)%int64(len(keys))])
			start := time.Now()
			_ = h.ServeHTTP(httptest.NewRecorder(), req, refused)
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		waits = append(waits, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(begin)
	b.StopTimer()
	rec := httptest.NewRecorder()
	_ = h.ServeHTTP(rec, request(known), refused)
	if rec.Header().Get("X-OpenRouter-Key-Status") != "key_expired" {
		b.Errorf("a known expired key was not explained during the spray: %s", rec.Body.String())
	}
	slices.Sort(waits)
	b.ReportMetric(float64(len(waits))/elapsed.Seconds(), "refusals/s")
	b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1000, "p99_added_ms")
	b.ReportMetric(float64(emu.Count("/key")-lookups)/max(elapsed.Seconds(), 1), "lookups/s")
}

// BenchmarkPassThroughExplainLimits: the 200 path with explain_limits on
// (the default) and off, in one run: holding 402, 403 and 429 must add
// nothing to a working request, neither time nor allocations.
func BenchmarkPassThroughExplainLimits(b *testing.B) {
	for _, mode := range []string{ExplainLimitsOff, ExplainLimitsOn} {
		b.Run(mode, func(b *testing.B) {
			h := Handler{ExplainLimits: mode}
			emu, done := benchHandler(b, &h)
			defer done()
			key := emu.NewKey(emulator.KeyOptions{})
			learnNow(h.knowledge, key)
			benchGateway(b, &h, okNext, request(key))
		})
	}
}

// benchGateway measures the module serving req with next behind it, the
// same request every iteration.
func benchGateway(b *testing.B, h *Handler, next caddyhttp.Handler, req *http.Request) {
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.reset()
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLimitFailure is the time the module adds to a key-limit 403
// (p50 and p99 over the iterations, less the same failure without the
// module): "cached" when the key's GET /key answered moments ago,
// "uncached" when each failure asks it (the emulator answers at once, so
// this is the gateway's own cost of a lookup round trip on loopback).
func BenchmarkLimitFailure(b *testing.B) {
	fb := openrouter.KeyLimitExceeded(openrouter.WindowDaily, "default", strings.Repeat("ab", 32), openrouter.WordingCurrent)
	body := fb.Render(openrouter.EnvelopeOpenAI)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(fb.Status)
		_, err := w.Write(body)
		return err
	})
	limit := 5.0
	for _, cached := range []bool{true, false} {
		name := "uncached"
		if cached {
			name = "cached"
		}
		b.Run(name, func(b *testing.B) {
			// Edge answers off: every failure goes through the explanation.
			h := Handler{EdgeAnswers: EdgeAnswersOff, LookupRate: 1e9}
			emu, done := benchHandler(b, &h)
			defer done()
			n := b.N
			if cached {
				n = 1
			}
			keys := emu.NewKeys(n, emulator.KeyOptions{Limit: &limit, LimitReset: "daily"})
			if cached {
				learnNow(h.knowledge, keys[0])
			}
			reqs := make([]*http.Request, b.N)
			for i := range reqs {
				reqs[i] = request(keys[i%len(keys)])
			}
			w := &discardWriter{h: make(http.Header)}
			base := make([]time.Duration, b.N)
			for i := range base {
				w.reset()
				start := time.Now()
				_ = next.ServeHTTP(w, reqs[i])
				base[i] = time.Since(start)
			}
			took := make([]time.Duration, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if cached && i%1000 == 999 {
					// Keep the evidence fresh (evidenceFresh), off the clock.
					b.StopTimer()
					learnNow(h.knowledge, keys[0])
					b.StartTimer()
				}
				w.reset()
				start := time.Now()
				if err := h.ServeHTTP(w, reqs[i], next); err != nil {
					b.Fatal(err)
				}
				took[i] = time.Since(start)
			}
			b.StopTimer()
			if w.h.Get("X-OpenRouter-Key-Status") != string(reasonKeyLimitReached) {
				b.Fatalf("not explained: %v", w.h)
			}
			b.ReportMetric(float64(emu.Count("/key")), "key_lookups")
			slices.Sort(took)
			slices.Sort(base)
			q := func(d []time.Duration, p int) float64 { return float64(d[(len(d)-1)*p/100].Nanoseconds()) / 1000 }
			b.ReportMetric(q(took, 50)-q(base, 50), "p50_added_µs")
			b.ReportMetric(q(took, 99)-q(base, 99), "p99_added_µs")
		})
	}
}
