package caddymodule

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// The in-200 watch on the success path: a non-streaming completion and an
// SSE stream of 1,000 events, each without the module ("baseline"), behind
// it with a content type the watch skips ("watch-off": the same bytes,
// today's code path) and with the watch reading them ("watch-on"). The
// stream is also cut mid-line ("watch-on-cut": each event in two writes,
// the first line carried over) and, with status_from_inband_error, the
// completion is held for its first bytes ("option-on").

// completionBody is a non-streaming completion as OpenRouter sends one.
var completionBody = []byte(`{"id":"gen-1767225600-AbCdEfGhIjKlMnOpQrSt","provider":"OpenAI","model":"openai/gpt-4o","object":"chat.completion","created":1767225600,` +
	`"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":"assistant","content":"` +
	strings.Repeat("The quick brown fox jumps over the lazy dog. ", 16) + `","refusal":null,"reasoning":null}}],` +
	`"usage":{"prompt_tokens":12,"completion_tokens":160,"total_tokens":172,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`)

// sseEvent is one streamed chunk as OpenRouter sends it.
var sseEvent = []byte(`data: {"id":"gen-1767225600-AbCdEfGhIjKlMnOpQrSt","provider":"OpenAI","model":"openai/gpt-4o","object":"chat.completion.chunk","created":1767225600,"choices":[{"index":0,"delta":{"role":"assistant","content":" word"},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}` + "\n\n")

// writeOnce is next answering body in one write.
func writeOnce(contentType string, body []byte) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(body)
		return err
	})
}

// streamEvents is next streaming n events, each flushed; cut writes each
// event in two pieces, the first ending mid-line.
func streamEvents(contentType string, n int, cut bool) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for i := 0; i < n; i++ {
			if cut {
				w.Write(sseEvent[:100])
				w.Write(sseEvent[100:])
			} else {
				w.Write(sseEvent)
			}
			if err := rc.Flush(); err != nil {
				return err
			}
		}
		return nil
	})
}

func BenchmarkInbandWatch(b *testing.B) {
	const skipped = "application/octet-stream" // a content type the watch skips
	for _, c := range []struct {
		name          string
		json, skipped caddyhttp.Handler
	}{
		{"completion", writeOnce("application/json", completionBody), writeOnce(skipped, completionBody)},
		{"sse-1000", streamEvents("text/event-stream", 1000, false), streamEvents(skipped, 1000, false)},
	} {
		b.Run(c.name, func(b *testing.B) {
			var h Handler
			emu, done := benchHandler(b, &h)
			defer done()
			key := emu.NewKey(emulator.KeyOptions{})
			learnNow(h.knowledge, key)
			req := request(key)
			b.Run("baseline", func(b *testing.B) {
				w := &discardWriter{h: make(http.Header)}
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					w.reset()
					if err := c.json.ServeHTTP(w, req); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("watch-off", func(b *testing.B) { benchGateway(b, &h, c.skipped, req) })
			b.Run("watch-on", func(b *testing.B) { benchGateway(b, &h, c.json, req) })
			if c.name == "sse-1000" {
				b.Run("watch-on-cut", func(b *testing.B) { benchGateway(b, &h, streamEvents("text/event-stream", 1000, true), req) })
			}
		})
	}
}

// BenchmarkStatusFromInbandError: the completion with the option on, held
// for its first bytes, and a body that is an error, held whole and sent
// with its code's status.
func BenchmarkStatusFromInbandError(b *testing.B) {
	h := Handler{StatusFromInbandError: true}
	emu, done := benchHandler(b, &h)
	defer done()
	key := emu.NewKey(emulator.KeyOptions{})
	learnNow(h.knowledge, key)
	req := request(key)
	b.Run("completion", func(b *testing.B) { benchGateway(b, &h, writeOnce("application/json", completionBody), req) })
	errBody := []byte(`{"id":"gen-1767225600-AbCdEfGhIjKlMnOpQrSt","error":{"message":"Upstream error from Nvidia: Service temporarily overloaded","code":503,"metadata":{"error_type":"provider_overloaded"}}}`)
	b.Run("error-body", func(b *testing.B) {
		benchGateway(b, &h, writeOnce("application/json", errBody), req)
		w := &discardWriter{h: make(http.Header)}
		if err := h.ServeHTTP(w, req, writeOnce("application/json", errBody)); err != nil || !bytes.Equal([]byte(w.h.Get("X-OpenRouter-Keys-Status-From")), []byte("inband_error")) {
			b.Fatalf("not sent with its code's status: %v %v", err, w.h)
		}
	})
}
