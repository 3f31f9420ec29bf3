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

	"github.com/openrouter-keys/caddy-openrouter-keys/caddymodule/internal/errbody"
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

// A dead metadata endpoint is not hammered, and a failing request waits at
// most lookup_timeout, once per key per backoff window.
func TestDeadMetadataEndpoint(t *testing.T) {
	var calls atomic.Int32
	hang := make(chan struct{})
	defer close(hang)
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer meta.Close()
	h := Handler{UpstreamOptions: UpstreamOptions{LookupTimeout: caddy.Duration(200 * time.Millisecond)}}
	newHandler(t, &h, meta.URL+"/api/v1")
	fail := upstreamAnswer(401, http.Header{"Content-Type": {"application/json"}}, []byte(userNotFound))
	ok := upstreamAnswer(200, nil, []byte(`{}`))

	for i := 0; i < 10; i++ {
		start := time.Now()
		rec := serve(t, &h, fail, "POST", "/api/v1/chat/completions", goodKey)
		if took := time.Since(start); took > time.Second {
			t.Fatalf("request %d waited %v", i, took)
		}
		if rec.Body.String() != userNotFound {
			t.Fatalf("claimed without evidence: %s", rec.Body.String())
		}
		start = time.Now()
		serve(t, &h, ok, "POST", "/api/v1/chat/completions", goodKey)
		if took := time.Since(start); took >= 200*time.Millisecond {
			t.Fatalf("a working request waited %v, as long as the hanging lookup", took)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := calls.Load(); n > 2 {
		t.Errorf("20 requests with one key made %d lookups against a dead endpoint", n)
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
