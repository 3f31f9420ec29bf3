package caddymodule

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// maxErrorBody caps both what is buffered of a 401 and what its body may
// decompress to. OpenRouter's 401 bodies are under 200 bytes; anything near
// the cap is not the body this gateway rewrites, and passes through.
const maxErrorBody = 64 << 10

// zstdDecoder is shared: DecodeAll is safe for concurrent use, and the
// decoder refuses output past maxErrorBody.
var zstdDecoder, _ = zstd.NewReader(nil,
	zstd.WithDecoderConcurrency(1),
	zstd.WithDecoderLowmem(true),
	zstd.WithDecoderMaxMemory(maxErrorBody),
	zstd.WithDecoderMaxWindow(1<<20))

var errTooLarge = errors.New("decoded body over the cap")

// decodeBody undoes the response's Content-Encoding, refusing anything that
// decodes past maxErrorBody (a zip bomb) or is not one whole encoding.
func decodeBody(raw []byte, contentEncoding string) ([]byte, error) {
	var r io.Reader
	switch strings.ToLower(strings.TrimSpace(contentEncoding)) {
	case "", "identity":
		return raw, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		r = zr
	case "deflate":
		// HTTP's "deflate" is zlib-wrapped; some servers send raw deflate.
		if zr, err := zlib.NewReader(bytes.NewReader(raw)); err == nil {
			r = zr
		} else {
			r = flate.NewReader(bytes.NewReader(raw))
		}
	case "br":
		r = brotli.NewReader(bytes.NewReader(raw))
	case "zstd":
		return zstdDecoder.DecodeAll(raw, nil)
	default:
		return nil, errors.New("unsupported content encoding")
	}
	out, err := io.ReadAll(io.LimitReader(r, maxErrorBody+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxErrorBody {
		return nil, errTooLarge
	}
	return out, nil
}

// jsonField is one member of a JSON object, its value kept byte for byte.
type jsonField struct {
	name  string
	value json.RawMessage
}

// parseObject reads a JSON object keeping its members' order and raw
// values, so that a rewrite changes only what it means to.
func parseObject(b []byte) ([]jsonField, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var fields []jsonField
	seen := make(map[string]struct{})
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, ok := tok.(string)
		if !ok {
			return nil, false
		}
		// With a member twice, readers disagree on which counts: not a
		// body this gateway rewrites.
		if _, dup := seen[name]; dup {
			return nil, false
		}
		seen[name] = struct{}{}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		fields = append(fields, jsonField{name, v})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false // trailing data: not one JSON object
	}
	return fields, true
}

func fieldIndex(fields []jsonField, name string) int {
	for i, f := range fields {
		if f.name == name {
			return i
		}
	}
	return -1
}

func stringField(fields []jsonField, name string) (string, bool) {
	i := fieldIndex(fields, name)
	if i < 0 {
		return "", false
	}
	var s string
	if json.Unmarshal(fields[i].value, &s) != nil {
		return "", false
	}
	return s, true
}

func writeObject(buf *bytes.Buffer, fields []jsonField) {
	buf.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			buf.WriteByte(',')
		}
		name, _ := json.Marshal(f.name)
		buf.Write(name)
		buf.WriteByte(':')
		buf.Write(f.value)
	}
	buf.WriteByte('}')
}

// errorBody is a parsed OpenRouter error body. The message sits either in
// an "error" object (OpenRouter's envelope, and the /messages and
// /responses shapes) or at the top level (the flat form).
type errorBody struct {
	top     []jsonField
	inner   []jsonField // members of "error"; nil for the flat form
	message string
}

// parseErrorBody recognises an error body in any of OpenRouter's shapes.
func parseErrorBody(b []byte) (*errorBody, bool) {
	top, ok := parseObject(b)
	if !ok {
		return nil, false
	}
	if i := fieldIndex(top, "error"); i >= 0 {
		if inner, ok := parseObject(top[i].value); ok {
			if msg, ok := stringField(inner, "message"); ok {
				return &errorBody{top: top, inner: inner, message: msg}, true
			}
		}
	}
	if msg, ok := stringField(top, "message"); ok {
		return &errorBody{top: top, message: msg}, true
	}
	return nil, false
}

// rewrite renders the body with the verdict's message and metadata in
// place of the upstream's message, keeping every other member as it was.
func (e *errorBody) rewrite(v verdict) []byte {
	target := e.top
	if e.inner != nil {
		target = e.inner
	}
	target = withVerdict(target, v)
	var buf bytes.Buffer
	if e.inner == nil {
		writeObject(&buf, target)
		return buf.Bytes()
	}
	writeObject(&buf, target)
	inner := append(json.RawMessage(nil), buf.Bytes()...)
	top := append([]jsonField(nil), e.top...)
	top[fieldIndex(top, "error")].value = inner
	buf.Reset()
	writeObject(&buf, top)
	return buf.Bytes()
}

// withVerdict returns fields with "message" replaced and "reason" (and
// "expires_at") set in "metadata", which is created beside the message
// when absent and extended when it is an object.
func withVerdict(fields []jsonField, v verdict) []jsonField {
	out := append([]jsonField(nil), fields...)
	msg, _ := json.Marshal(reasonMessage(v))
	mi := fieldIndex(out, "message")
	out[mi].value = msg

	var meta []jsonField
	di := fieldIndex(out, "metadata")
	if di >= 0 {
		meta, _ = parseObject(out[di].value)
	}
	meta = setField(meta, "reason", v.reason)
	if v.reason == reasonExpired {
		meta = setField(meta, "expires_at", v.expiresAt.UTC().Format(time.RFC3339))
	}
	var buf bytes.Buffer
	writeObject(&buf, meta)
	if di >= 0 {
		out[di].value = buf.Bytes()
		return out
	}
	out = append(out, jsonField{})
	copy(out[mi+2:], out[mi+1:])
	out[mi+1] = jsonField{"metadata", buf.Bytes()}
	return out
}

func setField[T ~string](fields []jsonField, name string, value T) []jsonField {
	raw, _ := json.Marshal(string(value))
	if i := fieldIndex(fields, name); i >= 0 {
		fields[i].value = raw
		return fields
	}
	return append(fields, jsonField{name, raw})
}

// upstreamShape is the error envelope OpenRouter uses on an endpoint; an
// answer given at the edge must look like the upstream's own.
func upstreamShape(path string) []byte {
	path = strings.TrimSuffix(path, "/")
	switch {
	case strings.HasSuffix(path, "/messages"):
		return []byte(`{"type":"error","error":{"type":"authentication_error","message":"User not found."}}`)
	case strings.HasSuffix(path, "/responses"):
		return []byte(`{"error":{"code":"server_error","message":"User not found."},"error_type":"authentication"}`)
	}
	return []byte(`{"error":{"message":"User not found.","code":401}}`)
}
