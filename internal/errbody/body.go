// Package errbody handles an error body the gateway holds, whatever its
// status: decoded within memory bounds (decode.go), split into its members
// byte for byte (json.go), read and edited in whichever of OpenRouter's
// envelopes it came (body.go). It knows nothing of keys, reasons or Caddy:
// the caller decides what a body means and what to say.
package errbody

// body.go owns a parsed error body: where its message is, what its
// members say, and the one edit the gateway makes (the message replaced,
// members set in "metadata"), every other byte kept.

import (
	"bytes"
	"strconv"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Body is a parsed error body. The message sits either in an "error"
// object (OpenRouter's envelope, and the /messages and /responses shapes)
// or at the top level (the flat form); the object holding it is the
// holder, and "metadata" is the holder's. A Body is not changed after
// Parse, so one may be used by many goroutines.
type Body struct {
	top     []member
	inner   []member // members of "error"; nil for the flat form
	message string
	// meta holds the members of the holder's "metadata"; nil when it is
	// absent or null. editable is false when "metadata" is something an
	// edit would have to replace rather than extend: not an object, or
	// one with more than maxMembers members.
	meta     []member
	editable bool
}

// Parse recognises an error body in any of OpenRouter's envelopes. It
// refuses what is not one JSON object with a string message, and what is
// ambiguous about the message: "error" written twice at the top level, or
// "message" or "metadata" written twice beside the message (readers
// disagree on which one counts). Any other member written twice is kept
// as it is; reading it is what is ambiguous (see Value).
func Parse(b []byte) (*Body, bool) {
	top, ok := splitObject(b)
	if !ok {
		return nil, false
	}
	i, n := indexOf(top, "error")
	if n > 1 {
		return nil, false
	}
	if i >= 0 {
		if inner, ok := splitObject(top[i].value); ok {
			if body, ok := holding(top, inner); ok {
				return body, true
			}
		}
	}
	return holding(top, nil)
}

// holding makes the Body whose message is in inner, or at the top level
// when inner is nil.
func holding(top, inner []member) (*Body, bool) {
	body := &Body{top: top, inner: inner}
	h := body.holder()
	mi, n := indexOf(h, "message")
	if n != 1 {
		return nil, false
	}
	msg, ok := unquote(h[mi].value)
	if !ok {
		return nil, false
	}
	body.message = msg
	di, n := indexOf(h, "metadata")
	switch {
	case n > 1:
		return nil, false
	case n == 0 || string(h[di].value) == "null":
		body.editable = true
	default:
		// Not an object (or one too large to split): read as having no
		// members, and not editable.
		body.meta, body.editable = splitObject(h[di].value)
	}
	return body, true
}

// holder is the object that holds the message: "error", or the top level
// of the flat form.
func (b *Body) holder() []member {
	if b.inner != nil {
		return b.inner
	}
	return b.top
}

// Message is the body's message, unescaped.
func (b *Body) Message() string { return b.message }

// Code is the "code" beside the message: the status in OpenRouter's
// envelope and the flat form, a word such as "server_error" in the
// /responses shape, absent in the /messages shape.
func (b *Body) Code() Value { return lookup(b.holder(), "code") }

// Top is a member of the top level, such as "user_id".
func (b *Body) Top(name string) Value { return lookup(b.top, name) }

// Metadata is a member of the "metadata" object beside the message, such
// as "provider_name", "limit_source", "raw" or "headers".
func (b *Body) Metadata(name string) Value { return lookup(b.meta, name) }

// Envelope tells which of OpenRouter's envelopes the body is in.
func (b *Body) Envelope() openrouter.Envelope {
	switch {
	case b.inner == nil:
		return openrouter.EnvelopeFlat
	case b.Top("type").Present():
		return openrouter.EnvelopeMessages
	case b.Top("error_type").Present():
		return openrouter.EnvelopeResponsesDocs
	}
	return openrouter.EnvelopeOpenAI
}

// Member is a member Edit sets in "metadata".
type Member struct {
	name    string
	rawName []byte
	value   []byte
}

// Text is a member whose value is the JSON string s.
func Text(name, s string) Member {
	return Member{name: name, rawName: quoteName(name), value: quote(s)}
}

// JSON is a member whose value is raw, which must be one valid JSON value
// (a number, true, false, a string already quoted): the caller's figures,
// written as they are.
func JSON(name string, raw []byte) Member {
	return Member{name: name, rawName: quoteName(name), value: raw}
}

// quoteName is name as a JSON string, or nil when it needs no escapes
// (the names the gateway sets): appendObject quotes those as it writes
// them, which costs no allocation.
func quoteName(name string) []byte {
	for i := range len(name) {
		if c := name[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			return quote(name)
		}
	}
	return nil
}

// Edit renders the body with its message replaced by message (kept when
// message is empty) and the members set in "metadata", in the order given:
// a member already there gets the new value in its place, the others are
// added after the existing ones. "metadata" is created just after the
// message when absent or null, and extended when it is an object. Every
// other member, the envelope and the order are kept byte for byte.
//
// ok is false when the edit would lose or misstate something: "metadata"
// is not an object this package can split, a member to set is written
// there twice, or the result would have more than maxMembers members.
// Such a body is best passed on unchanged.
func (b *Body) Edit(message string, set ...Member) (out []byte, ok bool) {
	if !b.editable {
		return nil, false
	}
	meta := make([]member, len(b.meta), len(b.meta)+len(set))
	copy(meta, b.meta)
	for _, m := range set {
		switch i, n := indexOf(meta, m.name); {
		case n > 1:
			return nil, false
		case n == 1:
			meta[i].value = m.value
		default:
			meta = append(meta, member(m))
		}
	}
	if len(meta) > maxMembers {
		return nil, false
	}
	h := b.holder()
	fields := make([]member, len(h), len(h)+1)
	copy(fields, h)
	mi, _ := indexOf(fields, "message")
	if message != "" {
		fields[mi].value = quote(message)
	}
	metaJSON := appendObject(nil, meta)
	if di, n := indexOf(fields, "metadata"); n == 1 {
		fields[di].value = metaJSON
	} else {
		fields = append(fields, member{})
		copy(fields[mi+2:], fields[mi+1:])
		fields[mi+1] = member{name: "metadata", value: metaJSON}
	}
	out = make([]byte, 0, 512)
	if b.inner == nil {
		return appendObject(out, fields), true
	}
	top := append([]member(nil), b.top...)
	ei, _ := indexOf(top, "error")
	top[ei].value = appendObject(nil, fields)
	return appendObject(out, top), true
}

// Value is a member's value as the body writes it. A member written twice
// with different values is present but has no value: readers disagree on
// which one counts, so every accessor but Present answers false. The zero
// Value is an absent member.
type Value struct {
	raw     []byte
	present bool
}

// lookup is the member called name among members.
func lookup(members []member, name string) Value {
	var v Value
	for _, m := range members {
		if m.name != name {
			continue
		}
		if v.present && !bytes.Equal(v.raw, m.value) {
			return Value{present: true}
		}
		v = Value{raw: m.value, present: true}
	}
	return v
}

// Present reports whether the member is there, whatever its value.
func (v Value) Present() bool { return v.present }

// Raw is the value's JSON as written (null included); the bytes belong to
// the body and must not be changed.
func (v Value) Raw() ([]byte, bool) { return v.raw, v.raw != nil }

// Text is the value when it is a JSON string, unescaped.
func (v Value) Text() (string, bool) { return unquote(v.raw) }

// Float is the value when it is a JSON number that fits a float64 (epoch
// milliseconds and cent amounts do, exactly).
func (v Value) Float() (float64, bool) {
	if len(v.raw) == 0 || v.raw[0] != '-' && (v.raw[0] < '0' || v.raw[0] > '9') {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(v.raw), 64)
	return f, err == nil
}

// Bool is the value when it is true or false.
func (v Value) Bool() (value, ok bool) {
	switch string(v.raw) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// Member is a member of the value when it is an object, such as
// "X-RateLimit-Reset" of metadata.headers. Within a value that has none
// (written twice, see Value) every member is present without a value.
func (v Value) Member(name string) Value {
	if v.raw == nil {
		return Value{present: v.present}
	}
	members, ok := splitObject(v.raw)
	if !ok {
		return Value{}
	}
	return lookup(members, name)
}
