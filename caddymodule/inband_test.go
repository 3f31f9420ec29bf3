package caddymodule

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest/observer"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// inbandCount is the count of in-200 failures with these labels.
func inbandCount(form, provider, errorType string) float64 {
	return testutil.ToFloat64(gatewayMetrics.inbandFailures.WithLabelValues(form, provider, errorType))
}

// chatRequest is a chat completion request for model with key.
func chatRequest(key, model string, stream bool) *http.Request {
	body := `{"model":"` + model + `","stream":` + strconv.FormatBool(stream) + `,"messages":[{"role":"user","content":"hi"}]}`
	r := httptest.NewRequest("POST", "/api/v1/chat/completions", strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+key)
	r.Header.Set("Content-Type", "application/json")
	return r
}

// direct is what the emulator answers without the gateway.
func direct(emu *emulator.Server, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	emu.ServeHTTP(rec, r)
	return rec
}

// inbandLogs are the logged in-200 failures.
func inbandLogs(logs *observer.ObservedLogs) []observer.LoggedEntry {
	return logs.FilterMessageSnippet("failure inside a 200").All()
}

// TestInbandFailuresRecognisedInPassing: each of the four forms from the
// emulator goes through byte for byte with its status 200, is counted by
// form, provider and error type, and logged once with its generation id.
func TestInbandFailuresRecognisedInPassing(t *testing.T) {
	emu, base := startEmulator(t)
	emu.EventGap = 0
	var h Handler
	logs := newHandler(t, &h, base)
	key := emu.NewKey(emulator.KeyOptions{})
	for _, c := range []struct {
		model                   string
		stream                  bool
		form, provider, errType string
	}{
		{emulator.ModelIn200StreamError, true, "stream_error", "Nvidia", "rate_limit_exceeded"},
		{emulator.ModelIn200NoChoices, true, "stream_error_no_choices", "Nvidia", "provider_error"},
		{emulator.ModelIn200NativeError, true, "native_finish_error", "Nvidia", "none"},
		{emulator.ModelIn200NativeError, false, "native_finish_error", "Nvidia", "none"},
		{emulator.ModelIn200Body, false, "body_error", "Nvidia", "provider_overloaded"},
	} {
		name := c.model + map[bool]string{true: " streamed", false: ""}[c.stream]
		logs.TakeAll()
		loggedGenerations = &generationSet{seen: map[string]struct{}{}}
		before := inbandCount(c.form, c.provider, c.errType)
		want := direct(emu, chatRequest(key, c.model, c.stream))
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, chatRequest(key, c.model, c.stream), toEmulator(emu)); err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), want.Body.Bytes()) {
			t.Errorf("%s: %d %q, want 200 %q byte for byte", name, rec.Code, rec.Body, want.Body)
		}
		if got := inbandCount(c.form, c.provider, c.errType) - before; got != 1 {
			t.Errorf("%s: counted %v times under (%s, %s, %s), want once", name, got, c.form, c.provider, c.errType)
		}
		entries := inbandLogs(logs)
		if len(entries) != 1 || entries[0].ContextMap()["generation_id"] != "gen-1767225600-in200" || entries[0].ContextMap()["form"] != c.form {
			t.Errorf("%s: logged %v, want one line with the generation id", name, entries)
		}
		// The same generation again: counted, not logged again.
		h.ServeHTTP(httptest.NewRecorder(), chatRequest(key, c.model, c.stream), toEmulator(emu))
		if got := inbandCount(c.form, c.provider, c.errType) - before; got != 2 {
			t.Errorf("%s: the second failure counted %v in all, want 2", name, got)
		}
		if n := len(inbandLogs(logs)); n != 1 {
			t.Errorf("%s: logged %d times for one generation id, want once", name, n)
		}
	}
}

// splitWriter is next writing body in pieces of n bytes, flushing each, as
// reverse_proxy does with a stream read in pieces.
func splitWriter(header http.Header, body []byte, n int) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for b := body; len(b) > 0; b = b[min(n, len(b)):] {
			w.Write(b[:min(n, len(b))])
			if err := rc.Flush(); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestInbandStreamCutAnywhere: however the stream is cut into writes (a
// marker split between two included), it passes byte for byte and the
// failure is recognised once; a stream that only talks about errors is no
// failure.
func TestInbandStreamCutAnywhere(t *testing.T) {
	var h Handler
	_, base := startEmulator(t)
	newHandler(t, &h, base)
	sse := http.Header{"Content-Type": {"text/event-stream"}}
	// More than the 4 KiB tail before the failure, so that the tail wraps.
	failing := []byte(": OPENROUTER PROCESSING\n\n" +
		strings.Repeat(`data: {"id":"gen-cut","provider":"Groq","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}`+"\n\n", 50) +
		`data: {"id":"gen-cut","provider":"Groq","error":{"code":502,"message":"Upstream error from Groq: boom","metadata":{"error_type":"server_error"}},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}` + "\n\n" +
		"data: [DONE]\n\n")
	talking := []byte(`data: {"id":"gen-talk","choices":[{"index":0,"delta":{"content":"an \"error\": network_error\" in \"error\""},"finish_reason":null}]}` + "\n\n" +
		`data: {"id":"gen-talk","choices":[{"index":0,"delta":{"content":"error"},"finish_reason":"stop","native_finish_reason":"stop"}]}` + "\n\n")
	for n := 1; n <= len(failing); n += 1 + n/16 {
		before := inbandCount("stream_error", "Groq", "server_error")
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, chatRequest(randomKey(), "m", true), splitWriter(sse, failing, n)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rec.Body.Bytes(), failing) {
			t.Fatalf("cut every %d bytes: the stream changed", n)
		}
		if got := inbandCount("stream_error", "Groq", "server_error") - before; got != 1 {
			t.Errorf("cut every %d bytes: counted %v, want 1", n, got)
		}
	}
	sum := func() float64 {
		var s float64
		for _, f := range []string{"stream_error", "stream_error_no_choices", "native_finish_error"} {
			s += inbandCount(f, "other", "none")
		}
		return s
	}
	before := sum() // first: reading a count makes its series
	total := testutil.CollectAndCount(gatewayMetrics.inbandFailures)
	for _, n := range []int{1, 7, len(talking)} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, chatRequest(randomKey(), "m", true), splitWriter(sse, talking, n))
		if !bytes.Equal(rec.Body.Bytes(), talking) {
			t.Fatalf("cut every %d bytes: the stream changed", n)
		}
	}
	if sum() != before || testutil.CollectAndCount(gatewayMetrics.inbandFailures) != total {
		t.Error("a stream that only talks about errors was counted as a failure")
	}
}

// TestInbandLabelsBounded: whatever the upstream names, the labels come
// from fixed sets, and no key in a message reaches the log.
func TestInbandLabelsBounded(t *testing.T) {
	var h Handler
	_, base := startEmulator(t)
	logs := newHandler(t, &h, base)
	secret := randomKey()
	body := []byte(`{"id":"gen-evil\n","provider":"Evil <script>","error":{"code":500,"message":"bad key ` + secret + `","metadata":{"error_type":"made_up_` + secret + `","provider_name":"x"}}}`)
	before := inbandCount("body_error", "other", "other")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, chatRequest(randomKey(), "m", false), upstreamAnswer(http.StatusOK, http.Header{"Content-Type": {"application/json"}}, body))
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), body) {
		t.Errorf("with the option off: %d %q", rec.Code, rec.Body)
	}
	if got := inbandCount("body_error", "other", "other") - before; got != 1 {
		t.Errorf("counted %v under (body_error, other, other), want 1", got)
	}
	for _, e := range inbandLogs(logs) {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + strings.TrimSpace(strings.ReplaceAll(toString(v), "\n", `\n`))
		}
		if strings.Contains(line, secret[12:40]) || strings.Contains(line, "gen-evil") {
			t.Errorf("log line carries key material or a malformed generation id: %s", line)
		}
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

// TestStatusFromInbandError: with the option, a non-streaming 200 whose
// whole body is an error goes out with its code's status and the same
// bytes (compressed or not); successes, streams and empty successes keep
// their 200 and bytes.
func TestStatusFromInbandError(t *testing.T) {
	emu, base := startEmulator(t)
	emu.EventGap = 0
	h := Handler{StatusFromInbandError: true}
	newHandler(t, &h, base)
	key := emu.NewKey(emulator.KeyOptions{})
	for _, c := range []struct {
		model    string
		stream   bool
		encoding string
		status   int
	}{
		{emulator.ModelIn200Body, false, "", http.StatusServiceUnavailable},
		{emulator.ModelIn200Body, false, "gzip", http.StatusServiceUnavailable},
		{emulator.ModelIn200StreamError, true, "", http.StatusOK},
		{emulator.ModelIn200NativeError, false, "", http.StatusOK},
		{"openai/gpt-4o", false, "", http.StatusOK},
		{"openai/gpt-4o", false, "gzip", http.StatusOK},
		{"openai/gpt-4o", true, "", http.StatusOK},
	} {
		name := c.model + " " + c.encoding + map[bool]string{true: " streamed", false: ""}[c.stream]
		req := func() *http.Request {
			r := chatRequest(key, c.model, c.stream)
			if c.encoding != "" {
				r.Header.Set("Accept-Encoding", c.encoding)
			}
			return r
		}
		want := direct(emu, req())
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, req(), toEmulator(emu)); err != nil {
			t.Fatal(err)
		}
		if rec.Code != c.status || !bytes.Equal(rec.Body.Bytes(), want.Body.Bytes()) {
			t.Errorf("%s: %d %q, want %d and the upstream's bytes %q", name, rec.Code, rec.Body, c.status, want.Body)
		}
		for _, k := range []string{"Content-Length", "Content-Encoding", "Content-Type"} {
			if rec.Header().Get(k) != want.Header().Get(k) {
				t.Errorf("%s: %s %q, upstream's %q", name, k, rec.Header().Get(k), want.Header().Get(k))
			}
		}
		if changed := rec.Header().Get("X-OpenRouter-Keys-Status-From") != ""; changed != (c.status != http.StatusOK) {
			t.Errorf("%s: X-OpenRouter-Keys-Status-From %q", name, rec.Header().Get("X-OpenRouter-Keys-Status-From"))
		}
	}

	// A success held only for its first bytes: a long body streams on
	// past them, its writes flushed as they came.
	long := []byte(`{"id":"gen-long","choices":[{"message":{"content":"` + strings.Repeat("word ", 4000) + `"}}]}`)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, chatRequest(key, "m", false), splitWriter(http.Header{"Content-Type": {"application/json"}}, long, 100))
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), long) {
		t.Errorf("a long success: %d, %d bytes of %d", rec.Code, rec.Body.Len(), len(long))
	}
	// Keep-alive whitespace, then the error, in pieces.
	ws := append([]byte("\n\n   \n"), emuBody(t, emu, key)...)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, chatRequest(key, "m", false), splitWriter(http.Header{"Content-Type": {"application/json"}}, ws, 3))
	if rec.Code != http.StatusServiceUnavailable || !bytes.Equal(rec.Body.Bytes(), ws) {
		t.Errorf("an error after keep-alive whitespace: %d %q", rec.Code, rec.Body)
	}
}

// emuBody is the emulator's non-streaming in-200 error body.
func emuBody(t *testing.T, emu *emulator.Server, key string) []byte {
	t.Helper()
	rec := direct(emu, chatRequest(key, emulator.ModelIn200Body, false))
	return rec.Body.Bytes()
}

// markerIndexByDefinition is markerIndex as its definition says it: the
// first `error"` after `"` or `_`, byte by byte.
func markerIndexByDefinition(b []byte) int {
	for at := 1; at+6 <= len(b); at++ {
		if string(b[at:at+6]) == `error"` && (b[at-1] == '"' || b[at-1] == '_') {
			return at
		}
	}
	return -1
}

// markerIndex, which jumps from one `rror"` to the next, finds what the
// definition finds: in bodies and stream tails at every offset, with
// markers at the edges, near misses, escaped quotes and random bytes.
func TestMarkerIndexAsDefined(t *testing.T) {
	cases := [][]byte{
		nil, []byte(`"`), []byte(`error"`), []byte(`"error"`), []byte(`_error"`), []byte(`xerror"`), []byte(`"error`),
		[]byte(`{"finish_reason":"error"}`), []byte(`{"native_finish_reason":"network_error"}`),
		[]byte(`{"content":"an \"error\" in text","x":"terror"}`), []byte(`{"a":"errorr"}`), []byte(`""error"`),
		completionBody, sseEvent,
		[]byte(`{"id":"gen-1","error":{"message":"Upstream error from Nvidia","code":503}}`),
	}
	rnd := uint64(1)
	next := func() uint64 { rnd = rnd*6364136223846793005 + 1442695040888963407; return rnd >> 33 }
	alphabet := []byte(`"_errorx\`)
	for range 2000 {
		b := make([]byte, next()%40)
		for i := range b {
			b[i] = alphabet[next()%uint64(len(alphabet))]
		}
		cases = append(cases, b)
	}
	for _, c := range cases {
		for pad := range 9 {
			b := append(bytes.Repeat([]byte{' '}, pad), c...)
			if got, want := markerIndex(b), markerIndexByDefinition(b); got != want {
				t.Fatalf("%q: got %d, want %d", b, got, want)
			}
		}
	}
}

// BenchmarkMarkerIndex is the search alone on a completion without a
// marker, as every watched success is searched.
func BenchmarkMarkerIndex(b *testing.B) {
	b.SetBytes(int64(len(completionBody)))
	for b.Loop() {
		if markerIndex(completionBody) >= 0 {
			b.Fatal("a marker in a success")
		}
	}
}

func TestMediaType(t *testing.T) {
	for in, want := range map[string]string{
		"application/json": "application/json", "application/json; charset=utf-8": "application/json",
		" Application/JSON ;charset=UTF-8": "application/json", "text/event-stream": "text/event-stream",
		"TEXT/EVENT-STREAM": "text/event-stream", "": "", "text/plain": "text/plain",
	} {
		if got := mediaType(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// A compressed response is no stream or JSON the watch can read: bytes
// that would be a failure in the clear are not counted when the response
// says it is encoded, and are when it is identity-encoded.
func TestInbandWatchLeavesCompressedResponses(t *testing.T) {
	failure := map[string][]byte{
		"text/event-stream": []byte("data: {\"id\":\"gen-1\",\"choices\":[],\"error\":{\"message\":\"x\",\"code\":502}}\n\n"),
		"application/json":  []byte(`{"id":"gen-1","error":{"message":"x","code":502}}`),
	}
	for ct, body := range failure {
		for _, enc := range []string{"gzip", "br", "identity", ""} {
			iw := inbandWatch{armed: true}
			h := http.Header{"Content-Type": {ct}}
			if enc != "" {
				h["Content-Encoding"] = []string{enc}
			}
			iw.begin(h)
			iw.scan(body)
			iw.end()
			if want := enc == "identity" || enc == ""; iw.done != want {
				t.Errorf("%s, Content-Encoding %q: recorded %v, want %v", ct, enc, iw.done, want)
			}
		}
	}
}
