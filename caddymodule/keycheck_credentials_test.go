package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// The key check names the key's workspace from GET /key's workspace_id:
// by its name when the management key reads the account's workspaces,
// by its id without one, and says when it was deleted. The free-model
// row comes from GET /key alone, without a management key.
func TestKeyCheckWorkspaceFromGETKey(t *testing.T) {
	emu, api := startEmulator(t)
	mgmt := emu.NewKey(emulator.KeyOptions{Management: true})
	prod := emu.NewWorkspace("Production")
	gone := emu.NewWorkspace("Old team")
	inProd := emu.NewKey(emulator.KeyOptions{Workspace: prod})
	orphan := emu.NewKey(emulator.KeyOptions{Workspace: gone})
	emu.DeleteWorkspace(gone)
	emu.SetFreeRequestsUsed("", 7)

	for _, c := range []struct {
		name, mk, key   string
		workspace, id   string
		deleted         bool
		pageWorkspace   string
		freeUsedAtLeast int
	}{
		{"named with a management key", mgmt, inProd, "Production", prod, false, "Production", 7},
		{"by id without one", "", inProd, prod, prod, false, prod, 7},
		{"deleted, with a management key", mgmt, orphan, "", "", true, "deleted", 7},
		{"deleted, without one", "", orphan, "", "", true, "deleted", 7},
	} {
		t.Run(c.name, func(t *testing.T) {
			kc := newKeyCheck(t, api, c.mk)
			rep, rec := checkKey(t, kc, c.key)
			if rec.Code != 200 || rep.Status != "valid" || rep.Key == nil {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			k := rep.Key
			if k.Workspace != c.workspace || k.WorkspaceID != c.id || k.WorkspaceDeleted != c.deleted {
				t.Errorf("workspace %q id %q deleted %v", k.Workspace, k.WorkspaceID, k.WorkspaceDeleted)
			}
			if f := k.FreeModelRequests; f == nil || f.Used < c.freeUsedAtLeast || f.Limit != openrouter.FreeDailyHighBalance {
				t.Errorf("free-model requests without asking the management API: %+v", f)
			}
			var shown string
			for _, f := range keyFacts(k, time.Now()) {
				if f.Name == "Workspace" {
					shown = f.text()
				}
			}
			if !strings.Contains(shown, c.pageWorkspace) {
				t.Errorf("the page says workspace %q", shown)
			}
		})
	}

	// A key of another account: its workspace is not among the management
	// key's account's, and is named by its id only.
	other, otherAPI := startEmulator(t)
	theirs := other.NewWorkspace("Their secret project")
	kc := newKeyCheck(t, otherAPI, mgmt)
	rep, _ := checkKey(t, kc, other.NewKey(emulator.KeyOptions{Workspace: theirs}))
	if rep.Key == nil || rep.Key.Workspace != theirs {
		t.Errorf("another account's key: %+v", rep.Key)
	}
}

// The key check judges access tokens as the gateway does: another
// issuer's JWT is never sent to OpenRouter; OpenRouter's own are asked
// about, and an expired one is said expired by its claim.
func TestKeyCheckAccessTokens(t *testing.T) {
	emu, api := startEmulator(t)
	kc := newKeyCheck(t, api, "")
	before := emu.Count("/key")
	rep, rec := checkKey(t, kc, emulator.NewForeignJWT("https://token.actions.githubusercontent.com", time.Now().Add(time.Hour)))
	if rec.Code != 200 || rep.Status != string(reasonNotOpenRouterToken) || !strings.Contains(rep.Message, "token.actions.githubusercontent.com") || rep.KeyUnavailable == "" {
		t.Errorf("another issuer's token: %d %s", rec.Code, rec.Body)
	}
	if emu.Count("/key") != before {
		t.Error("another issuer's token was sent to OpenRouter")
	}
	rep, _ = checkKey(t, kc, emu.NewAccessToken(emulator.AccessTokenOptions{}))
	if rep.Status != "valid" || rep.Key == nil || rep.Key.WorkspaceID != emu.DefaultWorkspace() {
		t.Errorf("a working access token: %+v %+v", rep, rep.Key)
	}
	rep, _ = checkKey(t, kc, emu.NewAccessToken(emulator.AccessTokenOptions{Lifetime: -time.Minute}))
	if rep.Status != string(reasonTokenExpired) || !strings.Contains(rep.Message, "the token says it expired") || emu.Count("/key") == before {
		t.Errorf("an expired access token: %+v", rep)
	}
}
