package caddymodule

// reqbody.go owns the bounded copy of an inference request's body: as the
// rest of the chain (reverse_proxy) reads the body, its first
// maxRequestPeek bytes are kept in the response writer's buffer, so that what the
// request asked (its model, its tools, its provider preferences) is known
// when the response comes back, without reading the body ahead of the
// upstream or holding more than the cap. Only POSTs to the inference
// endpoints get one. The copy is what a success pays for a failure's
// analysis: one allocation (this wrapper), a memmove and a lock a read.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// maxRequestPeek is the most of a request's body that is kept.
const maxRequestPeek = 64 << 10

// requestBody is a request's body as the chain reads it, keeping its start
// in a buffer the response writer owns (and its pool reuses). It is made
// per request: a transport may still read or close it after the handler
// is done, so it is never reused; the buffer is let go by release under
// mu, after which a read keeps nothing.
type requestBody struct {
	// Ordered so that it fits 64 bytes: one is allocated per request.
	src io.ReadCloser
	mu  sync.Mutex
	buf *[]byte // nil once released
	// left is how much of a body of known length is still to come (-1:
	// unknown); ended: it all came. Once it has, Read says io.EOF itself
	// instead of asking src: a transport reads once more for the end after
	// the last byte, maybe after the response began, and Caddy's access
	// log reads src's byte count without a lock when the request ends (a
	// data race in Caddy 2.11 if that read is still under way).
	left  int64
	name  string // model(), once parsed
	ended atomic.Bool
	cut   bool // the body went past maxRequestPeek
	// parsed: name is model()'s answer.
	parsed bool
}

// isInferencePost reports whether r is a POST to an inference endpoint:
// the requests whose body is kept, and whose 400, 404 and 500 may be
// model failures (explainmodels.go).
func isInferencePost(r *http.Request) bool {
	return r.Method == http.MethodPost && openrouter.IsInferencePath(r.URL.Path)
}

// peekRequestBody installs a requestBody, keeping into buf (emptied
// first), on a request with a body, which isInferencePost accepted, and
// returns it; nil when the request has no body.
func peekRequestBody(r *http.Request, buf *[]byte) *requestBody {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if cap(*buf) == 0 {
		*buf = make([]byte, 0, 4<<10)
	}
	*buf = (*buf)[:0]
	rb := &requestBody{src: r.Body, buf: buf, left: r.ContentLength}
	r.Body = rb
	return rb
}

// Read reads from the body, keeping what fits.
// Reads come one at a time (an io.Reader's contract), so only what
// bytes, model and release read is under mu: one lock a read.
func (rb *requestBody) Read(p []byte) (int, error) {
	if rb.ended.Load() {
		return 0, io.EOF
	}
	n, err := rb.src.Read(p)
	if rb.left >= 0 {
		rb.left -= int64(n)
	}
	rb.mu.Lock()
	if n > 0 && rb.buf != nil && !rb.cut {
		b := *rb.buf
		if room := maxRequestPeek - len(b); n > room {
			b, rb.cut = append(b, p[:room]...), true
		} else {
			b = append(b, p[:n]...)
		}
		*rb.buf = b
	}
	rb.mu.Unlock()
	if err == io.EOF || rb.left == 0 {
		rb.ended.Store(true)
	}
	return n, err
}

// Close closes the body.
func (rb *requestBody) Close() error { return rb.src.Close() }

// bytes is the body read so far, or nil when it went past maxRequestPeek.
// The bytes are valid until release: do not keep or modify them.
func (rb *requestBody) bytes() []byte {
	if rb == nil {
		return nil
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.buf == nil || rb.cut {
		return nil
	}
	return *rb.buf
}

// model is the body's top-level "model" member as far as it was read (the
// kept start of a longer body included), or "".
func (rb *requestBody) model() string {
	if rb == nil {
		return ""
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if !rb.parsed && rb.buf != nil {
		if name, ok := topLevelString(*rb.buf, "model", rb.whole()); ok {
			rb.name, rb.parsed = name, true
		} else if rb.cut {
			rb.parsed = true // no more will come
		}
	}
	return rb.name
}

// modelBytes is model() without a copy where it can be: the body's
// top-level "model" member's bytes (nil where model() would be ""), valid
// until release, and plain true; plain is false when only model() can
// tell (the member is escaped, or model() has read it already).
func (rb *requestBody) modelBytes() (raw []byte, plain bool) {
	if rb == nil {
		return nil, true
	}
	// Once the body all came, Read appends nothing more (it says io.EOF
	// itself) and release runs on this goroutine: no lock needed then.
	if !rb.ended.Load() {
		rb.mu.Lock()
		defer rb.mu.Unlock()
	}
	if rb.parsed || rb.buf == nil {
		return nil, false
	}
	raw, escaped, ok := topLevelRaw(*rb.buf, "model", rb.whole())
	switch {
	case !ok:
		return nil, true // model() would say "" too
	case escaped:
		return nil, false
	}
	return raw[1 : len(raw)-1], true
}

// whole reports whether the buffer holds the whole body: all of it came
// and none was cut. Called under mu.
func (rb *requestBody) whole() bool { return rb.ended.Load() && !rb.cut }

// release lets go of the buffer; the body reads on without keeping.
func (rb *requestBody) release() {
	if rb == nil {
		return
	}
	if rb.ended.Load() {
		rb.buf = nil // Read keeps nothing more once the body ended
		return
	}
	rb.mu.Lock()
	rb.buf = nil
	rb.mu.Unlock()
}

// topLevelString finds the string member name of the JSON object in b
// without decoding the rest: false when b is no object, the member is
// absent, not a string, or cut. whole says b is the whole body, not a
// start cut short.
func topLevelString(b []byte, name string, whole bool) (string, bool) {
	raw, escaped, ok := topLevelRaw(b, name, whole)
	if !ok {
		return "", false
	}
	if !escaped {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// topLevelRaw is topLevelString's member as it is in b, quotes included,
// and whether it holds an escape. The members are read from the start up
// to the first whose value is an object or an array; in a whole body the
// members after that one are then read from the end back to it, so that
// a conversation's messages, which SDKs write before the model, are not
// walked through (7.5 us for 60 KB of them, against well under one).
func topLevelRaw(b []byte, name string, whole bool) (raw []byte, escaped, ok bool) {
	// {"model":"..." as compact JSON writes it with the member first (the
	// JavaScript SDK, curl), without escapes: read without a walk.
	const compact = `{"model":"`
	if name == "model" && len(b) > len(compact) && string(b[:len(compact)]) == compact {
		if q := bytes.IndexByte(b[len(compact):], '"'); q >= 0 {
			if raw = b[len(compact)-1 : len(compact)+q+1]; bytes.IndexByte(raw, '\\') < 0 {
				return raw, false, true
			}
		}
	}
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false, false
	}
	i++
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return nil, false, false
		}
		keyStart := i
		i = skipString(b, i)
		if i < 0 {
			return nil, false, false
		}
		key := b[keyStart:i]
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return nil, false, false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return nil, false, false
		}
		if len(key) == len(name)+2 && string(key[1:len(key)-1]) == name {
			return stringValue(b, i, skipString(b, i))
		}
		if whole && (b[i] == '{' || b[i] == '[') {
			if raw, escaped, ok, sure := memberAfter(b, i, name); sure {
				return raw, escaped, ok
			}
		}
		if i = skipValue(b, i); i < 0 {
			return nil, false, false
		}
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ',' {
			return nil, false, false
		}
		i++
	}
}

// stringValue is the string b[start:end] (end -1: cut), quotes included,
// and whether it holds an escape; false when it is no string.
func stringValue(b []byte, start, end int) (raw []byte, escaped, ok bool) {
	if b[start] != '"' || end < 0 {
		return nil, false, false
	}
	raw = b[start:end]
	return raw, bytes.IndexByte(raw, '\\') >= 0, true
}

// memberAfter finds the member name among those of the whole object b
// that follow the value starting at stop, reading them from b's end back
// to that value. sure is false when b's shape is not what it should be
// there: the caller reads forward instead.
func memberAfter(b []byte, stop int, name string) (raw []byte, escaped, ok, sure bool) {
	j := skipSpaceBack(b, len(b)-1)
	if j <= stop || b[j] != '}' {
		return nil, false, false, false
	}
	for j--; ; j-- {
		j = skipSpaceBack(b, j)
		if j < stop {
			return nil, false, false, false
		}
		// A value ends at j; it starts at v.
		var v int
		switch c := b[j]; c {
		case '"':
			v = stringStartBack(b, j)
		case '}', ']':
			v = containerStartBack(b, j)
		default:
			v = scalarStartBack(b, j)
		}
		switch {
		case v == stop:
			return nil, false, false, true // back at the value the forward read stopped at
		case v < stop:
			return nil, false, false, false
		}
		end := j + 1
		if j = skipSpaceBack(b, v-1); j <= stop || b[j] != ':' {
			return nil, false, false, false
		}
		if j = skipSpaceBack(b, j-1); j <= stop || b[j] != '"' {
			return nil, false, false, false
		}
		k := stringStartBack(b, j)
		if k <= stop {
			return nil, false, false, false
		}
		if j-k-1 == len(name) && string(b[k+1:j]) == name {
			raw, escaped, ok := stringValue(b, v, end)
			return raw, escaped, ok, true
		}
		if j = skipSpaceBack(b, k-1); j <= stop || b[j] != ',' {
			return nil, false, false, false
		}
	}
}

// skipSpaceBack is the index of the last byte at or before i that is no
// JSON whitespace, or -1.
func skipSpaceBack(b []byte, i int) int {
	for i >= 0 && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i--
	}
	return i
}

// stringStartBack is the index of the quote that opens the string whose
// closing quote is b[j], or -1: the nearest quote before j that no odd run
// of backslashes escapes.
func stringStartBack(b []byte, j int) int {
	for {
		k := bytes.LastIndexByte(b[:j], '"')
		if k < 0 {
			return -1
		}
		escapes := 0
		for e := k - 1; e >= 0 && b[e] == '\\'; e-- {
			escapes++
		}
		if escapes%2 == 0 {
			return k
		}
		j = k
	}
}

// containerStartBack is the index of the bracket that opens the object or
// array that b[j] closes, or -1.
func containerStartBack(b []byte, j int) int {
	depth := 0
	for ; j >= 0; j-- {
		switch b[j] {
		case '"':
			if j = stringStartBack(b, j); j < 0 {
				return -1
			}
		case '}', ']':
			depth++
		case '{', '[':
			if depth--; depth == 0 {
				return j
			}
		}
	}
	return -1
}

// scalarStartBack is the index where the number, true, false or null
// ending at b[j] starts.
func scalarStartBack(b []byte, j int) int {
	for j > 0 {
		switch b[j-1] {
		case ' ', '\t', '\n', '\r', ',', ':', '[', '{':
			return j
		}
		j--
	}
	return j
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] (a
// quote), or -1 when it is cut. It jumps from quote to quote
// (bytes.IndexByte), so that a long message costs next to nothing.
func skipString(b []byte, i int) int {
	open := i
	for i++; ; i++ {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		escapes := 0
		for k := i - 1; k > open && b[k] == '\\'; k-- {
			escapes++
		}
		if escapes%2 == 0 {
			return i + 1
		}
	}
}

// skipValue returns the index after the value starting at b[i], or -1
// when it is cut or malformed.
func skipValue(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '"':
			if i = skipString(b, i); i < 0 {
				return -1
			}
			if depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i // the end of the object or array around a scalar
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	return -1
}
