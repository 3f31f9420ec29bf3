package caddymodule

// inband.go owns the failures that arrive inside an HTTP 200 (issue 26,
// item 4): the watch that recognises them in passing while a stream or a
// body goes through byte-identical and unbuffered, their count
// (inband_failures_total) and their one log line per generation id, and
// status_from_inband_error, which lets a non-streaming 200 whose whole
// body is an error go out with the status its code states.
//
// The watch copies the last inbandTail bytes of a stream as they pass (a
// memmove per write into the writer's pooled buffer) and reads them once,
// when the stream ends: a failure ends a stream (the error chunk, or the
// last chunk's finish reasons, followed at most by a usage chunk and
// [DONE]). A non-streaming JSON body's first inbandMaxBody bytes are kept
// the same way and read at its end. Either is parsed only where the bytes
// `error"` follow `"` or `_` (`"error"`, `"finish_reason":"error"`,
// `"network_error"`), which no success carries outside its content.

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Bounds of the watch.
const (
	// inbandTail is how much of a stream's end is read for a failure.
	inbandTail = 4 << 10
	// inbandMaxBody is the largest non-streaming body read for a failure
	// (and, with status_from_inband_error, held): an error body or an empty
	// success is a few hundred bytes.
	inbandMaxBody = 2 << 10
	// inbandDecideAfter: with status_from_inband_error, a held body whose
	// first this many bytes name no "error" is a success and is released.
	inbandDecideAfter = 512
	// maxLoggedGenerations bounds the memory of "logged once per
	// generation id".
	maxLoggedGenerations = 4096
)

// What the watch reads of a 200.
const (
	inbandOff uint8 = iota
	inbandStream
	inbandBody
)

// inbandWatch is one response's watch, part of the pooled heldWriter.
type inbandWatch struct {
	armed    bool // an inference request (POST): its 200 is watched
	setsCode bool // status_from_inband_error
	logger   *zap.Logger
	path     string
	mode     uint8
	header   http.Header
	tail     []byte // the last inbandTail bytes of a stream, a ring
	tailPos  int    // where the next byte goes in tail
	tailLen  int    // bytes in tail
	scratch  []byte // tail in order
	body     []byte // the start of a JSON body
	overBody bool   // the body is past inbandMaxBody
	done     bool   // a failure was recorded: one per response
}

// arm readies the watch for a request.
func (iw *inbandWatch) arm(r *http.Request, h *Handler) {
	iw.armed = r.Method == http.MethodPost
	iw.setsCode, iw.logger, iw.path = h.StatusFromInbandError, h.logger, r.URL.Path
}

// emptied is the watch without one response's state, with its buffers
// for the next.
func (iw *inbandWatch) emptied() inbandWatch {
	return inbandWatch{tail: iw.tail, scratch: iw.scratch[:0], body: iw.body[:0]}
}

// begin looks at a 200's header: a stream (text/event-stream) or a JSON
// body is watched unless compressed (a compressed one's bytes are no
// events or JSON to read, and reading them costs as much). It reports
// whether the response is held instead (status_from_inband_error and a
// JSON body, compressed or not).
func (iw *inbandWatch) begin(h http.Header) bool {
	if !iw.armed {
		return false
	}
	iw.header = h
	// The header's own map, keys as net/http and reverse_proxy write
	// them: no canonicalisation on every 200.
	var ct string
	if v := h["Content-Type"]; len(v) > 0 {
		ct = mediaType(v[0])
	}
	switch ct {
	case "application/json":
		iw.mode = inbandBody
		if iw.setsCode {
			// Held (decoded at its end if compressed) until its first
			// bytes show a success.
			return true
		}
	case "text/event-stream":
		iw.mode = inbandStream
	default:
		return false
	}
	if encoded := h["Content-Encoding"]; len(encoded) > 1 || len(encoded) == 1 && encoded[0] != "" && !strings.EqualFold(encoded[0], "identity") {
		iw.mode = inbandOff
	}
	return false
}

// mediaType is a Content-Type's media type in lower case, without its
// parameters; the forms upstreams send ("application/json",
// "text/event-stream", with or without "; charset=utf-8") cost no copy.
func mediaType(v string) string {
	for _, common := range [...]string{"application/json", "text/event-stream"} {
		if len(v) >= len(common) && v[:len(common)] == common && (len(v) == len(common) || v[len(common)] == ';') {
			return common
		}
	}
	t, _, _ := strings.Cut(v, ";")
	t = strings.TrimSpace(t)
	for i := 0; i < len(t); i++ {
		if c := t[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(t)
		}
	}
	return t
}

// scan reads bytes that went through.
func (iw *inbandWatch) scan(p []byte) {
	if iw.done {
		return
	}
	if iw.mode == inbandBody {
		if iw.overBody || len(iw.body)+len(p) > inbandMaxBody {
			iw.overBody, iw.body = true, iw.body[:0]
			return
		}
		iw.body = append(iw.body, p...)
		return
	}
	if iw.tail == nil {
		iw.tail = make([]byte, inbandTail)
	}
	if len(p) > inbandTail {
		p = p[len(p)-inbandTail:]
	}
	n := copy(iw.tail[iw.tailPos:], p)
	copy(iw.tail, p[n:])
	iw.tailPos = (iw.tailPos + len(p)) % inbandTail
	iw.tailLen = min(iw.tailLen+len(p), inbandTail)
}

// markerIndex is where the first marker of a failure is in b, or -1: the
// bytes `error"` after `"` or `_`. It searches for `rror"`, whose first
// two bytes are rare together in JSON: bytes.Index then skips from one
// "r" to the next at memchr speed, where `error"` would stop at every "e".
func markerIndex(b []byte) int {
	const needle = `rror"`
	for off := 1; off < len(b); {
		i := bytes.Index(b[off:], []byte(needle))
		if i < 0 {
			return -1
		}
		if at := off + i - 1; b[at] == 'e' && at > 0 && (b[at-1] == '"' || b[at-1] == '_') {
			return at
		}
		off += i + len(needle)
	}
	return -1
}

// checkLine parses a stream line with a marker: a data line may be a
// failure.
func (iw *inbandWatch) checkLine(line []byte) {
	data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("data:"))
	if !ok {
		return
	}
	if f, ok := openrouter.RecogniseInBandEvent(data); ok {
		iw.record(f)
	}
}

// end reads a watched JSON body once it is complete.
func (iw *inbandWatch) end() {
	if iw.done {
		return
	}
	switch iw.mode {
	case inbandStream:
		data := iw.tail[:iw.tailLen]
		if iw.tailLen == inbandTail {
			data = append(append(iw.scratch[:0], iw.tail[iw.tailPos:]...), iw.tail[:iw.tailPos]...)
			iw.scratch = data
			// The first line may have begun before the tail.
			data = data[bytes.IndexByte(data, '\n')+1:]
		}
		for i := markerIndex(data); i >= 0 && !iw.done; i = markerIndex(data) {
			start := bytes.LastIndexByte(data[:i], '\n') + 1
			stop := bytes.IndexByte(data[i:], '\n')
			if stop < 0 {
				stop = len(data) - i // a last line without its newline
			}
			iw.checkLine(data[start : i+stop])
			data = data[min(i+stop+1, len(data)):]
		}
	case inbandBody:
		if !iw.overBody && markerIndex(iw.body) >= 0 {
			if f, ok := openrouter.RecogniseInBandBody(iw.body); ok {
				iw.record(f)
			}
		}
	}
}

// record counts a failure and logs it once per generation id.
func (iw *inbandWatch) record(f openrouter.InBandFailure) {
	iw.done = true
	gatewayMetrics.inbandFailures.WithLabelValues(f.Form.String(), f.Provider, f.ErrorType).Inc()
	if iw.logger == nil {
		return
	}
	id := generationID(f.GenerationID)
	if id == "" && iw.header != nil {
		id = generationID(iw.header.Get("X-Generation-Id"))
	}
	if id != "" && !loggedGenerations.first(id) {
		return
	}
	if id == "" {
		id = "-"
	}
	iw.logger.Warn("failure inside a 200 response: passed on as sent (clients may take it for a truncated success)",
		zap.String("generation_id", id), zap.String("form", f.Form.String()),
		zap.String("provider", f.Provider), zap.String("error_type", f.ErrorType),
		zap.Int("code", f.Code), zap.String("message", shortLogText(f.Message)), zap.String("path", iw.path))
}

// generationID is id if it has the shape of OpenRouter's generation ids
// ("gen-" and up to 80 letters, digits, "-" and "_"), else "": nothing
// else from the body is logged under that name.
func generationID(id string) string {
	rest, ok := strings.CutPrefix(id, "gen-")
	if !ok || rest == "" || len(id) > 80 {
		return ""
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return ""
		}
	}
	return id
}

// shortLogText is an upstream message fit for a log: anything that could
// be a token redacted, at most maxLoggedMessageLn bytes.
func shortLogText(s string) string {
	if len(s) > 4*maxLoggedMessageLn {
		s = s[:4*maxLoggedMessageLn] // bound the redaction's work
	}
	text := redactTokens(s)
	if len(text) > maxLoggedMessageLn {
		cut := maxLoggedMessageLn
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "..."
	}
	return text
}

// generationSet remembers the last maxLoggedGenerations generation ids
// logged, oldest forgotten first.
type generationSet struct {
	sync.Mutex
	seen map[string]struct{}
	ring []string
	next int
}

var loggedGenerations = &generationSet{seen: make(map[string]struct{})}

// first reports whether id is new, and remembers it.
func (g *generationSet) first(id string) bool {
	g.Lock()
	defer g.Unlock()
	if _, ok := g.seen[id]; ok {
		return false
	}
	if len(g.ring) < maxLoggedGenerations {
		g.ring = append(g.ring, id)
	} else {
		delete(g.seen, g.ring[g.next])
		g.ring[g.next] = id
		g.next = (g.next + 1) % maxLoggedGenerations
	}
	g.seen[id] = struct{}{}
	return true
}

// holdInband holds the next bytes of a JSON 200 held for
// status_from_inband_error, and releases it, unchanged and streaming on,
// as soon as its first bytes show a success or it grows past
// inbandMaxBody.
func (hw *heldWriter) holdInband(p []byte) (int, error) {
	if hw.buf.Len()+len(p) > inbandMaxBody {
		if err := hw.releaseInband(); err != nil {
			return 0, err
		}
		n, err := hw.ResponseWriter.Write(p)
		hw.inband.scan(p[:n])
		return n, err
	}
	hw.buf.Write(p)
	if len(hw.Header()["Content-Encoding"]) == 0 && !inbandCandidate(hw.buf.Bytes()) {
		return len(p), hw.releaseInband()
	}
	return len(p), nil
}

// inbandCandidate reports whether a JSON body that starts with b may still
// be an error: only whitespace so far (OpenRouter's keep-alive before a
// body), or "error" named before "choices" within its first bytes.
func inbandCandidate(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return true
	}
	if b[0] != '{' {
		return false
	}
	b = b[:min(len(b), inbandDecideAfter)]
	e, c := bytes.Index(b, []byte(`"error"`)), bytes.Index(b, []byte(`"choices"`))
	switch {
	case c >= 0 && (e < 0 || c < e):
		return false
	case e >= 0:
		return true
	}
	return len(b) < inbandDecideAfter
}

// releaseInband sends a held 200 on unchanged; the watch reads what was
// held.
func (hw *heldWriter) releaseInband() error {
	if len(hw.Header()["Content-Encoding"]) > 0 {
		hw.inband.mode = inbandOff
	}
	hw.inband.scan(hw.buf.Bytes())
	if !hw.expiresAt.IsZero() {
		hw.announceExpiry()
	}
	return hw.release()
}

// settleInband sends a JSON 200 held to its end: a whole-body error (form
// 4) with the status its code states, the same bytes; anything else
// unchanged.
func (h *Handler) settleInband(hw *heldWriter) error {
	body, err := errbody.Decode(hw.buf.Bytes(), strings.Join(hw.Header().Values("Content-Encoding"), ""))
	if err != nil {
		hw.inband.mode = inbandOff
		return hw.releaseInband()
	}
	f, ok := openrouter.RecogniseInBandBody(body)
	if !ok {
		hw.inband.done = true // read here: nothing to recognise
		return hw.releaseInband()
	}
	hw.inband.record(f)
	if f.Form == openrouter.InBandBody && f.Code >= 400 {
		hw.heldStatus = f.Code
		// Says why the status is not the upstream's 200.
		hw.Header().Set("X-OpenRouter-Keys-Status-From", "inband_error")
		return hw.release()
	}
	return hw.releaseInband()
}
