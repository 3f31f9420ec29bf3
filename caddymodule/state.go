package caddymodule

// state.go owns what is known about one key and how long each fact counts:
// every change of a key's state is a method here (other files call them and
// never set a field), and so are the one freshness rule (used by the
// rewrite, the edge and the key check), the backoffs and the edge rule.

import (
	"math"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// stateFlags say which lasting facts about a key are known.
type stateFlags uint8

const (
	// flagExpiry: expiresAt holds the key's expires_at, learned from the
	// key's own GET /key or from a management record matched by hash.
	// OpenRouter never changes a key's expiry once issued, so it is
	// trusted for good.
	flagExpiry stateFlags = 1 << iota
	// flagManagement: the key's own GET /key said is_management_key.
	flagManagement
	// flagAliveSinceExplained: a GET /key 200 was recorded after the
	// last explanation of a refusal began.
	flagAliveSinceExplained
)

// stamp is a time to the second, as unix seconds; zero means never. A
// second is precise enough for every fact a key's state keeps (OpenRouter's
// expires_at has seconds), and four bytes instead of eight keep a full
// cache small. It holds times up to 2106; a later expiry is kept as 2106.
type stamp uint32

// stampOf is t to the second, rounded down: a fact learned at t counts as
// learned a little earlier, so it goes stale no later than it should.
func stampOf(t time.Time) stamp {
	return stamp(min(max(t.Unix(), 1), math.MaxUint32))
}

// stampAfter is t to the second, rounded up: a time before which something
// must not happen (a retry, an expiry) never comes early.
func stampAfter(t time.Time) stamp {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return stamp(min(max(s, 1), math.MaxUint32))
}

func (s stamp) time() time.Time { return time.Unix(int64(s), 0).UTC() }

// keyState is everything the gateway knows about one key. It is small and
// pointer-free so that a full cache costs little memory and the garbage
// collector need not scan it.
type keyState struct {
	// firstSeenAt (unix nanoseconds) is when this gateway first saw the
	// key: the key existed then. A listing proves the key absent only if
	// it started after it, to the nanosecond, which is why it alone is
	// not a stamp.
	firstSeenAt int64
	expiresAt   stamp // with flagExpiry
	// aliveAt and deadAt are the last answers of GET /key with the key
	// itself: 200 and 401.
	aliveAt stamp
	deadAt  stamp
	// disabledAt is when the management API, in a record matched by hash,
	// said the key is disabled; zero once a record says it is enabled.
	disabledAt stamp
	// notFoundAt is when a complete and consistent listing of every
	// workspace, started after firstSeenAt, showed no record of the key.
	notFoundAt stamp
	// retryAt: no new GET /key starts before it (a lookup in flight, or
	// backoff after failed lookups).
	retryAt stamp
	// explainedAt is when a failing request last waited for evidence.
	explainedAt stamp
	// usedAt is when a request with the key was last seen, to the minute.
	usedAt stamp
	// warnedAt is when the last "expires soon" warning was logged.
	warnedAt stamp
	// capSeenAt is when the key's own cap was last seen spent (a
	// key-limit 403, or its own GET /key with nothing left); capEndsAt is
	// when that cap resets, zero when no end is known (a total cap, or a
	// window not named).
	capSeenAt stamp
	capEndsAt stamp
	flags     stateFlags
	failures  uint8 // consecutive failed lookups, for backoff
	capWindow openrouter.Window
}

// Timing of what the gateway learns.
const (
	// explainBackoff is how long after a failing request waited for
	// evidence the next failure of the same key waits again.
	explainBackoff = 30 * time.Second
	// maxLookupBackoff caps the backoff after failed lookups.
	maxLookupBackoff = 5 * time.Minute
	// lookupReservation is how long a key waits for its background lookup
	// to start: if none can start now, the key is tried again after it.
	lookupReservation = time.Second
	// usedEvery is how precisely the last use of a key is recorded: at
	// most one cache write per key per interval on the request path.
	usedEvery = time.Minute
	// warnEvery is how often an expiring key's warning is logged.
	warnEvery = 24 * time.Hour
)

func (s keyState) has(f stateFlags) bool { return s.flags&f != 0 }

func (s keyState) expiry() time.Time { return s.expiresAt.time() }

// within reports whether a fact learned at at still counts at now. at is
// rounded down to the second, so d lasts between d-1s and d of real time.
// It is now.Sub(at.time()) < d in whole seconds and nanoseconds: several
// run on every request, and a time.Time for at costs more than the rest.
func within(at stamp, now time.Time, d time.Duration) bool {
	if at == 0 {
		return false
	}
	if d < 0 {
		return now.Sub(at.time()) < d
	}
	secs, dSecs := now.Unix()-int64(at), int64(d/time.Second)
	return secs < dSecs || secs == dSecs && time.Duration(now.Nanosecond()) < d%time.Second
}

// reached reports whether now is at or past at (a whole second).
func reached(at stamp, now time.Time) bool { return now.Unix() >= int64(at) }

// newKeyState is the state of a key the gateway sees for the first time,
// at now.
func newKeyState(now time.Time) keyState { return keyState{firstSeenAt: now.UnixNano()} }

// seenSince lowers when the key was first seen to at (the key check's own
// request, or another gateway's first sight), when at is earlier.
func (s *keyState) seenSince(at time.Time) {
	if n := at.UnixNano(); s.firstSeenAt == 0 || n < s.firstSeenAt {
		s.firstSeenAt = n
	}
}

// failedBefore reports whether a lookup or the management API ever said the
// key fails: a later success means it works again (sawWorking).
func (s keyState) failedBefore() bool {
	return s.deadAt != 0 || s.disabledAt != 0 || s.notFoundAt != 0 || s.capSeenAt != 0
}

// expiresWithin reports whether the key's known expiry lies in (now, now+d].
func (s keyState) expiresWithin(now time.Time, d time.Duration) bool {
	if !s.has(flagExpiry) {
		return false
	}
	exp := s.expiry()
	return exp.After(now) && !exp.After(now.Add(d))
}

// wantsLookup reports whether a GET /key for this key would teach anything
// at now, facts that can change counting for ttl.
func (s keyState) wantsLookup(found bool, now time.Time, ttl time.Duration) bool {
	switch {
	case !found:
		return true
	case !reached(s.retryAt, now), s.has(flagExpiry) && reached(s.expiresAt, now):
		return false
	case within(s.aliveAt, now, ttl), within(s.deadAt, now, ttl):
		return false
	}
	return true
}

// backingOff reports whether lookups of the key failed and the backoff has
// not passed: a metadata endpoint that failed is not hammered.
func (s keyState) backingOff(now time.Time) bool {
	return s.failures > 0 && !reached(s.retryAt, now)
}

// used records a request with the key at now, once per usedEvery; it
// reports whether it did.
func (s *keyState) used(now time.Time) bool {
	if within(s.usedAt, now, usedEvery) {
		return false
	}
	s.usedAt = stampOf(now)
	return true
}

// reserveLookup reserves a background GET /key when one would teach
// anything: briefly, so that if none can start now the key is tried again
// soon; a lookup that starts replaces the reservation with its answer. It
// reports whether it reserved.
func (s *keyState) reserveLookup(found bool, now time.Time, ttl time.Duration) bool {
	if !s.wantsLookup(found, now, ttl) {
		return false
	}
	s.retryAt = stampAfter(now.Add(lookupReservation))
	return true
}

// lookupVoid records a GET /key that gave no answer (cancelled with the
// config, or refused by the lookup budget): nothing learned, nothing to
// back off from.
func (s *keyState) lookupVoid() { s.retryAt = 0 }

// lookupFailed records a GET /key that failed (an error, a timeout, an
// unexpected status): lookups back off.
func (s *keyState) lookupFailed(now time.Time) {
	s.failures = min(s.failures+1, 16)
	s.retryAt = stampAfter(now.Add(backoff(s.failures)))
}

// backoff is the wait after the nth consecutive failed lookup of a key:
// 2 s, 4 s, 8 s, ... up to maxLookupBackoff.
func backoff(n uint8) time.Duration {
	return min(time.Second<<min(n, 10), maxLookupBackoff)
}

// alive records GET /key 200 with the key's metadata: the key works, so it
// is neither disabled nor missing.
func (s *keyState) alive(md *keyMetadata, now time.Time) {
	s.flags &^= flagManagement
	if md.Management() {
		s.flags |= flagManagement
	}
	if md.ExpiresAt != nil {
		s.learnedExpiry(*md.ExpiresAt)
	}
	if s.explainedAt != 0 {
		s.flags |= flagAliveSinceExplained
	}
	s.aliveAt, s.disabledAt, s.notFoundAt = stampOf(now), 0, 0
	s.failures, s.retryAt = 0, 0
	s.keyCap(md, now)
}

func (s *keyState) learnedExpiry(at time.Time) {
	s.flags |= flagExpiry
	s.expiresAt = stampAfter(at)
}

// refused records GET /key 401: the key fails now, which says nothing of
// why.
func (s *keyState) refused(now time.Time) {
	s.deadAt = stampOf(now)
	s.failures, s.retryAt = 0, 0
}

// applyRecord records what a record matched by hash says of its key, as of
// now: the one place a record becomes facts. A record matched by label
// only never comes here.
func (s *keyState) applyRecord(rec *keyRecord, now time.Time) {
	s.notFoundAt, s.disabledAt = 0, 0
	if rec.Disabled {
		s.disabledAt = stampOf(now)
	}
	if rec.ExpiresAt != nil {
		s.learnedExpiry(*rec.ExpiresAt)
	}
}

// listedAbsent records that a complete listing of every workspace, which
// started at listed, has no record of the key. It proves the key absent
// only if the listing started after the gateway first saw the key: a key
// created after the listing was read would not be in it. It reports
// whether it proved anything.
func (s *keyState) listedAbsent(listed, now time.Time) bool {
	if s.firstSeenAt == 0 || listed.UnixNano() < s.firstSeenAt {
		return false
	}
	s.notFoundAt = stampOf(now)
	return true
}

// sawWorking records a success of a key known to have failed: it was
// re-enabled, or failed for a reason that has passed.
func (s *keyState) sawWorking() {
	s.deadAt, s.disabledAt, s.notFoundAt = 0, 0, 0
	s.capLifted()
}

// capReached records that the key's cap for window w was seen spent at
// now, and when it resets (zero: no end known).
func (s *keyState) capReached(now time.Time, w openrouter.Window, resetsAt time.Time) {
	s.capSeenAt, s.capWindow, s.capEndsAt = stampOf(now), w, 0
	if !resetsAt.IsZero() {
		s.capEndsAt = stampAfter(resetsAt)
	}
}

// capLifted forgets a spent cap: the key worked, or its own GET /key shows
// credit left.
func (s *keyState) capLifted() {
	s.capSeenAt, s.capEndsAt, s.capWindow = 0, 0, openrouter.WindowUnknown
}

// keyCap records what the key's own GET /key says of its cap: spent (a
// limit with nothing left, in its window or in total) or not.
func (s *keyState) keyCap(md *keyMetadata, now time.Time) {
	if md.Limit == nil || md.LimitRemaining == nil || *md.LimitRemaining > 0 {
		s.capLifted()
		return
	}
	w := openrouter.WindowOfLimitReset(md.LimitReset)
	resets, _ := w.ResetsAt(now)
	s.capReached(now, w, resets)
}

// capped reports whether the key's cap was seen spent within d of now and
// has not reset since.
func (s keyState) capped(now time.Time, d time.Duration) bool {
	return within(s.capSeenAt, now, d) && (s.capEndsAt == 0 || !reached(s.capEndsAt, now))
}

// reserveExplain reserves, at most once per explainBackoff, the wait of a
// failing request for evidence; it reports whether it did.
func (s *keyState) reserveExplain(now time.Time) bool {
	if within(s.explainedAt, now, explainBackoff) {
		return false
	}
	s.explainedAt = stampOf(now)
	s.flags &^= flagAliveSinceExplained
	return true
}

// warn records, once per warnEvery, that the key's coming expiry was
// logged; it reports whether a warning is due.
func (s *keyState) warn(now time.Time) bool {
	if within(s.warnedAt, now, warnEvery) {
		return false
	}
	s.warnedAt = stampOf(now)
	return true
}

// mergeShared merges what another replica learned. A fact newer than what
// is known locally wins; "disabled" and "not found" never override a later
// sign of life.
func (s *keyState) mergeShared(e sharedEntry) {
	if e.ExpiresAt != 0 {
		s.learnedExpiry(time.Unix(e.ExpiresAt, 0))
	}
	if e.Management {
		s.flags |= flagManagement
		alive := stampOf(time.Unix(e.AliveAt, 0))
		if s.explainedAt != 0 && alive > s.explainedAt {
			s.flags |= flagAliveSinceExplained
		}
		s.aliveAt = max(s.aliveAt, alive)
	}
	if e.DisabledAt != 0 {
		if d := stampOf(time.Unix(e.DisabledAt, 0)); d > s.disabledAt && d > s.aliveAt {
			s.disabledAt = d
		}
	}
	if e.NotFoundAt != 0 {
		if n := stampOf(time.Unix(e.NotFoundAt, 0)); n > s.notFoundAt && n > s.aliveAt {
			s.notFoundAt = n
		}
	}
}

// freshness says how long facts that can change are trusted.
type freshness struct {
	// ttl bounds "disabled", "not found" and "alive", each from the time
	// it was learned.
	ttl time.Duration
}

// verdict is what the state proves about why OpenRouter refused the key at
// now. This is the one freshness rule:
//
//	fact                        | source                               | counts
//	----------------------------|--------------------------------------|-------------------------------
//	expired                     | own GET /key, record matched by hash | for good (expiries never change)
//	management key (inference)  | own GET /key 200 since the last      | explainBackoff from that 200
//	                            | explanation began                    |
//	disabled                    | record matched by hash               | ttl from when the API said so
//	not found                   | complete listing of every workspace, | ttl from when it was read
//	                            | started after the key was first seen |
//
// A later GET /key 401 changes none of these times: it says the key fails,
// not why. A management key is one for good, but it may have been deleted
// or disabled since it was seen working: a refusal is put to GET /key once
// (explainKey), and that answer stands while failures are not explained
// again.
func (f freshness) verdict(s keyState, now time.Time, inference bool) verdict {
	switch {
	case s.has(flagExpiry) && reached(s.expiresAt, now):
		return verdict{reason: reasonExpired, at: s.expiry()}
	case s.has(flagManagement) && inference && s.has(flagAliveSinceExplained) && within(s.aliveAt, now, explainBackoff):
		return verdict{reason: reasonManagementKey}
	case within(s.disabledAt, now, f.ttl):
		return verdict{reason: reasonDisabled}
	case within(s.notFoundAt, now, f.ttl):
		return verdict{reason: reasonNotFound}
	}
	return verdict{}
}

// learnedState is what one gateway learned of a key, with the freshness it
// trusts it for.
type learnedState struct {
	st    keyState
	fresh freshness
}

// agreedVerdict is the verdict every gateway that knows the key reaches at
// now under its own freshness, once evidence (the key check's own) is
// applied to each state; none when they disagree or none knows the key.
func agreedVerdict(learned []learnedState, now time.Time, evidence func(*keyState)) verdict {
	var agreed verdict
	for i, l := range learned {
		st := l.st
		evidence(&st)
		v := l.fresh.verdict(st, now, true)
		if i > 0 && v.reason != agreed.reason {
			return verdict{}
		}
		agreed = v
	}
	return agreed
}

// edgeRule is which dead keys the gateway answers itself, never asking the
// upstream.
type edgeRule struct {
	dead        bool          // expired keys, and briefly disabled ones
	malformed   bool          // tokens that are certainly no OpenRouter credential
	skew        time.Duration // how long past expiry before answering
	disabledFor time.Duration // how long after "disabled" was learned
	// cappedFor is how long after its cap was seen spent a key is
	// answered at the edge (never past the cap's reset); zero: never.
	cappedFor time.Duration
}

// verdict is what the gateway may answer itself: a key past its expiry by
// more than the skew margin (an expiry never changes), or a key a record
// matched by hash reported disabled moments ago, each only if its reason's
// entry allows the edge. Unknown keys always go upstream; no lookup ever
// precedes proxying.
func (e edgeRule) verdict(s keyState, now time.Time) verdict {
	if !e.mayAnswer(&s) {
		return verdict{}
	}
	var v verdict
	switch {
	case s.has(flagExpiry) && reached(s.expiresAt, now.Add(-e.skew)):
		v = verdict{reason: reasonExpired, at: s.expiry()}
	case within(s.disabledAt, now, e.disabledFor):
		v = verdict{reason: reasonDisabled}
	case e.cappedFor > 0 && s.capped(now, e.cappedFor):
		v = cappedVerdict(s)
	}
	if !v.known() || v.entry().edge != edgeDeadKey && v.entry().edge != edgeCappedKey {
		return verdict{}
	}
	return v
}

// mayAnswer reports whether verdict could know anything of s: the edge
// answers dead keys, and s holds an expiry, a disabled record or a spent
// cap. It is all that most requests' keys cost the edge.
func (e edgeRule) mayAnswer(s *keyState) bool {
	return e.dead && (s.has(flagExpiry) || s.disabledAt != 0 || s.capSeenAt != 0)
}

// tokenVerdict is what the edge may say of a token that is no OpenRouter
// key at all (edge_answers malformed): the reasons whose entry allows it.
func (e edgeRule) tokenVerdict(c credential, now time.Time) verdict {
	if !e.malformed {
		return verdict{}
	}
	return tokenVerdict(c, now, func(r *reasonEntry) bool { return r.edge == edgeToken })
}
