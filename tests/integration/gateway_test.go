package integration

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// learn makes one working call with key and waits until the gateway's
// background GET /key has been answered.
// keyExpiringIn makes a key that works for life, lets the gateway learn it
// while it works, and returns it with its expiry.
func (e *env) keyExpiringIn(life time.Duration) (string, time.Time) {
	e.t.Helper()
	key := e.emu.NewKey(emulator.KeyOptions{})
	expiry := time.Now().Add(life)
	e.emu.ExpireIn(key, life)
	e.learn(key)
	return key, expiry
}

func (e *env) learn(key string) {
	e.t.Helper()
	const answered = `caddy_openrouter_keys_lookups_total{endpoint="key",outcome="ok"}`
	before := metric(e.t, answered)
	if _, err := chat(gatewayBase, key); err != nil {
		e.t.Fatalf("working key failed: %v", err)
	}
	// The metric moves when the answer has arrived; it is stored in the
	// cache right after.
	waitFor(e.t, "the background key lookup", func() bool { return metric(e.t, answered) > before })
	time.Sleep(50 * time.Millisecond)
}

func TestWorkingKeyIsUntouched(t *testing.T) {
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{Name: "works"})

	viaGateway, err := chat(gatewayBase, key)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := chat(e.upstream.URL+"/api/v1", key)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := viaGateway.Choices[0].Message.Content, direct.Choices[0].Message.Content; got != want || got != emulator.Reply {
		t.Errorf("content through the gateway %q, direct %q, want %q", got, want, emulator.Reply)
	}
	if viaGateway.RawJSON() != direct.RawJSON() {
		t.Errorf("completion JSON differs:\n gateway %s\n direct  %s", viaGateway.RawJSON(), direct.RawJSON())
	}

	text, err := streamChat(gatewayBase, key)
	if err != nil || text != emulator.Reply {
		t.Errorf("streamed text %q, %v; want %q", text, err, emulator.Reply)
	}
}

func TestStreamIsByteIdenticalAndNotDelayed(t *testing.T) {
	e := start(t, options{emulator: func(s *emulator.Server) { s.EventGap = 50 * time.Millisecond }})
	key := e.emu.NewKey(emulator.KeyOptions{})
	body := `{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`

	for _, model := range []string{"openai/gpt-4o", emulator.ModelInBandError} {
		b := strings.Replace(body, "openai/gpt-4o", model, 1)
		gw, gwBody := raw(t, "POST", gatewayBase+"/chat/completions", key, b)
		pl, plBody := raw(t, "POST", plainBase+"/chat/completions", key, b)
		if gw.StatusCode != 200 || string(gwBody) != string(plBody) {
			t.Errorf("%s: stream through the gateway (%d) differs from plain reverse_proxy (%d):\n%s\n---\n%s", model, gw.StatusCode, pl.StatusCode, gwBody, plBody)
		}
		if !equalHeader(comparableHeader(gw.Header), comparableHeader(pl.Header)) {
			t.Errorf("%s: headers differ:\n gateway %v\n plain   %v", model, gw.Header, pl.Header)
		}
		if !strings.Contains(string(gwBody), ": OPENROUTER PROCESSING\n\n") || !strings.HasSuffix(string(gwBody), "data: [DONE]\n\n") {
			t.Errorf("%s: stream lost its comments or end: %q", model, gwBody)
		}
	}
	if !strings.Contains(func() string {
		_, b := raw(t, "POST", gatewayBase+"/chat/completions", key, strings.Replace(body, "openai/gpt-4o", emulator.ModelInBandError, 1))
		return string(b)
	}(), `"finish_reason":"error"`) {
		t.Error("in-band error chunk did not pass through")
	}

	// Timing: each event must arrive as the upstream sends it.
	req, _ := http.NewRequest("POST", gatewayBase+"/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	first, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	firstAt := time.Since(start)
	for err == nil {
		_, err = r.ReadString('\n')
	}
	total := time.Since(start)
	if first != ": OPENROUTER PROCESSING\n" {
		t.Errorf("first line %q", first)
	}
	// The emulator spends about ten 50 ms gaps on this stream: a first
	// event held back to the end would arrive within a gap of the end.
	if total-firstAt < 300*time.Millisecond {
		t.Errorf("first event at %v, stream ended at %v: events are not flushed as they arrive", firstAt, total)
	}
}

func TestOtherResponsesAreByteIdentical(t *testing.T) {
	e := start(t, options{management: true, global: bothProtocols, emulator: func(s *emulator.Server) { s.EventGap = time.Millisecond }})
	key := e.emu.NewKey(emulator.KeyOptions{})
	noKey := ""
	cases := []struct {
		name, method, path, key, body string
		status                        int
	}{
		// 402, 403 and 429 that are key or account failures are explained
		// (limits_test.go); the others pass as they are.
		{"403 of unknown wording", "POST", "/chat/completions", key, `{"model":"` + emulator.ModelForbiddenUnknown + `","messages":[]}`, 403},
		{"models", "GET", "/models", key, "", 200},
		{"models without key", "GET", "/models", noKey, "", 200},
		{"no key at all", "POST", "/chat/completions", noKey, `{"model":"openai/gpt-4o","messages":[]}`, 401},
		{"completion", "POST", "/chat/completions", key, `{"model":"openai/gpt-4o","messages":[]}`, 200},
		{"stream", "POST", "/chat/completions", key, `{"model":"openai/gpt-4o","stream":true,"messages":[]}`, 200},
		{"stream with an error chunk", "POST", "/chat/completions", key, `{"model":"` + emulator.ModelInBandError + `","stream":true,"messages":[]}`, 200},
		{"GET /key", "GET", "/key", key, "", 200},
	}
	h2c := h2cTransport()
	defer h2c.CloseIdleConnections()
	for _, proto := range []struct {
		name string
		rt   http.RoundTripper
	}{{"HTTP/1.1", &http.Transport{DisableCompression: true}}, {"h2c", h2c}} {
		for _, c := range cases {
			for _, enc := range []string{"", "gzip", "br", "gzip, deflate, br, zstd"} {
				gw := fetch(t, proto.rt, c.method, gatewayBase+c.path, c.key, c.body, "Accept-Encoding", enc)
				pl := fetch(t, proto.rt, c.method, plainBase+c.path, c.key, c.body, "Accept-Encoding", enc)
				if gw.status != c.status || pl.status != c.status {
					t.Errorf("%s over %s (%q): status %d through the gateway, %d plain; want %d", c.name, proto.name, enc, gw.status, pl.status, c.status)
				}
				if d := sameWire(gw, pl); d != "" {
					t.Errorf("%s over %s (%q): differs from plain reverse_proxy: %s", c.name, proto.name, enc, d)
				}
			}
		}
	}
	// An explained 429 keeps its rate limit headers.
	gw, _ := raw(t, "POST", gatewayBase+"/chat/completions", key, `{"model":"`+emulator.ModelRateLimited+`","messages":[]}`)
	if gw.StatusCode != 429 || gw.Header.Get("Retry-After") != "3" || gw.Header.Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("429 lost its headers: %v", gw.Header)
	}
	// No credential: "No cookie auth credentials found" is accurate and stays.
	_, b := raw(t, "POST", gatewayBase+"/chat/completions", "", cases[3].body)
	if !strings.Contains(string(b), "No cookie auth credentials found") {
		t.Errorf("missing-key 401 changed: %s", b)
	}
}

func TestKeyThatExpiresWhileInUse(t *testing.T) {
	// No management key: what GET /key taught while the key worked is
	// enough to explain its expiry.
	e := start(t, options{})
	key, expiry := e.keyExpiringIn(1500 * time.Millisecond)
	sleepUntil(expiry)
	_, err := chat(gatewayBase, key)
	ke := asKeyError(t, err)
	if ke.status != 401 || !strings.HasPrefix(ke.message, "Key expired.") || ke.reason != "key_expired" || ke.header != "key_expired" || ke.expiresAt == "" {
		t.Fatalf("after expiry: %+v", ke)
	}
	if ke.edge {
		t.Error("a key expired less than expiry_skew ago was answered at the edge")
	}
	_, err = streamChat(gatewayBase, key)
	if ke := asKeyError(t, err); ke.reason != "key_expired" {
		t.Errorf("streaming request after expiry: %+v", ke)
	}
}

func TestColdKeysWithManagementKey(t *testing.T) {
	for _, opaque := range []bool{false, true} {
		name := "record hash is sha256"
		if opaque {
			name = "record hash is opaque (label match)"
		}
		t.Run(name, func(t *testing.T) {
			o := options{management: true, emulator: func(s *emulator.Server) { s.OpaqueHashes = opaque }}
			if opaque {
				// A listing of this account (about 9 requests) must not
				// fit the management budget's burst, or the small-account
				// rule would start a second listing for the never-issued
				// key whenever the budget had refilled: at rate 3 (burst
				// 6) the account is a large one, whatever the timing.
				o.module = "management_rate 3"
			}
			e := start(t, o)
			past := time.Now().Add(-time.Hour)
			expired := e.emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
			disabled := e.emu.NewKey(emulator.KeyOptions{Disabled: true})
			deleted := e.emu.NewKey(emulator.KeyOptions{})
			e.emu.Delete(deleted)
			// Enough keys that the listing needs several pages.
			for i := 0; i < 2*emulator.PageSize+10; i++ {
				e.emu.NewKey(emulator.KeyOptions{})
			}
			management := e.emu.NewKey(emulator.KeyOptions{Management: true})
			neverIssued := "sk-or-v1-" + strings.Repeat("0f", 32)

			// With sha256 hashes a record is matched by hash; with opaque
			// ones only labels can match, and the answer says so.
			matched, labelNote := "", "Key "
			if opaque {
				matched, labelNote = "label", "matched by label only"
			}
			// A listing proves a key absent only if it began after the
			// gateway first saw the key: with opaque hashes the deleted
			// key's refusal starts the one listing, so the never-issued
			// key, first seen after it began, is not called not found by
			// it (the next listing may, 30 s on: the account is too large
			// for a listing at once, see above). With sha256 hashes,
			// once GET /keys/{hash} was seen to find the disabled key, its
			// 404 answers for each absent key at once.
			neverIssuedReason, neverIssuedMessage := "key_not_found", "Key not found"
			if opaque {
				neverIssuedReason, neverIssuedMessage = "", "User not found."
			}
			type refusal struct{ key, reason, message, matchedBy string }
			cases := []refusal{
				{expired, "key_expired", "Key expired", matched},
				{disabled, "key_disabled", "Key disabled", matched},
				{deleted, "key_not_found", "Key not found", ""},
				{neverIssued, neverIssuedReason, neverIssuedMessage, ""},
				{management, "management_key", "Management keys cannot be used for inference.", ""},
			}
			if opaque {
				// The absent keys first: the deleted key's refusal starts
				// the listing that serves the others.
				cases[0], cases[1], cases[2], cases[3] = cases[2], cases[3], cases[0], cases[1]
			}
			for _, c := range cases {
				_, err := chat(gatewayBase, c.key)
				ke := asKeyError(t, err)
				if ke.status != 401 || ke.reason != c.reason || ke.header != c.reason || !strings.HasPrefix(ke.message, c.message) || ke.matchedBy != c.matchedBy {
					t.Errorf("%s: got %+v", c.reason, ke)
				}
				if c.matchedBy != "" && !strings.Contains(ke.message, labelNote) {
					t.Errorf("%s: a label match that does not say so: %q", c.reason, ke.message)
				}
			}
			// With opaque hashes one listing (3 pages of 100 read with one
			// page of overlap, an empty page to end, and the first page
			// again) serves every failure; with sha256 hashes, once the
			// lookup by hash was seen to find a disabled key of every
			// workspace, none is needed.
			pages := e.emu.Count("/keys")
			if opaque && (pages < 3 || pages > 8) {
				t.Errorf("the listing was read in %d page requests; want one listing, shared", pages)
			}
			if !opaque && pages > 8 {
				t.Errorf("the listing was read in %d page requests; want at most one listing", pages)
			}
		})
	}
}

func TestEnvelopes(t *testing.T) {
	t.Run("flat", func(t *testing.T) {
		e := start(t, options{management: true, emulator: func(s *emulator.Server) { s.FlatErrors = true }})
		key := e.emu.NewKey(emulator.KeyOptions{Disabled: true})
		_, b := raw(t, "POST", gatewayBase+"/chat/completions", key, `{"model":"x","messages":[]}`, "Accept-Encoding", "gzip")
		var flat struct {
			Message  string `json:"message"`
			Code     int    `json:"code"`
			Metadata struct {
				Reason string `json:"reason"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(b, &flat); err != nil || flat.Code != 401 || flat.Metadata.Reason != "key_disabled" || flat.Message != "Key disabled. Re-enable it in the key settings or use another key." {
			t.Errorf("flat envelope: %s (%v)", b, err)
		}
	})
	t.Run("messages and responses", func(t *testing.T) {
		e := start(t, options{management: true})
		past := time.Now().Add(-time.Hour)
		key := e.emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
		resp, b := raw(t, "POST", gatewayBase+"/messages", key, `{}`, "Accept-Encoding", "br")
		// envelopeOf calls it /messages' only with type "error" and
		// error.type "authentication_error".
		if _, reason, env := envelopeOf(t, b); env != openrouter.EnvelopeMessages || reason != "key_expired" || resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("/messages: %s %v", b, resp.Header)
		}
	})
	// /responses: OpenRouter's docs show one envelope, its OpenAPI spec and
	// SDK another. An answer given at the edge uses the one the upstream
	// was last seen to use there, and the spec's before any was seen.
	for _, c := range []struct {
		name     string
		envelope openrouter.Envelope
	}{
		{"responses, docs envelope", openrouter.EnvelopeResponsesDocs},
		{"responses, spec envelope", openrouter.EnvelopeOpenAI},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := start(t, options{module: "expiry_skew 1s", emulator: func(s *emulator.Server) { s.ResponsesEnvelope = c.envelope }})
			key, expiry := e.keyExpiringIn(time.Second)
			sleepUntil(expiry.Add(time.Second))
			shape := func(b []byte) openrouter.Envelope {
				var probe struct {
					Error     map[string]any `json:"error"`
					ErrorType string         `json:"error_type"`
				}
				_ = json.Unmarshal(b, &probe)
				if probe.ErrorType != "" {
					return openrouter.EnvelopeResponsesDocs
				}
				return openrouter.EnvelopeOpenAI
			}
			resp, b := raw(t, "POST", gatewayBase+"/responses", key, `{}`)
			if resp.Header.Get("X-OpenRouter-Keys-Answer") != "edge" || shape(b) != openrouter.EnvelopeOpenAI || !strings.Contains(string(b), `"reason":"key_expired"`) {
				t.Errorf("before any upstream 401 on /responses: %v %s", resp.Header, b)
			}
			// The upstream answers a dead key on /responses once...
			dead := e.emu.NewKey(emulator.KeyOptions{})
			e.emu.Delete(dead)
			resp, b = raw(t, "POST", gatewayBase+"/responses", dead, `{}`)
			if resp.StatusCode != 401 || shape(b) != c.envelope {
				t.Fatalf("the upstream's own 401: %s", b)
			}
			// ...and the edge answers in its envelope from then on.
			resp, b = raw(t, "POST", gatewayBase+"/responses", key, `{}`)
			if resp.Header.Get("X-OpenRouter-Keys-Answer") != "edge" || shape(b) != c.envelope || !strings.Contains(string(b), `"reason":"key_expired"`) {
				t.Errorf("after the upstream's 401: %v %s", resp.Header, b)
			}
		})
	}
}

// Tokens that are certainly no OpenRouter credential are explained from
// the token alone; tokens that might be one are never called malformed.
func TestTokensThatAreNoKey(t *testing.T) {
	e := start(t, options{})
	past := time.Now().Add(-time.Hour)
	for _, c := range []struct {
		name, token, reason, message string
	}{
		// Truncated well past the label's 12 characters: "sk-or-v1-abc"
		// is also the start of the label of any key whose digits begin
		// "abc", which the logs may name, and the sweep would call that a
		// leak of this token.
		{"truncated", "sk-or-v1-" + strings.Repeat("5e1f", 10), "key_malformed", "this one has the wrong length"},
		{"upper case", "sk-or-v1-" + strings.Repeat("AB", 32), "key_malformed", "upper-case"},
		{"too long", "sk-or-v1-" + strings.Repeat("ab", 32) + "0", "key_malformed", "wrong length"},
		{"stray quotes", `"sk-or-v1-` + strings.Repeat("ab", 32) + `"`, "key_malformed", "quotes"},
		{"unexpanded variable", "$OPENROUTER_API_KEY", "key_malformed", "placeholder"},
		{"the variable's name", "OPENROUTER_API_KEY", "key_malformed", "a placeholder or an unexpanded variable"},
		{"the docs' name", "YOUR_API_KEY", "key_malformed", "a placeholder or an unexpanded variable"},
		{"angle brackets", "<your-key>", "key_malformed", "a placeholder or an unexpanded variable"},
		{"the docs' example", "sk-or-v1-...", "key_malformed", "a placeholder or an unexpanded variable"},
		{"a run of x", "sk-or-v1-xxxxxxxx", "key_malformed", "a placeholder or an unexpanded variable"},
		{"Anthropic key", "sk-ant-api03-" + strings.Repeat("Zx9_", 20), "not_openrouter_key", "Anthropic"},
		{"OpenAI key", "sk-proj-" + strings.Repeat("Ab3-", 20), "not_openrouter_key", "OpenAI"},
		{"expired access token", e.emu.NewJWT(past), "token_expired", "Token expired"},
		{"random word", "not-an-openrouter-key", "credential_not_accepted", "OpenRouter did not accept this token as a credential"},
		{"another key version", "sk-or-v2-" + strings.Repeat("ab", 32), "", "User not found."},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(c.message, "placeholder") {
				// A placeholder is public text (the key check's page shows
				// "sk-or-v1-..."), not key material for the sweep.
				remember(c.token)
			}
			_, err := chat(gatewayBase, c.token)
			ke := asKeyError(t, err)
			if ke.status != 401 || ke.reason != c.reason || !strings.Contains(ke.message, c.message) ||
				(c.reason != "" && strings.Contains(ke.message, openrouter.MessageMissingAuthHeader)) {
				t.Errorf("%+v", ke)
			}
			if strings.Contains(ke.message, c.token) {
				t.Errorf("the error echoes the token")
			}
		})
	}
	// A live access token works through the gateway.
	if _, err := chat(gatewayBase, e.emu.NewJWT(time.Now().Add(time.Hour))); err != nil {
		t.Errorf("a live JWT: %v", err)
	}
	if n := e.emu.Count("/key"); n != 0 {
		t.Errorf("tokens that are no key caused %d lookups; want none", n)
	}
}

func TestUnknownStaysUnchanged(t *testing.T) {
	// Without a management key, a key never seen that is dead says
	// nothing: the upstream's body stands, byte for byte.
	e := start(t, options{})
	past := time.Now().Add(-time.Hour)
	key := e.emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
	body := `{"model":"x","messages":[]}`
	gw, gwBody := raw(t, "POST", gatewayBase+"/chat/completions", key, body, "Accept-Encoding", "gzip")
	pl, plBody := raw(t, "POST", plainBase+"/chat/completions", key, body, "Accept-Encoding", "gzip")
	if gw.StatusCode != 401 || string(gwBody) != string(plBody) || !equalHeader(comparableHeader(gw.Header), comparableHeader(pl.Header)) {
		t.Errorf("unexplained 401 changed:\n gateway %v %q\n plain   %v %q", gw.Header, gwBody, pl.Header, plBody)
	}
}

func TestOneKeyFewLookups(t *testing.T) {
	e := start(t, options{})
	key := e.emu.NewKey(emulator.KeyOptions{})
	for i := 0; i < 100; i++ {
		if _, err := chat(gatewayBase, key); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.emu.Count("/key"); n < 1 || n > 2 {
		t.Errorf("100 requests with one key caused %d GET /key; want 1 or 2", n)
	}
}
