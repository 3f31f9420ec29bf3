package caddymodule

// accesstoken.go owns what the claims of a refused JWT explain (issue 26,
// item 5): OpenRouter accepts JWT access tokens of its own issuers, as
// Authorization bearers only, while they have not expired and when they
// carry the scope the endpoint needs. The claims are unverified: every
// sentence says what the token says, and the only answer given without
// asking OpenRouter is for a token of another issuer on an inference
// request, which OpenRouter rejects whatever else the token holds. The
// reasons' entries are in reasons.go; the claims are read by
// credential.go.

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// forRequest notes what of the request a JWT's reasons depend on.
func (c credential) forRequest(r *http.Request) credential {
	if c.kind == credJWT {
		c.forInference = isInference(r)
	}
	return c
}

// isInference reports whether r is an inference request: a POST to
// neither a management path nor the token exchange (which takes an
// identity provider's token in its body, and whose handling of a bearer
// is not known).
func isInference(r *http.Request) bool {
	return spendsCredits(r) && !strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), openrouter.PathOAuthToken)
}

// claimsVerdict is what a refused JWT's own claims explain, the most
// fundamental first: a token of another issuer (nothing about it can make
// OpenRouter take it); an access token sent in x-api-key; an expired
// token; an OpenRouter access token without the inference scope. f.body
// is nil at the edge and in the key check: there only another issuer's
// token on an inference request, and an expired token, are told.
func claimsVerdict(f refusal) verdict {
	if !f.msg.RefusesCredential() || f.cred.kind != credJWT {
		return verdict{}
	}
	cl, ok := jwtClaimsOf(f.cred.token)
	if !ok {
		return verdict{}
	}
	expired := cl.hasExp && !f.now.Before(cl.exp)
	switch {
	case cl.hasIssuer && openrouter.IssuerForeign(cl.issuer) && (f.body != nil || f.cred.forInference):
		return verdict{reason: reasonNotOpenRouterToken, claims: &cl}
	case f.cred.viaAPIKey && f.body != nil:
		v := verdict{reason: reasonTokenInAPIKey, claims: &cl}
		if expired {
			v.at = cl.exp
		}
		return v
	case expired:
		return verdict{reason: reasonTokenExpired, at: cl.exp, claims: &cl}
	case f.body != nil && f.cred.forInference && cl.hasIssuer && openrouter.IssuerKnown(cl.issuer) &&
		cl.hasScope && !slices.Contains(cl.scopes, openrouter.ScopeInference):
		return verdict{reason: reasonTokenScope, claims: &cl}
	}
	return verdict{}
}

// decideByClaims is the decide of the entries claimsVerdict gives.
func decideByClaims(r reason) func(f refusal) (verdict, bool) {
	return func(f refusal) (verdict, bool) {
		v := claimsVerdict(f)
		return v, v.reason == r
	}
}

// The sentences of the access-token reasons.

func notOpenRouterTokenSentence(v verdict) string {
	by := "another issuer (its iss claim is not repeated here)"
	if v.claims != nil {
		if iss, ok := shownClaim(v.claims.issuer, false); ok {
			by = `"` + iss + `"`
		}
	}
	return "Not an OpenRouter access token: the token says it was issued by " + by +
		`, and OpenRouter accepts access tokens only from its own issuers (` + openrouter.IssuerOpenRouter + ", " + openrouter.IssuerClerk +
		`). Exchange your identity provider's token for an OpenRouter access token at ` + openrouter.URLOAuthToken +
		`, or use an OpenRouter key (` + openrouter.URLKeys + `).`
}

func tokenInAPIKeySentence(v verdict) string {
	s := `OpenRouter does not accept access tokens in x-api-key, only OpenRouter keys: send this token as "Authorization: Bearer <token>" instead.`
	if !v.at.IsZero() {
		s += " The token also says it expired at " + v.at.UTC().Format(time.RFC3339) + " (its exp claim): get a new one first."
	}
	return s
}

func tokenExpiredSentence(v verdict) string {
	s := "Token expired: the token says it expired at " + v.at.UTC().Format(time.RFC3339) + " (its exp claim)."
	// A token of workload identity federation: OpenRouter's issuer and a
	// scope (a sign-in token has none).
	if v.claims != nil && v.claims.hasIssuer && openrouter.IssuerKnown(v.claims.issuer) && v.claims.hasScope {
		return s + " OpenRouter's access tokens live at most " + minutes(openrouter.AccessTokenLifetime) +
			": get a new one (" + openrouter.URLOAuthToken + ") before each expires."
	}
	return s + " Get a new access token."
}

func tokenScopeSentence(v verdict) string {
	says := "its scope claim does not include it"
	if v.claims != nil {
		switch scope, ok := shownClaim(strings.Join(v.claims.scopes, " "), true); {
		case len(v.claims.scopes) == 0:
			says = "the token says it has no scope"
		case ok:
			says = `the token says its scope is "` + scope + `"`
		}
	}
	return `Access token without the "` + openrouter.ScopeInference + `" scope: ` + says +
		`, and OpenRouter takes access tokens for inference only with that scope. Request a token with scope "` +
		openrouter.ScopeInference + `" (` + openrouter.URLOAuthToken + `).`
}

// minutes is a duration of whole minutes in words.
func minutes(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Minute), 10) + " minutes"
}
