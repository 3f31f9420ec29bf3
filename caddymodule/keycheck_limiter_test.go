package caddymodule

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func prefix(t testing.TB, ip string) netip.Prefix {
	t.Helper()
	req := httptest.NewRequest("POST", "/", nil)
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: ip}))
	return clientNetwork(req)
}

func TestLimiterTokenBucket(t *testing.T) {
	l := newClientLimiter(3, time.Minute, 10) // a token every 20s, bursts of 3
	a, b := prefix(t, "192.0.2.1"), prefix(t, "192.0.2.2")
	now := time.Unix(1_700_000_000, 0)
	for i := range 3 {
		if ok, _ := l.allow(a, now); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.allow(a, now)
	if ok || retryAfterSeconds(wait) != 20 {
		t.Errorf("4th request: allowed %v, Retry-After %d, want refused, 20", ok, retryAfterSeconds(wait))
	}
	// Retry-After is the time until the next token, rounded up.
	ok, wait = l.allow(a, now.Add(12500*time.Millisecond))
	if ok || retryAfterSeconds(wait) != 8 {
		t.Errorf("12.5s later: allowed %v, Retry-After %d, want refused, 8", ok, retryAfterSeconds(wait))
	}
	// A refused request costs nothing: the token comes when promised.
	if ok, _ := l.allow(a, now.Add(20*time.Second)); !ok {
		t.Error("the next token did not come after 20s")
	}
	if ok, _ := l.allow(a, now.Add(20*time.Second)); ok {
		t.Error("one token gave two requests")
	}
	if ok, _ := l.allow(b, now); !ok {
		t.Error("another client was limited")
	}
	// After a whole window, a full burst again.
	for i := range 3 {
		if ok, _ := l.allow(a, now.Add(20*time.Second+time.Minute)); !ok {
			t.Errorf("request %d after a window refused", i+1)
		}
	}
}

func TestLimiterRetryAfterAtLeastOneSecond(t *testing.T) {
	l := newClientLimiter(1000, time.Second, 10) // a token every 1ms
	a, now := prefix(t, "192.0.2.1"), time.Now()
	for range 1000 {
		l.allow(a, now)
	}
	ok, wait := l.allow(a, now)
	if ok || wait <= 0 || wait > 2*time.Millisecond || retryAfterSeconds(wait) != 1 {
		t.Errorf("allowed %v, wait %v, Retry-After %d", ok, wait, retryAfterSeconds(wait))
	}
}

func TestLimiterClientNetwork(t *testing.T) {
	for _, c := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"}, // one /64
		{"2001:db8:1:2::1", "2001:db8:1:2::1%eth0"},             // zone
		{"192.0.2.7", "::ffff:192.0.2.7"},                       // IPv4-mapped
	} {
		if prefix(t, c.a) != prefix(t, c.b) {
			t.Errorf("%s and %s count as different clients", c.a, c.b)
		}
	}
	for _, c := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:3::1"}, // next /64
		{"192.0.2.7", "192.0.2.8"},
	} {
		if prefix(t, c.a) == prefix(t, c.b) {
			t.Errorf("%s and %s count as one client", c.a, c.b)
		}
	}
	// Without Caddy's client_ip, the connection's peer; never a header.
	req := httptest.NewRequest("POST", "/", nil)
	req.RemoteAddr = "198.51.100.4:5555"
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	if got := clientNetwork(req); got != netip.MustParsePrefix("198.51.100.4/32") {
		t.Errorf("without client_ip: %v", got)
	}
}

func TestLimiterIPv6NetworkSharesOneBucket(t *testing.T) {
	l := newClientLimiter(30, time.Minute, 1000)
	now := time.Now()
	for i := range 30 {
		if ok, _ := l.allow(prefix(t, fmt.Sprintf("2001:db8:aa:bb:%x::%x", i, i)), now); !ok {
			t.Fatalf("request %d refused", i+1)
		}
	}
	if ok, _ := l.allow(prefix(t, "2001:db8:aa:bb:1234:5678:9abc:def0"), now); ok {
		t.Error("a 31st address of the same /64 got a fresh bucket")
	}
	if trackedClients(l) != 1 {
		t.Errorf("one /64 takes %d buckets", trackedClients(l))
	}
}

func TestLimiterEvictsLeastRecentlySeen(t *testing.T) {
	l := newClientLimiter(1, time.Hour, 3)
	now := time.Now()
	a, b, c, d := prefix(t, "192.0.2.1"), prefix(t, "192.0.2.2"), prefix(t, "192.0.2.3"), prefix(t, "192.0.2.4")
	l.allow(a, now)
	l.allow(b, now)
	l.allow(c, now)
	l.allow(a, now) // a seen again: b is now the least recently seen
	// Full, and everyone in it has used their burst: a newcomer is
	// served all the same, and b goes.
	if ok, _ := l.allow(d, now); !ok {
		t.Error("a new client was refused because the limiter is full")
	}
	if ok, _ := l.allow(a, now); ok {
		t.Error("a, recently seen, was forgotten")
	}
	if ok, _ := l.allow(b, now); !ok {
		t.Error("b, least recently seen, was kept while d came in")
	}
	if trackedClients(l) != 3 {
		t.Errorf("%d tracked, capacity 3", trackedClients(l))
	}
}

// TestLimiterUnderLoad floods the limiter with 200,000 distinct client
// networks (IPv4 and IPv6 from many /64s) while an honest client checks a
// key every 3 seconds, on a simulated clock that every request advances:
// memory stays bounded, the honest client is always served, and the
// addresses of one /64 share one bucket.
func TestLimiterUnderLoad(t *testing.T) {
	const (
		attackers = 200_000
		rounds    = 3 // every attacker network comes back: the LRU churns
		workers   = 4
		perSecond = 2_000 // requests per simulated second
		honestGap = 3 * perSecond
	)
	l := newClientLimiter(DefaultCheckRequests, DefaultCheckWindow, maxTrackedClients)
	addrs := make([]netip.Prefix, attackers)
	for i := range addrs {
		if i%2 == 0 {
			addrs[i] = prefix(t, fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff))
		} else {
			// A /64 each, with a random-looking interface part.
			addrs[i] = prefix(t, fmt.Sprintf("2001:db8:%x:%x:%x::%x", i>>16, i&0xffff, i*7919&0xffff, i))
		}
	}
	// Many addresses of one /64, one request in ten.
	sameNet := make([]netip.Prefix, 1000)
	for i := range sameNet {
		sameNet[i] = prefix(t, fmt.Sprintf("2001:db8:ffff:1:%x:%x::1", i, i*31))
	}
	honest := prefix(t, "198.51.100.77")

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	start := time.Unix(1_700_000_000, 0)
	const total = attackers * rounds
	var (
		seq                                       atomic.Int64
		allowed, sameNetHits, served, honestTries atomic.Int64
		wg                                        sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := seq.Add(1) - 1
				if i >= total {
					return
				}
				now := start.Add(time.Duration(i) * time.Second / perSecond)
				if ok, _ := l.allow(addrs[i%attackers], now); ok {
					allowed.Add(1)
				}
				if i%10 == 0 {
					if ok, _ := l.allow(sameNet[i/10%int64(len(sameNet))], now); ok {
						sameNetHits.Add(1)
					}
				}
				if i%honestGap == 0 {
					honestTries.Add(1)
					if ok, _ := l.allow(honest, now); ok {
						served.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()

	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	simulated := time.Duration(total) * time.Second / perSecond
	requests := total + total/10 + honestTries.Load()
	t.Logf("%d requests from %d networks over %v of simulated time (%d goroutines): %d allowed",
		requests, attackers+2, simulated, workers, allowed.Load())
	t.Logf("tracked %d networks (capacity %d); heap +%.1f MB, %.0f bytes per tracked network",
		trackedClients(l), maxTrackedClients, float64(growth)/(1<<20), float64(growth)/float64(trackedClients(l)))
	t.Logf("honest client, one check every 3s: served %d of %d; 1000 addresses of one /64: %d checks allowed",
		served.Load(), honestTries.Load(), sameNetHits.Load())

	if trackedClients(l) != maxTrackedClients {
		t.Errorf("tracked %d networks, want exactly the capacity %d", trackedClients(l), maxTrackedClients)
	}
	if limit := int64(maxTrackedClients) * 400; growth > limit {
		t.Errorf("heap grew by %d bytes, more than %d for %d networks", growth, limit, maxTrackedClients)
	}
	if served.Load() != honestTries.Load() || honestTries.Load() < 90 {
		t.Errorf("the honest client was served %d of %d times", served.Load(), honestTries.Load())
	}
	// One bucket: its burst, and one more per token over the run.
	if most := int64(DefaultCheckRequests) + int64(simulated/(DefaultCheckWindow/DefaultCheckRequests)) + 1; sameNetHits.Load() > most {
		t.Errorf("1000 addresses of one /64 got %d checks in %v; one bucket allows at most %d", sameNetHits.Load(), simulated, most)
	}
	runtime.KeepAlive(addrs)
	runtime.KeepAlive(sameNet)
}

// BenchmarkClientLimiter is one check's cost in the limiter, from many
// goroutines, with more client networks than it tracks (every call
// evicts).
func BenchmarkClientLimiter(b *testing.B) {
	l := newClientLimiter(DefaultCheckRequests, DefaultCheckWindow, maxTrackedClients)
	nets := make([]netip.Prefix, 2*maxTrackedClients)
	for i := range nets {
		nets[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.allow(nets[next.Add(1)%int64(len(nets))], time.Now())
		}
	})
}
