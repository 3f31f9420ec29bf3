package caddymodule

// policy.go owns what the policy 403 reasons say (their constants and
// entries are in reasons.go's table): moderation, a guardrail's block, a
// provider's Terms of Service, a region, and the alternatives a
// BYOK-required 403 names. Each states only what the body shows
// (openrouter.Policy, whose values are short and plain: the body may carry
// the user's own content), is never called a key or billing failure, and
// never invites a retry.

import (
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// The scopes of the policy reasons (metadata.scope): what refused.
const (
	scopeContent   = "content"
	scopeGuardrail = "guardrail"
	scopeRegion    = "region"
)

// likelyCauseRouting is metadata.likely_cause of a Terms of Service 403:
// the account's privacy settings or the request's provider routing, a
// likelihood that OpenRouter does not confirm.
const likelyCauseRouting = "privacy_settings_or_routing"

// gatherPolicy: the provider and what the policy 403 says beyond its kind.
func gatherPolicy(facts *limitFacts, f *openrouter.Failure, _ limitEvidence, _ time.Time) {
	facts.provider = f.Provider
	facts.policy = f.Policy
}

// notKeyOrBilling is said in every policy sentence but the guardrail
// budget's, which says more.
// OpenRouter refuses for a policy only a request it authenticated.
const notKeyOrBilling = "This is not a key or billing failure: OpenRouter accepted the key, and adding credits does not help."

func moderationSentence(f *limitFacts) string {
	p := policyOf(f)
	var b strings.Builder
	b.WriteString("Refused by moderation: ")
	if p.Model != "" {
		b.WriteString(p.Model)
	} else {
		b.WriteString("this model")
	}
	b.WriteString(" requires moderation on OpenRouter, and the input was flagged")
	if len(p.Categories) > 0 {
		b.WriteString(" for " + strings.Join(p.Categories, ", "))
	} else {
		b.WriteString(" (the answer does not name the categories)")
	}
	b.WriteString(".")
	if p.NoCharge {
		b.WriteString(" No credits were charged.")
	}
	b.WriteString(" " + notKeyOrBilling + " Change the input, or use a model that does not require moderation; the same input is refused again.")
	return b.String()
}

func guardrailSentence(f *limitFacts) string {
	p := policyOf(f)
	var b strings.Builder
	b.WriteString("Blocked by a guardrail (a policy an admin set on this key or its workspace at OpenRouter)")
	switch p.Rule {
	case openrouter.GuardrailPatterns:
		b.WriteString(": the input matched the guardrail's patterns")
		if len(p.Patterns) > 0 {
			b.WriteString(" (" + strings.Join(p.Patterns, ", ") + ")")
		}
		b.WriteString(". " + notKeyOrBilling + " Remove what matched from the input, or ask an admin to change the guardrail; the same input is blocked again.")
	case openrouter.GuardrailAllowlist:
		b.WriteString(": this model or provider is not on the guardrail's allowlist. " + notKeyOrBilling + " Use a model the guardrail allows, or ask an admin to allow this one.")
	case openrouter.GuardrailBudget:
		b.WriteString(": the guardrail's own spending budget is spent. It is neither the key's limit nor the account's balance, so adding credits does not help; an admin can raise the guardrail's budget.")
	default:
		b.WriteString("; the answer does not say which rule. " + notKeyOrBilling + " An admin can tell from the guardrail's settings; the same request is blocked again.")
	}
	return b.String()
}

func providerTermsSentence(f *limitFacts) string {
	var b strings.Builder
	b.WriteString("OpenRouter says the request is prohibited by a provider's Terms of Service")
	if f.provider != "" {
		b.WriteString(" (" + f.provider + ")")
	}
	b.WriteString(". " + notKeyOrBilling + " OpenRouter does not say why; the likely cause, not a certainty, is the account's privacy settings or this request's provider routing sending it to a provider whose terms exclude it. Check the data policy and allowed providers at " +
		openrouter.URLPrivacy + " and the request's provider options, or use another model; the same request is likely refused again.")
	return b.String()
}

func regionSentence(f *limitFacts) string {
	p := policyOf(f)
	var b strings.Builder
	if p.Model != "" {
		b.WriteString(p.Model + " is not")
	} else {
		b.WriteString("This model is not")
	}
	b.WriteString(" available in the region OpenRouter sees the request come from (the network this gateway reaches OpenRouter from, not the client's)")
	if f.provider != "" {
		b.WriteString(" through " + f.provider)
	}
	b.WriteString(". " + notKeyOrBilling + " A retry from the same place is refused again: use another model")
	writeAlternatives(&b, p, "")
	b.WriteString(".")
	return b.String()
}

// writeAlternatives names the models OpenRouter offered instead.
func writeAlternatives(b *strings.Builder, p *openrouter.Policy, lead string) {
	if len(p.Alternatives) > 0 {
		b.WriteString(lead + " (OpenRouter names " + strings.Join(p.Alternatives, ", ") + ")")
	}
}

// policyOf is the facts' policy, empty when the body said nothing more.
func policyOf(f *limitFacts) *openrouter.Policy {
	if f.policy == nil {
		return &openrouter.Policy{}
	}
	return f.policy
}

// appendPolicyMember appends a policy member when the body shows it.
func (f *limitFacts) appendPolicyMember(members []errbody.Member, m metaMember) []errbody.Member {
	p := policyOf(f)
	switch m {
	case metaModel:
		if p.Model != "" {
			return append(members, errbody.Text(m.name(), p.Model))
		}
	case metaCategories:
		if len(p.Categories) > 0 {
			return append(members, errbody.JSON(m.name(), jsonStrings(p.Categories)))
		}
	case metaCreditsCharged:
		if p.NoCharge {
			return append(members, errbody.JSON(m.name(), []byte("false")))
		}
	case metaGuardrail:
		if p.Rule != openrouter.GuardrailUnnamed {
			return append(members, errbody.Text(m.name(), string(p.Rule)))
		}
	case metaAlternatives:
		if len(p.Alternatives) > 0 {
			return append(members, errbody.JSON(m.name(), jsonStrings(p.Alternatives)))
		}
	case metaLikelyCause:
		return append(members, errbody.Text(m.name(), likelyCauseRouting))
	}
	return members
}

// policyMemberName is a policy member's name in "metadata".
func policyMemberName(m metaMember) (string, bool) {
	switch m {
	case metaModel:
		return "model", true
	case metaCategories:
		return "categories", true
	case metaCreditsCharged:
		return "credits_charged", true
	case metaGuardrail:
		return "guardrail", true
	case metaAlternatives:
		return "alternatives", true
	case metaLikelyCause:
		return "likely_cause", true
	}
	return "", false
}
