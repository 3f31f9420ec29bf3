package openrouter

// policy.go owns OpenRouter's policy 403s: moderation, guardrail blocks, a
// provider's Terms of Service, a region, and the alternatives a
// BYOK-required 403 names. Their kinds, what recognition reads of them
// (Policy), and the builders of their bodies in the captured and documented
// forms. Every value read from these bodies is hostile input (metadata
// reasons, patterns and flagged_input may carry the user's own content):
// Policy keeps only short plain values, never one shaped like a secret or
// holding markup (plainValue), and counts the others.

import (
	"net/http"
	"regexp"
	"strings"
)

// The policy kinds, after failures.go's (provider.go's chain on from
// policyKindsEnd, and Kinds is the last file's end). None is a key or
// billing failure; none can be cured by a retry.
const (
	// KindModeration (403): the model requires moderation on OpenRouter
	// and the input was flagged.
	KindModeration Kind = kindCount + iota
	// KindGuardrail (403): a guardrail of the key or its workspace blocked
	// the request (patterns, allowlist, budget).
	KindGuardrail
	// KindProviderToS (403): "prohibited due to a violation of provider
	// Terms Of Service".
	KindProviderToS
	// KindRegion (403): not served to the region the request comes from.
	KindRegion
	policyKindsEnd
)

func init() {
	kindNames[KindModeration] = "moderation"
	kindNames[KindGuardrail] = "guardrail"
	kindNames[KindProviderToS] = "provider_terms"
	kindNames[KindRegion] = "region"
}

// GuardrailRule is which rule of a guardrail a 403 names.
type GuardrailRule string

// The guardrail rules a body can name; GuardrailUnnamed when it names none.
const (
	GuardrailUnnamed   GuardrailRule = ""
	GuardrailPatterns  GuardrailRule = "patterns"
	GuardrailAllowlist GuardrailRule = "allowlist"
	GuardrailBudget    GuardrailRule = "budget"
)

// Policy is what a policy 403 (or a BYOK-required one) says beyond its
// kind. Every string is plain (plainValue); nothing the body does not say
// is filled in.
type Policy struct {
	// Model is the model the body names (metadata.model_slug, or the
	// moderation sentence's subject), "" when none.
	Model string
	// Categories are the moderation categories (metadata.reasons, else the
	// sentence's "flagged for ..."), at most MaxPolicyValues.
	Categories []string
	// NoCharge: the body says no credits were charged.
	NoCharge bool
	// Rule is the guardrail rule the body names.
	Rule GuardrailRule
	// Patterns are a guardrail's metadata.patterns, at most
	// MaxPolicyValues.
	Patterns []string
	// Alternatives are the models OpenRouter names instead: a
	// BYOK-required 403's "you can also switch to A or B", or
	// availability.fallback_models.
	Alternatives []string
	// Withheld counts the values the body held that are not kept: too
	// long, shaped like a secret, holding markup, or past MaxPolicyValues.
	Withheld int
}

// MaxPolicyValues is how many categories, patterns or alternatives a
// Policy keeps.
const MaxPolicyValues = 5

// maxPlainValue is the longest value, in bytes, a Policy keeps.
const maxPlainValue = 64

// reSecretRun is a run of letters and digits long enough to be a key, a
// token or a hash.
var reSecretRun = regexp.MustCompile(`[A-Za-z0-9]{24,}`)

// plainValue is s when it can be repeated to the client as it is: at most
// maxPlainValue bytes of ASCII letters, digits, spaces and - _ . / : '
// with no key prefix and no run of 24 letters or digits (a secret's
// shape); "" otherwise.
func plainValue(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > maxPlainValue || reSecretRun.MatchString(s) || strings.Contains(strings.ToLower(s), "sk-") {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(" -_./:'", c) >= 0:
		default:
			return ""
		}
	}
	return s
}

// keep appends the plain ones of values to dst, at most MaxPolicyValues,
// counting the rest in p.Withheld.
func (p *Policy) keep(dst []string, values ...string) []string {
	for _, v := range values {
		if pv := plainValue(v); pv != "" && len(dst) < MaxPolicyValues {
			dst = append(dst, pv)
		} else {
			p.Withheld++
		}
	}
	return dst
}

// The wording the policy recogniser matches (in lower case).
var (
	reModeratedModel = regexp.MustCompile(`(?i)^(\S+) requires moderation on openrouter`)
	reFlaggedFor     = regexp.MustCompile(`flagged for ((?:"[^"]*"(?:,? and |, | or )?)+)`)
	reQuoted         = regexp.MustCompile(`"([^"]*)"`)
	reSwitchTo       = regexp.MustCompile(`you can also switch to (.+?)\.?$`)
	reListSep        = regexp.MustCompile(`,? or |,? and |, `)
)

// policyKind is the policy kind of a 403, KindUnrecognised for any other
// (then failures.go's recogniser goes on). "Provider returned error" is
// not read here: a provider's own answer, whatever it says, is the
// provider errors' to explain; nor is a body whose limit_source names a
// limit other than a guardrail's.
func (w *wire) policyKind(status int) Kind {
	m := w.lower
	if status != http.StatusForbidden || m == "provider returned error" ||
		(w.limitSource != "" && w.limitSource != LimitSourceGuardrailBudget) {
		// A limit_source other than a guardrail's names the limit: the
		// recogniser's to read.
		return KindUnrecognised
	}
	code, _ := w.availability["code"].(string)
	_, patterns := w.metadata["patterns"]
	switch {
	case w.hasReasons || strings.Contains(m, "requires moderation") || strings.Contains(m, "flagged for") ||
		strings.Contains(m, "flagged by moderation"):
		return KindModeration
	case strings.Contains(m, "violation of provider terms of service"):
		return KindProviderToS
	case code == "region_restricted" || w.reason == "region_restricted" || strings.Contains(m, "region_restricted") ||
		strings.Contains(m, "not available in your region") || strings.Contains(m, "country, region, or territory not supported"):
		return KindRegion
	case w.limitSource == LimitSourceGuardrailBudget || patterns || strings.Contains(m, "guardrail") ||
		strings.Contains(m, "prompt injection") || strings.Contains(m, "allowlist"):
		return KindGuardrail
	}
	return KindUnrecognised
}

// policyFigures fills f.Policy for the policy kinds and a BYOK-required
// 403, and keeps f.Provider only when it is plain.
func (w *wire) policyFigures(f *Failure) {
	if (f.Kind < KindModeration || f.Kind >= policyKindsEnd) && f.Kind != KindBYOKRequired {
		return
	}
	p := &Policy{}
	if f.Provider != "" {
		if f.Provider = plainValue(f.Provider); f.Provider == "" {
			p.Withheld++
		}
	}
	m := w.lower
	slug, _ := w.metadata["model_slug"].(string)
	switch f.Kind {
	case KindModeration:
		if slug == "" {
			if s := reModeratedModel.FindStringSubmatch(w.message); s != nil {
				slug = s[1]
			}
		}
		if rs, ok := w.metadata["reasons"].([]any); ok {
			for _, r := range rs {
				s, _ := r.(string)
				p.Categories = p.keep(p.Categories, s)
			}
		} else if s := reFlaggedFor.FindStringSubmatch(w.message); s != nil {
			for _, q := range reQuoted.FindAllStringSubmatch(s[1], -1) {
				p.Categories = p.keep(p.Categories, q[1])
			}
		}
		p.NoCharge = strings.Contains(m, "no credits were charged")
	case KindGuardrail:
		ps, hasPatterns := w.metadata["patterns"].([]any)
		switch {
		case w.limitSource == LimitSourceGuardrailBudget || strings.Contains(m, "budget"):
			p.Rule = GuardrailBudget
		case hasPatterns || strings.Contains(m, "pattern"):
			p.Rule = GuardrailPatterns
		case strings.Contains(m, "allowlist") || strings.Contains(m, "not allowed"):
			p.Rule = GuardrailAllowlist
		}
		for _, v := range ps {
			s, _ := v.(string)
			p.Patterns = p.keep(p.Patterns, s)
		}
	case KindBYOKRequired:
		if s := reSwitchTo.FindStringSubmatch(w.message); s != nil {
			p.Alternatives = p.keep(p.Alternatives, reListSep.Split(s[1], -1)...)
		}
	}
	if fb, ok := w.availability["fallback_models"].([]any); ok {
		for _, v := range fb {
			s, _ := v.(string)
			p.Alternatives = p.keep(p.Alternatives, s)
		}
	}
	if slug != "" {
		if p.Model = plainValue(slug); p.Model == "" {
			p.Withheld++
		}
	}
	f.Policy = p
}

// The policy bodies, as captured and documented.

// MessageInsufficientPermissions is a 403 seen in third-party code whose
// meaning no source gives: recognised as nothing, it passes unchanged.
const MessageInsufficientPermissions = "Insufficient permissions for this model"

// ModerationFlagged is the moderation 403 as captured in 2026:
// "openai/gpt-4.1 requires moderation on OpenRouter. Your input was
// flagged for "harassment". No credits were charged." with
// metadata.reasons, flagged_input (an excerpt of the user's input),
// provider_name and model_slug.
func ModerationFlagged(model, provider string, categories []string, flaggedInput string) FailureBody {
	quoted := make([]string, len(categories))
	for i, c := range categories {
		quoted[i] = `"` + c + `"`
	}
	return FailureBody{
		Status:  http.StatusForbidden,
		Message: model + " requires moderation on OpenRouter. Your input was flagged for " + strings.Join(quoted, ", ") + ". No credits were charged.",
		Metadata: Members{
			{"reasons", categories}, {"flagged_input", flaggedInput}, {"provider_name", provider}, {"model_slug", model},
		},
	}
}

// MessageProviderToS is the 403 of a provider's Terms of Service, with
// provider_name null: reported as a data-policy or routing block, its
// cause unconfirmed.
const MessageProviderToS = "The request is prohibited due to a violation of provider Terms Of Service."

// ProviderToS is the Terms of Service 403.
func ProviderToS() FailureBody {
	return FailureBody{Status: http.StatusForbidden, Message: MessageProviderToS, Metadata: Members{{"provider_name", nil}}}
}

// MessageGuardrailInjection is a guardrail's prompt-injection block.
const MessageGuardrailInjection = "Request blocked: prompt injection patterns detected"

// GuardrailPatternsBlocked is a guardrail's block of an input that matched
// its patterns, with metadata.patterns.
func GuardrailPatternsBlocked(patterns []string) FailureBody {
	return FailureBody{Status: http.StatusForbidden, Message: MessageGuardrailInjection, Metadata: Members{{"patterns", patterns}}}
}

// GuardrailBudgetExceeded is a guardrail's spent budget; its wording and
// limit_source are unverified third-party claims.
func GuardrailBudgetExceeded() FailureBody {
	return FailureBody{
		Status:   http.StatusForbidden,
		Message:  "Guardrail budget exceeded.",
		Metadata: Members{{"limit_source", LimitSourceGuardrailBudget}},
	}
}

// RegionRestricted is the region 403 in the documented form (2026-08-19):
// error.metadata.availability with code region_restricted.
func RegionRestricted(model string) FailureBody {
	return FailureBody{
		Status:  http.StatusForbidden,
		Message: model + " is not available in your region.",
		Metadata: Members{{"availability", Members{
			{"code", "region_restricted"}, {"retryable", false},
		}}},
	}
}

// BYOKRequiredOr is the BYOK-required 403 as captured with the models
// OpenRouter offers instead: "OpenAI is requiring a key to access this
// model, which you can add in https://openrouter.ai/settings/integrations
// - you can also switch to gpt-5-chat or gpt-5-mini".
func BYOKRequiredOr(provider string, alternatives ...string) FailureBody {
	b := BYOKRequired(provider)
	if n := len(alternatives); n > 0 {
		list := alternatives[n-1]
		if n > 1 {
			list = strings.Join(alternatives[:n-1], ", ") + " or " + list
		}
		b.Message += " - you can also switch to " + list
	}
	return b
}
