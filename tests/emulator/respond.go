package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// The trailer UnauthorizedTrailer adds to 401s.
const (
	TrailerName  = "X-Emulator-Trailer"
	TrailerValue = "sent-after-the-401-body"
)

// envelope is the error envelope of the request's endpoint.
func (s *Server) envelope(r *http.Request) openrouter.Envelope {
	switch openrouter.FamilyOf(r.URL.Path) {
	case openrouter.FamilyMessages:
		return openrouter.EnvelopeMessages
	case openrouter.FamilyResponses:
		return s.ResponsesEnvelope
	}
	if s.FlatErrors {
		return openrouter.EnvelopeFlat
	}
	return openrouter.EnvelopeOpenAI
}

// writeError writes OpenRouter's error body for the endpoint.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, status int, msg string, metadata any) {
	s.send(w, r, status, s.envelope(r).Body(status, msg, metadata))
}

// writeJSON writes v as JSON.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("emulator: %v", err))
	}
	s.send(w, r, status, b)
}

// send writes a JSON body compressed as the client accepts it, brotli
// first, as OpenRouter's CDN does; a 401 as UnauthorizedTrailer and
// UnauthorizedCutShort ask.
func (s *Server) send(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Add("Vary", "Accept-Encoding")
	encoding, wire := compress(r.Header.Get("Accept-Encoding"), body)
	if encoding != "" {
		h.Set("Content-Encoding", encoding)
	} else {
		h.Set("Content-Length", strconv.Itoa(len(wire)))
	}
	switch {
	case status == http.StatusUnauthorized && s.UnauthorizedCutShort:
		h.Set("Content-Length", strconv.Itoa(len(wire)))
		w.WriteHeader(status)
		_, _ = w.Write(wire[:len(wire)/2])
		closeConnection(w, false)
	case status == http.StatusUnauthorized && s.UnauthorizedTrailer:
		h.Del("Content-Length") // a trailer needs a chunked body
		h.Set("Trailer", TrailerName)
		w.WriteHeader(status)
		_, _ = w.Write(wire)
		h.Set(TrailerName, TrailerValue)
	default:
		w.WriteHeader(status)
		_, _ = w.Write(wire)
	}
}

// closeConnection closes the connection: with a reset (RST) before any
// answer, or after sending what was written so far with an orderly close
// (FIN).
func closeConnection(w http.ResponseWriter, reset bool) {
	if !reset {
		_ = http.NewResponseController(w).Flush()
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tcp, ok := conn.(interface{ SetLinger(int) error }); ok && reset {
		_ = tcp.SetLinger(0) // RST, not FIN
	}
	_ = conn.Close()
}

// compress encodes body as the Accept-Encoding header allows: the
// encoding's name and the bytes to send ("" and body itself for none).
func compress(accept string, body []byte) (string, []byte) {
	var buf bytes.Buffer
	switch {
	case acceptsEncoding(accept, "br"):
		bw, _ := brotliWriters.Get().(*brotli.Writer)
		if bw == nil {
			bw = brotli.NewWriterLevel(&buf, 4)
		} else {
			bw.Reset(&buf)
		}
		_, _ = bw.Write(body)
		_ = bw.Close()
		brotliWriters.Put(bw)
		return "br", buf.Bytes()
	case acceptsEncoding(accept, "gzip"):
		gw, _ := gzipWriters.Get().(*gzip.Writer)
		if gw == nil {
			gw = gzip.NewWriter(&buf)
		} else {
			gw.Reset(&buf)
		}
		_, _ = gw.Write(body)
		_ = gw.Close()
		gzipWriters.Put(gw)
		return "gzip", buf.Bytes()
	}
	return "", body
}

// Compressors are pooled so that the emulator stays cheap under load.
var gzipWriters, brotliWriters sync.Pool

func acceptsEncoding(header, enc string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), enc) {
			continue
		}
		q, found := strings.CutPrefix(strings.TrimSpace(params), "q=")
		if v, err := strconv.ParseFloat(q, 64); found && err == nil && v == 0 {
			return false
		}
		return true
	}
	return false
}
