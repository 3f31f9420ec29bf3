package caddymodule

import (
	"math"
	"testing"
	"time"
)

var (
	testNow    = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	management = &keyMetadata{IsManagementKey: true}
)

// Each change of a key's state, as its method makes it.
func TestKeyStateTransitions(t *testing.T) {
	at := func(d time.Duration) time.Time { return testNow.Add(d) }
	ttl := 10 * time.Minute

	t.Run("first seen, and lowered by an earlier sight only", func(t *testing.T) {
		st := newKeyState(at(0))
		st.seenSince(at(time.Minute))
		if st.firstSeenAt != at(0).UnixNano() {
			t.Errorf("a later sight moved first seen: %v", time.Unix(0, st.firstSeenAt))
		}
		st.seenSince(at(-time.Minute))
		if st.firstSeenAt != at(-time.Minute).UnixNano() {
			t.Errorf("an earlier sight did not: %v", time.Unix(0, st.firstSeenAt))
		}
	})
	t.Run("used once a minute", func(t *testing.T) {
		st := newKeyState(at(0))
		if !st.used(at(0)) || st.used(at(59*time.Second)) || !st.used(at(time.Minute)) {
			t.Errorf("uses recorded wrongly: %+v", st)
		}
	})
	t.Run("a lookup reserved for a second", func(t *testing.T) {
		st := newKeyState(at(0))
		if !st.reserveLookup(false, at(0), ttl) {
			t.Fatal("an unknown key reserved no lookup")
		}
		if st.reserveLookup(true, at(500*time.Millisecond), ttl) {
			t.Error("reserved again within the reservation")
		}
		if !st.reserveLookup(true, at(time.Second), ttl) {
			t.Error("a lapsed reservation was not renewed")
		}
		st.lookupVoid()
		if !st.wantsLookup(true, at(time.Second), ttl) {
			t.Error("a void lookup left a reservation")
		}
	})
	t.Run("failed lookups back off, doubling", func(t *testing.T) {
		st := newKeyState(at(0))
		st.lookupFailed(at(0))
		if !st.backingOff(at(time.Second)) || st.backingOff(at(2*time.Second)) {
			t.Errorf("first backoff not 2s: %+v", st)
		}
		st.lookupFailed(at(2 * time.Second))
		if !st.backingOff(at(5*time.Second)) || st.backingOff(at(6*time.Second)) {
			t.Errorf("second backoff not 4s: %+v", st)
		}
		for range 20 {
			st.lookupFailed(at(0))
		}
		if st.backingOff(at(maxLookupBackoff)) {
			t.Error("backoff past its cap")
		}
	})
	t.Run("alive clears what made it fail and learns expiry and kind", func(t *testing.T) {
		exp := at(time.Hour)
		st := stateOf(at(0), func(s *keyState) {
			s.applyRecord(&keyRecord{Disabled: true}, at(0))
			s.lookupFailed(at(0))
			s.alive(&keyMetadata{ExpiresAt: &exp, IsManagementKey: true}, at(time.Second))
		})
		if st.disabledAt != 0 || st.failures != 0 || st.retryAt != 0 || !st.has(flagManagement) || !st.expiry().Equal(exp) {
			t.Errorf("after 200: %+v", st)
		}
		st.alive(&keyMetadata{}, at(2*time.Second))
		if st.has(flagManagement) {
			t.Error("a 200 of an API key left the management flag")
		}
	})
	t.Run("refused says only that it fails", func(t *testing.T) {
		st := stateOf(at(0), func(s *keyState) {
			s.applyRecord(&keyRecord{Disabled: true}, at(0))
			s.refused(at(time.Second))
		})
		if st.deadAt != stampOf(at(time.Second)) || st.disabledAt != stampOf(at(0)) {
			t.Errorf("after 401: %+v", st)
		}
	})
	t.Run("a record matched by hash", func(t *testing.T) {
		exp := at(time.Hour)
		st := stateOf(at(0), func(s *keyState) {
			s.listedAbsent(at(time.Second), at(time.Second))
			s.applyRecord(&keyRecord{ExpiresAt: &exp}, at(2*time.Second))
		})
		if st.notFoundAt != 0 || st.disabledAt != 0 || !st.has(flagExpiry) || !st.expiry().Equal(exp) {
			t.Errorf("enabled record with expiry: %+v", st)
		}
		st.applyRecord(&keyRecord{Disabled: true}, at(3*time.Second))
		if st.disabledAt != stampOf(at(3*time.Second)) {
			t.Errorf("disabled record: %+v", st)
		}
	})
	t.Run("absent only from a listing started after the key was first seen", func(t *testing.T) {
		st := newKeyState(at(0))
		if st.listedAbsent(at(-time.Nanosecond), at(time.Second)) || st.notFoundAt != 0 {
			t.Error("a listing started before the key was seen proved it absent")
		}
		if !st.listedAbsent(at(0), at(time.Second)) || st.notFoundAt != stampOf(at(time.Second)) {
			t.Errorf("a listing started after the key was seen proved nothing: %+v", st)
		}
		var unseen keyState
		if unseen.listedAbsent(at(0), at(time.Second)) {
			t.Error("a key never seen was proved absent")
		}
	})
	t.Run("seen working forgets failures", func(t *testing.T) {
		st := stateOf(at(0), func(s *keyState) {
			s.refused(at(0))
			s.applyRecord(&keyRecord{Disabled: true}, at(0))
			s.sawWorking()
		})
		if st.failedBefore() {
			t.Errorf("after a success: %+v", st)
		}
	})
	t.Run("an explanation once per backoff", func(t *testing.T) {
		st := newKeyState(at(0))
		if !st.reserveExplain(at(0)) || st.reserveExplain(at(explainBackoff-time.Second)) || !st.reserveExplain(at(explainBackoff)) {
			t.Errorf("explanations reserved wrongly: %+v", st)
		}
	})
	t.Run("a warning once a day", func(t *testing.T) {
		st := newKeyState(at(0))
		if !st.warn(at(0)) || st.warn(at(23*time.Hour)) || !st.warn(at(24*time.Hour)) {
			t.Errorf("warnings recorded wrongly: %+v", st)
		}
	})
	t.Run("a shared entry merges, never over a later sign of life", func(t *testing.T) {
		st := stateOf(at(0), func(s *keyState) { s.alive(&keyMetadata{}, at(time.Minute)) })
		st.mergeShared(sharedEntry{ExpiresAt: at(time.Hour).Unix(), DisabledAt: at(0).Unix(), NotFoundAt: at(2 * time.Minute).Unix()})
		if !st.expiry().Equal(at(time.Hour)) || st.disabledAt != 0 || st.notFoundAt != stampOf(at(2*time.Minute)) {
			t.Errorf("merged: %+v", st)
		}
	})
	t.Run("times to the second, expiry never early", func(t *testing.T) {
		if got := stampAfter(at(1500 * time.Millisecond)).time(); !got.Equal(at(2 * time.Second)) {
			t.Errorf("rounded up to %v", got)
		}
		if got := stampOf(at(1500 * time.Millisecond)).time(); !got.Equal(at(time.Second)) {
			t.Errorf("rounded down to %v", got)
		}
		if got := stampAfter(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)); got != math.MaxUint32 {
			t.Errorf("a far expiry became %v", got.time())
		}
	})
}

// The one freshness rule, with a fixed clock.
func TestFreshnessVerdict(t *testing.T) {
	at := func(d time.Duration) time.Time { return testNow.Add(d) }
	f := freshness{ttl: 10 * time.Minute}
	alive := func(md *keyMetadata, d time.Duration) func(*keyState) {
		return func(s *keyState) { s.alive(md, at(d)) }
	}
	explained := func(d time.Duration) func(*keyState) { return func(s *keyState) { s.reserveExplain(at(d)) } }
	disabled := func(d time.Duration) func(*keyState) {
		return func(s *keyState) { s.applyRecord(&keyRecord{Disabled: true}, at(d)) }
	}
	year := 365 * 24 * time.Hour
	expiredMgmt := &keyMetadata{IsManagementKey: true, ExpiresAt: new(at(-time.Minute))}
	for _, c := range []struct {
		name      string
		st        keyState
		inference bool
		want      reason
	}{
		{"nothing known", keyState{}, true, reasonNone},
		{"expired", stateOf(at(-time.Hour), alive(expiringAt(at(-time.Minute)), -time.Hour)), true, reasonExpired},
		{"expired a year ago: an expiry never goes stale", stateOf(at(-2*year), alive(expiringAt(at(-year)), -2*year)), true, reasonExpired},
		{"expires later", stateOf(at(0), alive(expiringAt(at(time.Hour)), 0)), true, reasonNone},
		{"expired management key", stateOf(at(-time.Hour), alive(expiredMgmt, -2*time.Minute)), true, reasonExpired},
		{"management key, working since the last explanation", stateOf(at(-time.Hour), explained(-10*time.Second), alive(management, -9*time.Second)), true, reasonManagementKey},
		{"management key on a management endpoint", stateOf(at(-time.Hour), explained(-10*time.Second), alive(management, -9*time.Second)), false, reasonNone},
		{"management key only seen working in the background: may be deleted since", stateOf(at(-time.Hour), alive(management, -time.Second)), true, reasonNone},
		{"management key refused again later", stateOf(at(-time.Hour), alive(management, -time.Minute), explained(-time.Second)), true, reasonNone},
		{"management key verified long ago", stateOf(at(-2*time.Hour), explained(-time.Hour), alive(management, -time.Hour)), true, reasonNone},
		{"disabled", stateOf(at(-time.Hour), disabled(-time.Minute)), true, reasonDisabled},
		{"disabled, said too long ago", stateOf(at(-time.Hour), disabled(-11*time.Minute)), true, reasonNone},
		{"disabled long ago, refused just now: a 401 does not refresh it", stateOf(at(-time.Hour), disabled(-11*time.Minute), func(s *keyState) { s.refused(at(-time.Second)) }), true, reasonNone},
		{"not found", stateOf(at(-time.Hour), func(s *keyState) { s.listedAbsent(at(-2*time.Minute), at(-time.Minute)) }), true, reasonNotFound},
		{"not found, read too long ago", stateOf(at(-2*time.Hour), func(s *keyState) { s.listedAbsent(at(-time.Hour), at(-time.Hour)) }), true, reasonNone},
		{"only refused", stateOf(at(-time.Hour), func(s *keyState) { s.refused(at(-time.Second)) }), true, reasonNone},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := f.verdict(c.st, testNow, c.inference)
			if v.reason != c.want {
				t.Errorf("got %q, want %q", v.reason, c.want)
			}
			if v.known() && v.message() == "" {
				t.Errorf("no message for %q", v.reason)
			}
		})
	}
	if v := f.verdict(stateOf(at(-time.Hour), alive(expiringAt(at(-time.Minute)), -time.Hour)), testNow, true); !v.at.Equal(at(-time.Minute)) {
		t.Errorf("expired at %v", v.at)
	}
}

// Gateways of one account may trust facts for different times: a verdict
// only when all that know the key reach it.
func TestAgreedVerdict(t *testing.T) {
	at := func(d time.Duration) time.Time { return testNow.Add(d) }
	disabled5mAgo := stateOf(at(-time.Hour), func(s *keyState) { s.applyRecord(&keyRecord{Disabled: true}, at(-5*time.Minute)) })
	short, long := freshness{ttl: time.Minute}, freshness{ttl: 10 * time.Minute}
	none := func(*keyState) {}
	if v := agreedVerdict([]learnedState{{disabled5mAgo, long}}, testNow, none); v.reason != reasonDisabled {
		t.Errorf("one gateway: %q", v.reason)
	}
	for _, order := range [][]learnedState{{{disabled5mAgo, short}, {disabled5mAgo, long}}, {{disabled5mAgo, long}, {disabled5mAgo, short}}} {
		if v := agreedVerdict(order, testNow, none); v.known() {
			t.Errorf("gateways that disagree gave %q", v.reason)
		}
	}
	// Evidence applied to every state: a record just read counts for all.
	fresh := func(s *keyState) { s.applyRecord(&keyRecord{Disabled: true}, testNow) }
	if v := agreedVerdict([]learnedState{{disabled5mAgo, short}, {disabled5mAgo, long}}, testNow, fresh); v.reason != reasonDisabled {
		t.Errorf("with fresh evidence: %q", v.reason)
	}
}

func TestEdgeRule(t *testing.T) {
	at := func(d time.Duration) time.Time { return testNow.Add(d) }
	on := edgeRule{dead: true, skew: 30 * time.Second, disabledFor: 30 * time.Second}
	expiring := func(d time.Duration) keyState {
		return stateOf(at(-2*time.Hour), func(s *keyState) { s.alive(expiringAt(at(d)), at(-2*time.Hour)) })
	}
	disabled := func(d time.Duration) keyState {
		return stateOf(at(-time.Hour), func(s *keyState) { s.applyRecord(&keyRecord{Disabled: true}, at(d)) })
	}
	for _, c := range []struct {
		name string
		rule edgeRule
		st   keyState
		want reason
	}{
		{"expired past the skew", on, expiring(-time.Minute), reasonExpired},
		{"expired within the skew", on, expiring(-10 * time.Second), reasonNone},
		{"disabled just now", on, disabled(-10 * time.Second), reasonDisabled},
		{"disabled a while ago: it may be enabled again", on, disabled(-time.Minute), reasonNone},
		{"not found is never answered at the edge", on, stateOf(at(-time.Hour), func(s *keyState) { s.listedAbsent(at(-time.Second), at(-time.Second)) }), reasonNone},
		{"management key is never answered at the edge", on, stateOf(at(-time.Hour), func(s *keyState) { s.alive(management, at(-time.Second)) }), reasonNone},
		{"edge answers off", edgeRule{}, expiring(-time.Hour), reasonNone},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.rule.verdict(c.st, testNow).reason; got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
	malformedOn := edgeRule{dead: true, malformed: true}
	for _, c := range []struct {
		name string
		rule edgeRule
		tok  string
		want reason
	}{
		{"malformed key", malformedOn, goodKey[:30], reasonMalformed},
		{"another provider's key", malformedOn, "sk-ant-api03-" + "abcdefghijklmnopqrstuvwxyz0123456789", reasonNotOpenRouterKey},
		{"a JWT is never answered at the edge", malformedOn, jwtWith(`{"exp":1}`), reasonNone},
		{"another key version", malformedOn, "sk-or-v2-abc", reasonNone},
		{"malformed, but edge_answers on", on, goodKey[:30], reasonNone},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.rule.tokenVerdict(classifyToken(c.tok), time.Now()).reason; got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

// within and reached, computed in whole seconds, agree with their
// definitions in time.Time arithmetic, at and around every boundary.
func TestWithinAndReachedAsDefined(t *testing.T) {
	base := time.Now() // with a monotonic reading, as a request's
	ats := []stamp{0, 1, stampOf(base), stampOf(base) - 1, stampOf(base) + 1, stampOf(base) - 60, math.MaxUint32}
	nows := []time.Time{base, base.Round(0), base.Truncate(time.Second), base.Truncate(time.Second).Add(-time.Nanosecond), {}, time.Unix(0, 0), time.Unix(1, 0)}
	ds := []time.Duration{0, time.Nanosecond, time.Second - 1, time.Second, time.Second + 1, time.Minute, 90 * time.Second, 10 * time.Minute, -time.Second}
	for _, at := range ats {
		for _, now := range nows {
			for _, off := range []time.Duration{0, 500 * time.Millisecond, time.Second, 59 * time.Second, time.Minute} {
				n := now.Add(off)
				if got, want := reached(at, n), !n.Before(at.time()); got != want {
					t.Errorf("reached(%d, %v) = %v, want %v", at, n, got, want)
				}
				for _, d := range ds {
					if got, want := within(at, n, d), at != 0 && n.Sub(at.time()) < d; got != want {
						t.Errorf("within(%d, %v, %v) = %v, want %v", at, n, d, got, want)
					}
				}
			}
		}
	}
}
