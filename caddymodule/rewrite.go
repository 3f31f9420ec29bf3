package caddymodule

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// maxErrorBody caps both what is buffered of a 401 and what its body may
// decompress to. OpenRouter's 401 bodies are under 200 bytes; anything near
// the cap is not the body this gateway rewrites, and passes through.
const maxErrorBody = 64 << 10

// jsonField is one member of a JSON object, kept byte for byte.
type jsonField struct {
	name    string // unescaped, for comparison
	rawName []byte // as written, quotes included
	value   []byte
}

// maxMembers bounds the members of an object this gateway edits: an error
// object has a handful; one with more is not the body it rewrites, and the
// bound keeps the duplicate check cheap.
const maxMembers = 64

// parseObject splits a JSON object into its members, keeping their order
// and bytes, so that a rewrite changes only what it means to. encoding/json
// offers no order-preserving edit, and its token API costs ~100 allocations
// per error body; json.Valid checks the input first, so the splitting below
// only has to find where each (valid) member ends. An object with a member
// twice is refused: readers disagree on which one counts.
func parseObject(b []byte) ([]jsonField, bool) {
	if !json.Valid(b) {
		return nil, false
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return nil, false
	}
	fields := make([]jsonField, 0, 8)
	for i = skipSpace(b, i+1); b[i] != '}'; i = skipSpace(b, i) {
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
		end := skipString(b, i)
		rawName := b[i:end]
		name, ok := unquote(rawName)
		if !ok || len(fields) == maxMembers {
			return nil, false
		}
		for _, f := range fields {
			if f.name == name {
				return nil, false
			}
		}
		i = skipSpace(b, skipSpace(b, end)+1) // past the colon
		vend := skipValue(b, i)
		fields = append(fields, jsonField{name, rawName, b[i:vend]})
		i = vend
	}
	return fields, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i].
func skipString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
		i++
	}
	return i
}

// unquote decodes a JSON string, cheaply when it has no escapes.
func unquote(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if !bytes.ContainsRune(raw, '\\') {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err == nil
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
	return unquote(fields[i].value)
}

func appendObject(buf []byte, fields []jsonField) []byte {
	buf = append(buf, '{')
	for i, f := range fields {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, f.rawName...)
		buf = append(buf, ':')
		buf = append(buf, f.value...)
	}
	return append(buf, '}')
}

// field makes a member this gateway adds; name is a plain ASCII word.
func field(name string, value []byte) jsonField {
	return jsonField{name: name, rawName: []byte(`"` + name + `"`), value: value}
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
	out := make([]byte, 0, 512)
	if e.inner == nil {
		return appendObject(out, withVerdict(e.top, v))
	}
	inner := appendObject(nil, withVerdict(e.inner, v))
	top := append([]jsonField(nil), e.top...)
	top[fieldIndex(top, "error")].value = inner
	return appendObject(out, top)
}

// withVerdict returns fields with "message" replaced and "reason" (and
// "expires_at") set in "metadata", which is created beside the message
// when absent and extended when it is an object.
func withVerdict(fields []jsonField, v verdict) []jsonField {
	out := make([]jsonField, len(fields), len(fields)+1)
	copy(out, fields)
	mi := fieldIndex(out, "message")
	out[mi].value = reasonMessageJSON(v)

	var meta []jsonField
	di := fieldIndex(out, "metadata")
	if di >= 0 {
		meta, _ = parseObject(out[di].value)
	}
	meta = setField(meta, "reason", quoteJSON(string(v.reason)))
	if v.reason == reasonExpired {
		meta = setField(meta, "expires_at", quoteJSON(v.expiresAt.UTC().Format(time.RFC3339)))
	}
	metaJSON := appendObject(nil, meta)
	if di >= 0 {
		out[di].value = metaJSON
		return out
	}
	out = append(out, jsonField{})
	copy(out[mi+2:], out[mi+1:])
	out[mi+1] = field("metadata", metaJSON)
	return out
}

func setField(fields []jsonField, name string, value []byte) []jsonField {
	if i := fieldIndex(fields, name); i >= 0 {
		fields[i].value = value
		return fields
	}
	return append(fields, field(name, value))
}

func quoteJSON(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// upstreamShapes are OpenRouter's 401 bodies per endpoint, parsed once: an
// answer given at the edge must look like the upstream's own.
var upstreamShapes = func() map[string]*errorBody {
	m := make(map[string]*errorBody)
	for name, body := range map[string]string{
		"/messages":  `{"type":"error","error":{"type":"authentication_error","message":"User not found."}}`,
		"/responses": `{"error":{"code":"server_error","message":"User not found."},"error_type":"authentication"}`,
		"":           `{"error":{"message":"User not found.","code":401}}`,
	} {
		eb, ok := parseErrorBody([]byte(body))
		if !ok {
			panic("unparsable error shape " + body)
		}
		m[name] = eb
	}
	return m
}()

// upstreamShape is the error body OpenRouter sends for a dead key on path.
func upstreamShape(path string) *errorBody {
	path = strings.TrimSuffix(path, "/")
	for _, suffix := range []string{"/messages", "/responses"} {
		if strings.HasSuffix(path, suffix) {
			return upstreamShapes[suffix]
		}
	}
	return upstreamShapes[""]
}
