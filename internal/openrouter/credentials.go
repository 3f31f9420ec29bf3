package openrouter

// credentials.go owns what OpenRouter says of the credentials other than
// its keys: the issuers and the scope of its JWT access tokens, their
// longest life, the token exchange that issues them, and GET /key's
// workspace_id, which is null when the key's workspace was deleted.

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// The issuers (the "iss" claim) of the JWT access tokens OpenRouter
// accepts as bearers; it rejects any other. IssuerLegacy is how older
// notes spell the first: a host without a scheme.
const (
	IssuerOpenRouter = "https://openrouter.ai"
	IssuerClerk      = "https://clerk.openrouter.ai"
	IssuerLegacy     = "openrouter.ai"
)

// issuerDomain is the domain of OpenRouter's own issuers.
const issuerDomain = "openrouter.ai"

// ScopeInference is the scope (the "scope" claim) workload identity
// federation gives its access tokens: what the inference endpoints need.
const ScopeInference = "inference"

// AccessTokenLifetime is the longest an access token of workload
// identity federation lives.
const AccessTokenLifetime = 15 * time.Minute

// PathOAuthToken is the token exchange (POST, RFC 8693) that issues
// access tokens for an identity provider's token. It takes that token in
// its body, never as the request's bearer.
const PathOAuthToken = "/oauth/token"

// URLOAuthToken is the token exchange's full URL, for answers that point
// people to it.
const URLOAuthToken = BaseURL + PathOAuthToken

// IssuerKnown reports whether iss is exactly one of OpenRouter's issuers
// (a trailing slash and the host's case aside).
func IssuerKnown(iss string) bool {
	iss = strings.ToLower(strings.TrimSuffix(iss, "/"))
	return iss == IssuerOpenRouter || iss == IssuerClerk || iss == IssuerLegacy || iss == "clerk."+IssuerLegacy
}

// IssuerForeign reports whether iss is certainly not OpenRouter's: a
// non-empty issuer whose host is neither openrouter.ai nor below it. An
// issuer of OpenRouter's domain that is not one of its known issuers is
// not called foreign: OpenRouter may add one.
func IssuerForeign(iss string) bool {
	if iss == "" {
		return false
	}
	host := strings.ToLower(iss)
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	if i := strings.IndexAny(host, "/?#"); i >= 0 {
		host = host[:i]
	}
	if i := strings.LastIndexByte(host, '@'); i >= 0 {
		host = host[i+1:]
	}
	if i := strings.IndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	return host != issuerDomain && !strings.HasSuffix(host, "."+issuerDomain)
}

// WorkspaceRef is GET /key's workspace_id: absent (older answers), the
// id, or null when the key's workspace was deleted.
type WorkspaceRef struct {
	// Sent: the answer has the member.
	Sent bool
	// ID is the workspace's id; "" with Sent: null, the workspace was
	// deleted.
	ID string
}

// Deleted reports whether GET /key says the key's workspace was deleted.
func (w WorkspaceRef) Deleted() bool { return w.Sent && w.ID == "" }

// IsZero reports an absent member (omitzero leaves it out).
func (w WorkspaceRef) IsZero() bool { return !w.Sent }

// UnmarshalJSON reads the id, or null. encoding/json calls it for a
// member that is present, null included. A member of another type is
// taken as absent rather than making the whole answer unreadable.
func (w *WorkspaceRef) UnmarshalJSON(b []byte) error {
	*w = WorkspaceRef{}
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		w.Sent = true
		return nil
	}
	if json.Unmarshal(b, &w.ID) != nil || w.ID == "" {
		*w = WorkspaceRef{}
		return nil
	}
	w.Sent = true
	return nil
}

// MarshalJSON writes the id, or null for a deleted workspace.
func (w WorkspaceRef) MarshalJSON() ([]byte, error) {
	if w.ID == "" {
		return []byte("null"), nil
	}
	return json.Marshal(w.ID)
}
