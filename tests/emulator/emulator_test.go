package emulator

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// The emulator's error bodies are the fact sheet's, byte for byte.
func TestErrorBodiesAreOpenRouters(t *testing.T) {
	past := time.Now().Add(-time.Hour)
	const (
		openAI        = `{"error":{"message":"User not found.","code":401}}`
		messages      = `{"type":"error","error":{"type":"authentication_error","message":"User not found."}}`
		responsesDocs = `{"error":{"code":"server_error","message":"User not found."},"error_type":"authentication"}`
		flat          = `{"message":"User not found.","code":401}`
	)
	for _, c := range []struct {
		name      string
		configure func(*Server)
		want      map[string]string // path: body
	}{
		{"default", func(*Server) {}, map[string]string{
			"/chat/completions": openAI, "/messages": messages, "/responses": responsesDocs,
		}},
		{"responses in the spec's envelope", func(s *Server) { s.ResponsesEnvelope = openrouter.EnvelopeOpenAI }, map[string]string{
			"/chat/completions": openAI, "/messages": messages, "/responses": openAI,
		}},
		{"flat", func(s *Server) { s.FlatErrors = true }, map[string]string{
			"/chat/completions": flat, "/messages": messages, "/responses": responsesDocs,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, base := start(t, c.configure)
			expired := s.NewKey(KeyOptions{ExpiresAt: &past})
			for path, want := range c.want {
				r := call(t, "POST", base+path, expired, `{}`, "Accept-Encoding", "identity")
				if r.status != 401 || string(r.body) != want {
					t.Errorf("%s: %d %s\nwant 401 %s", path, r.status, r.body, want)
				}
			}
			r := call(t, "GET", base+"/key", expired, "")
			if want := c.want["/chat/completions"]; r.status != 401 || string(r.body) != want {
				t.Errorf("GET /key: %d %s, want 401 %s", r.status, r.body, want)
			}
		})
	}

	s, base := start(t)
	for _, c := range []struct{ name, auth, want string }{
		{"no credentials", "", `{"error":{"message":"No cookie auth credentials found","code":401}}`},
		{"no sk-or- prefix", "Bearer not-a-key", `{"error":{"message":"Missing Authentication header","code":401}}`},
	} {
		r := call(t, "POST", base+"/chat/completions", "", chatBody, "Authorization", c.auth)
		if r.status != 401 || string(r.body) != c.want {
			t.Errorf("%s: %d %s, want 401 %s", c.name, r.status, r.body, c.want)
		}
	}
	r := call(t, "GET", base+"/keys", s.NewKey(KeyOptions{}), "")
	if want := `{"error":{"message":"Only management keys can perform this operation","code":403}}`; r.status != 403 || string(r.body) != want {
		t.Errorf("GET /keys with an inference key: %d %s, want 403 %s", r.status, r.body, want)
	}
}

// Every state of a key answers as OpenRouter does: the same 401 for all
// the dead ones, on inference and GET /key alike.
func TestKeyStates(t *testing.T) {
	s, base := start(t)
	past, future := time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	valid := s.NewKey(KeyOptions{Name: "valid", ExpiresAt: &future})
	expired := s.NewKey(KeyOptions{ExpiresAt: &past})
	disabled := s.NewKey(KeyOptions{Disabled: true})
	deleted := s.NewKey(KeyOptions{})
	s.Delete(deleted)
	expiring := s.NewKey(KeyOptions{})
	s.ExpireIn(expiring, 300*time.Millisecond)
	reenabled := s.NewKey(KeyOptions{Disabled: true})
	s.SetDisabled(reenabled, false)
	management := s.NewKey(KeyOptions{Management: true})
	neverIssued := openrouter.KeyPrefix + strings.Repeat("ab", 32)

	for _, c := range []struct {
		name         string
		key          string
		inference    int
		key200       bool
		management   int // GET /keys
		isManagement bool
	}{
		{"valid", valid, 200, true, 403, false},
		{"expiring", expiring, 200, true, 403, false},
		{"re-enabled", reenabled, 200, true, 403, false},
		{"expired", expired, 401, false, 401, false},
		{"disabled", disabled, 401, false, 401, false},
		{"deleted", deleted, 401, false, 401, false},
		{"never issued", neverIssued, 401, false, 401, false},
		{"management", management, 401, true, 200, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := chat(t, base, c.key, "openai/gpt-4o")
			if r.status != c.inference || (c.inference == 401 && r.message() != "User not found.") {
				t.Errorf("chat: %d %s, want %d", r.status, r.body, c.inference)
			}
			r = call(t, "GET", base+"/key", c.key, "")
			if c.key200 {
				var info struct {
					Label        string `json:"label"`
					IsManagement bool   `json:"is_management_key"`
				}
				r.data(t, &info)
				if info.Label != openrouter.Label(c.key) || info.IsManagement != c.isManagement {
					t.Errorf("GET /key: %s", r.body)
				}
			} else if r.status != 401 || r.message() != "User not found." {
				t.Errorf("GET /key: %d %s, want 401 User not found.", r.status, r.body)
			}
			if r := call(t, "GET", base+"/keys", c.key, ""); r.status != c.management {
				t.Errorf("GET /keys: %d, want %d", r.status, c.management)
			}
		})
	}
	time.Sleep(400 * time.Millisecond)
	if r := chat(t, base, expiring, "openai/gpt-4o"); r.status != 401 || r.message() != "User not found." {
		t.Errorf("a key past ExpireIn: %d %s", r.status, r.body)
	}
}

func TestLimitAndUsage(t *testing.T) {
	s, base := start(t)
	management := s.NewKey(KeyOptions{Management: true})
	limited := s.NewKey(KeyOptions{Name: "limited", Limit: ptr(10.0), Usage: 2.5})
	unlimited := s.NewKey(KeyOptions{Name: "unlimited", Usage: 1})

	check := func(key string, limit, remaining *float64, usage float64) {
		t.Helper()
		var info gotRecord
		call(t, "GET", base+"/key", key, "").data(t, &info)
		var records []gotRecord
		call(t, "GET", base+"/keys", management, "").data(t, &records)
		var rec *gotRecord
		for i := range records {
			if records[i].Label == openrouter.Label(key) {
				rec = &records[i]
			}
		}
		if rec == nil {
			t.Fatalf("no record of the key")
		}
		for where, got := range map[string]gotRecord{"GET /key": info, "GET /keys": *rec} {
			if !equalPtr(got.Limit, limit) || !equalPtr(got.LimitRemaining, remaining) || got.Usage != usage {
				t.Errorf("%s: limit %v, remaining %v, usage %v; want %v, %v, %v", where,
					deref(got.Limit), deref(got.LimitRemaining), got.Usage, deref(limit), deref(remaining), usage)
			}
		}
	}
	check(limited, ptr(10.0), ptr(7.5), 2.5)
	check(unlimited, nil, nil, 1)
	s.SetUsage(limited, 4)
	check(limited, ptr(10.0), ptr(6.0), 4)
}

func equalPtr(a, b *float64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// A record's hash is sha256(key), or with OpaqueHashes something else;
// GET /keys/{hash} finds the key either way, in any workspace.
func TestHashes(t *testing.T) {
	for _, opaque := range []bool{false, true} {
		s, base := start(t, func(s *Server) { s.OpaqueHashes = opaque })
		management := s.NewKey(KeyOptions{Management: true})
		other := s.NewWorkspace("Other")
		for _, ws := range []string{"", other} {
			key := s.NewKey(KeyOptions{Name: "k", Workspace: ws})
			var records []gotRecord
			call(t, "GET", base+"/keys?workspace_id="+ws, management, "").data(t, &records)
			rec := records[0]
			sum := sha256.Sum256([]byte(key))
			if isSHA := rec.Hash == hex.EncodeToString(sum[:]); isSHA == opaque || len(rec.Hash) != 64 {
				t.Errorf("opaque=%v: hash %s, sha256(key) %v", opaque, rec.Hash, isSHA)
			}
			var got gotRecord
			call(t, "GET", base+"/keys/"+rec.Hash, management, "").data(t, &got)
			if got.Label != openrouter.Label(key) || got.WorkspaceID == "" || got.WorkspaceID != rec.WorkspaceID {
				t.Errorf("GET /keys/{hash}: %+v", got)
			}
			s.Delete(key)
			if r := call(t, "GET", base+"/keys/"+rec.Hash, management, ""); r.status != 404 || string(r.body) != `{"error":{"message":"Key not found","code":404}}` {
				t.Errorf("deleted key: %d %s", r.status, r.body)
			}
		}
	}
}

// A label twin shares the key's label and nothing else.
func TestLabelTwin(t *testing.T) {
	s, base := start(t)
	key := s.NewKey(KeyOptions{})
	twin := s.LabelTwin(key)
	if twin == key || openrouter.Label(twin) != openrouter.Label(key) || len(twin) != openrouter.KeyLen ||
		!regexp.MustCompile(`^sk-or-v1-[0-9a-f]{64}$`).MatchString(twin) {
		t.Fatalf("twin %q of %q", twin, key)
	}
	if r := chat(t, base, twin, "openai/gpt-4o"); r.status != 401 || r.message() != "User not found." {
		t.Errorf("the twin: %d %s", r.status, r.body)
	}
	// A key that is its own zero-filled twin gets another one.
	zeros := openrouter.KeyPrefix + "abc" + strings.Repeat("0", 58) + "def"
	s.mu.Lock()
	s.addKeyLocked(zeros, KeyOptions{})
	s.mu.Unlock()
	if twin := s.LabelTwin(zeros); twin == zeros || openrouter.Label(twin) != openrouter.Label(zeros) {
		t.Errorf("twin of a zero-filled key: %q", twin)
	}
}

// JWT access tokens work as keys until they expire.
func TestJWT(t *testing.T) {
	s, base := start(t)
	valid := s.NewJWT(time.Now().Add(time.Hour))
	expired := s.NewJWT(time.Now().Add(-time.Second))

	parts := strings.Split(valid, ".")
	if len(parts) != 3 {
		t.Fatalf("not header.payload.signature: %q", valid)
	}
	var header struct{ Alg, Typ string }
	var claims struct {
		Iss, Sub string
		Iat, Exp int64
	}
	for i, v := range []any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(raw, v) != nil {
			t.Fatalf("part %d: %v %s", i, err, raw)
		}
	}
	if sig, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil || len(sig) != sha256.Size {
		t.Errorf("signature: %v, %d bytes", err, len(sig))
	}
	if header.Alg != "HS256" || claims.Iss != "openrouter.ai" || claims.Sub != s.UserID() ||
		claims.Exp-claims.Iat < 3500 || claims.Exp-claims.Iat > 3700 {
		t.Errorf("header %+v, claims %+v", header, claims)
	}

	if r := chat(t, base, valid, "openai/gpt-4o"); r.status != 200 {
		t.Errorf("chat with a valid JWT: %d %s", r.status, r.body)
	}
	if r := call(t, "POST", base+"/messages", valid, `{}`); r.status != 200 {
		t.Errorf("messages with a valid JWT: %d %s", r.status, r.body)
	}
	if r := call(t, "GET", base+"/key", valid, ""); r.status != 200 {
		t.Errorf("GET /key with a valid JWT: %d %s", r.status, r.body)
	}
	if r := call(t, "GET", base+"/keys", valid, ""); r.status != 403 {
		t.Errorf("GET /keys with a JWT: %d %s", r.status, r.body)
	}
	for _, path := range []string{"/chat/completions", "/key"} {
		method := map[string]string{"/key": "GET"}[path]
		if method == "" {
			method = "POST"
		}
		if r := call(t, method, base+path, expired, chatBody); r.status != 401 || string(r.body) != `{"error":{"message":"User not found.","code":401}}` {
			t.Errorf("%s with an expired JWT: %d %s", path, r.status, r.body)
		}
	}

	// Tampered, or signed by another account: not a credential of this one.
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"openrouter.ai","sub":"`+s.UserID()+`","iat":0,"exp":9999999999}`)) + "." + parts[2]
	foreign := New().NewJWT(time.Now().Add(time.Hour))
	for name, token := range map[string]string{"tampered": tampered, "foreign": foreign} {
		if r := chat(t, base, token, "openai/gpt-4o"); r.status != 401 || r.message() != "Missing Authentication header" {
			t.Errorf("%s JWT: %d %s", name, r.status, r.body)
		}
	}

	s2, base2 := start(t, func(s *Server) { s.ExpiredJWTMessage = "Token expired" })
	if r := chat(t, base2, s2.NewJWT(time.Now().Add(-time.Minute)), "openai/gpt-4o"); r.status != 401 || r.message() != "Token expired" {
		t.Errorf("ExpiredJWTMessage: %d %s", r.status, r.body)
	}
	if secrets := s.Secrets(); !contains(secrets, valid) || !contains(secrets, expired) {
		t.Errorf("Secrets() misses the JWTs")
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// /messages takes x-api-key when there is no Authorization header, as
// Anthropic-style clients send it; no other endpoint does.
func TestXAPIKeyOnMessages(t *testing.T) {
	s, base := start(t)
	valid := s.NewKey(KeyOptions{})
	past := time.Now().Add(-time.Hour)
	expired := s.NewKey(KeyOptions{ExpiresAt: &past})
	const messagesUserNotFound = `{"type":"error","error":{"type":"authentication_error","message":"User not found."}}`
	for _, c := range []struct {
		name   string
		path   string
		header []string
		status int
		body   string
	}{
		{"valid", "/messages", []string{"X-Api-Key", valid}, 200, ""},
		{"expired", "/messages", []string{"X-Api-Key", expired}, 401, messagesUserNotFound},
		{"malformed", "/messages", []string{"X-Api-Key", "nope"}, 401, `{"type":"error","error":{"type":"authentication_error","message":"Missing Authentication header"}}`},
		{"neither", "/messages", nil, 401, `{"type":"error","error":{"type":"authentication_error","message":"No cookie auth credentials found"}}`},
		{"Authorization wins", "/messages", []string{"X-Api-Key", valid, "Authorization", "Bearer " + expired}, 401, messagesUserNotFound},
		{"not on chat", "/chat/completions", []string{"X-Api-Key", valid}, 401, `{"error":{"message":"No cookie auth credentials found","code":401}}`},
	} {
		r := call(t, "POST", base+c.path, "", chatBody, c.header...)
		if r.status != c.status || (c.body != "" && string(r.body) != c.body) {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.status, r.body, c.status, c.body)
		}
	}
}

// A provider refusing the user's own provider key: 401 for a key that
// works, with the user_id that shows OpenRouter accepted it.
func TestProviderKeyRejected(t *testing.T) {
	s, base := start(t)
	key := s.NewKey(KeyOptions{})
	r := chat(t, base, key, ModelProviderKeyRejected)
	want := `{"error":{"message":"Provider returned error","code":401,"metadata":{"raw":"invalid x-api-key","provider_name":"Anthropic"}},"user_id":"` + s.UserID() + `"}`
	if r.status != 401 || string(r.body) != want {
		t.Errorf("got  %d %s\nwant 401 %s", r.status, r.body, want)
	}
	if !regexp.MustCompile(`^user_[0-9A-Za-z]{27}$`).MatchString(s.UserID()) {
		t.Errorf("user id %q", s.UserID())
	}
	if r := call(t, "GET", base+"/key", key, ""); r.status != 200 {
		t.Errorf("GET /key of the key: %d", r.status)
	}
}

// FailNextRequests: transient "User not found." for inference only.
func TestFailNextRequests(t *testing.T) {
	s, base := start(t)
	key := s.NewKey(KeyOptions{})
	other := s.NewKey(KeyOptions{})
	s.FailNextRequests(key, 3)
	if r := chat(t, base, key, "openai/gpt-4o"); r.status != 401 || string(r.body) != `{"error":{"message":"User not found.","code":401}}` {
		t.Errorf("1st: %d %s", r.status, r.body)
	}
	if r := call(t, "GET", base+"/key", key, ""); r.status != 200 {
		t.Errorf("GET /key during the failures: %d %s", r.status, r.body)
	}
	if r := chat(t, base, other, "openai/gpt-4o"); r.status != 200 {
		t.Errorf("another key: %d", r.status)
	}
	if r := call(t, "POST", base+"/messages", key, `{}`); r.status != 401 || r.message() != "User not found." {
		t.Errorf("2nd (/messages): %d %s", r.status, r.body)
	}
	if r := chat(t, base, key, "openai/gpt-4o"); r.status != 401 {
		t.Errorf("3rd: %d", r.status)
	}
	for i := 0; i < 2; i++ {
		if r := chat(t, base, key, "openai/gpt-4o"); r.status != 200 {
			t.Errorf("after the failures: %d %s", r.status, r.body)
		}
	}
}

// Count counts per endpoint, /workspaces and /auth/key (as /key) included.
func TestCount(t *testing.T) {
	s, base := start(t)
	m := s.NewKey(KeyOptions{Management: true})
	call(t, "GET", base+"/workspaces", m, "")
	call(t, "GET", base+"/workspaces", "", "")
	call(t, "GET", base+"/key", m, "")
	call(t, "GET", base+"/auth/key", m, "")
	call(t, "GET", base+"/keys/abc", m, "")
	if got := []int{s.Count("/workspaces"), s.Count("/key"), s.Count("/keys/{hash}"), s.Count("")}; got[0] != 2 || got[1] != 2 || got[2] != 1 || got[3] != 5 {
		t.Errorf("counts /workspaces, /key, /keys/{hash}, all: %v", got)
	}
}

// JSON is compressed as the client accepts it, brotli first.
func TestCompression(t *testing.T) {
	s, base := start(t)
	key := s.NewKey(KeyOptions{})
	plain := call(t, "GET", base+"/models", "", "")
	if plain.header.Get("Content-Encoding") != "" || !json.Valid(plain.body) {
		t.Fatalf("identity: %v", plain.header)
	}
	for accept, want := range map[string]string{"gzip, br": "br", "gzip": "gzip", "br;q=0, gzip": "gzip"} {
		for _, r := range []reply{call(t, "GET", base+"/models", "", "", "Accept-Encoding", accept),
			call(t, "GET", base+"/key", s.LabelTwin(key), "", "Accept-Encoding", accept)} {
			if got := r.header.Get("Content-Encoding"); got != want {
				t.Errorf("Accept-Encoding %q: Content-Encoding %q, want %q", accept, got, want)
				continue
			}
			var rd io.Reader = brotli.NewReader(bytes.NewReader(r.body))
			if want == "gzip" {
				zr, err := gzip.NewReader(bytes.NewReader(r.body))
				if err != nil {
					t.Fatal(err)
				}
				rd = zr
			}
			if b, err := io.ReadAll(rd); err != nil || !json.Valid(b) {
				t.Errorf("%s body: %v %.100s", want, err, b)
			}
		}
	}
}
