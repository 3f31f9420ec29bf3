package integration

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// Attacks and shapes that used to make the gateway say something false.
// Every answer here goes through the official openai-go client.

// A never-issued key forged from a real key's public label.
func TestForgedLabelTwin(t *testing.T) {
	t.Run("hash scheme unproven: a label match says so, and is never kept", func(t *testing.T) {
		e := start(t, options{management: true, emulator: func(s *emulator.Server) { s.OpaqueHashes = true }})
		past := time.Now().Add(-time.Hour)
		disabled := e.emu.NewKey(emulator.KeyOptions{Disabled: true})
		expired := e.emu.NewKey(emulator.KeyOptions{ExpiresAt: &past})
		for _, c := range []struct{ real, reason string }{{disabled, "key_disabled"}, {expired, "key_expired"}} {
			twin := e.emu.LabelTwin(c.real)
			remember(twin)
			_, err := chat(gatewayBase, twin)
			ke := asKeyError(t, err)
			if ke.reason != c.reason || ke.matchedBy != "label" || !strings.Contains(ke.message, "matched by label only") {
				t.Errorf("twin of a %s key: %+v", c.reason, ke)
			}
			// Never stored as a fact: the next request goes upstream again,
			// never answered at the edge.
			edge := metric(t, `caddy_openrouter_keys_edge_answers_total{reason="`+c.reason+`"}`)
			_, err = chat(gatewayBase, twin)
			if ke := asKeyError(t, err); ke.edge || metric(t, `caddy_openrouter_keys_edge_answers_total{reason="`+c.reason+`"}`) != edge {
				t.Errorf("a label match was answered at the edge: %+v", ke)
			}
			// The key check says it matched by label, and unlocks nothing.
			rep := keyCheck(t, twin)
			if rep.Status != c.reason || rep.MatchedBy != "label" || rep.Credits != nil {
				t.Errorf("key check of the twin: %+v", rep)
			}
		}
	})
	t.Run("hash scheme proven: a twin is not in the account", func(t *testing.T) {
		e := start(t, options{management: true})
		disabled := e.emu.NewKey(emulator.KeyOptions{Disabled: true})
		// Any key found by its hash proves the scheme.
		if _, err := chat(gatewayBase, disabled); asKeyError(t, err).reason != "key_disabled" {
			t.Fatal("the disabled key itself is not explained")
		}
		twin := e.emu.LabelTwin(disabled)
		remember(twin)
		_, err := chat(gatewayBase, twin)
		if ke := asKeyError(t, err); ke.reason != "key_not_found" || ke.matchedBy != "" {
			t.Errorf("twin with the scheme proven: %+v", ke)
		}
		if rep := keyCheck(t, twin); rep.Status != "key_not_found" || rep.Credits != nil {
			t.Errorf("key check of the twin: %+v", rep)
		}
	})
}

// A key of another workspace is found; absence is claimed only when every
// workspace was listed (by a listing started after the key was first
// seen: the deleted key's refusal starts it).
func TestWorkspaces(t *testing.T) {
	for _, opaque := range []bool{false, true} {
		t.Run(map[bool]string{false: "sha256 hashes", true: "opaque hashes"}[opaque], func(t *testing.T) {
			e := start(t, options{management: true, emulator: func(s *emulator.Server) { s.OpaqueHashes = opaque }})
			research := e.emu.NewWorkspace("Research")
			disabled := e.emu.NewKey(emulator.KeyOptions{Workspace: research, Disabled: true})
			deleted := e.emu.NewKey(emulator.KeyOptions{Workspace: research})
			e.emu.Delete(deleted)
			_, err := chat(gatewayBase, deleted)
			if ke := asKeyError(t, err); ke.reason != "key_not_found" || !strings.Contains(ke.message, "any workspace") {
				t.Errorf("deleted key of another workspace: %+v", ke)
			}
			_, err = chat(gatewayBase, disabled)
			if ke := asKeyError(t, err); ke.reason != "key_disabled" {
				t.Errorf("disabled key of another workspace: %+v", ke)
			}
			if !opaque {
				if rep := keyCheck(t, disabled); rep.Key == nil || rep.Key.Workspace != "Research" {
					t.Errorf("the key check does not name the workspace: %+v", rep.Key)
				}
			}
		})
	}
	t.Run("workspaces cannot be listed", func(t *testing.T) {
		e := start(t, options{management: true})
		e.emu.SetFault("/workspaces", emulator.FaultStatus500)
		deleted := e.emu.NewKey(emulator.KeyOptions{})
		e.emu.Delete(deleted)
		_, err := chat(gatewayBase, deleted)
		if ke := asKeyError(t, err); ke.reason == "key_not_found" {
			t.Errorf("absence claimed without every workspace: %+v", ke)
		}
	})
}

// Offset paging shifts when keys come and go while it is read: a listing
// that never holds still proves no absence.
func TestShiftingListing(t *testing.T) {
	e := start(t, options{management: true, emulator: func(s *emulator.Server) { s.OpaqueHashes = true }})
	e.emu.NewKeys(3*emulator.PageSize, emulator.KeyOptions{})
	deleted := e.emu.NewKey(emulator.KeyOptions{})
	e.emu.Delete(deleted)
	e.emu.OnListPage(func(_ string, offset int) {
		if offset > 0 {
			e.emu.NewKey(emulator.KeyOptions{}) // shifts every later page
		}
	})
	_, err := chat(gatewayBase, deleted)
	if ke := asKeyError(t, err); ke.reason == "key_not_found" {
		t.Errorf("absence claimed from a listing that shifted: %+v", ke)
	}
}

// OpenRouter accepted the key; a provider refused its own credentials.
func TestProviderKeyRejected(t *testing.T) {
	e := start(t, options{management: true})
	key := e.emu.NewKey(emulator.KeyOptions{})
	c := client(gatewayBase, key)
	_, err := c.Chat.Completions.New(context.Background(), chatParams(emulator.ModelProviderKeyRejected))
	ke := asKeyError(t, err)
	if ke.reason != "provider_key_rejected" || ke.message != "Provider returned error" {
		t.Errorf("%+v", ke)
	}
	var apiErr *openai.Error
	errors.As(err, &apiErr)
	var inner struct { // the SDK's error is the envelope's "error" object
		Metadata map[string]any `json:"metadata"`
	}
	if json.Unmarshal([]byte(apiErr.RawJSON()), &inner); inner.Metadata["provider_name"] != "Anthropic" || inner.Metadata["raw"] == nil {
		t.Errorf("the provider's metadata is lost: %s", apiErr.RawJSON())
	}
}

// A transient "User not found." for a key that works says so.
func TestTransientRefusal(t *testing.T) {
	e := start(t, options{management: true})
	key := e.emu.NewKey(emulator.KeyOptions{})
	e.emu.FailNextRequests(key, 1)
	_, err := chat(gatewayBase, key)
	if ke := asKeyError(t, err); ke.reason != "key_valid_retry" || !strings.Contains(ke.message, "retry") {
		t.Errorf("%+v", ke)
	}
	if _, err := chat(gatewayBase, key); err != nil {
		t.Errorf("the retry failed: %v", err)
	}
}

// A management key that was deleted or disabled is what it is, not "a
// management key".
func TestDeadManagementKey(t *testing.T) {
	e := start(t, options{management: true})
	deleted := e.emu.NewKey(emulator.KeyOptions{Management: true})
	disabled := e.emu.NewKey(emulator.KeyOptions{Management: true})
	// The gateway learns that both are management keys (a management call
	// through it works, and it asks GET /key in the background)...
	for _, k := range []string{deleted, disabled} {
		before := metric(t, `caddy_openrouter_keys_lookups_total{endpoint="key",outcome="ok"}`)
		if resp, _ := raw(t, "GET", gatewayBase+"/key", k, ""); resp.StatusCode != 200 {
			t.Fatalf("GET /key with a management key: %d", resp.StatusCode)
		}
		waitFor(t, "the key lookup", func() bool {
			return metric(t, `caddy_openrouter_keys_lookups_total{endpoint="key",outcome="ok"}`) > before
		})
	}
	time.Sleep(50 * time.Millisecond)
	// ...then one is deleted and the other disabled.
	e.emu.Delete(deleted)
	e.emu.SetDisabled(disabled, true)
	for _, c := range []struct{ key, want string }{{deleted, "key_not_found"}, {disabled, "key_disabled"}} {
		_, err := chat(gatewayBase, c.key)
		if ke := asKeyError(t, err); ke.reason != c.want {
			t.Errorf("gateway: %s: %+v", c.want, ke)
		}
		if rep := keyCheck(t, c.key); rep.Status != c.want {
			t.Errorf("key check: %s: %q", c.want, rep.Status)
		}
	}
}

// A misconfigured upstream is loud: a warning at provision, and one when
// GET /key does not answer as OpenRouter does.
func TestMisconfiguredUpstreamIsLoud(t *testing.T) {
	e := start(t, options{})
	e.reload("upstream " + e.upstream.URL) // the origin, without /api/v1
	key := e.emu.NewKey(emulator.KeyOptions{})
	for i := 0; i < 3; i++ {
		_, _ = chat(gatewayBase, key)
	}
	for _, want := range []string{"upstream does not end in /api/v1", "GET /key on the upstream did not answer as OpenRouter does"} {
		waitFor(t, "the warning "+want, func() bool {
			logs, err := os.ReadFile(logPath)
			return err == nil && strings.Contains(string(logs), want)
		})
	}
}

// keyCheckReport is the part of the key check's answer these tests read.
type keyCheckReport struct {
	Status    string `json:"status"`
	MatchedBy string `json:"matched_by"`
	Key       *struct {
		Workspace string `json:"workspace"`
		Name      string `json:"name"`
	} `json:"key"`
	Credits *struct {
		Remaining float64 `json:"remaining"`
	} `json:"credits"`
}

// keyCheck asks the key check through Caddy, as the JSON API.
func keyCheck(t *testing.T, key string) keyCheckReport {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"key": key})
	resp, body := raw(t, "POST", strings.TrimSuffix(gatewayBase, "/api/v1")+"/keycheck", "", string(b))
	var rep keyCheckReport
	if resp.StatusCode != 200 || json.Unmarshal(body, &rep) != nil {
		t.Fatalf("key check: %d %s", resp.StatusCode, body)
	}
	return rep
}
