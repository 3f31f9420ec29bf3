package caddymodule

// fingerprints.go owns the memo of key fingerprints: a request's key is
// known by its SHA-256 fingerprint (credential.go), which costs more than
// the rest of a working request's path in this module together. The memo
// remembers, for the keys seen lately, which fingerprint a key has,
// indexed by a 128-bit hash of the key under two seeds drawn at start and
// never shown: a key seen before is then neither classified nor hashed
// again.
//
// The memo holds no key: only that hash, which, keyed by seeds no one
// outside the process knows, names the key to this process alone, and the
// fingerprint the cache holds anyway. It is fixed in size, one slot per
// hash, and a key that lands on a taken slot replaces it: a flood of
// random keys costs each its SHA-256, as without the memo, and never
// grows it. Two keys would be taken for each other only if both halves of
// their hashes agreed (a chance of 2^-128 a pair, not one an attacker can
// improve on without the seeds).

import (
	"hash/maphash"
	"net/http"
	"sync/atomic"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// fingerprintSlots is the number of keys the memo can hold (a power of
// two): 16,384 slots are 128 KiB of pointers, and a team's keys rarely
// share one.
const fingerprintSlots = 1 << 14

// memoTag is a key's 128-bit hash under the memo's two seeds.
type memoTag [2]uint64

// memoEntry is one remembered key: its tag and its fingerprint. Entries
// are never modified once stored, so a reader needs no lock.
type memoEntry struct {
	tag memoTag
	fp  fingerprint
}

// fingerprintMemo maps keys, by their tag, to their fingerprints.
type fingerprintMemo struct {
	seeds [2]maphash.Seed
	slots [fingerprintSlots]atomic.Pointer[memoEntry]
}

// keyFingerprints is the process's memo: a fingerprint depends on the key
// alone, so every handler and config shares it.
var keyFingerprints = newFingerprintMemo()

func newFingerprintMemo() *fingerprintMemo {
	return &fingerprintMemo{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
}

// tagOf is tok's tag.
func (m *fingerprintMemo) tagOf(tok string) memoTag {
	return memoTag{maphash.String(m.seeds[0], tok), maphash.String(m.seeds[1], tok)}
}

// slot is where the key with tag t is remembered.
func (m *fingerprintMemo) slot(t memoTag) *atomic.Pointer[memoEntry] {
	return &m.slots[t[0]&(fingerprintSlots-1)]
}

// known is the fingerprint of the key with tag t, if the memo holds it.
func (m *fingerprintMemo) known(t memoTag) (fingerprint, bool) {
	if e := m.slot(t).Load(); e != nil && e.tag == t {
		return e.fp, true
	}
	return fingerprint{}, false
}

// remember stores a key's fingerprint under its tag. Only keys (credKey)
// are remembered: a hit then also says that the token is one.
func (m *fingerprintMemo) remember(t memoTag, fp fingerprint) {
	m.slot(t).Store(&memoEntry{tag: t, fp: fp})
}

// requestCredential is the credential of a request (its token, tokenOf,
// classified, and for a JWT whether the request is one of inference) and,
// for an OpenRouter key, its fingerprint: from the memo when the key was
// seen lately, without classifying or hashing it again.
// Only a token of a key's length is looked up: any other is no key.
func requestCredential(r *http.Request) (credential, fingerprint) {
	tok, viaAPIKey, ok := tokenOf(r.Header)
	if !ok {
		return credential{}, fingerprint{}
	}
	var t memoTag
	if len(tok) == openrouter.KeyLen {
		t = keyFingerprints.tagOf(tok)
		if fp, ok := keyFingerprints.known(t); ok {
			return credential{token: tok, kind: credKey, viaAPIKey: viaAPIKey}, fp
		}
	}
	c := classifyToken(tok)
	c.viaAPIKey = viaAPIKey
	if !c.isKey() {
		return c.forRequest(r), fingerprint{}
	}
	fp := fingerprintOf(tok)
	keyFingerprints.remember(t, fp)
	return c, fp
}
