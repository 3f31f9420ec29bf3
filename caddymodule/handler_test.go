package caddymodule

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

func TestPassThroughFlushesStreams(t *testing.T) {
	var h Handler
	newHandler(t, &h, "http://127.0.0.1:1/api/v1")
	flushedBeforeEnd := false
	rec := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.Write([]byte(": OPENROUTER PROCESSING\n\n"))
		if err := http.NewResponseController(w).Flush(); err != nil {
			return err
		}
		flushedBeforeEnd = rec.Flushed
		w.Write([]byte("data: [DONE]\n\n"))
		return nil
	})
	req := httptest.NewRequest("POST", "/api/v1/chat/completions", nil)
	req.Header.Set("Authorization", "Bearer "+goodKey)
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatal(err)
	}
	if !flushedBeforeEnd {
		t.Error("a flush inside the stream did not reach the client's writer")
	}
	if rec.Body.String() != ": OPENROUTER PROCESSING\n\ndata: [DONE]\n\n" {
		t.Errorf("stream body %q", rec.Body.String())
	}
}

func TestUnexplainable401sPassUnchanged(t *testing.T) {
	emu, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	dead := emu.NewKey(emulator.KeyOptions{})
	emu.Delete(dead)
	html := http.Header{"Content-Type": {"text/html"}}
	json := http.Header{"Content-Type": {"application/json"}}
	huge := []byte(`{"error":{"message":"User not found.","code":401,"pad":"` + strings.Repeat("x", errbody.HoldLimit) + `"}}`)
	for name, c := range map[string]struct {
		method string
		header http.Header
		body   []byte
	}{
		"HTML 401":         {"POST", html, []byte("<html><body>401 Unauthorized</body></html>")},
		"401 without body": {"POST", json, nil},
		"401 to HEAD":      {"HEAD", json, []byte(userNotFound)},
		"over the cap":     {"POST", json, huge},
		"other message":    {"POST", json, []byte(`{"error":{"message":"Invalid credentials","code":401}}`)},
		"bad gzip":         {"POST", http.Header{"Content-Encoding": {"gzip"}}, []byte(userNotFound)},
		"two encodings":    {"POST", http.Header{"Content-Encoding": {"gzip", "br"}}, []byte(userNotFound)},
	} {
		rec := serve(t, &h, upstreamAnswer(401, c.header, c.body), c.method, "/api/v1/chat/completions", dead)
		want := c.body
		if c.method == http.MethodHead {
			want = nil
		}
		if rec.Code != 401 || !bytes.Equal(rec.Body.Bytes(), want) || rec.Header().Get("X-OpenRouter-Key-Status") != "" {
			t.Errorf("%s: %d %v %.80q", name, rec.Code, rec.Header(), rec.Body.String())
		}
	}
}

func TestRewriteFixesHeaders(t *testing.T) {
	var h Handler
	newHandler(t, &h, "http://127.0.0.1:1/api/v1")
	for _, enc := range []string{"", "gzip", "br", "zstd", "deflate"} {
		hdr := http.Header{"Content-Type": {"application/json"}, "Vary": {"Accept-Encoding"}, "Content-Length": {"999"}}
		if enc != "" {
			hdr.Set("Content-Encoding", enc)
		}
		rec := serve(t, &h, upstreamAnswer(401, hdr, encode(t, enc, []byte(userNotFound))), "POST", "/api/v1/chat/completions", "sk-or-v1-short")
		got := rec.Result()
		body := rec.Body.String()
		if got.StatusCode != 401 || got.Header.Get("Content-Encoding") != "" || got.Header.Get("Content-Length") != strconv.Itoa(len(body)) ||
			got.Header.Get("X-OpenRouter-Key-Status") != "key_malformed" || got.Header.Get("Vary") != "Accept-Encoding" ||
			!strings.Contains(body, `"reason":"key_malformed"`) || !strings.Contains(body, `"code":401`) {
			t.Errorf("%q: %v %s", enc, got.Header, body)
		}
	}
}

// A dead metadata endpoint is not hammered: a failing request waits for a
// lookup at most lookup_timeout, and after a failed lookup no request
// waits again, nor starts another, until the backoff has passed; a working
// request never waits for one.
func TestDeadMetadataEndpoint(t *testing.T) {
	var calls atomic.Int32
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		<-r.Context().Done() // never answers
	}))
	defer meta.Close()
	h := Handler{UpstreamOptions: UpstreamOptions{LookupTimeout: caddy.Duration(time.Second)}}
	newHandler(t, &h, meta.URL+"/api/v1")
	clk := newTestClock(time.Now())
	useClock(&h, clk)
	fail := upstreamAnswer(401, http.Header{"Content-Type": {"application/json"}}, []byte(userNotFound))
	ok := upstreamAnswer(200, nil, []byte(`{}`))

	// A working request with a new key starts its lookup and returns while
	// the lookup still hangs.
	other := randomKey()
	serve(t, &h, ok, "POST", "/api/v1/chat/completions", other)
	h.knowledge.flightsMu.Lock()
	inFlight := h.knowledge.flights[fingerprintOf(other)] != nil
	h.knowledge.flightsMu.Unlock()
	if !inFlight {
		t.Error("a working request waited for its key's lookup")
	}

	// A failing request waits for its lookup, which ends at lookup_timeout
	// (it would hang the test otherwise), and claims nothing.
	if rec := serve(t, &h, fail, "POST", "/api/v1/chat/completions", goodKey); rec.Body.String() != userNotFound {
		t.Fatalf("claimed without evidence: %s", rec.Body.String())
	}
	waitIdle(t, h.knowledge)
	lookups := calls.Load()
	for i := 0; i < 10; i++ {
		if rec := serve(t, &h, fail, "POST", "/api/v1/chat/completions", goodKey); rec.Body.String() != userNotFound {
			t.Fatalf("claimed without evidence: %s", rec.Body.String())
		}
		serve(t, &h, ok, "POST", "/api/v1/chat/completions", goodKey)
		clk.advance(100 * time.Millisecond)
	}
	waitIdle(t, h.knowledge)
	if n := calls.Load() - lookups; n != 0 {
		t.Errorf("20 requests within the backoff made %d lookups against a dead endpoint", n)
	}
	clk.advance(backoff(1))
	serve(t, &h, ok, "POST", "/api/v1/chat/completions", goodKey)
	waitIdle(t, h.knowledge)
	if n := calls.Load() - lookups; n != 1 {
		t.Errorf("after the backoff, %d lookups, want 1", n)
	}
}

func TestLogsCarryNoKeyMaterial(t *testing.T) {
	emu, api := startEmulator(t)
	var h Handler
	logs := newHandler(t, &h, api)
	past := time.Now().Add(-time.Hour)
	key := emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
	fail := upstreamAnswer(401, http.Header{"Content-Type": {"application/json"}}, []byte(userNotFound))
	serve(t, &h, fail, "POST", "/api/v1/chat/completions", key)
	waitIdle(t, h.knowledge)
	if logs.Len() == 0 {
		t.Fatal("nothing logged: the sweep proves nothing")
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += fmt.Sprintf(" %s=%v", k, v)
		}
		for _, m := range []string{key, key[9:], recordHash(key)} {
			if strings.Contains(line, m) {
				t.Errorf("log line carries key material: %s", e.Message)
			}
		}
	}
}
