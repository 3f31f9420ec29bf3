package caddymodule

// keycheck_limiter.go owns the key check's per-client rate limit: a token
// bucket per client network, in a bounded LRU, so that neither a flood of
// addresses nor a forged header lets a client check keys faster than the
// configured rate, and no number of clients makes the limiter grow.

import (
	"math"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// maxTrackedClients bounds the limiter's memory: about 300 bytes per
// client network, 30 MB at most (TestLimiterUnderLoad measures it). Past it, the least recently seen client is forgotten:
// it has been idle longest, so its bucket is the most likely to be full
// again anyway. Forgetting never refuses anyone; it can only give a client
// a full bucket early, which takes more distinct networks than this within
// one refill period.
const maxTrackedClients = 100_000

// ipv6ClientBits is how much of an IPv6 address names one client: a /64 is
// what one subscriber or one host gets, and within it addresses cost
// nothing to change.
const ipv6ClientBits = 64

// clientLimiter is a token bucket per client network: each holds up to
// burst tokens, refilled at r per second; a check takes one.
type clientLimiter struct {
	r     rate.Limit
	burst int

	mu sync.Mutex
	// buckets is not safe for concurrent use: mu guards the lookup, the
	// insertion and the bucket's update as one step.
	buckets *simplelru.LRU[netip.Prefix, *rate.Limiter]
	// latest is the latest time seen. Requests read the clock before they
	// take mu, so they can come in slightly out of order; a bucket handed
	// an earlier time than its last would count the time between twice.
	latest time.Time
}

// newClientLimiter allows requests per window and client, in bursts of up
// to requests, tracking at most capacity clients.
func newClientLimiter(requests int, window time.Duration, capacity int) *clientLimiter {
	buckets, err := simplelru.NewLRU[netip.Prefix, *rate.Limiter](capacity, nil)
	if err != nil {
		panic("keycheck limiter: " + err.Error()) // capacity is a positive constant
	}
	return &clientLimiter{r: rate.Limit(float64(requests) / window.Seconds()), burst: requests, buckets: buckets}
}

// allow takes a token from client's bucket. When there is none, it says
// how long until there is one: the Retry-After to answer with.
func (l *clientLimiter) allow(client netip.Prefix, now time.Time) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.latest) {
		now = l.latest
	}
	l.latest = now
	b, found := l.buckets.Get(client)
	if !found {
		b = rate.NewLimiter(l.r, l.burst) // full
		l.buckets.Add(client, b)          // evicts the least recently seen when full
	}
	if b.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - b.TokensAt(now)
	return false, time.Duration(missing / float64(l.r) * float64(time.Second))
}

// retryAfterSeconds is Retry-After's value for a wait: whole seconds,
// rounded up, at least 1 (0 would invite an immediate retry that fails).
func retryAfterSeconds(wait time.Duration) int {
	return max(1, int(math.Ceil(wait.Seconds())))
}

// clientNetwork is who a request counts against: the client address as
// Caddy determined it (which honours the server's trusted_proxies, and
// otherwise ignores X-Forwarded-For and the like), an IPv4 address alone,
// an IPv6 address with the rest of its /64. An IPv4-mapped IPv6 address
// counts as the IPv4 address.
func clientNetwork(r *http.Request) netip.Prefix {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		// Not set (a request that did not come through a Caddy server) or
		// not an address (a Unix socket): the connection's peer.
		ap, perr := netip.ParseAddrPort(r.RemoteAddr)
		if perr != nil {
			// Nothing to tell clients apart by: they share one bucket,
			// rather than each getting its own.
			return netip.Prefix{}
		}
		addr = ap.Addr()
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32)
	}
	p, _ := addr.Prefix(ipv6ClientBits)
	return p
}
