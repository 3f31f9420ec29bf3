package emulator

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// JWTIssuer is the issuer of the account's JWT access tokens. OpenRouter
// also accepts "clerk.openrouter.ai".
const JWTIssuer = "openrouter.ai"

type jwtClaims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
	// Scope is the access token's scope (space-separated); "" for a
	// token without the claim, which no endpoint refuses for its scope.
	Scope string `json:"scope,omitempty"`
}

// jwtHeader is the fixed header of the tokens the emulator signs.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// NewJWT issues a JWT access token of the account that expires at exp: an
// HS256-signed header.payload.signature (base64url) with claims iss, sub,
// iat and exp. OpenRouter accepts such tokens as bearers, for inference
// and GET /key as a normal key, never for the management API.
func (s *Server) NewJWT(exp time.Time) string {
	return s.signJWT(jwtClaims{Issuer: JWTIssuer, Subject: s.userID, IssuedAt: time.Now().Unix(), ExpiresAt: exp.Unix()})
}

// signJWT signs claims with the account's secret and records the token.
func (s *Server) signJWT(c jwtClaims) string {
	claims, _ := json.Marshal(c)
	signingInput := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(claims)
	token := signingInput + "." + base64.RawURLEncoding.EncodeToString(s.sign(signingInput))
	s.mu.Lock()
	s.issued = append(s.issued, token)
	s.mu.Unlock()
	return token
}

func (s *Server) sign(signingInput string) []byte {
	mac := hmac.New(sha256.New, s.jwtSecret)
	mac.Write([]byte(signingInput))
	return mac.Sum(nil)
}

// verifyJWT reports whether token is a JWT this account signed (valid) and
// whether it has expired; for a valid, unexpired one it returns the key it
// stands for: an ordinary inference credential of the default workspace.
// Anything else (another issuer, a bad signature, not a JWT) is not one of
// the account's tokens and is judged as any other bearer.
func (s *Server) verifyJWT(token string) (k *Key, valid, expired bool) {
	header, rest, ok := strings.Cut(token, ".")
	if !ok || header != jwtHeader {
		return nil, false, false
	}
	payload, signature, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, false, false
	}
	sig, err := base64.RawURLEncoding.DecodeString(signature)
	if err != nil || !hmac.Equal(sig, s.sign(header+"."+payload)) {
		return nil, false, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	var c jwtClaims
	if err != nil || json.Unmarshal(raw, &c) != nil || !openrouter.IssuerKnown(c.Issuer) || c.Subject != s.userID {
		return nil, false, false
	}
	exp := time.Unix(c.ExpiresAt, 0)
	if !time.Now().Before(exp) {
		return nil, true, true
	}
	// What GET /key reports for a JWT is not known: the emulator reports
	// no expiry rather than invent one.
	return &Key{
		Secret: token, Name: "JWT access token", WorkspaceID: s.DefaultWorkspace(),
		CreatedAt: time.Unix(c.IssuedAt, 0).UTC(),
	}, true, false
}
