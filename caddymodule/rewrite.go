package caddymodule

// rewrite.go owns editing an error body: splitting OpenRouter's JSON without
// losing order or bytes, and putting a verdict in it, in whichever envelope
// it came.

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

// holder is the object that holds the message: "error", or the top level
// of the flat form.
func (e *errorBody) holder() []jsonField {
	if e.inner != nil {
		return e.inner
	}
	return e.top
}

// metadataMember is a member of the "metadata" object beside the message.
func (e *errorBody) metadataMember(name string) (string, bool) {
	h := e.holder()
	i := fieldIndex(h, "metadata")
	if i < 0 {
		return "", false
	}
	meta, ok := parseObject(h[i].value)
	if !ok {
		return "", false
	}
	return stringField(meta, name)
}

// acceptedBy reports whether the body shows that OpenRouter authenticated
// the key: a top-level user_id names the account the key belongs to.
func (e *errorBody) acceptedBy() bool {
	i := fieldIndex(e.top, "user_id")
	return i >= 0 && string(e.top[i].value) != "null"
}

// rewrite renders the body with the verdict: the message replaced (kept
// for provider_key_rejected) and "reason" (and what else the verdict knows)
// set in "metadata", every other member kept as it was. ok is false when
// the body cannot be edited without losing something: a "metadata" that is
// not an object this splitter can edit (a duplicate member, too many
// members). Such a body passes unchanged.
func (e *errorBody) rewrite(v verdict) (out []byte, ok bool) {
	fields, ok := withVerdict(e.holder(), v)
	if !ok {
		return nil, false
	}
	out = make([]byte, 0, 512)
	if e.inner == nil {
		return appendObject(out, fields), true
	}
	top := append([]jsonField(nil), e.top...)
	top[fieldIndex(top, "error")].value = appendObject(nil, fields)
	return appendObject(out, top), true
}

// withVerdict returns fields with the message replaced and the verdict's
// members set in "metadata", which is created beside the message when
// absent (or null) and extended when it is an object.
func withVerdict(fields []jsonField, v verdict) ([]jsonField, bool) {
	out := make([]jsonField, len(fields), len(fields)+1)
	copy(out, fields)
	mi := fieldIndex(out, "message")
	if msg := v.message(); msg != "" {
		out[mi].value = quoteJSON(msg)
	}
	var meta []jsonField
	di := fieldIndex(out, "metadata")
	if di >= 0 && string(out[di].value) != "null" {
		var ok bool
		if meta, ok = parseObject(out[di].value); !ok {
			return nil, false
		}
	}
	meta = setField(meta, "reason", quoteJSON(string(v.reason)))
	switch v.reason {
	case reasonExpired, reasonTokenExpired:
		meta = setField(meta, "expires_at", quoteJSON(v.at.UTC().Format(time.RFC3339)))
	case reasonNotOpenRouterKey:
		meta = setField(meta, "looks_like", quoteJSON(foreignKeys[v.provider].id))
	}
	if v.byLabel {
		meta = setField(meta, "matched_by", quoteJSON("label"))
	}
	if len(meta) > maxMembers {
		return nil, false
	}
	metaJSON := appendObject(nil, meta)
	if di >= 0 {
		out[di].value = metaJSON
		return out, true
	}
	out = append(out, jsonField{})
	copy(out[mi+2:], out[mi+1:])
	out[mi+1] = field("metadata", metaJSON)
	return out, true
}

func setField(fields []jsonField, name string, value []byte) []jsonField {
	if i := fieldIndex(fields, name); i >= 0 {
		fields[i].value = value
		return fields
	}
	return append(fields, field(name, value))
}

func quoteJSON(s string) []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic("a string always marshals: " + err.Error())
	}
	return b
}
