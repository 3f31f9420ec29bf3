package caddymodule

// inband.go owns the failures that arrive inside an HTTP 200 (issue 26,
// item 4): the watch that recognises them in passing while a stream or a
// body goes through byte-identical and unbuffered, their count
// (inband_failures_total) and their one log line per generation id, and
// status_from_inband_error, which lets a non-streaming 200 whose whole
// body is an error go out with the status its code states.
//
// The watch costs one bytes.Index per write on the success path: it looks
// for the bytes `error"` preceded by `"` or `_` (`"error"`,
// `"finish_reason":"error"`, `"network_error"`), and parses a line (a
// stream) or the body (at its end) only where they are. A stream's line
// cut between two writes is carried over (bounded) and completed by the
// next write, so that a marker split across writes is still seen; a write
// that ends on a line boundary, as OpenRouter's flushed events do, carries
// nothing. A JSON body's first inbandMaxBody bytes are kept (the writer's
// pooled buffer, no allocation) so that its end can be read.

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
	// inbandMaxLine is the longest stream line carried across writes; a
	// longer one is a large content chunk, never a failure, and is skipped.
	inbandMaxLine = 16 << 10
	// inbandMaxBody is the largest non-streaming body read for a failure
	// (and, with status_from_inband_error, held): an error body or an empty
	// success is a few hundred bytes.
	inbandMaxBody = 8 << 10
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
	line     []byte // a stream line cut between writes
	skipping bool   // the current line is past inbandMaxLine
	body     []byte // the start of a JSON body
	overBody bool   // the body is past inbandMaxBody
	done     bool   // a failure was recorded: one per response
}

// arm readies the watch for a request.
func (iw *inbandWatch) arm(r *http.Request, h *Handler) {
	iw.armed = r.Method == http.MethodPost
	iw.setsCode, iw.logger, iw.path = h.StatusFromInbandError, h.logger, r.URL.Path
}

// reset drops one response's state, keeping small buffers for the next.
func (iw *inbandWatch) reset() {
	line, body := iw.line[:0], iw.body[:0]
	if cap(line) > 4<<10 {
		line = nil
	}
	*iw = inbandWatch{line: line, body: body}
}

// begin looks at a 200's header: a stream (text/event-stream) or an
// identity-encoded JSON body is watched. It reports whether the response
// is held instead (status_from_inband_error and a JSON body).
func (iw *inbandWatch) begin(h http.Header) bool {
	if !iw.armed {
		return false
	}
	ct, _, _ := strings.Cut(h.Get("Content-Type"), ";")
	ct = strings.TrimSpace(ct)
	encoded := h.Get("Content-Encoding") != "" && !strings.EqualFold(h.Get("Content-Encoding"), "identity")
	switch {
	case strings.EqualFold(ct, "text/event-stream") && !encoded:
		iw.mode = inbandStream
	case strings.EqualFold(ct, "application/json"):
		if iw.setsCode {
			// Held (decoded at its end if compressed) until its first
			// bytes show a success.
			iw.mode, iw.header = inbandBody, h
			return true
		}
		if !encoded {
			iw.mode = inbandBody
		}
	}
	iw.header = h
	return false
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
	if len(iw.line) > 0 || iw.skipping {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			iw.carry(p)
			return
		}
		if !iw.skipping {
			iw.line = append(iw.line, p[:i]...)
			iw.checkLine(iw.line)
		}
		iw.line, iw.skipping = iw.line[:0], false
		p = p[i+1:]
	}
	complete := p
	if n := len(p); n > 0 && p[n-1] != '\n' {
		j := bytes.LastIndexByte(p, '\n')
		iw.carry(p[j+1:])
		complete = p[:j+1]
	}
	for !iw.done {
		i := markerIndex(complete)
		if i < 0 {
			return
		}
		start := bytes.LastIndexByte(complete[:i], '\n') + 1
		stop := i + bytes.IndexByte(complete[i:], '\n')
		iw.checkLine(complete[start:stop])
		complete = complete[stop+1:]
	}
}

// carry keeps the start of a line cut between writes.
func (iw *inbandWatch) carry(p []byte) {
	if iw.skipping {
		return
	}
	if len(iw.line)+len(p) > inbandMaxLine {
		iw.line, iw.skipping = iw.line[:0], true
		return
	}
	iw.line = append(iw.line, p...)
}

// markerIndex is where the first marker of a failure is in b, or -1.
func markerIndex(b []byte) int {
	const marker = `error"`
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(marker))
		if i < 0 {
			return -1
		}
		if at := off + i; at > 0 && (b[at-1] == '"' || b[at-1] == '_') {
			return at
		}
		off += i + len(marker)
	}
}

// checkLine parses a stream line with a marker: a data line may be a
// failure.
func (iw *inbandWatch) checkLine(line []byte) {
	if markerIndex(line) < 0 {
		return
	}
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
		if len(iw.line) > 0 && !iw.skipping {
			iw.checkLine(iw.line) // a last line without its newline
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
	if hw.Header().Get("Content-Encoding") == "" && !inbandCandidate(hw.buf.Bytes()) {
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
	if hw.Header().Get("Content-Encoding") != "" {
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
