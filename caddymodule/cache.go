package caddymodule

// cache.go owns the bounded map from key fingerprint to what is known of
// the key.

import (
	"math/bits"
	"sync"
	"time"
)

// keyCache is a bounded map from fingerprint to keyState, split into
// shards so that no lock is shared by all requests. When a shard is full it
// evicts the lowest-ranked of a few randomly sampled entries (Go's map
// iteration starts at a random place), the approach Redis takes for its
// LRU: no per-entry list pointers, O(1) per insert.
type keyCache struct {
	shards    []cacheShard
	shardMask uint64
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

// keepPastExpiry is how long an entry with a known expiry is kept after
// it, so that the first failures after expiry are still explained (and
// answered at the edge).
const keepPastExpiry = 24 * time.Hour

func newKeyCache(capacity int) *keyCache {
	// Up to 64 shards, but never so many that a shard holds nothing: the
	// shard limits add up to capacity.
	n := 64
	if capacity < n {
		n = 1 << (bits.Len(uint(capacity)) - 1)
	}
	c := &keyCache{shards: make([]cacheShard, n), shardMask: uint64(n - 1)}
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

// Destruct runs when no config uses the cache any more.
func (c *keyCache) Destruct() error {
	gatewayMetrics.cacheEntries.Sub(float64(c.len()))
	return nil
}

func (c *keyCache) shard(fp fingerprint) *cacheShard {
	// The fingerprint is a hash already: any of its bytes is uniform.
	return &c.shards[uint64(fp[0])&c.shardMask]
}

// getInto is get with its answer written into st (zero when the key is
// not known): the request path's read, one copy of the state.
func (c *keyCache) getInto(fp *fingerprint, st *keyState) (ok bool) {
	s := c.shard(*fp)
	s.mu.RLock()
	*st, ok = s.entries[*fp]
	s.mu.RUnlock()
	return ok
}

// get returns what is known of the key.
func (c *keyCache) get(fp fingerprint) (st keyState, ok bool) {
	ok = c.getInto(&fp, &st)
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
	if !found {
		st = newKeyState(now)
	}
	if !fn(&st, found) {
		return st
	}
	if !found {
		if len(s.entries) >= s.limit {
			s.evictOne(now)
		} else {
			gatewayMetrics.cacheEntries.Inc()
		}
	}
	s.entries[fp] = st
	return st
}

func (s *cacheShard) evictOne(now time.Time) {
	var victim fingerprint
	best, seen := int64(1<<63-1), 0
	for fp, st := range s.entries {
		if r := evictionRank(st, now); r < best {
			victim, best = fp, r
		}
		if seen++; seen == evictionSample {
			break
		}
	}
	delete(s.entries, victim)
}

// evictionRank orders eviction candidates: lower goes first. Entries more
// than keepPastExpiry past their expiry go first, then entries without
// expiry knowledge (cheap to relearn while the key works, worthless once
// it does not), then entries with an expiry, least recently learned first.
func evictionRank(s keyState, now time.Time) int64 {
	learned := int64(max(s.aliveAt, s.deadAt, s.disabledAt, s.notFoundAt))
	switch {
	case s.has(flagExpiry) && !s.expiry().Add(keepPastExpiry).After(now):
		return -1 << 62
	case !s.has(flagExpiry):
		return -1<<61 + learned
	default:
		return learned
	}
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
