package openrouter

// models.go owns what OpenRouter's 400 "unknown model" and 404 "no
// endpoints" bodies say (their kinds, ModelFailure and ReadModelFailure),
// the builders that send the same wording from the emulator, the URLs the
// answers point to, and GET /models/user, which lists the models a key may
// use under its guardrail. Every string read from a body is OpenRouter's
// and hostile: it is kept only when it has the shape of what it claims to
// be (a slug, a provider's name, a settings URL), and bounded.

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
)

// The kinds of the model failures, after provider.go's.
const (
	// KindModelNotFound (400, or 500 before 2026-08-19): the request's
	// model is no valid model id.
	KindModelNotFound Kind = kindsEnd + iota
	// KindNoEndpoints (404): a filter excluded every endpoint of the model
	// (the request's, the account's, the key's guardrail's), or it has
	// none.
	KindNoEndpoints
	// KindModelRetired (404): the model was deprecated, sunset, or a
	// stealth model that was revealed under another slug.
	KindModelRetired
	// KindFreeVariantEnded (404): a model's free variant ended; the paid
	// slug serves it.
	KindFreeVariantEnded
	modelKindsEnd
)

func init() {
	kindNames[KindModelNotFound] = "model_not_found"
	kindNames[KindNoEndpoints] = "no_endpoints"
	kindNames[KindModelRetired] = "model_retired"
	kindNames[KindFreeVariantEnded] = "free_variant_ended"
}

// The URLs model answers point to (beside paths.go's URLPrivacy and
// provider.go's URLProviderRouting).
const (
	// URLModels is the model list.
	URLModels = "https://openrouter.ai/models"
	// urlErrorsDocs is availability.docs_url.
	urlErrorsDocs = "https://openrouter.ai/docs/api-reference/errors-and-debugging"
)

// ModelPageURL is the model's page on openrouter.ai.
func ModelPageURL(slug string) string { return URLModels[:len(URLModels)-len("models")] + slug }

// Filter is what a no-endpoints failure says excluded every endpoint, as
// availability.excluded_by spells it where it has a spelling; "" when the
// body does not say.
type Filter string

// The filters.
const (
	FilterNone              Filter = ""
	FilterTools             Filter = "tools"
	FilterToolChoice        Filter = "tool_choice"
	FilterCacheControl      Filter = "cache_control"
	FilterTraining          Filter = "data_policy:training"
	FilterZDR               Filter = "data_policy:zdr"
	FilterAllowedProviders  Filter = "allowed_providers"
	FilterGeo               Filter = "geo"
	FilterDataRegion        Filter = "data_region"
	FilterMaxPrice          Filter = "max_price"
	FilterContextLength     Filter = "context_length"
	FilterRequireParameters Filter = "require_parameters"
	FilterQuantization      Filter = "quantization"
	// FilterEndpoint: the model is not served on the request's endpoint
	// (availability wrong_endpoint).
	FilterEndpoint Filter = "endpoint"
)

// knownFilters are the excluded_by values read; any other is dropped.
var knownFilters = map[string]Filter{}

func init() {
	for _, f := range []Filter{FilterTools, FilterToolChoice, FilterCacheControl, FilterTraining, FilterZDR,
		FilterAllowedProviders, FilterGeo, FilterDataRegion, FilterMaxPrice, FilterContextLength,
		FilterRequireParameters, FilterQuantization, FilterEndpoint} {
		knownFilters[string(f)] = f
	}
}

// The availability codes of the model failures.
const (
	availModelNotFound      = "model_not_found"
	availNoEndpoints        = "no_endpoints"
	availPrivacyRestricted  = "privacy_restricted"
	availConstraintFiltered = "constraint_filtered"
	availWrongEndpoint      = "wrong_endpoint"
	availModelDeprecated    = "model_deprecated"
	availFreeVariantEnded   = "free_variant_ended"
)

// ModelFailure is what a model failure's body says; what it does not say
// is empty.
type ModelFailure struct {
	Status int
	Kind   Kind
	// Code is availability.code, "" without one.
	Code string
	// Model is the slug the body names (the message's, or
	// availability.requested_models' first), "" when none has a slug's
	// shape.
	Model string
	// Filter is what the body says excluded every endpoint.
	Filter Filter
	// Fallbacks are availability.fallback_models: OpenRouter's own
	// suggestions or a retired model's successors (at most
	// maxListed).
	Fallbacks []string
	// AvailableProviders and RequestedProviders are the metadata of "No
	// allowed providers" (at most maxListed each); Requested is true when
	// requested_providers was sent.
	AvailableProviders, RequestedProviders []string
	RequestedSent                          bool
	// PaidModel is the paid slug a free period's end names.
	PaidModel string
	// RevealedAs is the slug a stealth model was revealed as.
	RevealedAs string
}

// Bounds on what is read from a hostile body.
const (
	maxListed   = 8
	maxSlugLen  = 128
	maxNameLen  = 64
	maxReadBody = 64 << 10
)

// The model failures' wording.
var (
	reNotValidModel  = regexp.MustCompile(`^(\S{1,200}) is not a valid model id`)
	reNoEndpointsFor = regexp.MustCompile(`^no endpoints found for (\S{1,200}?)\.?$`)
	reNoEndpointsZDR = regexp.MustCompile(`^no endpoints for (\S{1,200}) match your data policy`)
	reStealth        = regexp.MustCompile(`was a stealth model revealed on .{1,80}? find it here: https://openrouter\.ai/([a-z0-9][a-z0-9._~:-]*/[a-z0-9._~:-]+)`)
	reFreeEnded      = regexp.MustCompile(`^the free .{1,120}? period has ended\. to continue using this model, please migrate to the paid slug: (\S{1,200})`)
	reSlug           = regexp.MustCompile(`^~?[A-Za-z0-9][A-Za-z0-9._~+@-]*(?:/[A-Za-z0-9][A-Za-z0-9._~+@-]*){0,3}(?::[A-Za-z0-9._-]+)?$`)
	reProviderName   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._()-]*$`)
)

// IsModelKind reports whether k is a model failure's kind.
func IsModelKind(k Kind) bool { return k >= KindModelNotFound && k < modelKindsEnd }

// modelKind is the hook of the recogniser: the model failure's kind a
// 400, 404 or 500 is, KindUnrecognised for any other.
func (w *wire) modelKind(status int) Kind {
	code, _ := w.availability["code"].(string)
	k, _ := modelKindOf(status, w.lower, code)
	return k
}

// modelKindOf decides the kind and, where the wording says, the filter,
// from the status, the message in lower case and availability.code.
func modelKindOf(status int, m, code string) (Kind, Filter) {
	switch status {
	case http.StatusBadRequest, http.StatusInternalServerError:
		if code == availModelNotFound || reNotValidModel.MatchString(m) {
			return KindModelNotFound, FilterNone
		}
	case http.StatusNotFound:
		switch code {
		case availModelDeprecated:
			return KindModelRetired, FilterNone
		case availFreeVariantEnded:
			return KindFreeVariantEnded, FilterNone
		case availWrongEndpoint:
			return KindNoEndpoints, FilterEndpoint
		case availNoEndpoints, availPrivacyRestricted, availConstraintFiltered:
			return KindNoEndpoints, filterOfMessage(m)
		}
		switch {
		case reStealth.MatchString(m):
			return KindModelRetired, FilterNone
		case reFreeEnded.MatchString(m):
			return KindFreeVariantEnded, FilterNone
		case strings.HasPrefix(m, "no endpoints found") || strings.HasPrefix(m, "no allowed providers are available") ||
			reNoEndpointsZDR.MatchString(m):
			return KindNoEndpoints, filterOfMessage(m)
		}
	}
	return KindUnrecognised, FilterNone
}

// filterOfMessage is the filter a no-endpoints sentence names.
func filterOfMessage(m string) Filter {
	switch {
	case strings.Contains(m, "support tool use"):
		return FilterTools
	case strings.Contains(m, "'tool_choice'"):
		return FilterToolChoice
	case strings.Contains(m, "support cache control"):
		return FilterCacheControl
	case strings.Contains(m, "no allowed providers"):
		return FilterAllowedProviders
	case strings.Contains(m, "data policy") && strings.Contains(m, "zero data retention"):
		return FilterZDR
	case strings.Contains(m, "data policy") && strings.Contains(m, "training"):
		return FilterTraining
	}
	return FilterNone
}

// ReadModelFailure reads a model failure from its status and decoded body
// in any envelope; ok is false for any other failure.
func ReadModelFailure(status int, body []byte) (ModelFailure, bool) {
	if len(body) > maxReadBody {
		return ModelFailure{}, false
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return ModelFailure{}, false
	}
	obj := top
	var inner map[string]json.RawMessage
	if raw, ok := top["error"]; ok && json.Unmarshal(raw, &inner) == nil {
		obj = inner
	}
	var msg string
	if json.Unmarshal(obj["message"], &msg) != nil {
		return ModelFailure{}, false
	}
	var md struct {
		Availability       *availability `json:"availability"`
		AvailableProviders []string      `json:"available_providers"`
		RequestedProviders []string      `json:"requested_providers"`
	}
	_ = json.Unmarshal(obj["metadata"], &md)
	av := md.Availability
	if av == nil {
		// Some of OpenRouter's docs put it beside the message.
		_ = json.Unmarshal(obj["availability"], &av)
	}
	if av == nil {
		av = &availability{}
	}
	lower := strings.ToLower(msg)
	kind, filter := modelKindOf(status, lower, av.Code)
	if kind == KindUnrecognised {
		return ModelFailure{}, false
	}
	f := ModelFailure{Status: status, Kind: kind, Code: av.Code, Filter: filter}
	if fl, ok := knownFilters[av.ExcludedBy]; ok && av.ExcludedBy != "" {
		f.Filter = fl
	}
	f.Fallbacks = slugs(av.FallbackModels)
	f.AvailableProviders = providerNames(md.AvailableProviders)
	f.RequestedProviders = providerNames(md.RequestedProviders)
	f.RequestedSent = md.RequestedProviders != nil
	// The slug as the body spells it: the message keeps its case.
	pick := func(re *regexp.Regexp) string {
		if loc := re.FindStringSubmatchIndex(lower); loc != nil && loc[3] <= len(msg) {
			return slugOrEmpty(msg[loc[2]:loc[3]])
		}
		return ""
	}
	switch {
	case kind == KindModelNotFound:
		f.Model = pick(reNotValidModel)
	case kind == KindFreeVariantEnded:
		f.PaidModel = pick(reFreeEnded)
		if f.PaidModel == "" && len(f.Fallbacks) > 0 {
			f.PaidModel = f.Fallbacks[0]
		}
	case kind == KindModelRetired:
		f.RevealedAs = pick(reStealth)
	}
	if kind != KindModelNotFound {
		if f.Model = pick(reNoEndpointsFor); f.Model == "" {
			f.Model = pick(reNoEndpointsZDR)
		}
	}
	if f.Model == "" {
		if r := slugs(av.RequestedModels); len(r) > 0 {
			f.Model = r[0]
		}
	}
	if f.Filter == FilterAllowedProviders && !f.RequestedSent {
		f.RequestedProviders = nil
	}
	return f, true
}

// availability is error.availability as the documented form sends it.
type availability struct {
	Code            string   `json:"code"`
	Retryable       bool     `json:"retryable"`
	RequestedModels []string `json:"requested_models,omitempty"`
	FallbackModels  []string `json:"fallback_models,omitempty"`
	ExcludedBy      string   `json:"excluded_by,omitempty"`
	DocsURL         string   `json:"docs_url"`
}

// IsSlug reports whether s has the shape of a model slug
// ("author/name[:variant]", or a bare name), short enough to repeat.
func IsSlug(s string) bool {
	return len(s) <= maxSlugLen && reSlug.MatchString(s) && !LooksLikeKey(s)
}

// LooksLikeKey reports whether s could be key material: an OpenRouter key
// or any long run of letters and digits a secret could be.
func LooksLikeKey(s string) bool {
	if strings.Contains(s, "sk-") {
		return true
	}
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			if run++; run >= 32 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}

func slugOrEmpty(s string) string {
	if IsSlug(s) {
		return s
	}
	return ""
}

// slugs keeps the values with a slug's shape, at most maxListed.
func slugs(in []string) []string {
	var out []string
	for _, s := range in {
		if len(out) == maxListed {
			break
		}
		if IsSlug(s) {
			out = append(out, s)
		}
	}
	return out
}

// providerNames keeps the values with a provider name's shape, at most
// maxListed.
func providerNames(in []string) []string {
	var out []string
	for _, s := range in {
		if len(out) == maxListed {
			break
		}
		if len(s) <= maxNameLen && reProviderName.MatchString(s) && !LooksLikeKey(s) {
			out = append(out, s)
		}
	}
	return out
}

// The builders of the model failures' bodies, as OpenRouter sends them
// (captured) and in the documented availability form.

// UnknownModel is the 400 for a slug that is no model id; legacy: the
// 500 sent before 2026-08-19.
func UnknownModel(slug string, legacy bool) FailureBody {
	status := http.StatusBadRequest
	if legacy {
		status = http.StatusInternalServerError
	}
	return FailureBody{Status: status, Message: slug + " is not a valid model ID"}
}

// UnknownModelAvailability is the documented form of the 400, with
// OpenRouter's own suggestions.
func UnknownModelAvailability(slug string, fallbacks ...string) FailureBody {
	b := UnknownModel(slug, false)
	b.Metadata = Members{{"availability", availability{Code: availModelNotFound, RequestedModels: []string{slug}, FallbackModels: fallbacks, DocsURL: urlErrorsDocs}}}
	return b
}

// NoEndpointsFor is the 404 of a model none of whose endpoints is left.
func NoEndpointsFor(slug string) FailureBody {
	return FailureBody{Status: http.StatusNotFound, Message: "No endpoints found for " + slug + "."}
}

// NoEndpointsFiltered is the 404 whose sentence names the filter: tools,
// tool_choice, cache_control, data_policy:training, data_policy:zdr
// (which names slug) or allowed_providers (with the providers).
func NoEndpointsFiltered(f Filter, slug string, available, requested []string) FailureBody {
	b := FailureBody{Status: http.StatusNotFound}
	switch f {
	case FilterTools:
		b.Message = `No endpoints found that support tool use. Try disabling "question". To learn more about provider routing, visit: ` + URLProviderRouting
	case FilterToolChoice:
		b.Message = "No endpoints found that support the provided 'tool_choice' value. To learn more about provider routing, visit: " + URLProviderRouting
	case FilterCacheControl:
		b.Message = "No endpoints found that support cache control"
	case FilterTraining:
		b.Message = "No endpoints found matching your data policy (Paid model training). Configure: " + URLPrivacy
	case FilterZDR:
		b.Message = "No endpoints for " + slug + " match your data policy (zero data retention). Adjust at " + URLPrivacy + "."
	case FilterAllowedProviders:
		b.Message = "No allowed providers are available for the selected model."
		ms := Members{{"available_providers", nonNil(available)}}
		if requested != nil {
			ms = append(ms, Member{"requested_providers", requested})
		}
		b.Metadata = ms
	default:
		return NoEndpointsFor(slug)
	}
	return b
}

// NoEndpointsAvailability is the documented form of a 404: its sentence
// with availability {code, excluded_by, fallback_models}.
func NoEndpointsAvailability(code string, slug string, excludedBy Filter, fallbacks ...string) FailureBody {
	b := NoEndpointsFor(slug)
	b.Metadata = Members{{"availability", availability{Code: code, RequestedModels: []string{slug}, FallbackModels: fallbacks,
		ExcludedBy: string(excludedBy), DocsURL: urlErrorsDocs}}}
	return b
}

// The availability codes the emulator's documented forms send.
const (
	AvailabilityNoEndpoints        = availNoEndpoints
	AvailabilityPrivacyRestricted  = availPrivacyRestricted
	AvailabilityConstraintFiltered = availConstraintFiltered
	AvailabilityWrongEndpoint      = availWrongEndpoint
	AvailabilityModelDeprecated    = availModelDeprecated
	AvailabilityFreeVariantEnded   = availFreeVariantEnded
)

// StealthRevealed is the 404 of a stealth model revealed as slug.
func StealthRevealed(name, on, slug string) FailureBody {
	return FailureBody{Status: http.StatusNotFound, Message: name + " was a stealth model revealed on " + on + " as " + slug +
		". Find it here: " + ModelPageURL(slug)}
}

// FreePeriodEnded is the 404 of a free variant that ended.
func FreePeriodEnded(name, paid string) FailureBody {
	return FailureBody{Status: http.StatusNotFound, Message: "The free " + name + " period has ended. To continue using this model, please migrate to the paid slug: " + paid}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ModelsForKey reads GET /models/user with key: the ids of the models the
// key may use under its guardrail and the account's policy.
func (c *Client) ModelsForKey(ctx context.Context, key string) ([]string, Result) {
	return c.modelIDs(ctx, PathModelsUser, key)
}
