package caddymodule

// response.go owns the response writer that passes every response straight
// through except a 401 (and, with explain_limits, a 402, 403 or 429 or
// another status a reason explains, explainsStatus),
// which it holds until the handler has decided what to send, and then
// sends exactly as plain reverse_proxy would have: headers, body, trailers
// as trailers.

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
)

// heldWriter passes every response straight through to the client except a
// 401 (or, with holdLimits, a status explainsStatus names), which it holds back (up to
// errbody.HoldLimit) so that the handler can explain it. A held response
// that grows past the cap is released unchanged and streams on. It keeps
// Unwrap and FlushError so that http.ResponseController reaches the real
// writer: without them a stream would be delivered in one
// block at its end.
type heldWriter struct {
	// heldRequest is what one request sets, zeroed when the writer goes
	// back to the pool; what follows it is kept for the next request.
	heldRequest
	buf bytes.Buffer
	// trailers are the trailer names the held response announced (their
	// values are in trailerHeld).
	trailers []string
	// inband watches a 200 for a failure inside it (inband.go); a held
	// 200 (heldStatus 200) is status_from_inband_error's.
	inband inbandWatch
	// peek is the buffer body keeps the request's start in (reqbody.go).
	peek []byte
}

// heldRequest is the part of a heldWriter that belongs to one request.
type heldRequest struct {
	http.ResponseWriter
	holding bool // a 401 (or 402, 403, 429) is being held
	// holdLimits: 402, 403 and 429 are held too (explain_limits). A
	// stream's in-band error after its first event has status 200 and is
	// never held.
	holdLimits  bool
	wroteHeader bool // the final status went to the client
	// inference: the request is a POST to an inference endpoint, whose
	// 400, 404 and 500 may be model failures (explainmodels.go).
	inference  bool
	heldStatus int // the status being held
	status     int // the final status passed on
	// trailerHeld is what the trailer names held as headers when the
	// response was held: values set after it must go out as trailers.
	trailerHeld http.Header
	// expiresAt, when not zero, is when the request's key expires,
	// announced on successful responses (warn_before) with the time left
	// by clock.
	expiresAt time.Time
	clock     *clock
	// body is the start of an inference request's body (reqbody.go), or
	// nil.
	body *requestBody
	// retire, when not nil, warns on a successful response if the
	// request's model retires soon (retirement.go), for the key with
	// fingerprint fp, as of the request's start.
	retire *modelRetirement
	fp     fingerprint
	cred   credential
	start  time.Time
}

// WriteHeader holds a 401 (and with holdLimits what explainsStatus names) and
// passes every other status on. 1xx statuses are not final and always
// pass.
func (hw *heldWriter) WriteHeader(status int) {
	if hw.wroteHeader || hw.holding {
		return
	}
	if status == http.StatusUnauthorized || hw.holdLimits && holdsFailure(status, hw.inference) || status == http.StatusOK && hw.inband.begin(hw.Header()) {
		hw.holding, hw.heldStatus = true, status
		hw.noteTrailers()
		return
	}
	if status >= 200 {
		hw.wroteHeader, hw.status = true, status
		if !hw.expiresAt.IsZero() && status < 300 {
			hw.announceExpiry()
		}
		if hw.retire != nil && status < 300 {
			hw.retire.announce(hw.Header(), hw.body, hw.fp, hw.cred, hw.start)
		}
	}
	hw.ResponseWriter.WriteHeader(status)
}

// announceExpiry adds the expiry warning headers.
func (hw *heldWriter) announceExpiry() {
	h := hw.Header()
	h.Set("X-OpenRouter-Key-Expires-At", hw.expiresAt.UTC().Format(time.RFC3339))
	h.Set("X-OpenRouter-Key-Expires-In", strconv.FormatInt(int64(max(hw.expiresAt.Sub(hw.clock.now()), 0)/time.Second), 10))
}

func (hw *heldWriter) Write(p []byte) (int, error) {
	if !hw.holding {
		if !hw.wroteHeader {
			hw.WriteHeader(http.StatusOK)
			if hw.holding {
				return hw.holdInband(p)
			}
		}
		n, err := hw.ResponseWriter.Write(p)
		if hw.inband.mode != inbandOff {
			hw.inband.scan(p[:n])
		}
		return n, err
	}
	if hw.heldStatus == http.StatusOK {
		return hw.holdInband(p)
	}
	if hw.buf.Len()+len(p) <= errbody.HoldLimit {
		return hw.buf.Write(p)
	}
	// Too large to be the body this gateway explains: release it.
	gatewayMetrics.unexplained.WithLabelValues(classTooLarge).Inc()
	if err := hw.release(); err != nil {
		return 0, err
	}
	return hw.ResponseWriter.Write(p)
}

// release sends the held response on unchanged.
func (hw *heldWriter) release() error {
	return hw.send(hw.buf.Bytes())
}

// sendRewritten sends a rewritten held response: the body is identity-encoded and
// has a new length (unless trailers need chunked encoding), and says its
// reason in a header.
func (hw *heldWriter) sendRewritten(body []byte, reason string) error {
	h := hw.Header()
	h.Del("Content-Encoding")
	h.Del("Etag")
	h.Del("Content-Length")
	if len(hw.trailers) == 0 {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	h.Set("X-OpenRouter-Key-Status", reason)
	return hw.send(body)
}

// send writes the held status and body with the header as it was when the
// response was held, then the trailers that were set after it.
func (hw *heldWriter) send(body []byte) error {
	hw.holding, hw.wroteHeader, hw.status = false, true, hw.heldStatus
	h := hw.Header()
	var values map[string][]string
	if len(hw.trailers) > 0 {
		values = make(map[string][]string, len(hw.trailers))
	}
	for _, k := range hw.trailers {
		values[k] = h[k]
		if v, ok := hw.trailerHeld[k]; ok {
			h[k] = v
		} else {
			delete(h, k)
		}
	}
	// A body of unknown length (no Content-Length: the upstream's was
	// chunked) is flushed as reverse_proxy flushes it, so that it goes out
	// chunked as without this module, not with a length net/http computes.
	unknownLength := len(h["Content-Length"]) == 0
	hw.ResponseWriter.WriteHeader(hw.heldStatus)
	var err error
	if len(body) > 0 {
		_, err = hw.ResponseWriter.Write(body)
	}
	hw.buf.Reset()
	if len(hw.trailers) > 0 || unknownLength {
		// As reverse_proxy does: a flush before the handler returns keeps
		// net/http from computing a length, which would also drop the
		// trailers.
		_ = http.NewResponseController(hw.ResponseWriter).Flush()
	}
	if len(hw.trailers) > 0 {
		for k, v := range values {
			if v != nil {
				h[k] = v
			}
		}
	}
	return err
}

// noteTrailers records the trailers a held response announces as it is held (most
// announce none, and cost nothing here).
func (hw *heldWriter) noteTrailers() {
	h := hw.Header()
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				k = http.CanonicalHeaderKey(k)
				hw.trailers = append(hw.trailers, k)
				if old, ok := h[k]; ok {
					if hw.trailerHeld == nil {
						hw.trailerHeld = make(http.Header)
					}
					hw.trailerHeld[k] = append([]string(nil), old...)
				}
			}
		}
	}
}

// abort sends what was held of a response whose body failed mid-read, as plain
// reverse_proxy does before it aborts the response.
func (hw *heldWriter) abort() {
	if hw.holding {
		// The response is being aborted: a failed write has nowhere to go.
		_ = hw.release()
		_ = http.NewResponseController(hw.ResponseWriter).Flush()
	}
}

// FlushError flushes through to the client, except while a response is held:
// its headers may still change.
func (hw *heldWriter) FlushError() error {
	if hw.holding {
		return nil
	}
	if !hw.wroteHeader {
		hw.WriteHeader(http.StatusOK)
	}
	// Asked directly first: a stream flushes once per event.
	switch f := hw.ResponseWriter.(type) {
	case interface{ FlushError() error }:
		return f.FlushError()
	case http.Flusher:
		f.Flush()
		return nil
	}
	return http.NewResponseController(hw.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController find the client's writer.
func (hw *heldWriter) Unwrap() http.ResponseWriter { return hw.ResponseWriter }

// reset readies a writer for the pool and its next response, keeping its
// buffers, except those an unusually large body grew.
func (hw *heldWriter) reset() {
	hw.heldRequest = heldRequest{}
	hw.trailers = hw.trailers[:0]
	hw.inband = hw.inband.emptied()
	if hw.buf.Cap() > 4<<10 {
		hw.buf = bytes.Buffer{}
	}
	hw.buf.Reset()
	if cap(hw.peek) > 2*maxRequestPeek {
		hw.peek = nil
	}
}
