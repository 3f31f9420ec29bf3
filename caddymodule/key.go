package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
)

// keyPrefix and keyLen describe every OpenRouter key issued today,
// inference and management keys alike: "sk-or-v1-" and 64 lowercase hex
// digits.
const (
	keyPrefix = "sk-or-v1-"
	keyLen    = len(keyPrefix) + 64
)

// fingerprintDomain is hashed in front of every key so that a fingerprint
// can never equal OpenRouter's own record hash (documented as sha256 of the
// key), nor any other system's plain hash of it.
const fingerprintDomain = "openrouter_keys/v1:"

// maxKeyBytes bounds the tokens this module looks at. Longer tokens are
// passed through untouched: they are no OpenRouter key and hashing them
// would let a client make the gateway hash arbitrary amounts of data.
const maxKeyBytes = 512

// fingerprint identifies a key in the cache and in shared storage without
// being the key: sha256(fingerprintDomain + key).
type fingerprint [sha256.Size]byte

// fingerprintOf computes a key's fingerprint without allocating.
func fingerprintOf(key string) fingerprint {
	var buf [len(fingerprintDomain) + maxKeyBytes]byte
	n := copy(buf[:], fingerprintDomain)
	n += copy(buf[n:], key)
	return sha256.Sum256(buf[:n])
}

// short is the only form of a fingerprint that appears in logs: 8 hex
// digits, enough to correlate log lines, far too few to identify a key.
func (f fingerprint) short() string {
	return hex.EncodeToString(f[:4])
}

// recordHash is what OpenRouter's management API is documented to use as a
// key's hash (sha256 of the key, hex). It is computed only to ask
// GET /keys/{hash}, never stored or logged.
func recordHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// wellFormedKey reports whether key has the form of every key OpenRouter
// issues: "sk-or-v1-" followed by 64 lowercase hex digits.
func wellFormedKey(key string) bool {
	if len(key) != keyLen || key[:len(keyPrefix)] != keyPrefix {
		return false
	}
	for i := len(keyPrefix); i < keyLen; i++ {
		if !lowerHex[key[i]] {
			return false
		}
	}
	return true
}

// lowerHex is a table rather than two range checks: this runs on every
// request, and the table halves its cost.
var lowerHex = func() (t [256]bool) {
	for _, c := range "0123456789abcdef" {
		t[c] = true
	}
	return t
}()

// keyLabel is OpenRouter's masked form of a key: its first 12 characters,
// "...", and its last 3. The key must be well formed.
func keyLabel(key string) string {
	return key[:12] + "..." + key[keyLen-3:]
}

// credential is what a request presents as its key.
type credential struct {
	// key is the token; empty when the request carries none this module
	// should classify.
	key string
	// bearer is true when the token came from an Authorization header
	// (as opposed to x-api-key).
	bearer bool
	// authorization is true when the request carried any Authorization
	// header at all, even one this module cannot read.
	authorization bool
}

// credentialOf reads the key from a request without allocating:
// "Authorization: Bearer <key>" (scheme case-insensitive), or, when there is
// no Authorization header, "x-api-key" as Anthropic-style clients send it.
// A request with several Authorization (or x-api-key) headers is ambiguous:
// the upstream may pick either, so it is never classified.
func credentialOf(h http.Header) credential {
	if auth, ok := h["Authorization"]; ok {
		if len(auth) != 1 {
			return credential{authorization: true}
		}
		key, ok := parseBearer(auth[0])
		if !ok {
			return credential{authorization: true}
		}
		return credential{key: key, bearer: true, authorization: true}
	}
	if xk := h["X-Api-Key"]; len(xk) == 1 {
		key := trimSpaceTab(xk[0])
		if key != "" && len(key) <= maxKeyBytes {
			return credential{key: key}
		}
	}
	return credential{}
}

// parseBearer extracts the token of "Bearer <token>". Leading and trailing
// spaces or tabs around the token are ignored, as HTTP allows; anything
// else (another scheme, an empty or oversized token, a token with inner
// spaces) is not a bearer token this module reads.
func parseBearer(v string) (string, bool) {
	const scheme = "bearer"
	v = trimSpaceTab(v)
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	rest := v[len(scheme):]
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false
	}
	tok := trimSpaceTab(rest)
	if tok == "" || len(tok) > maxKeyBytes {
		return "", false
	}
	if strings.IndexByte(tok, ' ') >= 0 || strings.IndexByte(tok, '\t') >= 0 {
		return "", false
	}
	return tok, true
}

// trimSpaceTab trims the whitespace HTTP allows around a header value
// (strings.Trim with a cutset costs several times more per request).
func trimSpaceTab(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}
