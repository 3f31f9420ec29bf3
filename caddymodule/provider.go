package caddymodule

// provider.go owns what the reasons of a provider's error and of
// OpenRouter's admission control say (issue 26; their constants and
// entries are in reasons.go's table): which entry a "Provider returned
// error" gets by whose fault the body shows it is, the facts gathered for
// it, and the sentences. The provider's own words come from
// openrouter.ProviderError, already bounded and stripped of control
// characters, markup and key-shaped runs.

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// providerErrorStatuses are the statuses a "Provider returned error" is
// held at beside its entries' own (OpenRouter passes on the provider's):
// one that is not recognised still passes unchanged.
var providerErrorStatuses = []int{400, 402, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529}

// classOtherFailure: a held failure of a status held only for a
// provider's error (400, 404, a 5xx, ...) that is none, passed unchanged:
// counted apart from the 402, 403 and 429 whose wording is unknown, so
// that ordinary 400s and 502s do not read as OpenRouter rewording its
// limits.
const classOtherFailure = "other_failure"

// unexplainedClass is the class a held failure other than a 401 is left
// under: class for a 402, 403 or 429, classOtherFailure for any other.
func unexplainedClass(status int, class string) string {
	switch status {
	case http.StatusPaymentRequired, http.StatusForbidden, http.StatusTooManyRequests:
		return class
	}
	return classOtherFailure
}

// causeOf is whose fault a provider's error is; unknown without one.
func causeOf(f *openrouter.Failure) openrouter.Cause {
	if f.ProviderError == nil {
		return openrouter.CauseUnknown
	}
	return f.ProviderError.Cause
}

// The applies of the provider errors' entries, by cause; the entry of the
// unknown cause comes last and applies to the rest.
func byRequest(f *openrouter.Failure) bool        { return causeOf(f) == openrouter.CauseRequest }
func byProvider(f *openrouter.Failure) bool       { return causeOf(f) == openrouter.CauseProvider }
func byOwnProviderKey(f *openrouter.Failure) bool { return causeOf(f) == openrouter.CauseOwnKey }
func byRegionOrPolicy(f *openrouter.Failure) bool {
	c := causeOf(f)
	return c == openrouter.CauseRegion || c == openrouter.CausePolicy
}

// gatherProviderError: the provider and what the body shows of its answer.
func gatherProviderError(facts *limitFacts, f *openrouter.Failure, _ limitEvidence, _ time.Time) {
	facts.provider = f.Provider
	facts.providerError = f.ProviderError
}

// providerWords are the provider's own words, safe to show: its name
// ("" when not named), and its message and code as a clause.
func providerWords(f *limitFacts) (name, said string) {
	pe := f.providerError
	if pe == nil {
		return f.provider, ""
	}
	if pe.Message != "" {
		said = `: "` + pe.Message + `"`
	}
	if pe.Code != 0 {
		said = " (its status " + strconv.Itoa(pe.Code) + ")" + said
	}
	return pe.Provider, said
}

// providerSubject is "Provider X" or "The provider".
func providerSubject(name string) string {
	if name == "" {
		return "The provider"
	}
	return "Provider " + name
}

// routeElsewhere is how to send a request to another provider.
const routeElsewhere = "route it to another provider with provider.order or provider.ignore (" + openrouter.URLProviderRouting + ")"

func providerRequestSentence(f *limitFacts) string {
	name, said := providerWords(f)
	return providerSubject(name) + " refused the request itself" + said +
		". Change the request, or " + routeElsewhere + "; sent again unchanged it fails the same way. Your key and account are fine."
}

func providerUnavailableSentence(f *limitFacts) string {
	name, said := providerWords(f)
	var b strings.Builder
	b.WriteString(providerSubject(name) + " failed or is over capacity" + said + ": the provider's outage or load, not your key, account or request. ")
	if f.retryAfter > 0 {
		b.WriteString("Retry in " + seconds(f.retryAfter) + ", or " + routeElsewhere + ".")
	} else {
		b.WriteString("Retry, or " + routeElsewhere + ".")
	}
	return b.String()
}

func providerKeyRefusedSentence(f *limitFacts) string {
	name, said := providerWords(f)
	at := "the provider"
	if name != "" {
		at = name
	}
	return providerSubject(name) + " refused your own provider key (BYOK)" + said +
		": not your OpenRouter key or account. Fix that key's validity, permissions or quota at " + at +
		", or replace it at " + openrouter.URLIntegrations + "; a retry fails the same way."
}

func providerBlockedSentence(f *limitFacts) string {
	name, said := providerWords(f)
	what := " refused the request under its own terms or content policy"
	if f.providerError != nil && f.providerError.Cause == openrouter.CauseRegion {
		what = " does not serve requests from this region"
	}
	return providerSubject(name) + what + said + ": not your key or account. Use another provider (provider.ignore or provider.order, " +
		openrouter.URLProviderRouting + ") or another model; a retry to the same provider fails the same way."
}

func providerErrorSentence(f *limitFacts) string {
	name, said := providerWords(f)
	if name == "" && said == "" {
		return "A provider returned an error; OpenRouter's answer names neither the provider nor what it said: whose fault it is, and whether a retry helps, is unknown."
	}
	return providerSubject(name) + " returned an error" + said + "; the answer does not show whose fault it is (cause unknown), nor whether a retry helps."
}

func admissionControlSentence(f *limitFacts) string {
	s := "OpenRouter could not verify the account's credits in time: a transient check, not a spent balance or limit."
	if f.retryAfter > 0 {
		return s + " Retry in " + seconds(f.retryAfter) + "."
	}
	return s + " Retry shortly."
}
