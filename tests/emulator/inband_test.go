package emulator

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Each in-200 model answers 200 with its failure, as captured: the stream
// ends with the failing event and [DONE], the body is the error.
func TestIn200Failures(t *testing.T) {
	s, base := start(t, func(s *Server) { s.EventGap = 0 })
	key := s.NewKey(KeyOptions{})
	for _, c := range []struct {
		model  string
		stream bool
		form   openrouter.InBandForm
		code   int
	}{
		{ModelIn200StreamError, true, openrouter.InBandStreamError, 429},
		{ModelIn200NoChoices, true, openrouter.InBandNoChoices, 502},
		{ModelIn200NativeError, true, openrouter.InBandNativeError, 0},
		{ModelIn200NativeError, false, openrouter.InBandNativeError, 0},
		{ModelIn200Body, false, openrouter.InBandBody, 503},
		{ModelIn200StreamError, false, openrouter.InBandBody, 503},
	} {
		body := `{"model":"` + c.model + `","stream":` + map[bool]string{true: "true", false: "false"}[c.stream] + `,"messages":[]}`
		r := call(t, "POST", base+"/chat/completions", key, body)
		if r.status != http.StatusOK {
			t.Fatalf("%s: %d", c.model, r.status)
		}
		var f openrouter.InBandFailure
		ok := false
		if c.stream {
			events := strings.Split(strings.TrimSuffix(string(r.body), "\n\n"), "\n\n")
			if last := events[len(events)-1]; last != "data: [DONE]" {
				t.Errorf("%s: the stream ends with %q", c.model, last)
			}
			f, ok = openrouter.RecogniseInBandEvent([]byte(strings.TrimPrefix(events[len(events)-2], "data: ")))
		} else {
			f, ok = openrouter.RecogniseInBandBody(r.body)
			if c.form == openrouter.InBandBody && !bytes.Contains(r.body, []byte(`"error":{"message":"Upstream error from Nvidia: Service temporarily overloaded","code":503,"metadata":{"error_type":"provider_overloaded"}}`)) {
				t.Errorf("%s: %s", c.model, r.body)
			}
		}
		if !ok || f.Form != c.form || f.Code != c.code || f.Provider != "Nvidia" || f.GenerationID == "" {
			t.Errorf("%s (stream %v): %+v %v, want form %v code %d from Nvidia", c.model, c.stream, f, ok, c.form, c.code)
		}
	}
}
