package caddymodule

import (
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"
)

var goodKey = "sk-or-v1-" + strings.Repeat("0123456789abcdef", 4)

func TestCredentialOf(t *testing.T) {
	cases := []struct {
		name   string
		header http.Header
		want   credential
	}{
		{"bearer", http.Header{"Authorization": {"Bearer " + goodKey}}, credential{key: goodKey, bearer: true, authorization: true}},
		{"scheme lower case", http.Header{"Authorization": {"bearer " + goodKey}}, credential{key: goodKey, bearer: true, authorization: true}},
		{"scheme upper case", http.Header{"Authorization": {"BEARER " + goodKey}}, credential{key: goodKey, bearer: true, authorization: true}},
		{"odd spacing", http.Header{"Authorization": {" Bearer \t  " + goodKey + " \t"}}, credential{key: goodKey, bearer: true, authorization: true}},
		{"no space after scheme", http.Header{"Authorization": {"Bearer" + goodKey}}, credential{authorization: true}},
		{"scheme alone", http.Header{"Authorization": {"Bearer"}}, credential{authorization: true}},
		{"scheme and spaces", http.Header{"Authorization": {"Bearer    "}}, credential{authorization: true}},
		{"other scheme", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, credential{authorization: true}},
		{"inner space", http.Header{"Authorization": {"Bearer sk-or-v1 abc"}}, credential{authorization: true}},
		{"empty header", http.Header{"Authorization": {""}}, credential{authorization: true}},
		{"two Authorization headers", http.Header{"Authorization": {"Bearer " + goodKey, "Bearer " + goodKey}}, credential{authorization: true}},
		{"x-api-key", http.Header{"X-Api-Key": {goodKey}}, credential{key: goodKey}},
		{"x-api-key under Authorization", http.Header{"Authorization": {"Bearer a"}, "X-Api-Key": {goodKey}}, credential{key: "a", bearer: true, authorization: true}},
		{"two x-api-key headers", http.Header{"X-Api-Key": {goodKey, goodKey}}, credential{}},
		{"non-ASCII token", http.Header{"Authorization": {"Bearer sk-or-v1-ключ"}}, credential{key: "sk-or-v1-ключ", bearer: true, authorization: true}},
		{"64 KiB token", http.Header{"Authorization": {"Bearer " + strings.Repeat("a", 64<<10)}}, credential{authorization: true}},
		{"none", http.Header{}, credential{}},
	}
	for _, c := range cases {
		if got := credentialOf(c.header); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestCredentialOfDoesNotAllocate(t *testing.T) {
	h := http.Header{"Authorization": {"Bearer " + goodKey}}
	var fp fingerprint
	allocs := testing.AllocsPerRun(100, func() {
		c := credentialOf(h)
		fp = fingerprintOf(c.key)
	})
	if allocs != 0 {
		t.Errorf("reading and fingerprinting a key allocates %v times", allocs)
	}
	_ = fp
}

func TestWellFormedKey(t *testing.T) {
	for key, want := range map[string]bool{
		goodKey:                               true,
		goodKey[:72]:                          false,
		goodKey + "0":                         false,
		strings.ToUpper(goodKey):              false,
		"sk-or-v2-" + goodKey[9:]:             false,
		`"` + goodKey[1:]:                     false,
		goodKey[:70] + "xyz":                  false,
		"":                                    false,
		"sk-or-v1-" + strings.Repeat("g", 64): false,
	} {
		if got := wellFormedKey(key); got != want {
			t.Errorf("wellFormedKey(%q) = %v", key, got)
		}
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
	if got := keyLabel(goodKey); got != "sk-or-v1-012...def" {
		t.Errorf("label %q", got)
	}
}

// FuzzCredentialOf: any header value gives either no key, or a key that
// appears verbatim in the header, with no whitespace, within the size cap.
func FuzzCredentialOf(f *testing.F) {
	for _, s := range []string{"Bearer " + goodKey, "bearer\t x", "Bearer", "Basic abc", " Bearer  a b ", "Bearer \x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		c := credentialOf(http.Header{"Authorization": {v}})
		if !c.authorization {
			t.Fatal("an Authorization header was not noticed")
		}
		if c.key == "" {
			return
		}
		if !c.bearer || !strings.Contains(v, c.key) || strings.ContainsAny(c.key, " \t") || len(c.key) > maxKeyBytes {
			t.Fatalf("key %q from %q", c.key, v)
		}
	})
}
