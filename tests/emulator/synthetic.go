package emulator

// synthetic.go owns accounts of any size that the emulator computes
// instead of holding: key i is derived from a seed and its index, its
// record (name, workspace, disabled, expiry) is a formula of i, and GET
// /key, GET /keys pages and GET /keys/{hash} are computed per request. The
// only memory per key is a sorted table from hash to index (16 bytes), so
// that GET /keys/{hash} can answer. Keys created explicitly (NewKey) are
// served as before, and are the account's most recent.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// SyntheticAccount describes keys the emulator computes from their index.
type SyntheticAccount struct {
	// Keys is how many.
	Keys int
	// Seed makes the keys (the same seed, the same keys).
	Seed string
	// DisabledEvery: key i is disabled when i%DisabledEvery is
	// DisabledEvery-1; 0: none is.
	DisabledEvery int
	// ExpiredEvery: key i expired an hour before Synthesize when
	// i%ExpiredEvery is ExpiredEvery/2; 0: none did.
	ExpiredEvery int
	// ExpiringEvery: key i that has not expired expires 10 days after
	// Synthesize when i%ExpiringEvery is 0; 0: none does.
	ExpiringEvery int
}

// Disabled reports whether key i is disabled.
func (a SyntheticAccount) Disabled(i int) bool {
	return a.DisabledEvery > 0 && i%a.DisabledEvery == a.DisabledEvery-1
}

// Expired reports whether key i has expired.
func (a SyntheticAccount) Expired(i int) bool {
	return a.ExpiredEvery > 0 && i%a.ExpiredEvery == a.ExpiredEvery/2
}

// Expiring reports whether key i expires 10 days after Synthesize.
func (a SyntheticAccount) Expiring(i int) bool {
	return a.ExpiringEvery > 0 && i%a.ExpiringEvery == 0 && !a.Expired(i)
}

// ExpiringIn is how long after Synthesize an Expiring key expires.
const ExpiringIn = 10 * 24 * time.Hour

// Key is key i: 48 hex digits derived from the seed and i, then i. Tests
// that send it use Server.SyntheticKey, which remembers it.
func (a SyntheticAccount) Key(i int) string {
	seed := sha256.Sum256([]byte(a.Seed))
	var buf [sha256.Size + 8]byte
	copy(buf[:], seed[:])
	binary.BigEndian.PutUint64(buf[sha256.Size:], uint64(i))
	sum := sha256.Sum256(buf[:])
	return openrouter.KeyPrefix + hex.EncodeToString(sum[:24]) + hex.EncodeToString(buf[sha256.Size:])
}

// synthetic is a SyntheticAccount being served.
type synthetic struct {
	SyntheticAccount
	// workspaces: key i is in workspaces[i%len(workspaces)], as j = i/len.
	workspaces []*workspace
	made       time.Time // keys were made an hour before, one a millisecond
	byHash     []hashSlot
	// deleted are the j of deleted keys per workspace, ascending.
	deleted map[*workspace][]int
}

// hashSlot finds a key by its hash's first 8 bytes.
type hashSlot struct {
	prefix uint64
	index  uint32
}

// Synthesize adds a computed account of a.Keys keys, spread over the
// workspaces that exist now, older than every key created explicitly.
// Set OpaqueHashes before, if at all. A million keys take a few seconds.
func (s *Server) Synthesize(a SyntheticAccount) {
	sy := &synthetic{SyntheticAccount: a, made: time.Now().UTC().Add(-time.Hour),
		deleted: make(map[*workspace][]int), byHash: make([]hashSlot, a.Keys)}
	for i := range sy.byHash {
		sum := s.hashSum(sy.secret(i))
		sy.byHash[i] = hashSlot{binary.BigEndian.Uint64(sum[:8]), uint32(i)}
	}
	slices.SortFunc(sy.byHash, func(a, b hashSlot) int {
		switch {
		case a.prefix < b.prefix:
			return -1
		case a.prefix > b.prefix:
			return 1
		}
		return 0
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	sy.workspaces = append([]*workspace(nil), s.workspaces...)
	s.synth = sy
}

// hashSum is hashOf, as bytes.
func (s *Server) hashSum(secret string) [sha256.Size]byte {
	var sum [sha256.Size]byte
	_, _ = hex.Decode(sum[:], []byte(s.hashOf(secret)))
	return sum
}

// SyntheticKey is key i of the synthetic account, remembered as issued
// (for the sweeps of key material).
func (s *Server) SyntheticKey(i int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	secret := s.synth.secret(i)
	s.issued = append(s.issued, secret)
	return secret
}

// DeleteSynthetic deletes key i of the synthetic account.
func (s *Server) DeleteSynthetic(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sy := s.synth
	ws, j := sy.place(i)
	if at, found := slices.BinarySearch(sy.deleted[ws], j); !found {
		sy.deleted[ws] = slices.Insert(sy.deleted[ws], at, j)
	}
}

// secret is key i.
func (sy *synthetic) secret(i int) string { return sy.Key(i) }

// place is key i's workspace and its position j there (oldest first).
func (sy *synthetic) place(i int) (*workspace, int) {
	return sy.workspaces[i%len(sy.workspaces)], i / len(sy.workspaces)
}

func (sy *synthetic) isDeleted(i int) bool {
	ws, j := sy.place(i)
	_, found := slices.BinarySearch(sy.deleted[ws], j)
	return found
}

// key is key i as the emulator's other endpoints see keys.
func (sy *synthetic) key(s *Server, i int) *Key {
	secret := sy.secret(i)
	ws, _ := sy.place(i)
	k := &Key{
		Secret: secret, Hash: s.hashOf(secret), Name: fmt.Sprintf("user %d", i), WorkspaceID: ws.ID,
		Disabled: sy.Disabled(i), Deleted: sy.isDeleted(i),
		CreatedAt: sy.made.Add(time.Duration(i) * time.Millisecond).Truncate(time.Second),
	}
	switch {
	case sy.Expired(i):
		t := sy.made.Truncate(time.Second)
		k.ExpiresAt = &t
	case sy.Expiring(i):
		t := sy.made.Add(time.Hour + ExpiringIn).Truncate(time.Second)
		k.ExpiresAt = &t
	}
	return k
}

// syntheticBySecret is the synthetic key with that secret, or nil. s.mu
// must be held.
func (s *Server) syntheticBySecret(secret string) *Key {
	sy := s.synth
	if sy == nil || len(secret) != openrouter.KeyLen {
		return nil
	}
	b, err := hex.DecodeString(secret[openrouter.KeyLen-16:])
	if err != nil {
		return nil
	}
	i := binary.BigEndian.Uint64(b)
	if i >= uint64(sy.Keys) || sy.secret(int(i)) != secret {
		return nil
	}
	return sy.key(s, int(i))
}

// syntheticByHash is the synthetic key whose record has that hash, or
// nil. s.mu must be held.
func (s *Server) syntheticByHash(hash string) *Key {
	sy := s.synth
	if sy == nil || len(hash) != 2*sha256.Size {
		return nil
	}
	b, err := hex.DecodeString(hash[:16])
	if err != nil {
		return nil
	}
	prefix := binary.BigEndian.Uint64(b)
	at := sort.Search(len(sy.byHash), func(n int) bool { return sy.byHash[n].prefix >= prefix })
	for ; at < len(sy.byHash) && sy.byHash[at].prefix == prefix; at++ {
		if i := int(sy.byHash[at].index); s.hashOf(sy.secret(i)) == hash {
			return sy.key(s, i)
		}
	}
	return nil
}

// syntheticPage appends to page, up to PageSize, the synthetic keys of ws
// that are not deleted, most recent first, from the one at offset among
// them (disabled ones only with includeDisabled). With disabled keys
// included a page costs its own size; without, the offset is walked.
// s.mu must be held.
func (s *Server) syntheticPage(page []openrouter.KeyRecord, ws *workspace, offset int, includeDisabled bool) []openrouter.KeyRecord {
	sy := s.synth
	if sy == nil {
		return page
	}
	w := slices.Index(sy.workspaces, ws)
	if w < 0 || w >= sy.Keys {
		return page
	}
	n := len(sy.workspaces)
	count := (sy.Keys - w + n - 1) / n
	deleted := sy.deleted[ws]
	j := count - 1
	if includeDisabled {
		// The offset-th j not deleted, counting down from the newest.
		j -= offset
		for d := len(deleted) - 1; d >= 0; d-- {
			if deleted[d] >= j {
				j--
			}
		}
		offset = 0
	}
	for ; j >= 0 && len(page) < PageSize; j-- {
		i := w + n*j
		if _, gone := slices.BinarySearch(deleted, j); gone || (!includeDisabled && sy.Disabled(i)) {
			continue
		}
		if offset > 0 {
			offset--
			continue
		}
		page = append(page, s.record(sy.key(s, i)))
	}
	return page
}

// visible is how many of keys a listing shows.
func visible(keys []*Key, includeDisabled bool) int {
	if includeDisabled {
		return len(keys)
	}
	n := 0
	for _, k := range keys {
		if !k.Disabled {
			n++
		}
	}
	return n
}
