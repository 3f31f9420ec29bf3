package caddymodule

// state.go owns what is known about one key and how long each fact counts:
// the one freshness rule, used by the rewrite, the edge and the key check.

import "time"

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
)

// keyState is everything the gateway knows about one key. It is small and
// pointer-free so that a full cache costs little memory and the garbage
// collector need not scan it. Every time in it is unix nanoseconds; zero
// means never.
type keyState struct {
	expiresAt int64 // with flagExpiry
	// aliveAt and deadAt are the last answers of GET /key with the key
	// itself: 200 and 401.
	aliveAt int64
	deadAt  int64
	// disabledAt is when the management API, in a record matched by hash,
	// said the key is disabled; zero once a record says it is enabled.
	disabledAt int64
	// notFoundAt is when a complete and consistent listing of every
	// workspace showed no record of the key.
	notFoundAt int64
	// retryAt: no new GET /key starts before it (a lookup in flight, or
	// backoff after failed lookups).
	retryAt int64
	// explainedAt is when a failing request last waited for evidence.
	explainedAt int64
	// usedAt is when a request with the key was last seen, to the minute.
	usedAt int64
	// warnedAt is when the last "expires soon" warning was logged.
	warnedAt int64
	flags    stateFlags
	failures uint8 // consecutive failed lookups, for backoff
}

func (s keyState) has(f stateFlags) bool { return s.flags&f != 0 }

func (s keyState) expiry() time.Time { return time.Unix(0, s.expiresAt).UTC() }

// freshness says how long facts that can change are trusted.
type freshness struct {
	// ttl bounds "disabled", "not found" and "alive", each from the time
	// it was learned.
	ttl time.Duration
}

// within reports whether a fact learned at at (unix ns, zero = never) still
// counts at now.
func within(at, now int64, d time.Duration) bool {
	return at != 0 && now-at < int64(d)
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
//	not found                   | complete listing of every workspace  | ttl from when it was read
//
// A later GET /key 401 changes none of these times: it says the key fails,
// not why. A management key is one for good, but it may have been deleted
// or disabled since it was seen working: a refusal is put to GET /key once
// (explainKey), and that answer stands while failures are not explained
// again.
func (f freshness) verdict(s keyState, now int64, inference bool) verdict {
	switch {
	case s.has(flagExpiry) && now >= s.expiresAt:
		return verdict{reason: reasonExpired, at: s.expiry()}
	case s.has(flagManagement) && inference && s.explainedAt != 0 && s.aliveAt >= s.explainedAt && within(s.aliveAt, now, explainBackoff):
		return verdict{reason: reasonManagementKey}
	case within(s.disabledAt, now, f.ttl):
		return verdict{reason: reasonDisabled}
	case within(s.notFoundAt, now, f.ttl):
		return verdict{reason: reasonNotFound}
	}
	return verdict{}
}

// edgeRule is which dead keys the gateway answers itself, never asking the
// upstream.
type edgeRule struct {
	dead        bool          // expired keys, and briefly disabled ones
	malformed   bool          // tokens that are certainly no OpenRouter credential
	skew        time.Duration // how long past expiry before answering
	disabledFor time.Duration // how long after "disabled" was learned
}

// verdict is what the gateway may answer itself: a key past its expiry by
// more than the skew margin (an expiry never changes), or a key a record
// matched by hash reported disabled moments ago, each only if its reason's
// entry allows the edge. Unknown keys always go upstream; no lookup ever
// precedes proxying.
func (e edgeRule) verdict(s keyState, now int64) verdict {
	if !e.dead {
		return verdict{}
	}
	var v verdict
	switch {
	case s.has(flagExpiry) && now-int64(e.skew) >= s.expiresAt:
		v = verdict{reason: reasonExpired, at: s.expiry()}
	case within(s.disabledAt, now, e.disabledFor):
		v = verdict{reason: reasonDisabled}
	}
	if !v.known() || v.entry().edge != edgeDeadKey {
		return verdict{}
	}
	return v
}

// tokenVerdict is what the edge may say of a token that is no OpenRouter
// key at all (edge_answers malformed): the reasons whose entry allows it.
func (e edgeRule) tokenVerdict(c credential, now time.Time) verdict {
	if !e.malformed {
		return verdict{}
	}
	return tokenVerdict(c, now, func(r *reasonEntry) bool { return r.edge == edgeToken })
}
