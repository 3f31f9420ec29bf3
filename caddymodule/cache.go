package caddymodule

import (
	"math/bits"
	"sync"
	"time"
)

// stateFlags say which facts about a key are known.
type stateFlags uint8

const (
	// flagAlive: GET /key answered 200 for this key at learnedAt.
	flagAlive stateFlags = 1 << iota
	// flagManagement: GET /key said is_management_key.
	flagManagement
	// flagHasExpiry: expiresAt holds the key's expires_at. A real key's
	// expires_at never changes once issued, so this never goes stale.
	flagHasExpiry
	// flagDead: GET /key answered 401 at verdictAt.
	flagDead
	// flagDisabled: the management API said disabled at verdictAt.
	flagDisabled
	// flagNotFound: the management key's full listing, read at verdictAt,
	// has no record of this key.
	flagNotFound
)

// keyState is everything the gateway knows about one key. It is small and
// pointer-free so that a full cache costs little memory and the garbage
// collector need not scan it.
type keyState struct {
	expiresAt int64 // unix seconds, valid with flagHasExpiry
	learnedAt int64 // unix nanoseconds of the last GET /key 200
	verdictAt int64 // unix nanoseconds of flagDead, flagDisabled, flagNotFound
	retryAt   int64 // unix nanoseconds before which no new lookup starts
	// explainedAt is when a failing request last waited for evidence.
	explainedAt int64
	flags       stateFlags
	failures    uint8 // consecutive failed lookups, for backoff
	// warnedDay is the day (since 1970, UTC) of the last expiry warning
	// logged for the key: one a day.
	warnedDay int32
}

func (s keyState) has(f stateFlags) bool { return s.flags&f != 0 }

// expired reports whether the key is known to have expired at now.
func (s keyState) expired(now time.Time) bool {
	return s.has(flagHasExpiry) && now.Unix() >= s.expiresAt
}

func (s keyState) expiry() time.Time { return time.Unix(s.expiresAt, 0).UTC() }

// keepUntil is when an entry stops being worth its memory: a key with a
// known expiry is kept 24 h past it, so the first failures after expiry are
// still explained; anything else is kept while it may still be used.
func (s keyState) keepUntil() int64 {
	if s.has(flagHasExpiry) {
		return (s.expiresAt + 24*3600) * int64(time.Second)
	}
	return 1<<63 - 1
}

// evictionRank orders eviction candidates: lower goes first. Entries past
// keepUntil go first, then entries without expiry knowledge (cheap to
// relearn while the key works, worthless once it does not), then entries
// with an expiry, oldest first.
func (s keyState) evictionRank(now int64) int64 {
	switch {
	case s.keepUntil() <= now:
		return -1 << 62
	case !s.has(flagHasExpiry):
		return -1<<61 + max(s.learnedAt, s.verdictAt)/int64(time.Second)
	default:
		return max(s.learnedAt, s.verdictAt) / int64(time.Second)
	}
}

// keyCache is a bounded map from fingerprint to keyState, split into
// shards so that no lock is shared by all requests. When a shard is full it
// evicts the lowest-ranked of a few randomly sampled entries (Go's map
// iteration starts at a random place), the approach Redis takes for its
// LRU: no per-entry list pointers, O(1) per insert.
type keyCache struct {
	shards    []cacheShard
	shardMask uint64
	capacity  int
}

type cacheShard struct {
	mu      sync.RWMutex
	entries map[fingerprint]keyState
	limit   int
	_       [24]byte // keep shards on separate cache lines
}

// evictionSample is how many entries a full shard looks at to pick one to
// evict.
const evictionSample = 8

func newKeyCache(capacity int) *keyCache {
	// Up to 64 shards, but never so many that a shard holds nothing:
	// the shard limits add up to at most capacity.
	n := 64
	if capacity < n {
		n = 1 << (bits.Len(uint(capacity)) - 1)
	}
	c := &keyCache{shards: make([]cacheShard, n), shardMask: uint64(n - 1), capacity: capacity}
	for i := range c.shards {
		limit := capacity / n
		if i < capacity%n {
			limit++
		}
		c.shards[i].limit = limit
		c.shards[i].entries = make(map[fingerprint]keyState)
	}
	return c
}

func (c *keyCache) shard(fp fingerprint) *cacheShard {
	// The fingerprint is a hash already: any of its bytes is uniform.
	return &c.shards[uint64(fp[0])&c.shardMask]
}

// get returns what is known of the key.
func (c *keyCache) get(fp fingerprint) (keyState, bool) {
	s := c.shard(fp)
	s.mu.RLock()
	st, ok := s.entries[fp]
	s.mu.RUnlock()
	return st, ok
}

// update applies fn to the key's state under the shard's lock, inserting
// the entry if it is new and fn keeps it (fn returns false to leave the
// cache unchanged). It returns the state as stored.
func (c *keyCache) update(fp fingerprint, now time.Time, fn func(st *keyState, found bool) bool) keyState {
	s := c.shard(fp)
	s.mu.Lock()
	defer s.mu.Unlock()
	st, found := s.entries[fp]
	if !fn(&st, found) {
		return st
	}
	if !found && len(s.entries) >= s.limit {
		s.evictOne(now.UnixNano())
	}
	s.entries[fp] = st
	return st
}

func (s *cacheShard) evictOne(now int64) {
	var victim fingerprint
	best, seen := int64(1<<63-1), 0
	for fp, st := range s.entries {
		if r := st.evictionRank(now); r < best {
			victim, best = fp, r
		}
		if seen++; seen == evictionSample {
			break
		}
	}
	delete(s.entries, victim)
}

// len counts the entries; it takes every shard's lock in turn, so it is
// for metrics and tests, not for the request path.
func (c *keyCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.entries)
		s.mu.RUnlock()
	}
	return n
}
