package caddymodule

// modelreasons.go owns what the model reasons (their constants and
// entries are in reasons.go's table) say of a 400 unknown model and a 404
// no endpoints: the facts each states (modelFacts), how the evidence
// decides which applies (modelVerdict: the failure's own words, the
// request's body, the catalogue, the key's GET /models/user), their
// sentences and metadata members. Nothing is claimed that the evidence
// does not show: what it cannot decide is no_endpoints_unknown, with the
// candidates.

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// The sources of a no-endpoints filter (metadata.source).
const (
	sourceRequest   = "request"
	sourceAccount   = "account_settings"
	sourceGuardrail = "key_guardrail"
	sourceModel     = "model"
)

// modelFacts is what a verdict on a model failure states.
type modelFacts struct {
	// model is the slug asked (the body's, else the request's), "" when
	// neither has a slug's shape.
	model string
	// suggestions are the nearest listed ids (model_not_found).
	suggestions []string
	// lastListed and expiration: the gateway saw the model listed until
	// lastListed, with expiration_date expiration (zero: not known).
	lastListed, expiration time.Time
	filter                 openrouter.Filter
	source                 string
	// setting is the request member or account setting to change.
	setting string
	// candidates are the filters the evidence leaves (unknown).
	candidates []string
	// successors are OpenRouter's successors of a retired model.
	successors []string
	// paid is the paid slug of a free variant that ended, with its
	// prices per token as the catalogue lists them ("" when not known).
	paid                         string
	promptPrice, completionPrice string
	// available are the providers "No allowed providers" says serve the
	// model.
	available []string
	original  string
}

// catalogueFacts is what the catalogue knows of one slug.
type catalogueFacts struct {
	known, listed          bool
	lastListed, expiration time.Time
	supported              []string
	prompt, completion     string
}

// guardrailAnswer is what the key's GET /models/user showed of a model.
type guardrailAnswer uint8

const (
	guardrailUnknown  guardrailAnswer = iota // not asked, or no answer in time
	guardrailAllows                          // the key may use the model
	guardrailExcludes                        // listed publicly, not for this key
)

// modelEvidence is what the gateway had at failure time.
type modelEvidence struct {
	// asked is the catalogue's facts of the slug asked; paid of the paid
	// slug a free variant names (or the slug without ":free").
	asked, paid catalogueFacts
	// suggest finds the nearest listed ids; nil without a catalogue.
	suggest func(slug string, fallbacks []string) []string
	// req is the request's filters, nil when its body was not read.
	req       *requestFilters
	guardrail guardrailAnswer
}

// freeSuffix is the variant of the free models.
const freeSuffix = ":free"

// modelVerdict is the verdict on a model failure from its body and the
// evidence.
func modelVerdict(f *openrouter.ModelFailure, model string, ev modelEvidence) verdict {
	facts := &modelFacts{model: model}
	if f.Model != "" {
		facts.model = f.Model
	}
	v := verdict{model: facts}
	ask := ev.asked
	if ask.known && !ask.listed {
		facts.lastListed, facts.expiration = ask.lastListed, ask.expiration
	}
	switch f.Kind {
	case openrouter.KindModelNotFound:
		v.reason = reasonModelNotFound
		if ev.suggest != nil {
			facts.suggestions = ev.suggest(facts.model, f.Fallbacks)
		} else {
			facts.suggestions = f.Fallbacks
		}
		return v
	case openrouter.KindModelRetired:
		v.reason, facts.source = reasonModelRetired, sourceModel
		facts.successors = f.Fallbacks
		if f.RevealedAs != "" {
			facts.successors = []string{f.RevealedAs}
		}
		if ask.known {
			facts.expiration = ask.expiration
		}
		return v
	case openrouter.KindFreeVariantEnded:
		return freeEnded(v, f.PaidModel, ev)
	}
	facts.filter, facts.available = f.Filter, f.AvailableProviders
	req := ev.req
	decided := func(r reason, source, setting string) verdict {
		v.reason, facts.source, facts.setting = r, source, setting
		return v
	}
	// A filter only the request or only the account can set, told apart
	// by the request's body when it was read.
	either := func(member, setting string, sent bool) verdict {
		switch {
		case req != nil && sent:
			return decided(reasonNoEndpointsRequest, sourceRequest, member)
		case req != nil:
			return decided(reasonNoEndpointsAccount, sourceAccount, setting)
		}
		return unknownEndpoints(v, ev, member, "the account's "+setting+" ("+openrouter.URLPrivacy+")")
	}
	requestOnly := func(member string) verdict {
		if req != nil && !req.has(member) {
			return unknownEndpoints(v, ev, member)
		}
		return decided(reasonNoEndpointsRequest, sourceRequest, member)
	}
	switch f.Filter {
	case openrouter.FilterTools:
		return decided(reasonNoEndpointsRequest, sourceRequest, memberTools)
	case openrouter.FilterToolChoice:
		return decided(reasonNoEndpointsRequest, sourceRequest, memberToolChoice)
	case openrouter.FilterCacheControl:
		return decided(reasonNoEndpointsRequest, sourceRequest, memberCacheControl)
	case openrouter.FilterEndpoint:
		return decided(reasonNoEndpointsRequest, sourceRequest, "endpoint")
	case openrouter.FilterContextLength:
		return decided(reasonNoEndpointsRequest, sourceRequest, "messages and max_tokens")
	case openrouter.FilterTraining:
		return either(memberDataCollection, settingTraining, req != nil && req.dataCollectionDeny)
	case openrouter.FilterZDR:
		return either(memberZDR, settingZDR, req != nil && req.zdr)
	case openrouter.FilterAllowedProviders:
		return either(memberOnly, settingProviders, req != nil && req.only)
	case openrouter.FilterMaxPrice:
		return requestOnly(memberMaxPrice)
	case openrouter.FilterQuantization:
		return requestOnly(memberQuantizations)
	case openrouter.FilterRequireParameters:
		return requestOnly(memberRequireParameters)
	case openrouter.FilterGeo, openrouter.FilterDataRegion:
		return unknownEndpoints(v, ev, "the region the request is served from ("+string(f.Filter)+")")
	}
	// OpenRouter did not say which filter: the evidence may.
	if req != nil {
		if m, ok := req.certain(); ok {
			return decided(reasonNoEndpointsRequest, sourceRequest, m.path)
		}
	}
	if ev.guardrail == guardrailExcludes {
		return decided(reasonNoEndpointsGuardrail, sourceGuardrail, settingGuardrail)
	}
	if ask.known && !ask.listed {
		if base, ok := strings.CutSuffix(facts.model, freeSuffix); ok && ev.paid.listed {
			return freeEnded(v, base, ev)
		}
		v.reason, facts.source = reasonModelRetired, sourceModel
		return v
	}
	return unknownEndpoints(v, ev)
}

// freeEnded is free_variant_ended with the paid slug and its prices.
func freeEnded(v verdict, paid string, ev modelEvidence) verdict {
	v.reason, v.model.source, v.model.paid = reasonFreeVariantEnded, sourceModel, paid
	if paid == "" {
		v.model.paid, _ = strings.CutSuffix(v.model.model, freeSuffix)
	}
	if ev.paid.listed {
		v.model.promptPrice, v.model.completionPrice = ev.paid.prompt, ev.paid.completion
	}
	return v
}

// unknownEndpoints is no_endpoints_unknown with the candidates the
// evidence leaves: the named ones, the request's members (all of them
// when its body was not read), the account's privacy settings, the key's
// guardrail unless GET /models/user ruled it out, and the model having no
// provider now.
func unknownEndpoints(v verdict, ev modelEvidence, named ...string) verdict {
	v.reason = reasonNoEndpointsUnknown
	c := append([]string(nil), named...)
	switch {
	case ev.req != nil:
		for _, m := range ev.req.members {
			c = appendNew(c, "the request's "+m.path)
		}
	default:
		c = appendNew(c, "the request's tools, tool_choice, response_format, provider object or content parts (the gateway did not read it)")
	}
	if len(named) == 0 {
		c = appendNew(c, "the account's data policy, ZDR, allowed or ignored providers ("+openrouter.URLPrivacy+")")
	}
	if ev.guardrail != guardrailAllows {
		c = appendNew(c, "the key's guardrail (managed with the key at "+openrouter.URLKeys+")")
	}
	c = appendNew(c, "no provider serving the model now")
	v.model.candidates = c
	return v
}

func appendNew(list []string, s string) []string {
	for _, o := range list {
		if o == s {
			return list
		}
	}
	return append(list, s)
}

// The account's and the key's settings the answers name.
const (
	settingTraining  = "data policy (model training)"
	settingZDR       = "zero data retention (ZDR) requirement"
	settingProviders = "allowed and ignored providers"
	settingGuardrail = "guardrail"
)

// modelSentence is a model reason's message from its verdict's facts
// (none: a verdict without facts states nothing it does not have).
func modelSentence(sentence func(v verdict) string) func(v verdict) string {
	return func(v verdict) string {
		if v.model == nil {
			v.model = &modelFacts{}
		}
		return sentence(v)
	}
}

// The sentences of the model reasons.

func unknownModelSentence(v verdict) string {
	f := v.model
	var b strings.Builder
	b.WriteString("The model " + quoted(f.model) + " is not a valid model ID on OpenRouter.")
	writeListed(&b, f)
	if len(f.suggestions) > 0 {
		b.WriteString(" Did you mean " + orList(f.suggestions) + "?")
	} else {
		b.WriteString(" See the valid IDs at " + openrouter.URLModels + ".")
	}
	b.WriteString(" The gateway never changes the request's model: send one of these IDs.")
	return withOriginal(&b, f)
}

func requestFilterSentence(v verdict) string {
	f := v.model
	var b strings.Builder
	b.WriteString("No endpoint of " + quoted(f.model) + " can serve this request: ")
	switch f.setting {
	case "endpoint":
		b.WriteString("the model is not served on this endpoint. Send it to another of OpenRouter's endpoints (" +
			openrouter.PathChatCompletions + ", " + openrouter.PathResponses + ", " + openrouter.PathMessages + "), or choose another model.")
	case memberTools, memberToolChoice, memberResponseFormat, memberCacheControl:
		b.WriteString("none supports the request's " + f.setting + ". Remove " + f.setting + " from the request, or choose a model that supports it (" + openrouter.URLModels + ").")
	case "messages and max_tokens":
		b.WriteString("none has a context long enough for the request's messages and max_tokens. Shorten them, or choose a model with a longer context.")
	default:
		b.WriteString("the request's " + f.setting + " excludes every one. Relax or remove " + f.setting + " (" + openrouter.URLProviderRouting + ").")
	}
	return withOriginal(&b, f)
}

func accountFilterSentence(v verdict) string {
	f := v.model
	var b strings.Builder
	b.WriteString("No endpoint of " + quoted(f.model) + " is allowed by the account's " + f.setting +
		": the request itself does not ask for it. Change it at " + openrouter.URLPrivacy)
	if len(f.available) > 0 {
		b.WriteString(" (providers serving the model: " + strings.Join(f.available, ", ") + ")")
	}
	b.WriteString(", or choose another model.")
	return withOriginal(&b, f)
}

func modelGuardrailSentence(v verdict) string {
	f := v.model
	var b strings.Builder
	b.WriteString("This key's guardrail does not allow " + quoted(f.model) +
		": OpenRouter lists the model, but not among the models this key may use. Change the guardrail of the key (managed with the key at " + openrouter.URLKeys + "), or use a model it allows.")
	return withOriginal(&b, f)
}

func retiredSentence(v verdict) string {
	f := v.model
	var b strings.Builder
	b.WriteString("The model " + quoted(f.model) + " is retired")
	if !f.expiration.IsZero() {
		b.WriteString(" (its expiration_date was " + f.expiration.UTC().Format(time.DateOnly) + ")")
	}
	b.WriteString(".")
	if !f.lastListed.IsZero() {
		b.WriteString(" The gateway last saw it listed on " + f.lastListed.UTC().Format(time.DateOnly) + ".")
	}
	if len(f.successors) > 0 {
		b.WriteString(" OpenRouter names as its successor " + orList(f.successors) + ".")
	} else {
		b.WriteString(" Choose another model at " + openrouter.URLModels + ".")
	}
	return withOriginal(&b, f)
}

func freeEndedSentence(v verdict) string {
	f := v.model
	var b strings.Builder
	b.WriteString("The free variant " + quoted(f.model) + " has ended")
	if f.paid != "" {
		b.WriteString("; the paid model " + quoted(f.paid) + " serves it")
		if p, c := perMillion(f.promptPrice), perMillion(f.completionPrice); p != "" && c != "" {
			b.WriteString(" at " + p + " per million prompt tokens and " + c + " per million completion tokens")
		}
		b.WriteString(". Switch to it, or choose another free model.")
	} else {
		b.WriteString(". Choose another model at " + openrouter.URLModels + ".")
	}
	return withOriginal(&b, f)
}

func unknownFilterSentence(v verdict) string {
	f := v.model
	var b strings.Builder
	b.WriteString("Every endpoint of " + quoted(f.model) + " was excluded, and the evidence the gateway has does not show by what")
	if f.filter != openrouter.FilterNone {
		b.WriteString(" setting (OpenRouter names the filter " + string(f.filter) + ")")
	}
	b.WriteString(". It may be " + strings.Join(f.candidates, "; or ") + ".")
	return withOriginal(&b, f)
}

// writeListed says when a model the gateway saw listed was last listed.
func writeListed(b *strings.Builder, f *modelFacts) {
	if f.lastListed.IsZero() {
		return
	}
	b.WriteString(" It was last listed on " + f.lastListed.UTC().Format(time.DateOnly))
	if !f.expiration.IsZero() {
		b.WriteString(", with expiration_date " + f.expiration.UTC().Format(time.DateOnly))
	}
	b.WriteString(".")
}

func withOriginal(b *strings.Builder, f *modelFacts) string {
	if o := strings.TrimSpace(f.original); o != "" {
		b.WriteString(" OpenRouter said: " + o)
	}
	return b.String()
}

func quoted(slug string) string {
	if slug == "" {
		return "asked"
	}
	return `"` + slug + `"`
}

// orList is `"a", "b" or "c"`.
func orList(ids []string) string {
	var b strings.Builder
	for i, id := range ids {
		switch {
		case i == 0:
		case i == len(ids)-1:
			b.WriteString(" or ")
		default:
			b.WriteString(", ")
		}
		b.WriteString(quoted(id))
	}
	return b.String()
}

// perMillion is a price per token as dollars per million tokens, "" when
// it is not a price.
func perMillion(perToken string) string {
	p, err := strconv.ParseFloat(perToken, 64)
	if err != nil || p < 0 || p > 1 {
		return ""
	}
	return money(p * 1e6)
}

// The metadata members of the model reasons, after the limit ones.
const (
	metaModelID metaMember = iota + 64
	metaSuggestions
	metaLastListed
	metaExpirationDate
	metaFilter
	metaSource
	metaSetting
	metaCandidates
	metaSuccessors
	metaPaidModel
	metaAvailableProviders
)

var modelMemberNames = [...]string{"model", "suggestions", "last_listed", "expiration_date", "filter", "source", "setting",
	"candidates", "successors", "paid_model", "available_providers"}

// modelMemberName is the name of a model reason's member, "" for another.
func modelMemberName(m metaMember) string {
	if m >= metaModelID && int(m-metaModelID) < len(modelMemberNames) {
		return modelMemberNames[m-metaModelID]
	}
	return ""
}

// appendMember appends member m when the facts show it.
func (f *modelFacts) appendMember(members []errbody.Member, m metaMember) []errbody.Member {
	name := modelMemberName(m)
	text := func(s string) []errbody.Member {
		if s == "" {
			return members
		}
		return append(members, errbody.Text(name, s))
	}
	date := func(t time.Time) []errbody.Member {
		if t.IsZero() {
			return members
		}
		return append(members, errbody.Text(name, t.UTC().Format(time.DateOnly)))
	}
	list := func(l []string) []errbody.Member {
		if len(l) == 0 {
			return members
		}
		return append(members, errbody.JSON(name, jsonStrings(l)))
	}
	switch m {
	case metaModelID:
		return text(f.model)
	case metaSuggestions:
		if f.suggestions != nil {
			return append(members, errbody.JSON(name, jsonStrings(f.suggestions)))
		}
	case metaLastListed:
		return date(f.lastListed)
	case metaExpirationDate:
		return date(f.expiration)
	case metaFilter:
		return text(string(f.filter))
	case metaSource:
		return text(f.source)
	case metaSetting:
		return text(f.setting)
	case metaCandidates:
		return list(f.candidates)
	case metaSuccessors:
		return list(f.successors)
	case metaPaidModel:
		return text(f.paid)
	case metaAvailableProviders:
		return list(f.available)
	}
	return members
}

// jsonStrings is a JSON array of strings.
func jsonStrings(l []string) []byte {
	out, err := json.Marshal(l)
	if err != nil {
		panic("a list of strings always encodes: " + err.Error())
	}
	return out
}

// setModelHeaders sets the headers of an explained model failure: no
// retry can succeed, so no Retry-After goes with it.
func setModelHeaders(h http.Header) {
	h.Set("X-Should-Retry", "false")
	h.Del("Retry-After")
}
