package errbody

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// An edit replaces the message and sets members in "metadata", in every
// envelope OpenRouter uses, keeping every other byte and the order.
func TestEditKeepsTheEnvelope(t *testing.T) {
	set := []Member{Text("reason", "key_expired"), Text("expires_at", "2026-11-20T10:00:00Z")}
	const meta = `"metadata":{"reason":"key_expired","expires_at":"2026-11-20T10:00:00Z"}`
	for _, c := range []struct {
		name, in, want string
		envelope       openrouter.Envelope
	}{
		{"nested, byte-exact upstream body", userNotFound,
			`{"error":{"message":"Said.",` + meta + `,"code":401}}`, openrouter.EnvelopeOpenAI},
		{"nested with other members", `{"error":{"code":401,"message":"User not found.","metadata":{"x":1}},"user_id":"u1","openrouter_metadata":{"a":[1,2]}}`,
			`{"error":{"code":401,"message":"Said.","metadata":{"x":1,"reason":"key_expired","expires_at":"2026-11-20T10:00:00Z"}},"user_id":"u1","openrouter_metadata":{"a":[1,2]}}`, openrouter.EnvelopeOpenAI},
		{"flat", `{"message":"User not found.","code":401}`,
			`{"message":"Said.",` + meta + `,"code":401}`, openrouter.EnvelopeFlat},
		{"messages", `{"type":"error","error":{"type":"authentication_error","message":"User not found."}}`,
			`{"type":"error","error":{"type":"authentication_error","message":"Said.",` + meta + `}}`, openrouter.EnvelopeMessages},
		{"responses", `{"error":{"code":"server_error","message":"User not found."},"error_type":"authentication"}`,
			`{"error":{"code":"server_error","message":"Said.",` + meta + `},"error_type":"authentication"}`, openrouter.EnvelopeResponsesDocs},
		{"null metadata", `{"error":{"message":"User not found.","code":401,"metadata":null}}`,
			`{"error":{"message":"Said.","code":401,` + meta + `}}`, openrouter.EnvelopeOpenAI},
		{"members already there, in their place", `{"error":{"message":"User not found.","metadata":{"expires_at":1,"x":2,"reason":null}}}`,
			`{"error":{"message":"Said.","metadata":{"expires_at":"2026-11-20T10:00:00Z","x":2,"reason":"key_expired"}}}`, openrouter.EnvelopeOpenAI},
		{"spaces and escapes kept", "{ \"error\" : {\"message\":\"User not found.\", \"code\" : 401 ,\"m\\u0065ta\":\"\\u00e9\"} }",
			`{"error":{"message":"Said.",` + meta + `,"code":401,"m\u0065ta":"\u00e9"}}`, openrouter.EnvelopeOpenAI},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, ok := Parse([]byte(c.in))
			if !ok || b.Message() != "User not found." {
				t.Fatal("not parsed")
			}
			if e := b.Envelope(); e != c.envelope {
				t.Errorf("envelope %d, want %d", e, c.envelope)
			}
			if got, ok := b.Edit("Said.", set...); !ok || string(got) != c.want {
				t.Errorf("\n got  %s\n want %s", got, c.want)
			}
			if got, ok := b.Edit("", Text("reason", "r")); !ok || !bytes.Contains(got, []byte(`"message":"User not found."`)) {
				t.Errorf("an empty message did not keep the message: %s", got)
			}
		})
	}
}

// Every envelope's body, as openrouter renders it for any status, parses
// as that envelope and keeps its message through an edit.
func TestEveryEnvelopeEveryStatus(t *testing.T) {
	for _, e := range []openrouter.Envelope{openrouter.EnvelopeOpenAI, openrouter.EnvelopeFlat, openrouter.EnvelopeMessages, openrouter.EnvelopeResponsesDocs} {
		for _, status := range []int{401, 402, 403, 429} {
			in := e.Body(status, "Some <failure> & \u2028more", map[string]any{"limit_source": "openrouter_credits"})
			b, ok := Parse(in)
			if !ok || b.Envelope() != e || b.Message() != "Some <failure> & \u2028more" {
				t.Fatalf("envelope %d, %d: %s not parsed as itself", e, status, in)
			}
			out, ok := b.Edit("", Text("reason", "r"))
			if !ok || !json.Valid(out) || !bytes.Contains(out, []byte(`"reason":"r"`)) {
				t.Errorf("envelope %d, %d: %s", e, status, out)
			}
			again, _ := Parse(out)
			if again.Message() != b.Message() || again.Envelope() != e {
				t.Errorf("envelope %d, %d: edited body reads %q in %d", e, status, again.Message(), again.Envelope())
			}
		}
	}
}

// The members a later reader needs, as OpenRouter's 402, 403 and 429
// bodies carry them (the facts sheet's "Failures beyond 401").
func TestParseReadsMembers(t *testing.T) {
	in := `{"error":{"message":"Provider returned error","code":429,"metadata":{` +
		`"raw":"m is temporarily rate-limited upstream","provider_name":"Chutes","is_byok":false,` +
		`"limit_source":"upstream_provider_shared_pool","provider_error_code":429,"previous":null,` +
		`"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":1760313600000},` +
		`"availability":{"code":"capacity_exhausted","retryable":true,"retry_after":40}}},"user_id":"user_2x"}`
	b, ok := Parse([]byte(in))
	if !ok {
		t.Fatal("not parsed")
	}
	text := func(v Value) string { s, _ := v.Text(); return s }
	if code, ok := b.Code().Float(); !ok || code != 429 {
		t.Errorf("code %v, %v", code, ok)
	}
	if got := text(b.Top("user_id")); got != "user_2x" {
		t.Errorf("user_id %q", got)
	}
	for name, want := range map[string]string{"raw": "m is temporarily rate-limited upstream", "provider_name": "Chutes", "limit_source": "upstream_provider_shared_pool"} {
		if got := text(b.Metadata(name)); got != want {
			t.Errorf("metadata.%s %q, want %q", name, got, want)
		}
	}
	if byok, ok := b.Metadata("is_byok").Bool(); !ok || byok {
		t.Errorf("is_byok %v, %v", byok, ok)
	}
	if n, ok := b.Metadata("provider_error_code").Float(); !ok || n != 429 {
		t.Errorf("provider_error_code %v, %v", n, ok)
	}
	if raw, ok := b.Metadata("previous").Raw(); !ok || string(raw) != "null" {
		t.Errorf("previous %q, %v", raw, ok)
	}
	if _, ok := b.Metadata("previous").Text(); ok {
		t.Error("null read as text")
	}
	headers := b.Metadata("headers")
	if got := text(headers.Member("X-RateLimit-Remaining")); got != "0" {
		t.Errorf("headers.X-RateLimit-Remaining %q", got)
	}
	if reset, ok := headers.Member("X-RateLimit-Reset").Float(); !ok || int64(reset) != 1760313600000 {
		t.Errorf("headers.X-RateLimit-Reset %v, %v", reset, ok)
	}
	if after, ok := b.Metadata("availability").Member("retry_after").Float(); !ok || after != 40 {
		t.Errorf("availability.retry_after %v, %v", after, ok)
	}
	for _, v := range []Value{b.Metadata("absent"), b.Top("absent"), headers.Member("absent"), b.Metadata("raw").Member("x")} {
		if v.Present() {
			t.Errorf("absent member present: %+v", v)
		}
	}
	responses, _ := Parse([]byte(`{"error":{"code":"server_error","message":"x"},"error_type":"rate_limit"}`))
	if code := text(responses.Code()); code != "server_error" {
		t.Errorf("/responses code %q", code)
	}
	if _, ok := responses.Code().Float(); ok {
		t.Error("a word read as a number")
	}
}

// A member written twice with different values is there, but has no
// value: readers disagree on which counts. Written twice the same, it is
// what both say.
func TestRepeatedMembersHaveNoValue(t *testing.T) {
	b, ok := Parse([]byte(`{"error":{"message":"m","metadata":{"p":"a","p":"b","q":1,"q":1,"h":{"x":1},"h":{"x":2}}},"user_id":null,"user_id":"u"}`))
	if !ok {
		t.Fatal("not parsed")
	}
	for name, v := range map[string]Value{"p": b.Metadata("p"), "user_id": b.Top("user_id"), "h.x": b.Metadata("h").Member("x")} {
		if _, ok := v.Raw(); !v.Present() || ok {
			t.Errorf("%s: present %v, value %v", name, v.Present(), ok)
		}
		if _, ok := v.Text(); ok {
			t.Errorf("%s read as text", name)
		}
	}
	if q, ok := b.Metadata("q").Float(); !ok || q != 1 {
		t.Errorf("q written twice the same: %v, %v", q, ok)
	}
}

// Defect 7: metadata that writes a member twice is kept byte for byte, and
// extended like any other.
func TestEditKeepsRepeatedMembers(t *testing.T) {
	b, ok := Parse([]byte(`{"error":{"message":"User not found.","code":401,"metadata":{"a":1,"a":2,"provider":"x"}},"x":1,"x":2}`))
	if !ok {
		t.Fatal("not parsed")
	}
	want := `{"error":{"message":"Said.","code":401,"metadata":{"a":1,"a":2,"provider":"x","reason":"r"}},"x":1,"x":2}`
	if got, ok := b.Edit("Said.", Text("reason", "r")); !ok || string(got) != want {
		t.Errorf("got %s (%v)\nwant %s", got, ok, want)
	}
	if got, ok := b.Edit("Said.", Text("a", "r")); ok {
		t.Errorf("the member set is written twice, edited to %s", got)
	}
}

// Metadata an edit cannot extend without losing or misstating something
// is never replaced: the caller passes the body unchanged.
func TestEditRefusesUneditableMetadata(t *testing.T) {
	many := `{"error":{"message":"User not found.","code":401,"metadata":{`
	for i := range maxMembers {
		if i > 0 {
			many += ","
		}
		many += `"m` + strconv.Itoa(i) + `":1`
	}
	many += `}}}`
	for name, in := range map[string]string{
		"the member set twice": `{"error":{"message":"User not found.","code":401,"metadata":{"reason":1,"reason":2}}}`,
		"metadata a string":    `{"error":{"message":"User not found.","code":401,"metadata":"x"}}`,
		"metadata an array":    `{"error":{"message":"User not found.","code":401,"metadata":[1]}}`,
		"too many members":     many,
		"over the bound":       strings.Replace(many, `"metadata":{`, `"metadata":{"extra":0,`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			b, ok := Parse([]byte(in))
			if !ok {
				t.Fatal("not parsed")
			}
			if out, ok := b.Edit("Said.", Text("reason", "r")); ok {
				t.Errorf("edited to %s", out)
			}
		})
	}
}

// What is not an error body, or is ambiguous about its message, is
// refused.
func TestParseRefuses(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `"User not found."`, `<html>401</html>`, `{"error":"User not found."}`,
		`{"error":{"message":401}}`, userNotFound + `{}`, userNotFound[:20], `{"code":401}`,
		`{"error":{"message":"User not found.","message":"x"}}`,
		`{"error":{"message":"a"},"error":{"message":"b"}}`,
		`{"message":"a","message":"b"}`,
		`{"error":{"message":"a","metadata":{},"metadata":{"reason":"x"}}}`,
	} {
		if b, ok := Parse([]byte(in)); ok {
			t.Errorf("%q parsed as %+v", in, b)
		}
	}
}

// FuzzEdit: any bytes are refused, or parse to a body whose edit is one
// JSON object with the member set, the same message and envelope, and
// every other top-level member as it was.
func FuzzEdit(f *testing.F) {
	f.Add([]byte(userNotFound))
	f.Add([]byte(`{"message":"User not found.","code":401,"metadata":{"a":1,"a":2}}`))
	f.Add([]byte(`{"type":"error","error":{"type":"rate_limit_error","message":"x"}}`))
	f.Add([]byte(`{"error":{"code":"server_error","message":"\u00e9"},"error_type":"rate_limit"}`))
	f.Add([]byte(`{"error":{"message":"m","metadata":{"headers":{"X-RateLimit-Reset":"1"}}},"user_id":"u"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		b, ok := Parse(in)
		if !ok {
			return
		}
		out, ok := b.Edit("", Text("reason", "fuzz"))
		if !ok {
			return
		}
		again, ok := Parse(out)
		if !ok {
			t.Fatalf("edit of %s does not parse: %s", in, out)
		}
		if again.Message() != b.Message() || again.Envelope() != b.Envelope() {
			t.Fatalf("edit of %s reads %q in %d", in, again.Message(), again.Envelope())
		}
		if reason, _ := again.Metadata("reason").Text(); reason != "fuzz" {
			t.Fatalf("edit of %s lacks the member: %s", in, out)
		}
		for _, m := range b.top {
			if m.name == "error" && b.inner != nil {
				continue
			}
			if m.name == "metadata" && b.inner == nil {
				continue
			}
			if raw, _ := again.Top(m.name).Raw(); raw != nil && !bytes.Equal(raw, m.value) {
				t.Fatalf("edit of %s changed %s: %s", in, m.name, out)
			}
			if !again.Top(m.name).Present() {
				t.Fatalf("edit of %s lost %s: %s", in, m.name, out)
			}
		}
	})
}

// BenchmarkParseAndEdit: what reading and editing one held body costs,
// OpenRouter's 401 and a 429 with provider metadata.
func BenchmarkParseAndEdit(b *testing.B) {
	for name, in := range map[string]string{
		"401": userNotFound,
		"429": `{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"m is temporarily rate-limited upstream","provider_name":"Chutes","is_byok":false,"limit_source":"upstream_provider_shared_pool"}},"user_id":"user_2x"}`,
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				body, ok := Parse([]byte(in))
				if !ok {
					b.Fatal("not parsed")
				}
				if _, ok := body.Metadata("limit_source").Text(); ok != (name == "429") {
					b.Fatal("limit_source misread")
				}
				if _, ok := body.Edit("Said.", Text("reason", "r"), Text("resets_at", "2026-12-06T00:00:00Z")); !ok {
					b.Fatal("not edited")
				}
			}
		})
	}
}
