package caddymodule

// shared.go owns the layout of shared knowledge in Caddy's storage: the name
// and shape of every entry, and a typed load and store for each. storage.go
// owns how the storage is called (deadlines, breaker, health check,
// cleanup); nothing else names an entry or decodes one.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Entry names. Every key entry is named by the key's fingerprint, never the
// key; an account's entries by the management key's fingerprint.
const (
	sharedPrefix       = "openrouter_keys/v1/keys/"     // + fingerprint: a sharedEntry
	sharedAccounts     = "openrouter_keys/v1/accounts/" // + fingerprint of the management key
	sharedHashScheme   = "/hash_scheme"                 // account: `"sha256"` once proven
	sharedCleanupLock  = "openrouter_keys_cleanup"
	sharedCleanupMark  = "openrouter_keys/v1/last_cleanup"
	sharedHealthPrefix = "openrouter_keys/v1/health/" // + instance: a time mark
	// The key watch: one replica at a time reads the account (under the
	// lock) and publishes the snapshot; every replica publishes when it
	// last saw each key used.
	sharedWatchLock     = "openrouter_keys_watch"
	sharedWatchSnapshot = "/watch/snapshot" // account: a watchSnapshot
	sharedWatchUsed     = "/watch/used/"    // account + instance: usedID -> unix seconds
	// sharedKeepExpired is how long the entry of an expired (or management)
	// key is kept.
	sharedKeepExpired = 30 * 24 * time.Hour
	// The model catalogue (catalogue.go): one entry per upstream, named
	// by a hash of its base URL, a sharedCatalogue.
	sharedCatalogues = "openrouter_keys/v1/catalogues/"
	// maxSharedCatalogue bounds the entry read back (about 200 bytes a
	// model; 50,000 models stay under it).
	maxSharedCatalogue = 32 << 20
)

// sharedEntry is what the storage holds per key fingerprint: facts about
// the key, never the key. Times are unix seconds.
type sharedEntry struct {
	// ExpiresAt is the key's expires_at, from its own GET /key or a record
	// matched by hash.
	ExpiresAt int64 `json:"expires_at,omitempty"`
	// Management says the key's own GET /key reported a management key,
	// at AliveAt.
	Management bool  `json:"management_key,omitempty"`
	AliveAt    int64 `json:"alive_at,omitempty"`
	// DisabledAt and NotFoundAt are when the management API said so.
	DisabledAt int64 `json:"disabled_at,omitempty"`
	NotFoundAt int64 `json:"not_found_at,omitempty"`
	// KeepUntil is the entry's own expiry: cleanup deletes it after.
	KeepUntil int64 `json:"keep_until"`
}

// sharedEntryOf is what st has worth sharing, if anything: lasting facts
// only.
func sharedEntryOf(st keyState, now time.Time, ttl time.Duration) (sharedEntry, bool) {
	e := sharedEntry{
		Management: st.has(flagManagement),
		DisabledAt: int64(st.disabledAt),
		NotFoundAt: int64(st.notFoundAt),
	}
	if e.Management {
		e.AliveAt = int64(st.aliveAt)
	}
	switch {
	case st.has(flagExpiry):
		e.ExpiresAt = int64(st.expiresAt)
		e.KeepUntil = e.ExpiresAt + int64(sharedKeepExpired/time.Second)
	case e.Management:
		e.KeepUntil = now.Add(sharedKeepExpired).Unix()
	case e.DisabledAt != 0 || e.NotFoundAt != 0:
		e.KeepUntil = now.Add(ttl).Unix()
	default:
		return e, false
	}
	return e, true
}

func sharedKey(fp fingerprint) string { return sharedPrefix + hex.EncodeToString(fp[:]) }

// sharedAccount names an account's entries.
func sharedAccount(managementKey string) string {
	fp := fingerprintOf(managementKey)
	return sharedAccounts + hex.EncodeToString(fp[:])
}

// liveEntry decodes b, a key entry, and reports whether it is still to be
// kept at now.
func liveEntry(b []byte, now time.Time) (sharedEntry, bool) {
	var e sharedEntry
	if json.Unmarshal(b, &e) != nil || e.KeepUntil < now.Unix() {
		return sharedEntry{}, false
	}
	return e, true
}

// publish queues a key's entry for writing; it never blocks.
func (s *sharedStore) publish(fp fingerprint, e sharedEntry) {
	b, err := json.Marshal(e)
	if err != nil {
		return // a struct of integers always marshals
	}
	s.enqueue(sharedKey(fp), b)
}

// read returns the shared entry for a key, if there is a live one, within
// ctx (the failing request's remaining time).
func (s *sharedStore) read(ctx context.Context, fp fingerprint) (sharedEntry, bool) {
	b, err := s.load(ctx, "load", sharedKey(fp))
	if err != nil {
		return sharedEntry{}, false
	}
	return liveEntry(b, s.clock.now())
}

// storeSchemeProof shares the proof that this account's record hashes are
// sha256 of the key.
func (s *sharedStore) storeSchemeProof() {
	s.enqueue(s.account+sharedHashScheme, []byte(`"sha256"`))
}

// schemeProofStored reads whether a replica proved the hash scheme.
func (s *sharedStore) schemeProofStored(ctx context.Context) bool {
	b, err := s.load(ctx, "load", s.account+sharedHashScheme)
	return err == nil && string(b) == `"sha256"`
}

// healthKey names this replica's health mark.
func (s *sharedStore) healthKey() string {
	return sharedHealthPrefix + hex.EncodeToString(s.instance())
}

// loadWatchSnapshot reads the snapshot a replica's key watch published.
func (s *sharedStore) loadWatchSnapshot(ctx context.Context) (*watchSnapshot, bool) {
	b, err := s.load(ctx, "load", s.account+sharedWatchSnapshot)
	if err != nil {
		return nil, false
	}
	var snap watchSnapshot
	if json.Unmarshal(b, &snap) != nil {
		return nil, false
	}
	return &snap, true
}

// storeWatchSnapshot publishes the key watch's snapshot.
func (s *sharedStore) storeWatchSnapshot(ctx context.Context, snap *watchSnapshot) {
	if b, err := json.Marshal(snap); err == nil {
		_ = s.store(ctx, "store", s.account+sharedWatchSnapshot, b)
	}
}

// usesPrefix is where every replica's uses are, without the final slash
// (as certmagic's List wants it).
func (s *sharedStore) usesPrefix() string {
	return s.account + strings.TrimSuffix(sharedWatchUsed, "/")
}

// storeUses publishes this replica's last uses (usedID -> unix seconds).
func (s *sharedStore) storeUses(ctx context.Context, uses map[string]int64) {
	b, err := json.Marshal(uses)
	if err != nil {
		return
	}
	_ = s.store(ctx, "store", s.account+sharedWatchUsed+hex.EncodeToString(s.instance()), b)
}

// loadUses merges the uses every replica published: the latest use of
// each key.
func (s *sharedStore) loadUses(ctx context.Context) map[string]int64 {
	var names []string
	if s.call(ctx, "list", func(ctx context.Context) error {
		var err error
		names, err = s.storage.List(ctx, s.usesPrefix(), false)
		return err
	}) != nil {
		return nil
	}
	out := make(map[string]int64)
	for _, name := range names {
		b, err := s.load(ctx, "load", name)
		if err != nil {
			continue
		}
		var m map[string]int64
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		for id, at := range m {
			out[id] = max(out[id], at)
		}
	}
	return out
}

// sharedCatalogue is an upstream's model catalogue as a replica last read
// it: what catalogueModel holds but the name and prices. Times are unix
// seconds; Expiration is YYYY-MM-DD or "".
type sharedCatalogue struct {
	ReadAt int64         `json:"read_at"`
	Models []sharedModel `json:"models"`
}

type sharedModel struct {
	ID          string   `json:"id"`
	Slug        string   `json:"slug,omitempty"`
	Expiration  string   `json:"expiration,omitempty"`
	Parameters  []string `json:"parameters,omitempty"`
	AliasTarget string   `json:"alias_target,omitempty"`
	FirstSeen   int64    `json:"first_seen"`
	LastSeen    int64    `json:"last_seen"`
	Listed      bool     `json:"listed,omitempty"`
}

// sharedCatalogueKey names the catalogue entry of the upstream at base.
func sharedCatalogueKey(base string) string {
	sum := sha256.Sum256([]byte(base))
	return sharedCatalogues + hex.EncodeToString(sum[:8])
}

// storeCatalogue publishes a read of the upstream at base (queued: the
// writer stores it in the background).
func (s *sharedStore) storeCatalogue(base string, snap *catalogueSnapshot) {
	c := sharedCatalogue{ReadAt: snap.read.Unix(), Models: make([]sharedModel, len(snap.models))}
	for i, m := range snap.models {
		c.Models[i] = sharedModel{ID: m.ID, Slug: m.CanonicalSlug, Parameters: m.Parameters, AliasTarget: m.AliasTarget,
			FirstSeen: m.FirstSeen.Unix(), LastSeen: m.LastSeen.Unix(), Listed: m.Listed}
		if !m.Expiration.IsZero() {
			c.Models[i].Expiration = m.Expiration.Format(openrouter.ExpirationLayout)
		}
	}
	if b, err := json.Marshal(c); err == nil {
		s.enqueue(sharedCatalogueKey(base), b)
	}
}

// loadCatalogue reads the catalogue another replica published for the
// upstream at base, as a snapshot within the catalogue's bounds.
func (s *sharedStore) loadCatalogue(ctx context.Context, base string) (*catalogueSnapshot, bool) {
	b, err := s.load(ctx, "load", sharedCatalogueKey(base))
	if err != nil || len(b) > maxSharedCatalogue {
		return nil, false
	}
	var c sharedCatalogue
	if json.Unmarshal(b, &c) != nil || c.ReadAt <= 0 {
		return nil, false
	}
	return snapshotOfShared(c), true
}
