package caddymodule

import (
	"context"
	"testing"
	"time"

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
