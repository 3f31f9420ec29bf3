package caddymodule

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestTopLevelString(t *testing.T) {
	for _, c := range []struct {
		body, want string
		ok         bool
	}{
		{`{"model":"openai/gpt-4o","messages":[]}`, "openai/gpt-4o", true},
		{` { "messages" : [{"role":"user","content":"say \"model\": x"}], "model" : "a/b" }`, "a/b", true},
		{`{"n":1,"stream":true,"x":null,"o":{"model":"inner"},"model":"a\/b\u0021"}`, "a/b!", true},
		{`{"messages":[{"model":"inner"}]}`, "", false},
		{`{"model":42}`, "", false},
		{`{"model":"cut`, "", false},
		{`{"messages":[1,2`, "", false},
		{`["model","a"]`, "", false},
		{``, "", false},
		{`{"a":1}`, "", false},
		{`{"messages":[{"content":"a \\\"}\\\\"}],"tools":[{"x":{"model":"in"}}],"model":"m/a:free","n":-1.5e3,"s":"\\\\"}  `, "m/a:free", true},
		{`{"messages":[],"model":{"id":"x"}}`, "", false},
	} {
		for _, whole := range []bool{true, false} {
			got, ok := topLevelString([]byte(c.body), "model", whole)
			if got != c.want || ok != c.ok {
				t.Errorf("%s (whole %v): %q %v, want %q %v", c.body, whole, got, ok, c.want, c.ok)
			}
		}
	}
}

// The model member is found as a JSON decoder finds it, read from both
// ends or from the start alone, in objects of random shape: the members
// before and after containers, strings with escaped quotes and
// backslashes, nested "model" keys, odd spacing.
func TestTopLevelStringAsDecoded(t *testing.T) {
	rnd := uint64(7)
	next := func(n int) int { rnd = rnd*6364136223846793005 + 1442695040888963407; return int(rnd>>33) % n }
	str := func() string {
		// Each part is a whole escape or plain text: any sequence of them
		// is a valid string's content.
		parts := []string{`a`, `\"`, `\\`, `model`, `}`, `]`, `{`, `,`, ` `, `\u0021`, `:`, `\\\"`}
		var sb strings.Builder
		sb.WriteString(`"`)
		for range next(6) {
			sb.WriteString(parts[next(len(parts))])
		}
		sb.WriteString(`"`)
		return sb.String()
	}
	var value func(depth int) string
	value = func(depth int) string {
		switch k := next(6); {
		case k == 0 && depth < 3:
			var items []string
			for range next(4) {
				items = append(items, value(depth+1))
			}
			return "[" + strings.Join(items, ", ") + "]"
		case k == 1 && depth < 3:
			var members []string
			for range next(4) {
				key := str()
				if next(3) == 0 {
					key = `"model"`
				}
				members = append(members, key+":"+value(depth+1))
			}
			return "{" + strings.Join(members, ",") + "}"
		case k == 2:
			return []string{"1", "-2.5e3", "true", "false", "null"}[next(5)]
		default:
			return str()
		}
	}
	spaces := []string{"", " ", "\n\t"}
	for range 5000 {
		var members []string
		hasModel := false
		for range next(6) {
			key := str()
			if !hasModel && next(4) == 0 {
				key, hasModel = `"model"`, true
			}
			if key == `"model"` {
				hasModel = true
			}
			members = append(members, spaces[next(3)]+key+spaces[next(3)]+":"+spaces[next(3)]+value(0))
		}
		body := "{" + strings.Join(members, ",") + spaces[next(3)] + "}" + spaces[next(3)]
		var decoded map[string]json.RawMessage
		if err := json.Unmarshal([]byte(body), &decoded); err != nil {
			t.Fatalf("the generator made invalid JSON %s: %v", body, err)
		}
		// Several top-level "model" members: decoders disagree on which
		// counts; only bodies with at most one are compared.
		top := 0
		for _, m := range members {
			if strings.HasPrefix(strings.TrimLeft(m, " \n\t"), `"model"`) {
				top++
			}
		}
		if top > 1 {
			continue
		}
		want, wantOK := "", false
		if raw, ok := decoded["model"]; ok && raw[0] == '"' && json.Unmarshal(raw, &want) == nil {
			wantOK = true
		}
		for _, whole := range []bool{true, false} {
			if got, ok := topLevelString([]byte(body), "model", whole); got != want || ok != wantOK {
				t.Fatalf("%s (whole %v): %q %v, want %q %v", body, whole, got, ok, want, wantOK)
			}
		}
	}
}

// BenchmarkModelAfterMessages: the model of a 60 KB conversation, which
// SDKs write after its 100 messages, read from the end.
func BenchmarkModelAfterMessages(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"messages":[`)
	for i := range 100 {
		if i > 0 {
			sb.WriteString(",")
		}
		sb.WriteString(`{"role":"user","content":"` + strings.Repeat("The quick brown fox jumps over the lazy dog. ", 13) + `"}`)
	}
	sb.WriteString(`],"model":"openai/gpt-4o","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"stream":false}`)
	body := []byte(sb.String())
	for _, whole := range []bool{true, false} {
		b.Run(map[bool]string{true: "both-ends", false: "from-start"}[whole], func(b *testing.B) {
			for b.Loop() {
				if m, ok := topLevelString(body, "model", whole); !ok || m != "openai/gpt-4o" {
					b.Fatal(m, ok)
				}
			}
		})
	}
}

// An inference POST's body is kept as the chain reads it, up to
// maxRequestPeek; past it, bytes says nothing and model reads the start.
func TestRequestBodyPeek(t *testing.T) {
	small := `{"model":"a/b","messages":[{"role":"user","content":"hi"}]}`
	large := `{"model":"a/c","messages":[{"role":"user","content":"` + strings.Repeat("x", maxRequestPeek) + `"}]}`
	for _, c := range []struct {
		method, path, body string
		peeked, whole      bool
		model              string
	}{
		{"POST", "/api/v1/chat/completions", small, true, true, "a/b"},
		{"POST", "/api/v1/messages", large, true, false, "a/c"},
		{"POST", "/api/v1/completions/", small, true, true, "a/b"},
		{"POST", "/api/v1/responses", small, true, true, "a/b"},
		{"GET", "/api/v1/chat/completions", small, false, false, ""},
		{"POST", "/api/v1/keys", small, false, false, ""},
	} {
		r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		var rb *requestBody
		if isInferencePost(r) {
			rb = peekRequestBody(r, new([]byte))
		}
		if (rb != nil) != c.peeked {
			t.Errorf("%s %s: peeked %v", c.method, c.path, rb != nil)
			continue
		}
		read, err := io.ReadAll(r.Body)
		if err != nil || string(read) != c.body {
			t.Errorf("%s %s: the chain read %d bytes (%v)", c.method, c.path, len(read), err)
		}
		if got := rb.bytes(); (got != nil) != c.whole || c.whole && string(got) != c.body {
			t.Errorf("%s %s: kept %d bytes", c.method, c.path, len(got))
		}
		if got := rb.model(); got != c.model {
			t.Errorf("%s %s: model %q", c.method, c.path, got)
		}
		rb.release()
		if rb.bytes() != nil {
			t.Errorf("%s %s: bytes after release", c.method, c.path)
		}
	}
	r := httptest.NewRequest("POST", "/api/v1/chat/completions", http.NoBody)
	if peekRequestBody(r, new([]byte)) != nil {
		t.Error("a request without a body peeked")
	}
}

// modelBytes, which the retirement warning reads without a copy, names
// the model model() names, or defers to it.
func TestRequestBodyModelBytes(t *testing.T) {
	for _, body := range []string{
		`{"model":"openai/gpt-4o","messages":[]}`,
		`{"messages":[{"role":"user","content":"say \"model\": x"}],"model":"a/b:free"}`,
		`{"model":"a\/b\u0021"}`,
		`{"model":""}`,
		`{"model":42}`,
		`{"messages":[{"model":"inner"}]}`,
		`{"model":"cut`,
		`not json`,
	} {
		r := httptest.NewRequest("POST", "/api/v1/chat/completions", strings.NewReader(body))
		rb := peekRequestBody(r, new([]byte))
		if _, err := io.ReadAll(r.Body); err != nil {
			t.Fatal(err)
		}
		raw, plain := rb.modelBytes()
		if want := rb.model(); plain && string(raw) != want {
			t.Errorf("%s: modelBytes %q, model %q", body, raw, want)
		}
		if !plain && !strings.Contains(body, `\`) {
			t.Errorf("%s: modelBytes defers to model on a plain body", body)
		}
		rb.release()
	}
}

// countingBody counts the reads it is asked for.
type countingBody struct {
	io.Reader
	reads int
}

func (c *countingBody) Read(p []byte) (int, error) { c.reads++; return c.Reader.Read(p) }
func (c *countingBody) Close() error               { return nil }

// Once a body of known length has all come, the end is said without
// asking the body again: the transport's last read for the end may come
// after the response began, and Caddy's access log reads the body's byte
// count unlocked when the request ends.
func TestRequestBodyEndsAtItsLength(t *testing.T) {
	const body = `{"model":"openai/gpt-4o","messages":[]}`
	for _, length := range []int64{int64(len(body)), -1} {
		src := &countingBody{Reader: strings.NewReader(body)}
		r := httptest.NewRequest("POST", "/api/v1/chat/completions", nil)
		r.Body, r.ContentLength = src, length
		rb := peekRequestBody(r, new([]byte))
		got, err := io.ReadAll(io.LimitReader(r.Body, int64(len(body))))
		if err != nil || string(got) != body {
			t.Fatalf("length %d: read %q, %v", length, got, err)
		}
		reads := src.reads
		if n, err := r.Body.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Errorf("length %d: after the body, %d, %v", length, n, err)
		}
		asked := src.reads - reads
		if length >= 0 && asked != 0 || length < 0 && asked != 1 {
			t.Errorf("length %d: the body was asked %d more times for its end", length, asked)
		}
		if string(rb.bytes()) != body || rb.model() != "openai/gpt-4o" {
			t.Errorf("length %d: kept %q, model %q", length, rb.bytes(), rb.model())
		}
	}
}

// A transport may read a body after the handler is done, when the buffer
// that kept its start already serves the next request: what it reads then
// lands in no one's buffer.
func TestLateReadKeepsNothing(t *testing.T) {
	buf := new([]byte)
	first := httptest.NewRequest("POST", "/api/v1/chat/completions", strings.NewReader(`{"model":"a/first","messages":[]}`))
	rb := peekRequestBody(first, buf)
	head := make([]byte, 10)
	if _, err := io.ReadFull(first.Body, head); err != nil {
		t.Fatal(err)
	}
	rb.release() // the handler is done; the writer and its buffer go back to the pool
	second := httptest.NewRequest("POST", "/api/v1/chat/completions", strings.NewReader(`{"model":"b/second"}`))
	next := peekRequestBody(second, buf)
	rest, err := io.ReadAll(first.Body) // the first request's transport, late
	if err != nil || string(head)+string(rest) != `{"model":"a/first","messages":[]}` {
		t.Fatalf("the late read got %q, %v", rest, err)
	}
	if _, err := io.ReadAll(second.Body); err != nil {
		t.Fatal(err)
	}
	if got := string(next.bytes()); got != `{"model":"b/second"}` {
		t.Errorf("the next request kept %q", got)
	}
	if next == rb {
		t.Error("the next request got the body the first one's transport still reads")
	}
}
