package emulator

// catalogue.go owns the emulator's model catalogue beyond the plain models
// of ModelIDs: models retiring within 7 and within 14 days, one retired
// (its expiration past, so no longer listed), a :free variant that ended
// (only its paid slug listed), a ~author/...-latest alias with its
// alias_target, and expiration dates stamped 2098-12-31 or null as
// OpenRouter sends them; and GET /models/user, which lists the models a
// key may use under its guardrail (SetGuardrail).

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// The models of the catalogue with an expiration or an alias.
const (
	// ModelRetiringSoon retires within 7 days (in 5), ModelRetiringLater
	// within 14 (in 12).
	ModelRetiringSoon  = "emulator/retiring-soon"
	ModelRetiringLater = "emulator/retiring-later"
	// ModelRetired retired 3 days ago: no longer listed.
	ModelRetired = "emulator/retired"
	// ModelFreeEnded is a :free variant that ended; ModelFreeEndedPaid,
	// its paid slug, is listed.
	ModelFreeEnded     = "emulator/free-ended:free"
	ModelFreeEndedPaid = "emulator/free-ended"
	// ModelAlias is a ~author/...-latest alias of ModelAliasTarget.
	ModelAlias       = "~emulator/model-latest"
	ModelAliasTarget = "openai/gpt-4o"
)

// Days until the retiring models' expiration dates.
const (
	RetiringSoonDays  = 5
	RetiringLaterDays = 12
	retiredDaysAgo    = 3
)

// expirationIn is the expiration_date days from now (UTC).
func expirationIn(now time.Time, days int) *string {
	d := now.UTC().AddDate(0, 0, days).Format(openrouter.ExpirationLayout)
	return &d
}

// catalogueListing is every model of the catalogue as it stands now:
// ModelIDs (every other one stamped not retiring, the rest null), the
// retiring ones, the paid slug of the ended free model, the alias; the
// retired model only while its date has not passed (never, as it stands).
func (s *Server) catalogueListing() []openrouter.ModelListing {
	now := s.now()
	stamp := openrouter.NotRetiring
	out := make([]openrouter.ModelListing, 0, len(ModelIDs)+4)
	for i, id := range ModelIDs {
		l := openrouter.ModelListing{Model: emulatedModel(id, i)}
		if i%2 == 0 {
			l.ExpirationDate = &stamp
		}
		out = append(out, l)
	}
	for i, m := range []struct {
		id         string
		expiration *string
	}{
		{ModelRetiringSoon, expirationIn(now, RetiringSoonDays)},
		{ModelRetiringLater, expirationIn(now, RetiringLaterDays)},
		{ModelRetired, expirationIn(now, -retiredDaysAgo)},
		{ModelFreeEndedPaid, &stamp},
	} {
		if exp := openrouter.ParseExpiration(m.expiration); !exp.IsZero() && exp.Before(now) {
			continue // retired: OpenRouter lists it no more
		}
		out = append(out, openrouter.ModelListing{Model: emulatedModel(m.id, len(ModelIDs)+i), ExpirationDate: m.expiration})
	}
	alias := openrouter.ModelListing{Model: emulatedModel(ModelAlias, len(out)), AliasTarget: &openrouter.ModelAlias{Slug: ModelAliasTarget}}
	return append(out, alias)
}

// emulatedModel is the model id as the emulator lists it.
func emulatedModel(id string, i int) openrouter.Model {
	return openrouter.Model{
		ID: id, CanonicalSlug: id, Name: id, Created: int64(1700000000 + i),
		Description:         strings.Repeat("A model emulated for tests. ", 40),
		ContextLength:       128000,
		Architecture:        openrouter.ModelArchitecture{Modality: "text->text", InputModalities: []string{"text"}, OutputModalities: []string{"text"}},
		Pricing:             openrouter.ModelPricing{Prompt: "0.0000025", Completion: "0.00001", Request: "0", Image: "0"},
		TopProvider:         openrouter.ModelTopProvider{ContextLength: 128000, MaxCompletionTokens: maxCompletionTokens, IsModerated: true},
		SupportedParameters: []string{"max_tokens", "temperature", "stream", "tools", "tool_choice"},
	}
}

// ListedModelIDs are the ids GET /models lists now.
func (s *Server) ListedModelIDs() []string {
	l := s.catalogueListing()
	ids := make([]string, len(l))
	for i, m := range l {
		ids[i] = m.ID
	}
	return ids
}

// SetGuardrail limits the models key may use to allowed (GET /models/user
// lists only those); no models lifts the guardrail.
func (s *Server) SetGuardrail(key string, allowed ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.guardrails == nil {
		s.guardrails = make(map[string][]string)
	}
	if len(allowed) == 0 {
		delete(s.guardrails, key)
		return
	}
	s.guardrails[key] = slices.Clone(allowed)
}

// Allows reports whether key's guardrail lets it use model.
func (s *Server) Allows(key, model string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	allowed, ok := s.guardrails[key]
	return !ok || slices.Contains(allowed, model)
}

// userModels answers GET /models/user: the catalogue as the key's
// guardrail lets it see it.
func (s *Server) userModels(w http.ResponseWriter, r *http.Request, k *Key) {
	all := s.catalogueListing()
	out := all[:0:0]
	for _, m := range all {
		if s.Allows(k.Secret, m.ID) {
			out = append(out, m)
		}
	}
	s.writeJSON(w, r, http.StatusOK, openrouter.Data[[]openrouter.ModelListing]{Data: out})
}
