package caddymodule

// rewrite.go owns what a verdict puts in a held body: its sentence (see
// verdict.message) and the members it sets in "metadata". Parsing and
// editing the body, in whichever envelope it came, is package errbody's.

import (
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
)

// rewrite renders the body with the verdict: the message replaced (kept
// for provider_key_rejected) and "reason" (and what else the verdict
// knows) set in "metadata", every other member kept as it was. ok is false
// when the body cannot be edited without losing something (see
// errbody.Body.Edit); such a body passes unchanged.
func rewrite(eb *errbody.Body, v verdict) (out []byte, ok bool) {
	var members [12]errbody.Member
	return eb.Edit(v.message(), v.appendMembers(members[:0])...)
}

// appendMembers appends what the verdict sets in "metadata", in order:
// "reason", then the members its entry declares that the verdict has.
func (v verdict) appendMembers(members []errbody.Member) []errbody.Member {
	members = append(members, errbody.Text("reason", string(v.reason)))
	for _, m := range v.entry().members {
		members = m.append(members, v)
	}
	return members
}

// metaMember is a member of "metadata" that a reason adds beside
// "reason"; entries declare theirs.
type metaMember uint8

const (
	// metaExpiresAt is expires_at: when the key or token expired, RFC
	// 3339 in UTC.
	metaExpiresAt metaMember = iota + 1
	// metaLooksLike is looks_like: the provider whose key the token
	// looks like.
	metaLooksLike
	// metaMatchedBy is matched_by, "label", when the fact comes from the
	// records that share the key's label; absent otherwise.
	metaMatchedBy
	// The members of the 402, 403 and 429 reasons, each present only when
	// the body or the evidence shows it (limitFacts): scope, window;
	// limit, spent and remaining (credits of a key's cap, requests of the
	// free-model allowance, USD of a workspace budget's limit);
	// resets_at (RFC 3339 UTC) or never_resets; requested_tokens and
	// affordable_tokens of a 402; balance (GET /credits); provider.
	metaScope
	metaWindow
	metaLimit
	metaSpent
	metaRemaining
	metaResetsAt
	metaNeverResets
	metaRequestedTokens
	metaAffordableTokens
	metaBalance
	metaProvider

	// The members of the policy 403s (policy.go), each present only when
	// the body shows it: model; categories (moderation); credits_charged
	// (false, when the body says no credits were charged); guardrail (the
	// rule: patterns, allowlist, budget); alternatives (the models
	// OpenRouter names instead); likely_cause (a Terms of Service 403's
	// likely, unconfirmed cause).
	metaModel
	metaCategories
	metaCreditsCharged
	metaGuardrail
	metaAlternatives
	metaLikelyCause
	// metaFault is fault: whose fault a provider's error is, as far as
	// the body shows ("request", "provider", "own_provider_key",
	// "region", "provider_policy", "unknown"; issue 26).
	metaFault
)

// name is the member's name in "metadata".
func (m metaMember) name() string {
	switch m {
	case metaExpiresAt:
		return "expires_at"
	case metaLooksLike:
		return "looks_like"
	case metaMatchedBy:
		return "matched_by"
	case metaFault:
		return "fault"
	}
	if n, ok := policyMemberName(m); ok {
		return n
	}
	if n := modelMemberName(m); n != "" {
		return n
	}
	return limitMemberNames[m-metaScope]
}

var limitMemberNames = [...]string{"scope", "window", "limit", "spent", "remaining", "resets_at", "never_resets",
	"requested_tokens", "affordable_tokens", "balance", "provider"}

// append appends the member with v's value, when v has one.
func (m metaMember) append(members []errbody.Member, v verdict) []errbody.Member {
	switch m {
	case metaExpiresAt:
		return append(members, errbody.Text(m.name(), v.at.UTC().Format(time.RFC3339)))
	case metaLooksLike:
		return append(members, errbody.Text(m.name(), foreignKeys[v.provider].id))
	case metaMatchedBy:
		if v.byLabel {
			return append(members, errbody.Text(m.name(), "label"))
		}
	default:
		if v.model != nil && modelMemberName(m) != "" {
			return v.model.appendMember(members, m)
		}
		if v.limit != nil {
			return v.limit.appendMember(members, m)
		}
	}
	return members
}
