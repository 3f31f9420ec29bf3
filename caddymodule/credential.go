package caddymodule

// credential.go owns what a request presents as its key: reading it from
// the headers, telling which kind of credential it is (the one key-format
// table of the module), and the fingerprint it is known by.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// credentialKind is what a token presented as a key is, as far as can be
// told from the token alone.
type credentialKind uint8

const (
	// credNone: the request carries no token this module reads (no
	// Authorization or x-api-key, another scheme, several headers).
	credNone credentialKind = iota
	// credKey: an OpenRouter key of today's form, "sk-or-v1-" and 64
	// lowercase hex digits. The only kind that is fingerprinted, cached
	// and looked up.
	credKey
	// credMalformed: certainly no OpenRouter credential: "sk-or-v1-" with
	// the wrong length or digits, quotes, whitespace or control
	// characters, an unexpanded placeholder.
	credMalformed
	// credOtherVersion: "sk-or-" with another version. OpenRouter may
	// issue such keys; nothing is claimed about them.
	credOtherVersion
	// credJWT: three base64url segments, as OpenRouter's access tokens
	// are. Never malformed; its claims (jwtClaimsOf) may explain a
	// refusal, and another issuer's is refused at the edge.
	credJWT
	// credForeign: a key of another provider (OpenAI, Anthropic, ...).
	credForeign
	// credUnknown: anything else. Nothing is claimed about it.
	credUnknown
)

// malformation says what is wrong with a malformed token; the message of
// key_malformed states it, so the user knows what to fix.
type malformation uint8

const (
	malformedNone malformation = iota
	malformedLength
	malformedUpperCase
	malformedDigits
	malformedSpace
	malformedQuotes
	malformedBearerTwice
	malformedPlaceholder
)

// credential is what a request presents as its key. It holds the token
// only for the request's lifetime; nothing derived from it but the
// fingerprint is kept.
type credential struct {
	token string
	kind  credentialKind
	// what is wrong with a credMalformed token.
	malformed malformation
	// provider is the index in foreignKeys of a credForeign token.
	provider uint8
	// viaAPIKey: the token came in x-api-key, which OpenRouter reads for
	// keys only, never for an access token.
	viaAPIKey bool
	// forInference: the request is one of inference (set for a JWT by
	// the handler, forRequest; the key check judges for inference).
	forInference bool
}

// isKey reports whether the credential is an OpenRouter key of today's form.
func (c credential) isKey() bool { return c.kind == credKey }

// maxTokenBytes bounds the tokens this module looks at. Longer tokens pass
// through unexamined: they are no key, and hashing or scanning them would
// let a client make the gateway work in proportion to what it sends.
// OpenRouter's JWTs are well under it.
const maxTokenBytes = 4096

// tokenOf reads the token a request presents without allocating:
// "Authorization: Bearer <token>" (scheme in any case), or, when there is
// no Authorization header, "x-api-key" as Anthropic-style clients send it,
// and whether it came in x-api-key; false when the request carries none.
// Several Authorization (or x-api-key) headers are ambiguous, since the
// upstream may read either, and give none. requestCredential
// (fingerprints.go) classifies the token.
func tokenOf(h http.Header) (tok string, viaAPIKey, ok bool) {
	if auth, found := h["Authorization"]; found {
		if len(auth) != 1 {
			return "", false, false
		}
		tok, ok = bearerToken(auth[0])
		return tok, false, ok
	}
	if xk := h["X-Api-Key"]; len(xk) == 1 {
		if tok := trimSpaceTab(xk[0]); tok != "" && len(tok) <= maxTokenBytes {
			return tok, true, true
		}
	}
	return "", false, false
}

// bearerToken is the token of "Bearer <token>", with the spaces and tabs
// HTTP allows around it trimmed. Inner whitespace stays in the token (a
// pasted key with a space in it is a malformed key, not another scheme).
func bearerToken(v string) (string, bool) {
	// "Bearer " and a token without spaces around it, as clients send
	// it, is taken as it is; anything else is read in full below.
	if len(v) > len("Bearer ") && len(v) <= len("Bearer ")+maxTokenBytes && v[:len("Bearer ")] == "Bearer " {
		if first, last := v[len("Bearer ")], v[len(v)-1]; first != ' ' && first != '\t' && last != ' ' && last != '\t' {
			return v[len("Bearer "):], true
		}
	}
	return readBearer(v)
}

// readBearer is bearerToken for any form: spaces and tabs around the
// value and the token, the scheme in any case.
func readBearer(v string) (string, bool) {
	const scheme = "bearer"
	v = trimSpaceTab(v)
	// "Bearer" as clients write it is compared as is; any other case
	// folded.
	if len(v) <= len(scheme) || v[:len(scheme)] != "Bearer" && !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	rest := v[len(scheme):]
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false
	}
	tok := trimSpaceTab(rest)
	if tok == "" || len(tok) > maxTokenBytes {
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

// classifyToken tells which kind of credential a token is. Today's key is
// checked first and costs one pass over 64 bytes: it runs on every request.
func classifyToken(tok string) credential {
	c := credential{token: tok}
	if len(tok) == openrouter.KeyLen && strings.HasPrefix(tok, openrouter.KeyPrefix) && lowerHexOnly(tok[len(openrouter.KeyPrefix):]) {
		c.kind = credKey
		return c
	}
	if m := malformationOf(tok); m != malformedNone {
		c.kind, c.malformed = credMalformed, m
		return c
	}
	switch {
	case strings.HasPrefix(tok, openrouter.CredentialPrefix):
		c.kind = credOtherVersion
	case isJWT(tok):
		c.kind = credJWT
	default:
		c.kind = credUnknown
		if i, ok := foreignProvider(tok); ok {
			c.kind, c.provider = credForeign, uint8(i)
		}
	}
	return c
}

// malformationOf says what makes tok certainly no OpenRouter credential,
// or malformedNone. Only what is certain counts: a token that merely is not
// a key of today's form may be a credential OpenRouter accepts.
func malformationOf(tok string) malformation {
	if len(tok) >= 2 && (tok[0] == '"' || tok[0] == '\'' || tok[len(tok)-1] == '"' || tok[len(tok)-1] == '\'') {
		return malformedQuotes
	}
	if len(tok) > 7 && strings.EqualFold(tok[:7], "bearer ") {
		return malformedBearerTwice
	}
	for _, r := range tok {
		// Spaces, control characters and the invisible characters a
		// paste brings along (no-break space, zero-width space, BOM).
		if r <= ' ' || r == 0x7f || r == 0xa0 || r == 0x200b || r == 0x200c || r == 0x200d || r == 0x2060 || r == 0xfeff || r == utf8.RuneError {
			return malformedSpace
		}
	}
	if isPlaceholder(tok) {
		return malformedPlaceholder
	}
	if rest, ok := strings.CutPrefix(tok, openrouter.KeyPrefix); ok {
		switch {
		case len(tok) != openrouter.KeyLen:
			return malformedLength
		case strings.ToLower(rest) != rest:
			return malformedUpperCase
		default:
			return malformedDigits
		}
	}
	return malformedNone
}

// isPlaceholder reports tokens that are an unfilled variable or an
// example rather than a credential: what a client sends when its key
// setting is empty, names the variable instead of its value, or keeps the
// docs' example ("sk-or-v1-..." or "sk-or-v1-" and a run of x).
func isPlaceholder(tok string) bool {
	switch strings.ToLower(tok) {
	case "undefined", "null", "none", "nil", "your_api_key", "your-api-key", "<your_api_key>", "sk-or-...":
		return true
	}
	if rest, ok := strings.CutPrefix(strings.ToLower(tok), openrouter.KeyPrefix); ok {
		return rest != "" && strings.Trim(rest, "x.…") == ""
	}
	return strings.HasPrefix(tok, "$") || strings.HasPrefix(tok, "${") || strings.HasPrefix(tok, "{{") ||
		(strings.HasPrefix(tok, "<") && strings.HasSuffix(tok, ">")) ||
		(len(tok) > 2 && tok[0] == '%' && tok[len(tok)-1] == '%') ||
		isVariableName(tok)
}

// isVariableName reports an upper-case variable name such as
// OPENROUTER_API_KEY: letters, digits and underscores, at least one
// underscore, no lower-case letter. No provider issues keys of that shape.
func isVariableName(tok string) bool {
	if tok == "" || tok[0] < 'A' || tok[0] > 'Z' || !strings.Contains(tok, "_") {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// lowerHexOnly reports whether s is all lowercase hex digits. It runs on
// every request: eight bytes at a time, a key's 64 digits cost a quarter of
// a byte-by-byte pass.
func lowerHexOnly(s string) bool {
	for len(s) >= 8 {
		if !lowerHex8(uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56) {
			return false
		}
		s = s[8:]
	}
	for i := 0; i < len(s); i++ {
		if !lowerHex[s[i]] {
			return false
		}
	}
	return true
}

// lowerHex8 reports whether each of the eight bytes of x is a lowercase hex
// digit. Every byte is first checked to be below 0x80, so that adding at
// most 0x50 to each never carries into the next: the top bit of each sum
// then says whether the byte reached a bound ('0', '9'+1, 'a', 'f'+1).
func lowerHex8(x uint64) bool {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	if x&high != 0 {
		return false
	}
	digit := (x + (0x80-'0')*ones) &^ (x + (0x80-'9'-1)*ones)
	letter := (x + (0x80-'a')*ones) &^ (x + (0x80-'f'-1)*ones)
	return (digit|letter)&high == high
}

// lowerHex is a table rather than two range checks: this runs on every
// request, and the table halves its cost.
var lowerHex = func() (t [256]bool) {
	for _, c := range "0123456789abcdef" {
		t[c] = true
	}
	return t
}()

// isJWT reports whether tok has a JWT's form: three base64url segments,
// the first a JSON object (so that it begins "eyJ").
func isJWT(tok string) bool {
	if !strings.HasPrefix(tok, "eyJ") || strings.Count(tok, ".") != 2 {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c != '.' && !base64URL[c] {
			return false
		}
	}
	return true
}

var base64URL = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=" {
		t[c] = true
	}
	return t
}()

// jwtClaims is what a JWT says of itself: its issuer, expiry and scope.
// The signature is not checked, so a forged token can claim anything:
// the claims are only ever repeated as what the token says, to the client
// that sent it, and only ever explain a refusal (or, for another issuer,
// refuse what OpenRouter refuses whatever the signature).
type jwtClaims struct {
	// issuer is "iss" when it is a JSON string (hasIssuer).
	issuer    string
	hasIssuer bool
	// exp is "exp" when it is a plausible number of seconds (hasExp).
	exp    time.Time
	hasExp bool
	// scopes are "scope" (space-separated) or, without it, "scp" (an
	// array of strings), when either has that form (hasScope).
	scopes   []string
	hasScope bool
}

// jwtClaimsOf reads the claims of a JWT-shaped token; false when its
// payload is no JSON object (nothing is then known of it). Claims of
// another type than the one expected count as absent. The token is at
// most maxTokenBytes long where it comes from a request; a longer one
// (the key check's) is not read.
func jwtClaimsOf(tok string) (jwtClaims, bool) {
	var c jwtClaims
	_, rest, ok := strings.Cut(tok, ".")
	payload, _, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || len(tok) > maxTokenBytes {
		return c, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(payload, "="))
	if err != nil {
		return c, false
	}
	// A map rather than a struct: encoding/json matches struct fields
	// without regard to case, and "ISS" is not "iss".
	var members map[string]json.RawMessage
	if json.Unmarshal(raw, &members) != nil || members == nil {
		return c, false
	}
	if v, ok := members["iss"]; ok && json.Unmarshal(v, &c.issuer) == nil {
		c.hasIssuer = true
	}
	var exp float64
	if v, ok := members["exp"]; ok && json.Unmarshal(v, &exp) == nil && exp > 0 && exp <= 1e11 {
		c.exp, c.hasExp = time.Unix(int64(exp), 0).UTC(), true
	}
	var scope string
	if v, ok := members["scope"]; ok {
		if json.Unmarshal(v, &scope) == nil {
			c.scopes, c.hasScope = strings.Fields(scope), true
		}
	} else if v, ok := members["scp"]; ok {
		var scp []string
		if json.Unmarshal(v, &scp) == nil {
			c.scopes, c.hasScope = scp, true
		}
	}
	return c, true
}

// maxShownClaim bounds a claim the gateway repeats.
const maxShownClaim = 200

// shownClaim is a claim as an answer may repeat it: short, printable
// ASCII without quotes, backslashes or angle brackets (spaces only where
// spaces is set), and nothing the credential table takes for key
// material; false when it must not be repeated.
func shownClaim(s string, spaces bool) (string, bool) {
	if s == "" || len(s) > maxShownClaim {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' && spaces {
			continue
		}
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '`' {
			return "", false
		}
	}
	if textCarriesSecret(s) {
		return "", false
	}
	return s, true
}

// foreignKey is how another provider's keys look.
type foreignKey struct {
	prefix string
	minLen int
	id     string // metadata.looks_like
	name   string // for people
}

// foreignKeys are other providers' key formats, most specific first
// ("sk-ant-" before "sk-"). A token is called another provider's key only
// when it has the prefix, the length and the characters of one.
var foreignKeys = []foreignKey{
	{"sk-ant-", 40, "anthropic", "Anthropic"},
	{"sk-proj-", 40, "openai", "OpenAI"},
	{"sk-svcacct-", 40, "openai", "OpenAI"},
	{"sk-admin-", 40, "openai", "OpenAI"},
	{"sk-", 32, "openai", "OpenAI (or another provider with sk- keys, such as DeepSeek)"},
	{"AIza", 39, "google", "Google (Gemini)"},
	{"gsk_", 40, "groq", "Groq"},
	{"xai-", 40, "xai", "xAI"},
	{"pplx-", 40, "perplexity", "Perplexity"},
	{"hf_", 30, "huggingface", "Hugging Face"},
	{"r8_", 30, "replicate", "Replicate"},
	{"fw_", 20, "fireworks", "Fireworks AI"},
	{"nvapi-", 40, "nvidia", "NVIDIA"},
	{"csk-", 40, "cerebras", "Cerebras"},
}

// foreignProvider finds the provider whose key tok looks like.
func foreignProvider(tok string) (int, bool) {
	for i, f := range foreignKeys {
		if strings.HasPrefix(tok, f.prefix) && len(tok) >= f.minLen && keyCharsOnly(tok) {
			return i, true
		}
	}
	return 0, false
}

// keyCharsOnly reports whether s has only the characters API keys use.
func keyCharsOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !base64URL[c] || c == '=' {
			return false
		}
	}
	return true
}

// fingerprintDomain is hashed in front of every key so that a fingerprint
// can never equal OpenRouter's record hash (documented as sha256 of the
// key), nor any other system's plain hash of it.
const fingerprintDomain = "openrouter_keys/v1:"

// fingerprint identifies a key in the cache and in shared storage without
// being the key: sha256(fingerprintDomain + key).
type fingerprint [sha256.Size]byte

// fingerprintOf computes the fingerprint of a secret of any length: of an
// OpenRouter key (credKey) without allocating, of anything longer (a
// management key of another shape, in pool keys) over all of it.
func fingerprintOf(secret string) fingerprint {
	if len(secret) > openrouter.KeyLen {
		h := sha256.New()
		h.Write([]byte(fingerprintDomain))
		h.Write([]byte(secret))
		var f fingerprint
		h.Sum(f[:0])
		return f
	}
	var buf [len(fingerprintDomain) + openrouter.KeyLen]byte
	n := copy(buf[:], fingerprintDomain)
	n += copy(buf[n:], secret)
	return sha256.Sum256(buf[:n])
}

// short is the only form of a fingerprint that appears in logs: 8 hex
// digits, enough to correlate log lines, far too few to identify a key.
func (f fingerprint) short() string {
	return hex.EncodeToString(f[:4])
}

// labelOf is the public label of an OpenRouter key, for logs.
func labelOf(c credential) string {
	if !c.isKey() {
		return "-"
	}
	return openrouter.Label(c.token)
}
