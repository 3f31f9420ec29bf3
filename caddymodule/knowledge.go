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

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// maxBackgroundLookups bounds lookups running at once in the background;
// past it, new keys are learned later.
const maxBackgroundLookups = 16

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

	// limits is the evidence 402, 403 and 429 gather (evidence.go).
	limits *limitLookups
}

// keyAnswer is one GET /key answer.
type keyAnswer struct {
	md  *keyMetadata
	res openrouter.Result
}

// knowledgeOptions are a gateway's settings for what it learns.
type knowledgeOptions struct {
	fresh freshness
	// timeout is lookup_timeout: the longest a failing request waits for
	// evidence; limitTimeout (limit_lookup_timeout, at most timeout) the
	// longest a 402, 403 or 429 does.
	timeout, limitTimeout time.Duration
	shared                *sharedStore // nil unless shared_storage
	// usage, when the key watch runs, is told which keys are used.
	usage  *usageLog
	logger *zap.Logger
}

func newKnowledge(life context.Context, acct *account, gc gatewayCache, o knowledgeOptions) *knowledge {
	return &knowledge{
		acct: acct, cache: gc.keyCache, lookups: gc.lookups, fresh: o.fresh, timeout: o.timeout,
		shared: o.shared, usage: o.usage, life: life, logger: o.logger,
		background: make(chan struct{}, maxBackgroundLookups),
		flights:    make(map[fingerprint]*flight[keyAnswer]),
		limits:     newLimitLookups(o.limitTimeout),
	}
}

// now is the time as the gateway reads it: its account's clock.
func (k *knowledge) now() time.Time { return k.acct.clock.now() }

// observe is called for every request with an OpenRouter key: it writes
// what is known of the key into st (zero when nothing is). It costs one
// cache read; for a key not known (or known only stale) it starts a
// GET /key in the background and returns without waiting. Once a minute
// per key it also records that the key was used.
func (k *knowledge) observe(c credential, fp *fingerprint, now time.Time, st *keyState) {
	found := k.cache.getInto(fp, st)
	if found {
		gatewayMetrics.cacheHits.Inc()
	} else {
		gatewayMetrics.cacheMisses.Inc()
	}
	wants, used := st.wantsLookup(found, now, k.fresh.ttl), !within(st.usedAt, now, usedEvery)
	if !wants && !used {
		return
	}
	reserved := false
	*st = k.cache.update(*fp, now, func(st *keyState, found bool) bool {
		st.used(now)
		reserved = st.reserveLookup(found, now, k.fresh.ttl)
		return true
	})
	if used && k.usage != nil {
		k.usage.used(c.token, now)
	}
	if reserved {
		k.learnInBackground(c.token, *fp)
	}
}

// learnInBackground runs GET /key in the background if a place is free and
// the lookup rate allows; otherwise the key's short reservation lapses and
// a later request tries again.
func (k *knowledge) learnInBackground(key string, fp fingerprint) {
	select {
	case k.background <- struct{}{}:
	default:
		return
	}
	k.lookupKey(key, fp, time.Time{}, false, func() { <-k.background })
}

// lookupKey is the one way to a GET /key for the key: it joins the
// lookup in flight if that started at or after since; otherwise, unless an
// older one is in flight, lookups of the key are backing off after failures
// (checked when backoff is set: a lookup the key's state reserved has
// passed it), or the lookup rate refuses, it starts one, which runs within
// the config's lifetime and the lookup timeout whoever waits for it. With
// no lookup to be had now it returns nil and the class of the refusal: the
// failing request must not queue. release, when not nil, runs once the
// lookup is over, at once when none was started.
func (k *knowledge) lookupKey(key string, fp fingerprint, since time.Time, backoff bool, release func()) (*flight[keyAnswer], string) {
	done := func() {
		if release != nil {
			release()
		}
	}
	k.flightsMu.Lock()
	f := k.flights[fp]
	class := ""
	switch {
	case f != nil && !f.started.Before(since):
	case f != nil:
		// An older lookup is in flight: its answer may predate what the
		// caller needs.
		f, class = nil, classBusy
	case backoff && k.backingOff(fp):
		// A metadata endpoint that failed is not hammered.
		class = classLookupFailed
	case !k.lookups.Allow():
		gatewayMetrics.lookups.WithLabelValues(endpointKey, "refused").Inc()
		class = classBusy
	default:
		f = newFlight[keyAnswer](k.now())
		k.flights[fp] = f
		k.flightsMu.Unlock()
		go func() {
			ctx, cancel := context.WithTimeout(k.life, k.timeout)
			defer cancel()
			md, res := k.acct.client.Key(ctx, key)
			k.record(fp, md, res)
			k.limits.remember(fp, md, k.now())
			k.flightsMu.Lock()
			delete(k.flights, fp)
			k.flightsMu.Unlock()
			f.finish(keyAnswer{md, res}, nil)
			done()
		}()
		return f, ""
	}
	k.flightsMu.Unlock()
	done()
	return f, class
}

// backingOff reports whether lookups of the key failed moments ago.
func (k *knowledge) backingOff(fp fingerprint) bool {
	st, _ := k.cache.get(fp)
	return st.backingOff(k.now())
}

// record stores what GET /key answered.
func (k *knowledge) record(fp fingerprint, md *keyMetadata, res openrouter.Result) {
	now := k.now()
	kind := failureOf(res.Err)
	if c := k.logger.Check(zapcore.DebugLevel, "key lookup"); c != nil {
		fields := []zap.Field{zap.String("key_fingerprint", fp.short()), zap.Int("status", res.Status)}
		if res.Err != nil {
			fields = append(fields, zap.Error(res.Err))
		}
		c.Write(fields...)
	}
	misconfigured := res.Status == http.StatusNotFound || kind == failInvalid
	if misconfigured && k.acct.warnedKeyEndpoint.CompareAndSwap(false, true) {
		k.logger.Warn("GET /key on the upstream did not answer as OpenRouter does: check that upstream is OpenRouter's API base URL, ending in /api/v1",
			zap.Int("status", res.Status))
	}
	st := k.cache.update(fp, now, func(st *keyState, _ bool) bool {
		switch {
		case kind == failCancelled || kind == failRefused:
			st.lookupVoid()
		case md != nil:
			st.alive(md, now)
		case kind == failNone && res.Status == http.StatusUnauthorized:
			st.refused(now)
		default:
			st.lookupFailed(now)
		}
		return true
	})
	if md != nil {
		k.share(fp, st, now)
	}
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
	if within(st.warnedAt, now, warnEvery) {
		return
	}
	first := false
	k.cache.update(fp, now, func(st *keyState, found bool) bool {
		first = found && st.warn(now)
		return first
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
	k.cache.update(fp, k.now(), func(st *keyState, found bool) bool {
		st.sawWorking()
		return found
	})
}

// Classes of 401s left unchanged, for caddy_openrouter_keys_unexplained_total.
const (
	classNoCredentials       = "no_credentials"       // no credential the gateway reads
	classUnrecognizedMessage = "unrecognized_message" // a 401 message the gateway does not know
	classNotJSON             = "not_json"             // not an error body in a known envelope
	classTooLarge            = "too_large"            // over errbody.HoldLimit
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
	now := k.now()
	st, _ := k.cache.get(fp)
	if v := k.fresh.verdict(st, now, inference); v.known() {
		return v, ""
	}
	reserved := false
	k.cache.update(fp, now, func(st *keyState, _ bool) bool {
		reserved = st.reserveExplain(now)
		return reserved
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
			st = k.cache.update(fp, k.now(), func(st *keyState, _ bool) bool {
				st.mergeShared(e)
				return true
			})
			if v := k.fresh.verdict(st, k.now(), inference); v.known() {
				return v, ""
			}
		}
	}

	// Evidence 1: GET /key with the key itself, now. A key that works is
	// not dead; a management key answers too.
	f, class := k.lookupKey(c.token, fp, since, true, nil)
	if f == nil {
		return verdict{}, class
	}
	ans, err := f.wait(ctx)
	switch {
	case err != nil || ans.res.Err != nil:
		return verdict{}, classLookupFailed
	case ans.md != nil && ans.md.Management() && inference:
		return verdict{reason: reasonManagementKey}, ""
	case ans.md != nil:
		return verdict{reason: reasonValidRetry}, ""
	case ans.res.Status != http.StatusUnauthorized:
		return verdict{}, classLookupFailed
	}
	st, _ = k.cache.get(fp)
	if v := k.fresh.verdict(st, k.now(), inference); v.known() {
		return v, ""
	}

	// Evidence 2: the account's records.
	if !k.acct.hasManagementKey() {
		return verdict{}, classNoEvidence
	}
	m, err := k.acct.recordsFor(k.life, ctx, c.token, time.Unix(0, st.firstSeenAt))
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
	m := l.findRecord(c.token, k.acct.schemeProven.Load())
	if m.record != nil {
		k.acct.proveScheme()
	}
	v, _ := k.applyMatch(m, fp, inference)
	return v
}

// applyMatch records what the account's records say of a refused key and
// returns the verdict they support.
func (k *knowledge) applyMatch(m match, fp fingerprint, inference bool) (verdict, string) {
	now := k.now()
	var st keyState
	switch {
	case m.record != nil:
		st = k.cache.update(fp, now, func(st *keyState, _ bool) bool {
			st.applyRecord(m.record, now)
			return true
		})
		k.share(fp, st, now)
		if v := k.fresh.verdict(st, now, inference); v.known() {
			return v, ""
		}
	case m.absent:
		proved := false
		st = k.cache.update(fp, now, func(st *keyState, _ bool) bool {
			proved = st.listedAbsent(m.listStarted, now)
			return proved
		})
		if !proved {
			// The listing may predate the key: it proves nothing.
			break
		}
		k.share(fp, st, now)
		if v := k.fresh.verdict(st, now, inference); v.known() {
			return v, ""
		}
	default:
		if v := m.labelVerdict(now); v.known() {
			return v, ""
		}
	}
	return verdict{}, classNoEvidence
}

// loadSchemeProof learns from shared storage whether another replica
// proved the account's hash scheme.
func (k *knowledge) loadSchemeProof() {
	ctx, cancel := context.WithTimeout(k.life, storageTimeout)
	defer cancel()
	if k.shared.schemeProofStored(ctx) {
		k.acct.proveScheme()
	}
}

func (k *knowledge) logLookupFailure(fp fingerprint, err error) {
	if c := k.logger.Check(zapcore.DebugLevel, "management lookup failed"); c != nil {
		c.Write(zap.String("key_fingerprint", fp.short()), zap.Error(err))
	}
}
