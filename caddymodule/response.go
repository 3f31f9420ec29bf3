package caddymodule

import (
	"bytes"
	"net/http"
	"strconv"
	"time"
)

// heldWriter passes every response straight through to the client except a
// 401, which it holds back (up to maxErrorBody) so that the handler can
// explain it. A held 401 that grows past the cap is released unchanged and
// streams on. It keeps Unwrap and FlushError so that http.ResponseController
// reaches the real writer: without them a stream would be delivered in one
// block at its end.
type heldWriter struct {
	http.ResponseWriter
	buf         bytes.Buffer
	holding     bool // a 401 is being held
	wroteHeader bool // the final status went to the client
	status      int  // the final status passed on
	// expiresAt, when not zero, is the unix time at which the request's
	// key expires, announced on successful responses (warn_before).
	expiresAt int64
}

// WriteHeader holds a 401 and passes every other status on. 1xx statuses
// are not final and always pass.
func (hw *heldWriter) WriteHeader(status int) {
	if hw.wroteHeader || hw.holding {
		return
	}
	if status == http.StatusUnauthorized {
		hw.holding = true
		return
	}
	if status >= 200 {
		hw.wroteHeader, hw.status = true, status
		if hw.expiresAt != 0 && status < 300 {
			hw.announceExpiry()
		}
	}
	hw.ResponseWriter.WriteHeader(status)
}

// announceExpiry adds the expiry warning headers.
func (hw *heldWriter) announceExpiry() {
	h := hw.Header()
	h.Set("X-OpenRouter-Key-Expires-At", time.Unix(hw.expiresAt, 0).UTC().Format(time.RFC3339))
	h.Set("X-OpenRouter-Key-Expires-In", strconv.FormatInt(max(hw.expiresAt-time.Now().Unix(), 0), 10))
}

func (hw *heldWriter) Write(p []byte) (int, error) {
	if !hw.holding {
		if !hw.wroteHeader {
			hw.WriteHeader(http.StatusOK)
		}
		return hw.ResponseWriter.Write(p)
	}
	if hw.buf.Len()+len(p) <= maxErrorBody {
		return hw.buf.Write(p)
	}
	// Too large to be the body this gateway explains: release it.
	if err := hw.release(); err != nil {
		return 0, err
	}
	return hw.ResponseWriter.Write(p)
}

// release sends the held 401 on unchanged.
func (hw *heldWriter) release() error {
	hw.holding, hw.wroteHeader = false, true
	hw.ResponseWriter.WriteHeader(http.StatusUnauthorized)
	if hw.buf.Len() == 0 {
		return nil
	}
	_, err := hw.ResponseWriter.Write(hw.buf.Bytes())
	hw.buf.Reset()
	return err
}

// FlushError flushes through to the client, except while a 401 is held:
// its headers may still change.
func (hw *heldWriter) FlushError() error {
	if hw.holding {
		return nil
	}
	hw.wroteHeader = true
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

// reset readies a pooled writer for a new response, dropping a buffer that
// an unusually large body grew.
func (hw *heldWriter) reset(w http.ResponseWriter) {
	hw.ResponseWriter, hw.holding, hw.wroteHeader, hw.status, hw.expiresAt = w, false, false, 0, 0
	if hw.buf.Cap() > 4<<10 {
		hw.buf = bytes.Buffer{}
	}
	hw.buf.Reset()
}
