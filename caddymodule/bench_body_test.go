package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// cpuTime is the CPU time this process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runCPU is run reporting CPU time per request too (cpu-ns/op), which a
// machine shared with other work disturbs less than the wall time.
func runCPU(b *testing.B, h *Handler, next caddyhttp.Handler, req func() *http.Request) {
	w := &discardWriter{h: make(http.Header)}
	for _, name := range []string{"baseline", "gateway"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			start := cpuTime()
			for i := 0; i < b.N; i++ {
				w.reset()
				var err error
				if name == "baseline" {
					err = next.ServeHTTP(w, req())
				} else {
					err = h.ServeHTTP(w, req(), next)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkPassThroughWithBody is the 200 path of a chat completion with
// a body (about 1.3 KB, the model named after the messages, as openai-go
// writes it) that next reads as reverse_proxy does, for a key the gateway
// knows. "catalogue" waits for the model list first: it lists retiring
// models, so the kept start of each body is parsed for its model;
// "none_within_window" lists none within its window (1d), and
// "retirement_off" has the warning off: both only keep the body's start;
// "retirement_and_limits_off" has explain_limits off too: nothing reads
// the body, which is not kept.
func BenchmarkPassThroughWithBody(b *testing.B) {
	body := []byte(`{"messages":[{"role":"system","content":"` + strings.Repeat("You are a helpful assistant. ", 40) +
		`"},{"role":"user","content":"Say hello."}],"model":"` + emulator.ModelIDs[0] + `","temperature":0.7,"stream":false}`)
	readsBody := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(okBody)
		return err
	})
	for _, c := range []struct {
		name, warn, limits string
		waitCatalogue      bool
	}{{"start", "", "", false}, {"catalogue", "", "", true}, {"none_within_window", "1d", "", true},
		{"retirement_off", "off", "", true}, {"retirement_and_limits_off", "off", ExplainLimitsOff, true}} {
		b.Run(c.name, func(b *testing.B) {
			h := Handler{WarnModelRetirement: c.warn, ExplainLimits: c.limits}
			emu, done := benchHandler(b, &h)
			defer done()
			if c.waitCatalogue {
				awaitCatalogue(b, &h)
			}
			key := emu.NewKey(emulator.KeyOptions{})
			learnNow(h.knowledge, key)
			req := httptest.NewRequest("POST", "/api/v1/chat/completions", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			rd := bytes.NewReader(body)
			// Read only, as a server's request body is: io.NopCloser would
			// hand the bytes.Reader's WriteTo to the baseline's io.Copy,
			// a copy that neither reverse_proxy nor the gateway gets.
			rc := struct{ io.ReadCloser }{io.NopCloser(struct{ io.Reader }{rd})}
			runCPU(b, &h, readsBody, func() *http.Request {
				rd.Reset(body)
				req.Body = rc
				return req
			})
		})
	}
}
