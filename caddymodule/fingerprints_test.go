package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// requestWith is an inference request presenting the header.
func requestWith(h http.Header) *http.Request {
	r := httptest.NewRequest("POST", "/api/v1/chat/completions", nil)
	r.Header = h
	return r
}

// The memo changes nothing a request is known by: every kind of token,
// first seen and seen again, gets the credential and fingerprint that
// classifying and hashing it give.
func TestRequestCredentialAsWithoutMemo(t *testing.T) {
	tokens := []string{randomKey(), goodKey, goodKey[:40], "sk-or-v1-" + strings.ToUpper(goodKey[9:]), goodKey[:70] + "xyz",
		jwtWith(`{"iss":"openrouter.ai","exp":1700000000}`), "sk-proj-" + strings.Repeat("Ab3_", 30), "hello",
		"sk-or-v2-" + strings.Repeat("ab", 40), goodKey[:20] + " " + goodKey[21:]}
	for _, tok := range tokens {
		for _, h := range []http.Header{{"Authorization": {"Bearer " + tok}}, {"X-Api-Key": {tok}}} {
			for round := range 2 {
				r := requestWith(h)
				read, viaAPIKey, _ := tokenOf(h)
				want := classifyToken(read)
				want.viaAPIKey = viaAPIKey
				want = want.forRequest(r)
				var wantFP fingerprint
				if want.isKey() {
					wantFP = fingerprintOf(tok)
				}
				got, fp := requestCredential(r)
				if got != want || fp != wantFP {
					t.Errorf("%.12s... round %d: got %+v %x, want %+v %x", tok, round, got, fp[:4], want, wantFP[:4])
				}
			}
		}
	}
	if c, fp := requestCredential(requestWith(http.Header{})); c != (credential{}) || fp != (fingerprint{}) {
		t.Errorf("no credential: got %+v %x", c, fp[:4])
	}
}

// A key that lands on a slot another key holds, with one half of its hash
// equal, is not taken for that key: it gets its own fingerprint and the
// slot.
func TestFingerprintMemoNeedsTheWholeTag(t *testing.T) {
	m := newFingerprintMemo()
	victim, other := randomKey(), randomKey()
	tv := m.tagOf(victim)
	forged := memoTag{tv[0], tv[1] ^ 1} // same slot, same first half
	m.remember(forged, fingerprintOf(other))
	if _, ok := m.known(tv); ok {
		t.Fatal("a tag that agrees in one half was taken for the key's")
	}
	m.remember(tv, fingerprintOf(victim))
	if fp, ok := m.known(tv); !ok || fp != fingerprintOf(victim) {
		t.Fatal("the key's own fingerprint was not remembered")
	}
	if _, ok := m.known(forged); ok {
		t.Error("the slot still answers for the key it held before")
	}
}

// A flood of random keys neither grows the memo nor makes any key known
// by another's fingerprint: after it, each key of the flood and a key
// seen before it still gets its own.
func TestFingerprintMemoUnderAFlood(t *testing.T) {
	victim := randomKey()
	h := http.Header{"Authorization": {"Bearer " + victim}}
	if _, fp := requestCredential(requestWith(h)); fp != fingerprintOf(victim) {
		t.Fatal("wrong fingerprint before the flood")
	}
	flood := make([]string, 4*fingerprintSlots)
	for i := range flood {
		flood[i] = randomKey()
		if _, fp := requestCredential(requestWith(http.Header{"Authorization": {"Bearer " + flood[i]}})); fp != fingerprintOf(flood[i]) {
			t.Fatalf("key %d of the flood got another's fingerprint", i)
		}
	}
	for _, k := range append(flood[:100:100], victim) {
		if _, fp := requestCredential(requestWith(http.Header{"Authorization": {"Bearer " + k}})); fp != fingerprintOf(k) {
			t.Fatal("a key got another's fingerprint after the flood")
		}
	}
}

// A key seen before costs no allocation and no hash: the fingerprint
// comes from the memo.
func TestRequestCredentialOfAKnownKeyDoesNotAllocate(t *testing.T) {
	r := requestWith(http.Header{"Authorization": {"Bearer " + goodKey}})
	requestCredential(r)
	var fp fingerprint
	if allocs := testing.AllocsPerRun(100, func() { _, fp = requestCredential(r) }); allocs != 0 {
		t.Errorf("a known key allocates %v times", allocs)
	}
	if fp != fingerprintOf(goodKey) {
		t.Error("wrong fingerprint")
	}
}

// BenchmarkRequestCredential: reading a request's key and its fingerprint,
// for a key seen before (from the memo) and for a key never seen (it is
// classified and hashed with SHA-256; the figure includes emptying its
// slot first, about one more hash of the key).
func BenchmarkRequestCredential(b *testing.B) {
	known := requestWith(http.Header{"Authorization": {"Bearer " + goodKey}})
	requestCredential(known)
	b.Run("known", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			requestCredential(known)
		}
	})
	keys := make([]string, 1<<12)
	fresh := make([]*http.Request, len(keys))
	for i := range fresh {
		keys[i] = randomKey()
		fresh[i] = requestWith(http.Header{"Authorization": {"Bearer " + keys[i]}})
	}
	b.Run("unseen", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			keyFingerprints.slot(keyFingerprints.tagOf(keys[i%len(keys)])).Store(nil)
			requestCredential(fresh[i%len(fresh)])
			i++
		}
	})
}
