package caddymodule

// knowledge.go owns what a gateway learns about keys and when: the
// background GET /key for keys it sees, and the evidence a failing request
// gathers, within its deadline, to explain a refusal.

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"
)

// Timing of what the gateway learns.
const (
	// explainBackoff is how long after a failing request waited for
	// evidence the next failure of the same key waits again.
	explainBackoff = 30 * time.Second
	// maxLookupBackoff caps the backoff after failed lookups.
	maxLookupBackoff = 5 * time.Minute
	// maxBackgroundLookups bounds lookups running at once in the
	// background; past it, new keys are learned later.
	maxBackgroundLookups = 16
	// usedEvery is how precisely the last use of a key is recorded: at
	// most one cache write per key per interval on the request path.
	usedEvery = time.Minute
	// warnEvery is how often an expiring key's warning is logged.
	warnEvery = 24 * time.Hour
)

// gatewayCache is what survives config reloads for one gateway
// configuration: the cache, the budget of GET /key lookups, and, for the
// key watch, when each key was last used (the cache records a use once a
// minute, so a log made anew at a reload would miss uses until then).
type gatewayCache struct {
	*keyCache
	lookups *rate.Limiter
	usage   *usageLog
}

var gatewayCaches = caddy.NewUsagePool()

// knowledge is what one gateway (one handler in one config) knows and how
// it learns. Its lookups live as long as the config (life): a lookup cut
// short by a reload is no answer, never a failure.
type knowledge struct {
	acct    *account
	cache   *keyCache
	lookups *rate.Limiter // GET /key, background and failing requests together
	fresh   freshness
	timeout time.Duration // longest a failing request waits for evidence
	shared  *sharedStore  // nil unless shared_storage
	life    context.Context
	logger  *zap.Logger
	// usage, when the key watch runs, is told which keys are used.
	usage *usageLog

	background chan struct{} // semaphore of background lookups

	flightsMu sync.Mutex
	flights   map[fingerprint]*flight[keyAnswer]
}

// keyAnswer is one GET /key answer.
type keyAnswer struct {
	md  *keyMetadata
	res lookupResult
}

func newKnowledge(life context.Context, acct *account, gc gatewayCache, fresh freshness, timeout time.Duration, logger *zap.Logger) *knowledge {
	return &knowledge{
		acct: acct, cache: gc.keyCache, lookups: gc.lookups, fresh: fresh, timeout: timeout,
		life: life, logger: logger,
		background: make(chan struct{}, maxBackgroundLookups),
		flights:    make(map[fingerprint]*flight[keyAnswer]),
	}
}

// wantsLookup reports whether a GET /key for this key would teach
// anything now.
func (k *knowledge) wantsLookup(st keyState, found bool, now int64) bool {
	switch {
	case !found:
		return true
	case now < st.retryAt, st.has(flagExpiry) && now >= st.expiresAt:
		return false
	case within(st.aliveAt, now, k.fresh.ttl), within(st.deadAt, now, k.fresh.ttl):
		return false
	}
	return true
}

// observe is called for every request with an OpenRouter key. It costs one
// cache read; for a key not known (or known only stale) it starts a
// GET /key in the background and returns without waiting. Once a minute
// per key it also records that the key was used.
func (k *knowledge) observe(c credential, fp fingerprint, now time.Time) keyState {
	st, found := k.cache.get(fp)
	if found {
		gatewayMetrics.cacheHits.Inc()
	} else {
		gatewayMetrics.cacheMisses.Inc()
	}
	n := now.UnixNano()
	wants, used := k.wantsLookup(st, found, n), !within(st.usedAt, n, usedEvery)
	if !wants && !used {
		return st
	}
	reserved := false
	st = k.cache.update(fp, now, func(st *keyState, found bool) bool {
		if !within(st.usedAt, n, usedEvery) {
			st.usedAt = n
		}
		if k.wantsLookup(*st, found, n) {
			// A short reservation: if no lookup can start now, the key is
			// tried again a second later; one that starts replaces it.
			st.retryAt = n + int64(time.Second)
			reserved = true
		}
		return true
	})
	if used && k.usage != nil {
		k.usage.used(c.token, now)
	}
	if reserved {
		k.learnInBackground(c.token, fp)
	}
	return st
}

// learnInBackground runs GET /key in the background if a place is free and
// the lookup rate allows; otherwise the key's short reservation lapses and
// a later request tries again.
func (k *knowledge) learnInBackground(key string, fp fingerprint) {
	k.flightsMu.Lock()
	inFlight := k.flights[fp] != nil
	k.flightsMu.Unlock()
	if inFlight {
		return
	}
	select {
	case k.background <- struct{}{}:
	default:
		return
	}
	if !k.lookups.Allow() {
		<-k.background
		gatewayMetrics.lookups.WithLabelValues(endpointKey, "refused").Inc()
		return
	}
	k.keyFlight(key, fp, func() { <-k.background })
}

// keyFlight starts a GET /key for the key, or joins the one in flight.
// The lookup runs within the config's lifetime and the lookup timeout,
// whoever waits for it. release, when not nil, runs once the lookup is
// over (at once when an earlier lookup is joined).
func (k *knowledge) keyFlight(key string, fp fingerprint, release func()) *flight[keyAnswer] {
	k.flightsMu.Lock()
	if f := k.flights[fp]; f != nil {
		k.flightsMu.Unlock()
		if release != nil {
			release()
		}
		return f
	}
	f := newFlight[keyAnswer]()
	k.flights[fp] = f
	k.flightsMu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(k.life, k.timeout)
		defer cancel()
		md, res := k.acct.client.keyInfo(ctx, key)
		k.record(fp, md, res)
		k.flightsMu.Lock()
		delete(k.flights, fp)
		k.flightsMu.Unlock()
		f.finish(keyAnswer{md, res}, nil)
		if release != nil {
			release()
		}
	}()
	return f
}

// startedKeyFlight joins a GET /key in flight that started at or after
// since, or starts one now if the lookup rate allows and lookups of the key
// are not backing off after failures. It returns the class of the refusal
// when no lookup can be had now: the failing request must not queue.
func (k *knowledge) startedKeyFlight(key string, fp fingerprint, st keyState, since time.Time) (*flight[keyAnswer], string) {
	k.flightsMu.Lock()
	f := k.flights[fp]
	k.flightsMu.Unlock()
	switch {
	case f != nil && !f.started.Before(since):
		return f, ""
	case f != nil:
		// An older lookup is in flight: its answer may predate the
		// failure.
		return nil, classBusy
	case st.failures > 0 && time.Now().UnixNano() < st.retryAt:
		// A metadata endpoint that failed is not hammered.
		return nil, classLookupFailed
	case !k.lookups.Allow():
		gatewayMetrics.lookups.WithLabelValues(endpointKey, "refused").Inc()
		return nil, classBusy
	}
	return k.keyFlight(key, fp, nil), ""
}

// record stores what GET /key answered.
func (k *knowledge) record(fp fingerprint, md *keyMetadata, res lookupResult) {
	now := time.Now()
	n := now.UnixNano()
	kind := failureOf(res.err)
	if c := k.logger.Check(zapcore.DebugLevel, "key lookup"); c != nil {
		fields := []zap.Field{zap.String("key_fingerprint", fp.short()), zap.Int("status", res.status)}
		if res.err != nil {
			fields = append(fields, zap.Error(res.err))
		}
		c.Write(fields...)
	}
	misconfigured := res.status == http.StatusNotFound || kind == failInvalid
	if misconfigured && k.acct.warnedKeyEndpoint.CompareAndSwap(false, true) {
		k.logger.Warn("GET /key on the upstream did not answer as OpenRouter does: check that upstream is OpenRouter's API base URL, ending in /api/v1",
			zap.Int("status", res.status))
	}
	st := k.cache.update(fp, now, func(st *keyState, _ bool) bool {
		switch {
		case kind == failCancelled || kind == failRefused:
			// No answer: nothing learned, nothing to back off from.
			st.retryAt = 0
		case md != nil:
			st.flags &^= flagManagement
			if md.Management() {
				st.flags |= flagManagement
			}
			if md.ExpiresAt != nil {
				st.flags |= flagExpiry
				st.expiresAt = md.ExpiresAt.UnixNano()
			}
			// Alive now: neither disabled nor missing.
			st.aliveAt, st.disabledAt, st.notFoundAt = n, 0, 0
			st.failures, st.retryAt = 0, 0
		case kind == failNone && res.status == http.StatusUnauthorized:
			st.deadAt = n
			st.failures, st.retryAt = 0, 0
		default:
			st.failures = min(st.failures+1, 16)
			st.retryAt = now.Add(backoff(st.failures)).UnixNano()
		}
		return true
	})
	if md != nil {
		k.share(fp, st, now)
	}
}

// backoff is the wait after the nth consecutive failed lookup of a key:
// 2 s, 4 s, 8 s, ... up to maxLookupBackoff.
func backoff(n uint8) time.Duration {
	return min(time.Second<<min(n, 10), maxLookupBackoff)
}

// share publishes what is known of a key to the other replicas, when
// anything is worth it.
func (k *knowledge) share(fp fingerprint, st keyState, now time.Time) {
	if k.shared == nil {
		return
	}
	if e, ok := sharedEntryOf(st, now, k.fresh.ttl); ok {
		k.shared.publish(fp, e)
	}
}

// warnExpiring logs, once per key per day, that a key expires soon.
func (k *knowledge) warnExpiring(c credential, fp fingerprint, st keyState, now time.Time) {
	n := now.UnixNano()
	if within(st.warnedAt, n, warnEvery) {
		return
	}
	first := false
	k.cache.update(fp, now, func(st *keyState, found bool) bool {
		if !found || within(st.warnedAt, n, warnEvery) {
			return false
		}
		st.warnedAt, first = n, true
		return true
	})
	if !first {
		return
	}
	if ce := k.logger.Check(zapcore.WarnLevel, "key expires soon"); ce != nil {
		exp := st.expiry()
		ce.Write(zap.String("key_fingerprint", fp.short()), zap.String("key_label", labelOf(c)),
			zap.Time("expires_at", exp), zap.Duration("expires_in", exp.Sub(now).Round(time.Second)))
	}
}

// sawWorking records that a key known to have failed just worked: it was
// re-enabled, or failed for a reason that has passed.
func (k *knowledge) sawWorking(fp fingerprint) {
	k.cache.update(fp, time.Now(), func(st *keyState, found bool) bool {
		st.deadAt, st.disabledAt, st.notFoundAt = 0, 0, 0
		return found
	})
}

// Classes of 401s left unchanged, for caddy_openrouter_keys_unexplained_total.
const (
	classNoCredentials       = "no_credentials"       // no credential the gateway reads
	classUnrecognizedMessage = "unrecognized_message" // a 401 message the gateway does not know
	classNotJSON             = "not_json"             // not an error body in a known envelope
	classTooLarge            = "too_large"            // over maxErrorBody
	classEncoding            = "encoding"             // a Content-Encoding that cannot be undone within bounds
	classUneditable          = "uneditable"           // metadata the rewriter cannot edit without loss or ambiguity
	classNoEvidence          = "no_evidence"          // looked, and nothing can be claimed
	classBusy                = "busy"                 // no lookup could start now; the 401 went out at once
	classLookupFailed        = "lookup_failed"        // a metadata lookup failed or ran out of time
	classOtherCredential     = "other_credential"     // a JWT, another key version, an unknown token
)

// explainKey gathers evidence about an OpenRouter key that OpenRouter just
// refused, waiting at most the lookup timeout and at most once per key per
// explainBackoff, and only for lookups that can start now. since is when
// the request began: a GET /key started before it says nothing about this
// failure. It returns the verdict, or the class of a refusal it leaves
// unexplained.
func (k *knowledge) explainKey(ctx context.Context, c credential, fp fingerprint, inference bool, since time.Time) (verdict, string) {
	now := time.Now()
	st, _ := k.cache.get(fp)
	if v := k.fresh.verdict(st, now.UnixNano(), inference); v.known() {
		return v, ""
	}
	reserved := false
	k.cache.update(fp, now, func(st *keyState, _ bool) bool {
		if within(st.explainedAt, now.UnixNano(), explainBackoff) {
			return false
		}
		st.explainedAt = now.UnixNano()
		reserved = true
		return true
	})
	if !reserved {
		// Explained moments ago: no new lookup, but a listing read since
		// costs nothing to ask.
		if v := k.fromListing(c, fp, st, inference); v.known() {
			return v, ""
		}
		return verdict{}, classNoEvidence
	}
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()

	// Evidence 0: what another replica learned.
	if k.shared != nil {
		if e, ok := k.shared.read(ctx, fp); ok {
			st = k.cache.update(fp, time.Now(), func(st *keyState, _ bool) bool {
				e.apply(st)
				return true
			})
			if v := k.fresh.verdict(st, time.Now().UnixNano(), inference); v.known() {
				return v, ""
			}
		}
	}

	// Evidence 1: GET /key with the key itself, now. A key that works is
	// not dead; a management key answers too.
	f, class := k.startedKeyFlight(c.token, fp, st, since)
	if f == nil {
		return verdict{}, class
	}
	ans, err := f.wait(ctx)
	switch {
	case err != nil || ans.res.err != nil:
		return verdict{}, classLookupFailed
	case ans.md != nil && ans.md.Management() && inference:
		return verdict{reason: reasonManagementKey}, ""
	case ans.md != nil:
		return verdict{reason: reasonValidRetry}, ""
	case ans.res.status != http.StatusUnauthorized:
		return verdict{}, classLookupFailed
	}
	st, _ = k.cache.get(fp)
	if v := k.fresh.verdict(st, time.Now().UnixNano(), inference); v.known() {
		return v, ""
	}

	// Evidence 2: the account's records.
	if !k.acct.hasManagementKey() {
		return verdict{}, classNoEvidence
	}
	m, err := k.acct.recordsFor(k.life, ctx, c.token)
	if err != nil {
		if failureOf(err) == failRefused {
			return verdict{}, classBusy
		}
		k.logLookupFailure(fp, err)
		return verdict{}, classLookupFailed
	}
	return k.applyMatch(m, fp, inference)
}

// fromListing explains a key refused before (its GET /key answered 401)
// from the account's fresh listing, when there is one: no request is made.
func (k *knowledge) fromListing(c credential, fp fingerprint, st keyState, inference bool) verdict {
	l := k.acct.freshListing()
	if l == nil || !k.acct.hasManagementKey() || st.deadAt == 0 || st.aliveAt > st.deadAt {
		return verdict{}
	}
	m := l.findRecord(c.token, k.acct.hashProven.Load())
	if m.record != nil {
		k.acct.hashProven.Store(true)
	}
	v, _ := k.applyMatch(m, fp, inference)
	return v
}

// applyMatch records what the account's records say of a refused key and
// returns the verdict they support.
func (k *knowledge) applyMatch(m match, fp fingerprint, inference bool) (verdict, string) {
	now := time.Now()
	var st keyState
	switch {
	case m.record != nil:
		st = k.cache.update(fp, now, func(st *keyState, _ bool) bool {
			applyRecord(st, m.record, now.UnixNano())
			return true
		})
		k.share(fp, st, now)
		if k.shared != nil {
			k.shared.publishHashProven()
		}
		if v := k.fresh.verdict(st, now.UnixNano(), inference); v.known() {
			return v, ""
		}
	case m.absent:
		st = k.cache.update(fp, now, func(st *keyState, _ bool) bool {
			st.notFoundAt = now.UnixNano()
			return true
		})
		k.share(fp, st, now)
		if v := k.fresh.verdict(st, now.UnixNano(), inference); v.known() {
			return v, ""
		}
	default:
		if v := m.labelVerdict(now); v.known() {
			return v, ""
		}
	}
	return verdict{}, classNoEvidence
}

// loadSharedProof learns from shared storage whether another replica
// proved the account's hash scheme.
func (k *knowledge) loadSharedProof() {
	ctx, cancel := context.WithTimeout(k.life, storageTimeout)
	defer cancel()
	if k.shared.hashProven(ctx) {
		k.acct.hashProven.Store(true)
	}
}

func (k *knowledge) logLookupFailure(fp fingerprint, err error) {
	if c := k.logger.Check(zapcore.DebugLevel, "management lookup failed"); c != nil {
		c.Write(zap.String("key_fingerprint", fp.short()), zap.Error(err))
	}
}
