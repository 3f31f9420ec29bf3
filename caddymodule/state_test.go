package caddymodule

import (
	"testing"
	"time"
)

// The one freshness rule, with a fixed clock.
func TestFreshnessVerdict(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	n := now.UnixNano()
	at := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	f := freshness{ttl: 10 * time.Minute}
	expired := keyState{flags: flagExpiry, expiresAt: at(-time.Minute)}
	for _, c := range []struct {
		name      string
		st        keyState
		inference bool
		want      reason
	}{
		{"nothing known", keyState{}, true, reasonNone},
		{"expired", expired, true, reasonExpired},
		{"expired a year ago: an expiry never goes stale", keyState{flags: flagExpiry, expiresAt: at(-365 * 24 * time.Hour)}, true, reasonExpired},
		{"expires later", keyState{flags: flagExpiry, expiresAt: at(time.Hour)}, true, reasonNone},
		{"expired management key", keyState{flags: flagExpiry | flagManagement, expiresAt: at(-time.Minute), aliveAt: at(-2 * time.Minute)}, true, reasonExpired},
		{"management key, working since the last explanation", keyState{flags: flagManagement, explainedAt: at(-10 * time.Second), aliveAt: at(-9 * time.Second)}, true, reasonManagementKey},
		{"management key on a management endpoint", keyState{flags: flagManagement, explainedAt: at(-10 * time.Second), aliveAt: at(-9 * time.Second)}, false, reasonNone},
		{"management key only seen working in the background: may be deleted since", keyState{flags: flagManagement, aliveAt: at(-time.Second)}, true, reasonNone},
		{"management key refused again later", keyState{flags: flagManagement, aliveAt: at(-time.Minute), explainedAt: at(-time.Second)}, true, reasonNone},
		{"management key verified long ago", keyState{flags: flagManagement, explainedAt: at(-time.Hour), aliveAt: at(-time.Hour)}, true, reasonNone},
		{"disabled", keyState{disabledAt: at(-time.Minute)}, true, reasonDisabled},
		{"disabled, said too long ago", keyState{disabledAt: at(-11 * time.Minute)}, true, reasonNone},
		{"disabled long ago, refused just now: a 401 does not refresh it", keyState{disabledAt: at(-11 * time.Minute), deadAt: at(-time.Second)}, true, reasonNone},
		{"not found", keyState{notFoundAt: at(-time.Minute)}, true, reasonNotFound},
		{"not found, read too long ago", keyState{notFoundAt: at(-time.Hour)}, true, reasonNone},
		{"only refused", keyState{deadAt: at(-time.Second)}, true, reasonNone},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := f.verdict(c.st, n, c.inference)
			if v.reason != c.want {
				t.Errorf("got %q, want %q", v.reason, c.want)
			}
			if v.known() && v.message() == "" {
				t.Errorf("no message for %q", v.reason)
			}
		})
	}
	if v := f.verdict(expired, n, true); !v.at.Equal(now.Add(-time.Minute)) {
		t.Errorf("expired at %v", v.at)
	}
}

func TestEdgeRule(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	n := now.UnixNano()
	at := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	on := edgeRule{dead: true, skew: 30 * time.Second, disabledFor: 30 * time.Second}
	for _, c := range []struct {
		name string
		rule edgeRule
		st   keyState
		want reason
	}{
		{"expired past the skew", on, keyState{flags: flagExpiry, expiresAt: at(-time.Minute)}, reasonExpired},
		{"expired within the skew", on, keyState{flags: flagExpiry, expiresAt: at(-10 * time.Second)}, reasonNone},
		{"disabled just now", on, keyState{disabledAt: at(-10 * time.Second)}, reasonDisabled},
		{"disabled a while ago: it may be enabled again", on, keyState{disabledAt: at(-time.Minute)}, reasonNone},
		{"not found is never answered at the edge", on, keyState{notFoundAt: at(-time.Second)}, reasonNone},
		{"management key is never answered at the edge", on, keyState{flags: flagManagement, aliveAt: at(-time.Second)}, reasonNone},
		{"edge answers off", edgeRule{}, keyState{flags: flagExpiry, expiresAt: at(-time.Hour)}, reasonNone},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.rule.verdict(c.st, n).reason; got != c.want {
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
