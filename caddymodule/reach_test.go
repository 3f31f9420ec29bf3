package caddymodule

import (
	"context"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// A 404 of GET /keys/{hash} proves a key absent only once the lookup was
// seen to reach every workspace of the account and to find a disabled
// key: until then a listing does; after, a deleted key costs no listing,
// and a workspace the lookup has not reached (created since) is listed
// alone.
func TestAbsenceByHashLookup(t *testing.T) {
	emu, api := startEmulator(t)
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	research := emu.NewWorkspace("Research")
	emu.NewKeys(250, emulator.KeyOptions{})
	emu.NewKeys(250, emulator.KeyOptions{Workspace: research})
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}", ManagementRate: 100}}
	newHandler(t, &h, api)

	deletedNow := func(o emulator.KeyOptions) string {
		k := emu.NewKey(o)
		emu.Delete(k)
		return k
	}
	explain := func(what, key, want string) (listed int) {
		t.Helper()
		before := emu.Count("/keys")
		if got := reasonOf(t, serve(t, &h, refused, "POST", "/api/v1/chat/completions", key)); got != want {
			t.Errorf("%s: reason %q, want %q", what, got, want)
		}
		return emu.Count("/keys") - before
	}

	// No disabled key yet: the lookup was never seen to find one, so a
	// 404 proves nothing and the account is listed.
	if n := explain("before any proof", deletedNow(emulator.KeyOptions{}), "key_not_found"); n < 6 {
		t.Errorf("before any proof: %d pages listed, want the whole account", n)
	}
	emu.NewKey(emulator.KeyOptions{Disabled: true, Workspace: research})
	if _, err := refreshListing(context.Background(), h.acct); err != nil {
		t.Fatal(err)
	}
	// The listing is no longer fresh (it would answer for keys created
	// after it), and no other may start.
	h.acct.listMu.Lock()
	h.acct.listing.readAt = h.acct.listing.readAt.Add(-listingFresh)
	h.acct.listMu.Unlock()
	if n := explain("every workspace reached", deletedNow(emulator.KeyOptions{Workspace: research}), "key_not_found"); n != 0 {
		t.Errorf("every workspace reached: %d pages listed, want none", n)
	}
	if n := emu.Count("/keys/{hash}"); n < 3 {
		t.Errorf("%d hash lookups", n)
	}

	// A workspace created since is not known to be reached: it is listed,
	// alone, before the 404 counts.
	h.acct.reach.mu.Lock()
	h.acct.reach.current = cached[[]workspace]{}
	h.acct.reach.mu.Unlock()
	ops := emu.NewWorkspace("Ops")
	disabled := emu.NewKey(emulator.KeyOptions{Disabled: true, Workspace: ops})
	if n := explain("a new workspace", deletedNow(emulator.KeyOptions{}), "key_not_found"); n == 0 || n > 3 {
		t.Errorf("a new workspace: %d pages listed, want its own only", n)
	}
	if n := explain("a disabled key of the new workspace", disabled, "key_disabled"); n != 0 {
		t.Errorf("a disabled key: %d pages listed", n)
	}
}

// Once the hash scheme is proven, a probe in the background reads a few
// pages and asks GET /keys/{hash} for a record of each workspace and for a
// disabled one: a 404 then proves a deleted key absent at a cost far below
// a listing's, and never before a disabled key was seen found. A 404 that
// finds the proof incomplete starts the probe again.
func TestReachProbedWithoutListing(t *testing.T) {
	emu, api := startEmulator(t)
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	research := emu.NewWorkspace("Research")
	// The only disabled key is the oldest of its workspace, past the
	// pages a probe reads (most recent first).
	emu.NewKey(emulator.KeyOptions{Disabled: true, Workspace: research})
	emu.NewKeys(5000, emulator.KeyOptions{})
	emu.NewKeys(5000, emulator.KeyOptions{Workspace: research})
	listingPages := 2 * (5000/emulator.PageSize + 1)
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}", ManagementRate: 100}}
	newHandler(t, &h, api)
	c := newTestClock(time.Now())
	useClock(&h, c)
	// No listing may start: only the probe can make a 404 count.
	h.acct.listMu.Lock()
	h.acct.listNext = c.now().Add(time.Hour)
	h.acct.listMu.Unlock()

	explain := func(key string) string {
		t.Helper()
		return reasonOf(t, serve(t, &h, refused, "POST", "/api/v1/chat/completions", key))
	}
	deleted := func() string {
		k := emu.NewKey(emulator.KeyOptions{})
		emu.Delete(k)
		return k
	}
	// probed waits for the probe last started and counts the pages read
	// since before.
	probed := func(before int) int {
		t.Helper()
		h.acct.probeMu.Lock()
		f := h.acct.probe
		h.acct.probeMu.Unlock()
		if f == nil {
			t.Fatal("no probe started")
		}
		if _, err := f.wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		return emu.Count("/keys") - before
	}

	// An expired key explained from its own record proves the hash
	// scheme, which starts the probe.
	before := emu.Count("/keys")
	expired := emu.NewKey(emulator.KeyOptions{})
	emu.ExpireIn(expired, -time.Hour)
	if got := explain(expired); got != "key_expired" {
		t.Fatalf("an expired key: reason %q", got)
	}
	first := probed(before)
	if got := explain(deleted()); got == "key_not_found" {
		t.Error("a 404 proved absence before a disabled key was seen found")
	}

	// A 404 that finds the proof incomplete starts another probe (once
	// listingRetry has passed), which now finds a disabled key.
	emu.NewKey(emulator.KeyOptions{Disabled: true, Workspace: research})
	c.advance(listingRetry)
	before = emu.Count("/keys")
	if got := explain(deleted()); got == "key_not_found" {
		t.Error("a 404 proved absence before the probe found a disabled key")
	}
	second := probed(before)
	t.Logf("probes read %d and %d pages; a listing reads %d", first, second, listingPages)
	// Each probe reads at most probePages pages of each workspace.
	if first == 0 || first+second > 2*2*probePages || 8*(first+second) > listingPages {
		t.Errorf("probes read %d and %d pages, want a few (a listing is %d)", first, second, listingPages)
	}
	before = emu.Count("/keys")
	if got := explain(deleted()); got != "key_not_found" {
		t.Errorf("a deleted key after the probe: reason %q", got)
	}
	if n := emu.Count("/keys") - before; n != 0 {
		t.Errorf("a deleted key after the probe: %d pages listed, want none", n)
	}
}

// With record hashes that are not sha256(key), a 404 proves nothing.
func TestAbsenceByHashLookupNeedsTheScheme(t *testing.T) {
	emu, api := startEmulator(t)
	emu.OpaqueHashes = true
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	emu.NewKey(emulator.KeyOptions{Disabled: true})
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}"}}
	newHandler(t, &h, api)
	h.acct.reach.found(&keyRecord{WorkspaceID: emu.DefaultWorkspace(), Disabled: true})
	if m, ok := h.acct.absentByHash(context.Background(), goodKey, h.acct.reach.current.at, time.Time{}); ok || m.absent {
		t.Error("a 404 proved absence without the hash scheme")
	}
}

// The hash scheme has one writer: wherever a record hash is first seen to
// be sha256(key) (a 403's record hash, a record the key check matches by
// hash, the management key's own record in a listing, the record a 402's
// balance lookup finds), the proof starts the probe of what GET
// /keys/{hash} reaches, so that the next deleted key is explained without
// a listing, and it is published to the other replicas at once.
func TestSchemeProofStartsTheProbeAndIsShared(t *testing.T) {
	for _, c := range []struct {
		name  string
		prove func(t *testing.T, h *Handler, api, mk, key string)
	}{
		{"a 403's record hash", func(t *testing.T, h *Handler, _, _, key string) {
			fb := openrouter.KeyLimitExceeded(openrouter.WindowDaily, "default", recordHash(key), openrouter.WordingCurrent)
			serve(t, h, failureAnswer(fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", key)
		}},
		{"the key check", func(t *testing.T, _ *Handler, api, mk, key string) {
			checkKey(t, newKeyCheck(t, api, mk), key)
		}},
		{"a listing", func(t *testing.T, h *Handler, _, _, _ string) {
			if _, err := refreshListing(context.Background(), h.acct); err != nil {
				t.Fatal(err)
			}
		}},
		{"a 402's balance lookup", func(t *testing.T, h *Handler, _, _, key string) {
			fb := openrouter.InsufficientCredits(false, openrouter.WordingCurrent)
			serve(t, h, failureAnswer(fb, openrouter.EnvelopeOpenAI, nil), "POST", "/api/v1/chat/completions", key)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			emu, api := startEmulator(t)
			mk := emu.NewKey(emulator.KeyOptions{Management: true})
			t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
			emu.NewKey(emulator.KeyOptions{Disabled: true})
			emu.NewKeys(20, emulator.KeyOptions{})
			key := emu.NewKey(emulator.KeyOptions{Limit: f64(5), LimitReset: "daily"})
			h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}", ManagementRate: 100}}
			newHandler(t, &h, api)
			store := linkTestStore(t, &h)
			c.prove(t, &h, api, mk, key)
			waitIdle(t, h.knowledge)
			if !h.acct.schemeProven.Load() {
				t.Fatal("the scheme is not proven")
			}
			if !schemeProofPublished(store) {
				t.Error("the proof was not published to the other replicas")
			}
			// No listing may start (and only the one read for the listing
			// case is there): the reach proven since the proof must make
			// the 404 count.
			waitProbe(h.acct)
			h.acct.listMu.Lock()
			h.acct.listNext = time.Now().Add(time.Hour)
			h.acct.listMu.Unlock()
			deleted := emu.NewKey(emulator.KeyOptions{})
			emu.Delete(deleted)
			before := emu.Count("/keys")
			if got := reasonOf(t, serve(t, &h, refused, "POST", "/api/v1/chat/completions", deleted)); got != "key_not_found" {
				t.Errorf("a deleted key after the proof: reason %q", got)
			}
			if n := emu.Count("/keys") - before; n != 0 {
				t.Errorf("a deleted key after the proof: %d pages listed", n)
			}
		})
	}
}

// schemeProofPublished reports whether the store was given the proof of
// the hash scheme to write.
func schemeProofPublished(s *sharedStore) bool {
	for {
		select {
		case w := <-s.writes:
			if w.key == s.account+sharedHashScheme {
				return true
			}
		default:
			return false
		}
	}
}
