package errbody

// json.go owns the order-preserving JSON splitter: an object's members
// found and kept byte for byte, so that an edit changes only what it means
// to. encoding/json offers no order-preserving edit, and its token API
// costs ~100 allocations per error body.

import (
	"bytes"
	"encoding/json"
	"strings"
)

// member is one member of a JSON object, kept byte for byte.
type member struct {
	name    string // unescaped, for comparison
	rawName []byte // as written, quotes included; nil: name needs no escapes
	value   []byte
}

// maxMembers bounds the members of an object this package splits: an
// error object has a handful; one with more is not a body the gateway
// edits, and the bound keeps lookups, which scan every member, cheap.
const maxMembers = 64

// splitObject splits a JSON object into its members, keeping their order,
// their bytes and any member written twice. json.Valid checks the input
// first, so the splitting below only has to find where each (valid) member
// ends.
func splitObject(b []byte) ([]member, bool) {
	if !json.Valid(b) {
		return nil, false
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return nil, false
	}
	members := make([]member, 0, 8)
	for i = skipSpace(b, i+1); b[i] != '}'; i = skipSpace(b, i) {
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
		end := skipString(b, i)
		rawName := b[i:end]
		name, ok := unquote(rawName)
		if !ok || len(members) == maxMembers {
			return nil, false
		}
		i = skipSpace(b, skipSpace(b, end)+1) // past the colon
		vend := skipValue(b, i)
		members = append(members, member{name, rawName, b[i:vend]})
		i = vend
	}
	return members, true
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

// indexOf is the index of the member called name, -1 when there is none
// or it is written twice (count is how often it is written).
func indexOf(members []member, name string) (index, count int) {
	index = -1
	for i, m := range members {
		if m.name == name {
			index, count = i, count+1
		}
	}
	if count > 1 {
		index = -1
	}
	return index, count
}

func appendObject(buf []byte, members []member) []byte {
	buf = append(buf, '{')
	for i, m := range members {
		if i > 0 {
			buf = append(buf, ',')
		}
		if m.rawName != nil {
			buf = append(buf, m.rawName...)
		} else {
			buf = append(append(append(buf, '"'), m.name...), '"')
		}
		buf = append(buf, ':')
		buf = append(buf, m.value...)
	}
	return append(buf, '}')
}

// quote is s as a JSON string, escaped as encoding/json escapes it.
func quote(s string) []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic("a string always marshals: " + err.Error())
	}
	return b
}
