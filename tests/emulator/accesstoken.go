package emulator

// accesstoken.go emulates OpenRouter's access tokens as workload identity
// federation issues them (at most 15 minutes, scope "inference", issuer
// https://openrouter.ai), the JWTs of other issuers that OpenRouter
// rejects, the inference scope it requires, and GET /key's workspace_id of
// a key whose workspace was deleted (null). Access tokens are refused in
// x-api-key (emulator.go, authenticate).

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// AccessTokenOptions describe an access token to issue.
type AccessTokenOptions struct {
	// Lifetime is how long the token lives from now: 0 is
	// openrouter.AccessTokenLifetime, longer is cut to it, negative is a
	// token that has already expired.
	Lifetime time.Duration
	// Scope is the scope claim; "" is openrouter.ScopeInference.
	Scope string
	// NoScope leaves the scope claim out.
	NoScope bool
	// Issuer is the iss claim; "" is openrouter.IssuerOpenRouter. Only
	// OpenRouter's issuers are accepted.
	Issuer string
}

// NewAccessToken issues an access token of the account, signed as NewJWT
// signs, as the token exchange would.
func (s *Server) NewAccessToken(o AccessTokenOptions) string {
	life := min(o.Lifetime, openrouter.AccessTokenLifetime)
	if o.Lifetime == 0 {
		life = openrouter.AccessTokenLifetime
	}
	now := time.Now()
	c := jwtClaims{Issuer: o.Issuer, Subject: s.userID, IssuedAt: now.Unix(), ExpiresAt: now.Add(life).Unix(), Scope: o.Scope}
	if c.Issuer == "" {
		c.Issuer = openrouter.IssuerOpenRouter
	}
	if c.Scope == "" && !o.NoScope {
		c.Scope = openrouter.ScopeInference
	}
	return s.signJWT(c)
}

// NewForeignJWT is a JWT of another issuer (an identity provider's own
// token, say), signed with a key no account of the emulator knows: as
// OpenRouter does, the emulator takes it for no credential.
func NewForeignJWT(issuer string, exp time.Time) string {
	claims, _ := json.Marshal(jwtClaims{Issuer: issuer, Subject: "repo:example/app:ref:refs/heads/main", IssuedAt: time.Now().Unix(), ExpiresAt: exp.Unix()})
	signingInput := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(claims)
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signingInput))
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// lacksInferenceScope reports whether k stands for an access token whose
// scope claim lacks the inference scope: OpenRouter refuses it for
// inference. A token without the claim (NewJWT's) is not refused for it.
func (s *Server) lacksInferenceScope(k *Key) bool {
	if !strings.HasPrefix(k.Secret, jwtHeader+".") {
		return false
	}
	_, rest, _ := strings.Cut(k.Secret, ".")
	payload, _, _ := strings.Cut(rest, ".")
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	var c jwtClaims
	if err != nil || json.Unmarshal(raw, &c) != nil || c.Scope == "" {
		return false
	}
	return !slices.Contains(strings.Fields(c.Scope), openrouter.ScopeInference)
}

// DeleteWorkspace deletes a workspace: its keys go on working, GET /key
// says null for their workspace_id, and no listing shows them.
func (s *Server) DeleteWorkspace(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.workspaces[0].ID == id {
		panic("emulator: the default workspace cannot be deleted")
	}
	ws := s.workspaceByID[id]
	if ws == nil {
		panic("emulator: no workspace " + id)
	}
	delete(s.workspaceByID, id)
	s.workspaces = slices.DeleteFunc(s.workspaces, func(w *workspace) bool { return w.ID == id })
	// Its keys live on where a key of no listed workspace lives: the
	// account's hidden workspace (for the emulator's own account, one
	// made for them), oldest first as Delete expects; its budgets go.
	a := s.accountByID("")
	if a.hidden == nil {
		a.hidden = &workspace{}
	}
	a.hidden.keys = append(a.hidden.keys, ws.keys...)
	slices.SortFunc(a.hidden.keys, func(x, y *Key) int { return cmp.Compare(x.seq, y.seq) })
}

// workspaceOf is GET /key's workspace_id for k: its workspace, null when
// that was deleted. s.mu must be held.
func (s *Server) workspaceOf(k *Key) openrouter.WorkspaceRef {
	if k.AccountID != "" || s.workspaceByID[k.WorkspaceID] != nil {
		return openrouter.WorkspaceRef{Sent: true, ID: k.WorkspaceID}
	}
	return openrouter.WorkspaceRef{Sent: true}
}
