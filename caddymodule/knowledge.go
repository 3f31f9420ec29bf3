package caddymodule

import (
	"context"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/singleflight"
)

// Timing of what the gateway learns.
const (
	// listingFresh is how long a read of the management listing serves
	// further failures, so a burst of them causes one listing.
	listingFresh = 30 * time.Second
	// explainBackoff is how long after a failed request waited for
	// evidence the next failure of the same key waits again.
	explainBackoff = 30 * time.Second
	// maxLookupBackoff caps the backoff after failed lookups.
	maxLookupBackoff = 5 * time.Minute
	// maxBackgroundLookups bounds lookups running at once in the
	// background; past it, new keys are learned later.
	maxBackgroundLookups = 16
)

// knowledge is what the gateway learns about keys, and how: the cache, the
// lookups that fill it, and the rules that keep lookups rare.
type knowledge struct {
	cache  *keyCache
	client *metadataClient
	shared *sharedStore // nil unless shared_storage
	ttl    time.Duration
	logger *zap.Logger

	keyFlights  singleflight.Group // GET /key, per fingerprint
	mgmtFlights singleflight.Group // management lookups, per fingerprint; "" for the listing

	listMu  sync.Mutex
	listing *keyListing

	background chan struct{} // semaphore for background lookups
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

func newKnowledge(cache *keyCache, client *metadataClient, ttl time.Duration, logger *zap.Logger) *knowledge {
	ctx, cancel := context.WithCancel(context.Background())
	return &knowledge{
		cache: cache, client: client, ttl: ttl, logger: logger,
		background: make(chan struct{}, maxBackgroundLookups),
		ctx:        ctx, cancel: cancel,
	}
}

// stop cancels lookups in flight and waits for them.
func (k *knowledge) stop() {
	k.cancel()
	k.wg.Wait()
	k.client.close()
	if k.shared != nil {
		k.shared.stop()
	}
}

// share publishes what is known of a key to the other replicas, when
// anything is worth it.
func (k *knowledge) share(fp fingerprint, st keyState, now time.Time) {
	if k.shared == nil {
		return
	}
	if e, ok := sharedEntryOf(st, now, k.ttl); ok {
		k.shared.publish(fp, e)
	}
}

// wantsLookup reports whether a GET /key for this key would teach
// anything now.
func (k *knowledge) wantsLookup(st keyState, found bool, now time.Time) bool {
	n := now.UnixNano()
	switch {
	case !found:
		return true
	case n < st.retryAt, st.expired(now):
		return false
	case st.has(flagAlive) && n-st.learnedAt < int64(k.ttl):
		return false
	case st.has(flagDead) && n-st.verdictAt < int64(k.ttl):
		return false
	}
	return true
}

// observe is called for every request with a well-formed key. It costs one
// cache read; for a key not known (or known only stale) it starts a
// GET /key in the background and returns without waiting.
func (k *knowledge) observe(key string, fp fingerprint, now time.Time) (keyState, bool) {
	st, found := k.cache.get(fp)
	if found {
		gatewayMetrics.cacheHits.Inc()
	} else {
		gatewayMetrics.cacheMisses.Inc()
	}
	if !k.wantsLookup(st, found, now) {
		return st, found
	}
	reserved := false
	k.cache.update(fp, now, func(st *keyState, found bool) bool {
		if !k.wantsLookup(*st, found, now) {
			return false
		}
		st.retryAt = now.Add(k.client.timeout).UnixNano()
		reserved = true
		return true
	})
	if !reserved {
		return st, found
	}
	k.startLookup(key, fp)
	return st, found
}

// startLookup runs GET /key in the background if a place is free and the
// lookup rate allows; otherwise the reservation lapses and a later request
// tries again.
func (k *knowledge) startLookup(key string, fp fingerprint) {
	select {
	case k.background <- struct{}{}:
	default:
		return
	}
	if !k.client.limiter.Allow() {
		<-k.background
		gatewayMetrics.lookups.WithLabelValues(endpointKey, outcomeRefused).Inc()
		return
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		defer func() { <-k.background }()
		_, _, _ = k.keyFlights.Do(string(fp[:]), func() (any, error) {
			k.learnKey(key, fp, true)
			return nil, nil
		})
	}()
}

// warnExpiring logs, once per key per day, that a key expires soon.
func (k *knowledge) warnExpiring(key string, fp fingerprint, st keyState, now time.Time) {
	day := int32(now.Unix() / 86400)
	if st.warnedDay == day {
		return
	}
	first := false
	k.cache.update(fp, now, func(st *keyState, found bool) bool {
		if !found || st.warnedDay == day {
			return false
		}
		st.warnedDay, first = day, true
		return true
	})
	if !first {
		return
	}
	if c := k.logger.Check(zapcore.WarnLevel, "key expires soon"); c != nil {
		exp := st.expiry()
		c.Write(zap.String("key_fingerprint", fp.short()), zap.String("key_label", keyLabel(key)),
			zap.Time("expires_at", exp), zap.Duration("expires_in", exp.Sub(now).Round(time.Second)))
	}
}

// sawWorking records that a key known to have failed just worked: it was
// re-enabled, or failed for a reason that has passed.
func (k *knowledge) sawWorking(fp fingerprint) {
	k.cache.update(fp, time.Now(), func(st *keyState, found bool) bool {
		st.flags &^= flagDead | flagDisabled | flagNotFound
		return found
	})
}

// learnKey asks GET /key and records the answer. admitted says the caller
// already took its place in the lookup rate (background learning);
// otherwise the lookup waits for one (a failing request, which may wait).
func (k *knowledge) learnKey(key string, fp fingerprint, admitted bool) {
	ctx, cancel := context.WithTimeout(k.ctx, k.client.timeout)
	defer cancel()
	start := time.Now()
	md, res := k.client.keyInfo(ctx, key, admitted)
	now := time.Now()
	if c := k.logger.Check(zapcore.DebugLevel, "key lookup"); c != nil {
		fields := []zap.Field{zap.String("key_fingerprint", fp.short()), zap.Int("status", res.status), zap.Duration("duration", now.Sub(start))}
		if res.err != nil {
			fields = append(fields, zap.Error(res.err))
		}
		c.Write(fields...)
	}
	st := k.cache.update(fp, now, func(st *keyState, _ bool) bool {
		switch {
		case res.err == errLookupRefused:
			st.retryAt = now.Add(time.Second).UnixNano()
		case res.err == nil && res.status == http.StatusOK:
			st.flags &^= flagDead | flagDisabled | flagNotFound | flagHasExpiry | flagManagement
			st.flags |= flagAlive
			if md.management() {
				st.flags |= flagManagement
			}
			if md.ExpiresAt != nil {
				st.flags |= flagHasExpiry
				st.expiresAt = md.ExpiresAt.Unix()
			}
			st.learnedAt, st.failures, st.retryAt = now.UnixNano(), 0, 0
		case res.err == nil && res.status == http.StatusUnauthorized:
			st.flags |= flagDead
			st.verdictAt, st.failures, st.retryAt = now.UnixNano(), 0, 0
		default:
			st.failures = min(st.failures+1, 16)
			st.retryAt = now.Add(backoff(st.failures)).UnixNano()
		}
		return true
	})
	if res.err == nil && res.status == http.StatusOK {
		k.share(fp, st, now)
	}
}

// backoff is the wait after the nth consecutive failed lookup of a key:
// 2 s, 4 s, 8 s, ... up to maxLookupBackoff.
func backoff(n uint8) time.Duration {
	d := time.Second << min(n, 10)
	return min(d, maxLookupBackoff)
}

// explain gathers evidence about a well-formed key that OpenRouter just
// answered "User not found." for, waiting at most the lookup timeout, and
// at most once per key per explainBackoff. It returns the state to
// classify with.
func (k *knowledge) explain(ctx context.Context, key string, fp fingerprint, inference bool) keyState {
	now := time.Now()
	st, _ := k.cache.get(fp)
	if explainState(st, now, inference, k.ttl).known() {
		return st
	}
	reserved := false
	k.cache.update(fp, now, func(st *keyState, _ bool) bool {
		if now.UnixNano()-st.explainedAt < int64(explainBackoff) {
			return false
		}
		st.explainedAt = now.UnixNano()
		reserved = true
		return true
	})
	if !reserved {
		return st
	}
	ctx, cancel := context.WithTimeout(ctx, k.client.timeout)
	defer cancel()

	// Evidence 0: what another replica learned.
	if k.shared != nil {
		if e, ok := k.shared.read(ctx, fp); ok {
			st = k.cache.update(fp, time.Now(), func(st *keyState, _ bool) bool {
				e.apply(st)
				return true
			})
			if explainState(st, time.Now(), inference, k.ttl).known() {
				return st
			}
		}
	}

	// Evidence 1: GET /key with the key itself, joining a background
	// lookup already in flight. A management key answers it; a dead key
	// gets 401. Skipped while lookups of the key back off after failures:
	// a dead metadata endpoint is not hammered.
	if st.failures == 0 || now.UnixNano() >= st.retryAt {
		if !k.await(ctx, &k.keyFlights, string(fp[:]), func() { k.learnKey(key, fp, false) }) {
			st, _ = k.cache.get(fp)
			return st
		}
		st, _ = k.cache.get(fp)
		if explainState(st, time.Now(), inference, k.ttl).known() {
			return st
		}
	}

	// Evidence 2: the management API, once the key is known dead.
	if k.client.managementKey != "" && st.has(flagDead) {
		k.await(ctx, &k.mgmtFlights, string(fp[:]), func() { k.learnRecord(key, fp) })
		st, _ = k.cache.get(fp)
	}
	return st
}

// await runs fn through group under name (joining a call in flight) and
// waits for it until ctx is done. The call runs to its own timeout, so a
// request that gives up does not cut short the others waiting on it.
func (k *knowledge) await(ctx context.Context, group *singleflight.Group, name string, fn func()) bool {
	done := make(chan struct{})
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		defer close(done)
		_, _, _ = group.Do(name, func() (any, error) {
			fn()
			return nil, nil
		})
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// learnRecord finds the key's management record, by its hash first and
// then in the listing, and records what it says.
func (k *knowledge) learnRecord(key string, fp fingerprint) {
	ctx, cancel := context.WithTimeout(k.ctx, k.client.timeout)
	defer cancel()
	rec, res := k.client.record(ctx, key)
	found := rec != nil
	switch {
	case found:
	case res.err == nil && res.status == http.StatusNotFound:
		l, err := k.currentListing(ctx)
		if err != nil {
			k.logLookupFailure("key listing", fp, err)
			return
		}
		rec, found = l.find(key)
		if found && rec == nil {
			return // a shared label whose records disagree: nothing known
		}
	default:
		k.logLookupFailure("key record", fp, res.err)
		return
	}
	now := time.Now()
	st := k.cache.update(fp, now, func(st *keyState, _ bool) bool {
		st.flags &^= flagDisabled | flagNotFound
		st.verdictAt = now.UnixNano()
		if !found {
			st.flags |= flagNotFound
			return true
		}
		if rec.Disabled {
			st.flags |= flagDisabled
		}
		if rec.ExpiresAt != nil {
			st.flags |= flagHasExpiry
			st.expiresAt = rec.ExpiresAt.Unix()
		}
		return true
	})
	k.share(fp, st, now)
}

// currentListing returns a listing younger than listingFresh, reading one
// (once, however many failures ask at the same time) when there is none.
func (k *knowledge) currentListing(ctx context.Context) (*keyListing, error) {
	k.listMu.Lock()
	l := k.listing
	k.listMu.Unlock()
	if l != nil && time.Since(l.readAt) < listingFresh {
		return l, nil
	}
	v, err, _ := k.mgmtFlights.Do("", func() (any, error) {
		l, err := k.client.listing(ctx)
		if err != nil {
			return nil, err
		}
		k.listMu.Lock()
		k.listing = l
		k.listMu.Unlock()
		return l, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*keyListing), nil
}

func (k *knowledge) logLookupFailure(what string, fp fingerprint, err error) {
	if c := k.logger.Check(zapcore.DebugLevel, what+" lookup failed"); c != nil {
		c.Write(zap.String("key_fingerprint", fp.short()), zap.Error(err))
	}
}
