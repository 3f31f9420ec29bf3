package caddymodule

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
)

func TestRewriteKeepsTheEnvelope(t *testing.T) {
	exp := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	expired := verdict{reason: reasonExpired, at: exp}
	cases := []struct {
		name, in, want string
	}{
		{"nested, byte-exact upstream body", userNotFound,
			`{"error":{"message":"Key expired. It expired at 2026-11-20T10:00:00Z; an expiry cannot be extended, create a new key.","metadata":{"reason":"key_expired","expires_at":"2026-11-20T10:00:00Z"},"code":401}}`},
		{"nested with other members", `{"error":{"code":401,"message":"User not found.","metadata":{"x":1}},"user_id":"u1","openrouter_metadata":{"a":[1,2]}}`,
			`{"error":{"code":401,"message":"Key expired. It expired at 2026-11-20T10:00:00Z; an expiry cannot be extended, create a new key.","metadata":{"x":1,"reason":"key_expired","expires_at":"2026-11-20T10:00:00Z"}},"user_id":"u1","openrouter_metadata":{"a":[1,2]}}`},
		{"flat", `{"message":"User not found.","code":401}`,
			`{"message":"Key expired. It expired at 2026-11-20T10:00:00Z; an expiry cannot be extended, create a new key.","metadata":{"reason":"key_expired","expires_at":"2026-11-20T10:00:00Z"},"code":401}`},
		{"messages", `{"type":"error","error":{"type":"authentication_error","message":"User not found."}}`,
			`{"type":"error","error":{"type":"authentication_error","message":"Key expired. It expired at 2026-11-20T10:00:00Z; an expiry cannot be extended, create a new key.","metadata":{"reason":"key_expired","expires_at":"2026-11-20T10:00:00Z"}}}`},
		{"responses", `{"error":{"code":"server_error","message":"User not found."},"error_type":"authentication"}`,
			`{"error":{"code":"server_error","message":"Key expired. It expired at 2026-11-20T10:00:00Z; an expiry cannot be extended, create a new key.","metadata":{"reason":"key_expired","expires_at":"2026-11-20T10:00:00Z"}},"error_type":"authentication"}`},
		{"null metadata", `{"error":{"message":"User not found.","code":401,"metadata":null}}`,
			`{"error":{"message":"Key expired. It expired at 2026-11-20T10:00:00Z; an expiry cannot be extended, create a new key.","code":401,"metadata":{"reason":"key_expired","expires_at":"2026-11-20T10:00:00Z"}}}`},
	}
	for _, c := range cases {
		eb, ok := errbody.Parse([]byte(c.in))
		if !ok || eb.Message() != "User not found." {
			t.Fatalf("%s: not parsed", c.name)
		}
		got, ok := rewrite(eb, expired)
		if !ok || string(got) != c.want {
			t.Errorf("%s:\n got  %s\n want %s", c.name, got, c.want)
		}
	}
	eb, _ := errbody.Parse([]byte(userNotFound))
	if got, _ := rewrite(eb, verdict{reason: reasonDisabled}); strings.Contains(string(got), "expires_at") || !strings.Contains(string(got), `"reason":"key_disabled"`) {
		t.Errorf("disabled: %s", got)
	}
}

// What each verdict adds, and what it leaves alone.
func TestRewriteVerdictMembers(t *testing.T) {
	exp := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	byok := `{"error":{"message":"Provider returned error","code":401,"metadata":{"raw":"invalid x-api-key","provider_name":"Anthropic"}},"user_id":"user_1"}`
	for _, c := range []struct {
		name, in string
		v        verdict
		want     string
	}{
		{"label match says so", userNotFound, verdict{reason: reasonDisabled, byLabel: true},
			`"metadata":{"reason":"key_disabled","matched_by":"label"}`},
		{"token expired", userNotFound, verdict{reason: reasonTokenExpired, at: exp},
			`"metadata":{"reason":"token_expired","expires_at":"2026-11-20T10:00:00Z"}`},
		{"another provider's key", userNotFound, verdict{reason: reasonNotOpenRouterKey, provider: 1},
			`"metadata":{"reason":"not_openrouter_key","looks_like":"openai"}`},
		{"provider rejected keeps the message and the provider", byok, verdict{reason: reasonProviderRejected},
			`{"error":{"message":"Provider returned error","code":401,"metadata":{"raw":"invalid x-api-key","provider_name":"Anthropic","reason":"provider_key_rejected"}},"user_id":"user_1"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			eb, ok := errbody.Parse([]byte(c.in))
			if !ok {
				t.Fatal("not parsed")
			}
			got, ok := rewrite(eb, c.v)
			if !ok || !strings.Contains(string(got), c.want) {
				t.Errorf("got %s, want it to contain %s", got, c.want)
			}
		})
	}
}

// Defect 7: metadata that writes a member twice is kept byte for byte, so
// adding the verdict's members loses nothing; only a member the verdict
// sets, written twice, makes the body uneditable.
func TestRewriteKeepsRepeatedMetadataMembers(t *testing.T) {
	in := `{"error":{"message":"User not found.","code":401,"metadata":{"a":1,"a":2,"provider":"x"}}}`
	want := `{"error":{"message":"Key disabled. Re-enable it in the key settings or use another key.","code":401,"metadata":{"a":1,"a":2,"provider":"x","reason":"key_disabled"}}}`
	eb, ok := errbody.Parse([]byte(in))
	if !ok {
		t.Fatal("not parsed")
	}
	if got, ok := rewrite(eb, verdict{reason: reasonDisabled}); !ok || string(got) != want {
		t.Errorf("got %s (%v)\nwant %s", got, ok, want)
	}
	twice := `{"error":{"message":"User not found.","code":401,"metadata":{"reason":"a","reason":"b"}}}`
	eb, ok = errbody.Parse([]byte(twice))
	if !ok {
		t.Fatal("not parsed")
	}
	if got, ok := rewrite(eb, verdict{reason: reasonDisabled}); ok {
		t.Errorf("reason written twice, rewritten to %s", got)
	}
}

// FuzzExplain: any bytes under any declared encoding either are refused or
// become a valid JSON object with the verdict in it; never a panic.
func FuzzExplain(f *testing.F) {
	f.Add([]byte(userNotFound), "")
	f.Add(encode(f, "gzip", []byte(userNotFound)), "gzip")
	f.Add(encode(f, "br", []byte(`{"message":"User not found.","code":401}`)), "br")
	f.Add(encode(f, "zstd", []byte(userNotFound)), "zstd")
	f.Add(encode(f, "deflate", []byte(userNotFound)), "deflate")
	f.Add(encode(f, "gzip", bytes.Repeat([]byte("0"), 1<<20)), "gzip")
	f.Add([]byte(`{"error":{"message":"User not found.","metadata":{"reason":1}}}`), "identity")
	f.Add([]byte(`{"a":{"b":[{"c":"\u0000"}]},"message":"x"}`), "")
	f.Fuzz(func(t *testing.T, body []byte, enc string) {
		decoded, err := errbody.Decode(body, enc)
		if err != nil {
			return
		}
		if len(decoded) > errbody.HoldLimit {
			t.Fatalf("decoded %d bytes past the cap", len(decoded))
		}
		eb, ok := errbody.Parse(decoded)
		if !ok {
			return
		}
		out, ok := rewrite(eb, verdict{reason: reasonExpired, at: time.Unix(1700000000, 0)})
		if !ok {
			return // metadata it cannot edit: passed unchanged
		}
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("rewrite of %q is not JSON: %v\n%s", decoded, err, out)
		}
		if !bytes.Contains(out, []byte(`"reason":"key_expired"`)) {
			t.Fatalf("rewrite lacks the reason: %s", out)
		}
	})
}
