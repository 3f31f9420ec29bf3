package caddymodule

import (
	"crypto/sha256"
	"encoding/binary"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func fpOf(i int) fingerprint {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	return fingerprint(sha256.Sum256(b[:]))
}

func TestCacheNeverExceedsItsSize(t *testing.T) {
	now := time.Now()
	for _, size := range []int{1, 3, 63, 64, 100, 1000} {
		c := newKeyCache(size)
		for i := 0; i < 10*size+100; i++ {
			c.update(fpOf(i), now, func(st *keyState, _ bool) bool { st.refused(now.Add(time.Duration(i) * time.Second)); return true })
			if n := c.len(); n > size {
				t.Fatalf("size %d: %d entries", size, n)
			}
		}
		if n := c.len(); n < size*9/10 {
			t.Errorf("size %d: only %d entries kept", size, n)
		}
	}
}

func TestCacheEvictsWhatMattersLeast(t *testing.T) {
	now := time.Now()
	const size = 6400
	c := newKeyCache(size)
	// A full cache of keys whose expiry is known...
	for i := 0; i < size; i++ {
		c.update(fpOf(i), now, func(st *keyState, _ bool) bool {
			st.alive(expiringAt(now.Add(time.Hour)), now)
			return true
		})
	}
	// ...then as many keys nothing is known about (a flood).
	for i := size; i < 2*size; i++ {
		c.update(fpOf(i), now, func(st *keyState, _ bool) bool { return true })
	}
	kept := 0
	for i := 0; i < size; i++ {
		if _, ok := c.get(fpOf(i)); ok {
			kept++
		}
	}
	// Evicting at random would keep about 37%; sampled eviction that
	// prefers entries without expiry keeps most.
	if kept < size*6/10 {
		t.Errorf("kept %d of %d keys with a known expiry", kept, size)
	}

	// Entries 24 h past their expiry go before anything else.
	c = newKeyCache(1)
	c.update(fpOf(1), now, func(st *keyState, _ bool) bool {
		st.alive(expiringAt(now.Add(-25*time.Hour)), now.Add(-26*time.Hour))
		return true
	})
	if r := evictionRank(keyState{}, now); r <= evictionRank(func() keyState { s, _ := c.get(fpOf(1)); return s }(), now) {
		t.Error("an entry long past its expiry does not rank below an unknown one")
	}
}

func TestCacheUpdateCanDecline(t *testing.T) {
	c := newKeyCache(10)
	c.update(fpOf(1), time.Now(), func(*keyState, bool) bool { return false })
	if _, ok := c.get(fpOf(1)); ok || c.len() != 0 {
		t.Error("a declined update inserted an entry")
	}
}

func BenchmarkCacheParallel(b *testing.B) {
	const size = 100_000
	c := newKeyCache(size)
	now := time.Now()
	for i := 0; i < size; i++ {
		c.update(fpOf(i), now, func(st *keyState, _ bool) bool { st.alive(&keyMetadata{}, now); return true })
	}
	fps := make([]fingerprint, 2*size)
	for i := range fps {
		fps[i] = fpOf(i)
	}
	b.Run("hits", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				c.get(fps[i%size])
				i++
			}
		})
	})
	b.Run("misses", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				c.get(fps[size+i%size])
				i++
			}
		})
	})
}

// BenchmarkCacheMemory fills caches of 100,000 and 1,000,000 keys and
// reports the Go heap they take per entry (runtime.MemStats.HeapAlloc
// after a collection, before and after filling).
func BenchmarkCacheMemory(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				c := newKeyCache(n)
				now := time.Now()
				md := expiringAt(now.Add(time.Hour))
				for j := 0; j < 2*n; j++ { // twice over: eviction at work
					c.update(fpOf(j), now, func(st *keyState, _ bool) bool {
						st.alive(md, now)
						return true
					})
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if got := c.len(); got > n {
					b.Fatalf("%d entries in a cache of %d", got, n)
				}
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(c.len()), "B/entry")
				b.ReportMetric(float64(c.len()), "entries")
				runtime.KeepAlive(c)
			}
		})
	}
}
