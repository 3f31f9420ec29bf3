package caddymodule

import (
	"crypto/sha256"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

func TestRequestCredential(t *testing.T) {
	for _, c := range []struct {
		name   string
		header http.Header
		want   credential
	}{
		{"bearer", http.Header{"Authorization": {"Bearer " + goodKey}}, credential{token: goodKey, kind: credKey}},
		{"scheme lower case", http.Header{"Authorization": {"bearer " + goodKey}}, credential{token: goodKey, kind: credKey}},
		{"scheme upper case", http.Header{"Authorization": {"BEARER " + goodKey}}, credential{token: goodKey, kind: credKey}},
		{"odd spacing", http.Header{"Authorization": {" Bearer \t  " + goodKey + " \t"}}, credential{token: goodKey, kind: credKey}},
		{"no space after scheme", http.Header{"Authorization": {"Bearer" + goodKey}}, credential{}},
		{"scheme alone", http.Header{"Authorization": {"Bearer"}}, credential{}},
		{"scheme and spaces", http.Header{"Authorization": {"Bearer    "}}, credential{}},
		{"other scheme", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, credential{}},
		{"inner space is a malformed key", http.Header{"Authorization": {"Bearer sk-or-v1 abc"}}, classifyToken("sk-or-v1 abc")},
		{"empty header", http.Header{"Authorization": {""}}, credential{}},
		{"two Authorization headers", http.Header{"Authorization": {"Bearer " + goodKey, "Bearer " + goodKey}}, credential{}},
		{"x-api-key", http.Header{"X-Api-Key": {goodKey}}, credential{token: goodKey, kind: credKey, viaAPIKey: true}},
		{"Authorization wins over x-api-key", http.Header{"Authorization": {"Bearer a"}, "X-Api-Key": {goodKey}}, classifyToken("a")},
		{"two x-api-key headers", http.Header{"X-Api-Key": {goodKey, goodKey}}, credential{}},
		{"oversized token", http.Header{"Authorization": {"Bearer " + strings.Repeat("a", maxTokenBytes+1)}}, credential{}},
		{"none", http.Header{}, credential{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, sight := range []string{"first", "again"} { // the second from the memo
				if got, _ := requestCredential(requestWith(c.header)); got != c.want {
					t.Errorf("%s: got %+v, want %+v", sight, got, c.want)
				}
			}
		})
	}
}

// The key-format table: only what is certainly no OpenRouter credential
// is malformed; JWTs and other versions never are.
func TestClassifyToken(t *testing.T) {
	for _, c := range []struct {
		name      string
		token     string
		kind      credentialKind
		malformed malformation
		provider  string
	}{
		{"today's key", goodKey, credKey, 0, ""},
		{"truncated", goodKey[:40], credMalformed, malformedLength, ""},
		{"one digit too many", goodKey + "0", credMalformed, malformedLength, ""},
		{"upper case", "sk-or-v1-" + strings.ToUpper(goodKey[9:]), credMalformed, malformedUpperCase, ""},
		{"not hex", goodKey[:70] + "xyz", credMalformed, malformedDigits, ""},
		{"quoted", `"` + goodKey + `"`, credMalformed, malformedQuotes, ""},
		{"single-quoted", `'` + goodKey, credMalformed, malformedQuotes, ""},
		{"inner space", goodKey[:20] + " " + goodKey[20:], credMalformed, malformedSpace, ""},
		{"no-break space", goodKey + "\u00a0", credMalformed, malformedSpace, ""},
		{"zero-width space", "\u200b" + goodKey, credMalformed, malformedSpace, ""},
		{"tab", goodKey[:10] + "\t" + goodKey[10:], credMalformed, malformedSpace, ""},
		{"bearer twice", "Bearer " + goodKey, credMalformed, malformedBearerTwice, ""},
		{"undefined", "undefined", credMalformed, malformedPlaceholder, ""},
		{"null", "null", credMalformed, malformedPlaceholder, ""},
		{"unexpanded variable", "$OPENROUTER_API_KEY", credMalformed, malformedPlaceholder, ""},
		{"template", "{{ secrets.OPENROUTER }}", credMalformed, malformedSpace, ""},
		{"template without spaces", "{{secrets.OPENROUTER}}", credMalformed, malformedPlaceholder, ""},
		{"another version", "sk-or-v2-" + strings.Repeat("ab", 40), credOtherVersion, 0, ""},
		{"sk-or- with something else", "sk-or-abc", credOtherVersion, 0, ""},
		{"JWT", jwtWith(`{"iss":"openrouter.ai","exp":1700000000}`), credJWT, 0, ""},
		{"OpenAI project key", "sk-proj-" + strings.Repeat("Ab3_", 30), credForeign, 0, "openai"},
		{"OpenAI legacy key", "sk-" + strings.Repeat("a1B2", 12), credForeign, 0, "openai"},
		{"Anthropic key", "sk-ant-api03-" + strings.Repeat("Xy9-", 20), credForeign, 0, "anthropic"},
		{"Google key", "AIza" + strings.Repeat("B", 35), credForeign, 0, "google"},
		{"Groq key", "gsk_" + strings.Repeat("q", 52), credForeign, 0, "groq"},
		{"xAI key", "xai-" + strings.Repeat("x", 80), credForeign, 0, "xai"},
		{"short sk- token", "sk-abc", credUnknown, 0, ""},
		{"random word", "hello", credUnknown, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := classifyToken(c.token)
			if got.kind != c.kind || got.malformed != c.malformed {
				t.Errorf("kind %d malformation %d, want %d %d", got.kind, got.malformed, c.kind, c.malformed)
			}
			if c.provider != "" && foreignKeys[got.provider].id != c.provider {
				t.Errorf("provider %q, want %q", foreignKeys[got.provider].id, c.provider)
			}
		})
	}
}

func TestJWTExpiry(t *testing.T) {
	for _, c := range []struct {
		name  string
		token string
		want  time.Time
		ok    bool
	}{
		{"exp", jwtWith(`{"exp":1700000000}`), time.Unix(1700000000, 0).UTC(), true},
		{"fractional exp", jwtWith(`{"exp":1700000000.5}`), time.Unix(1700000000, 0).UTC(), true},
		{"no exp", jwtWith(`{"iss":"openrouter.ai"}`), time.Time{}, false},
		{"exp not a number", jwtWith(`{"exp":"soon"}`), time.Time{}, false},
		{"payload not JSON", "eyJhbGciOiJub25lIn0.bm90IGpzb24.c2ln", time.Time{}, false},
		{"payload not base64", "eyJhbGciOiJub25lIn0.!!!.c2ln", time.Time{}, false},
		{"absurd exp", jwtWith(`{"exp":1e300}`), time.Time{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, _ := jwtClaimsOf(c.token)
			got, ok := cl.exp, cl.hasExp
			if ok != c.ok || !got.Equal(c.want) {
				t.Errorf("got %v %v, want %v %v", got, ok, c.want, c.ok)
			}
		})
	}
}

// Reading a key seen for the first time allocates only its place in the
// memo (fingerprints.go), and hashes it once.
func TestFirstSightOfAKeyAllocatesOnce(t *testing.T) {
	reqs := make([]*http.Request, 101)
	for i := range reqs {
		reqs[i] = requestWith(http.Header{"Authorization": {"Bearer " + randomKey()}})
	}
	i := 0
	allocs := testing.AllocsPerRun(100, func() {
		c, fp := requestCredential(reqs[i])
		i++
		if !c.isKey() || fp == (fingerprint{}) {
			t.Fatal("not read as a key")
		}
	})
	if allocs != 1 {
		t.Errorf("reading and fingerprinting a new key allocates %v times", allocs)
	}
}

func TestFingerprintIsNotAPlainHash(t *testing.T) {
	plain := sha256.Sum256([]byte(goodKey))
	fp := fingerprintOf(goodKey)
	if fp == fingerprint(plain) {
		t.Fatal("the fingerprint equals sha256(key), OpenRouter's record hash")
	}
	if fingerprintOf(goodKey) != fp || fingerprintOf(goodKey[:72]+"0") == fp {
		t.Fatal("fingerprints are not stable and distinct")
	}
	if len(fp.short()) != 8 || strings.Contains(goodKey, fp.short()) {
		t.Errorf("short fingerprint %q", fp.short())
	}
	if got := openrouter.Label(goodKey); got != "sk-or-v1-012...def" {
		t.Errorf("label %q", got)
	}
}

// FuzzRequestCredential: any header value gives either no credential, or a
// token that appears verbatim in the header within the size cap; a token
// called an OpenRouter key is one.
func FuzzRequestCredential(f *testing.F) {
	for _, s := range []string{"Bearer " + goodKey, "bearer\t x", "Bearer", "Basic abc", " Bearer  a b ", "Bearer \x00\xff", "Bearer " + jwtWith(`{"exp":1}`)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		c, _ := requestCredential(requestWith(http.Header{"Authorization": {v}}))
		if c.kind == credNone {
			if c.token != "" {
				t.Fatalf("no credential, but token %q", c.token)
			}
			return
		}
		if !strings.Contains(v, c.token) || len(c.token) > maxTokenBytes || c.token == "" {
			t.Fatalf("token %q from %q", c.token, v)
		}
		if c.isKey() && (len(c.token) != openrouter.KeyLen || !strings.HasPrefix(c.token, openrouter.KeyPrefix) || !lowerHexOnly(c.token[9:])) {
			t.Fatalf("%q called a key", c.token)
		}
		if c.kind == credMalformed && c.malformed == malformedNone {
			t.Fatalf("%q malformed without a reason", c.token)
		}
		if c.kind == credJWT && c.malformed != malformedNone {
			t.Fatalf("a JWT called malformed")
		}
	})
}

// A fingerprint covers all of its input: two management keys that agree
// on their first 73 bytes have different fingerprints.
func TestFingerprintCoversAnyLength(t *testing.T) {
	long := goodKey + "-and-more"
	if fingerprintOf(long) == fingerprintOf(goodKey) || fingerprintOf(long) == fingerprintOf(long+"!") {
		t.Error("input past 73 bytes is ignored")
	}
	if fingerprintOf("") == fingerprintOf("x") {
		t.Error("short inputs collide")
	}
}

// TestLowerHexOnlyEveryByte: the word-at-a-time check agrees with a
// byte-by-byte one for every byte value at every position of a key's
// digits, and at the tail of lengths that are no multiple of eight.
func TestLowerHexOnlyEveryByte(t *testing.T) {
	digits := []byte(strings.Repeat("0123456789abcdef", 4))
	for n := 0; n <= len(digits); n++ {
		if !lowerHexOnly(string(digits[:n])) {
			t.Fatalf("%q is lowercase hex", digits[:n])
		}
	}
	for pos := range digits {
		for b := 0; b < 256; b++ {
			s := slices.Clone(digits)
			s[pos] = byte(b)
			want := b >= '0' && b <= '9' || b >= 'a' && b <= 'f'
			for _, n := range []int{len(s), pos + 1 + (len(s)-pos-1)%8} {
				if got := lowerHexOnly(string(s[:n])); got != want {
					t.Fatalf("lowerHexOnly(%q) = %v", s[:n], got)
				}
			}
		}
	}
}

// bearerToken takes the usual "Bearer <token>" as it is, without reading
// it byte by byte; it must answer every form as the full reading does.
func TestBearerTokenAsTheFullReading(t *testing.T) {
	long := strings.Repeat("k", maxTokenBytes)
	var forms []string
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "Bearer:", "Bear", "Basic", ""} {
		for _, gap := range []string{" ", "  ", "\t", " \t", ""} {
			for _, tok := range []string{"sk-or-v1-abc", "x", long, long + "k", "a b", ""} {
				for _, edge := range []string{"", " ", "\t", " \t "} {
					forms = append(forms, scheme+gap+tok+edge, edge+scheme+gap+tok, edge+scheme+gap+tok+edge)
				}
			}
		}
	}
	for _, v := range forms {
		gotTok, gotOK := bearerToken(v)
		wantTok, wantOK := readBearer(v)
		if gotTok != wantTok || gotOK != wantOK {
			t.Errorf("bearerToken(%q) = %q, %v; the full reading says %q, %v", v, gotTok, gotOK, wantTok, wantOK)
		}
	}
}
