package openrouter

// catalogue.go owns what the gateway reads of OpenRouter's model list
// beyond its ids (GET /models: canonical slugs, expiration dates,
// supported parameters, aliases, prices), the wire form the emulator
// serves it in, and GET /models/user's path.

import (
	"context"
	"strings"
	"time"
)

// PathModelsUser is GET /models/user: the models the bearer key may use
// under its guardrails and the account's policy.
const PathModelsUser = "/models/user"

// NotRetiring is the expiration_date OpenRouter stamps on models that are
// not retiring; null means the same.
const NotRetiring = "2098-12-31"

// ExpirationLayout is the layout of expiration_date.
const ExpirationLayout = time.DateOnly

// ModelAlias is the alias_target of a ~author/...-latest alias: the model
// it stands for now.
type ModelAlias struct {
	Slug string `json:"slug"`
}

// ModelListing is one model of GET /models with the members of the
// catalogue that Model does not carry: expiration_date ("YYYY-MM-DD" or
// null) and alias_target.
type ModelListing struct {
	Model
	ExpirationDate *string     `json:"expiration_date"`
	AliasTarget    *ModelAlias `json:"alias_target,omitempty"`
}

// CatalogueModel is what the gateway reads of one model of GET /models.
type CatalogueModel struct {
	ID                  string       `json:"id"`
	CanonicalSlug       string       `json:"canonical_slug"`
	Name                string       `json:"name"`
	ExpirationDate      *string      `json:"expiration_date"`
	SupportedParameters []string     `json:"supported_parameters"`
	AliasTarget         *ModelAlias  `json:"alias_target"`
	Pricing             ModelPricing `json:"pricing"`
}

// Expiration is when the model may be removed, or zero when it is not
// retiring (null, NotRetiring, or a date that does not parse).
func (m *CatalogueModel) Expiration() time.Time {
	return ParseExpiration(m.ExpirationDate)
}

// ParseExpiration reads an expiration_date: the start of that day in UTC,
// or zero for null, NotRetiring and anything that is not a date.
func ParseExpiration(date *string) time.Time {
	if date == nil || *date == NotRetiring {
		return time.Time{}
	}
	t, err := time.Parse(ExpirationLayout, *date)
	if err != nil || t.Year() >= 2098 {
		return time.Time{}
	}
	return t
}

// Models reads the model catalogue, which needs no key: every model with
// the members CatalogueModel names (GET /models is about 0.5 to 1 MB;
// larger than maxModelsResponse is an ErrorTooLarge).
func (c *Client) Models(ctx context.Context) ([]CatalogueModel, Result) {
	var models []CatalogueModel
	res := c.get(ctx, EndpointModels, pathModels, "", maxModelsResponse, &models)
	if res.Err != nil {
		return nil, res
	}
	return models, res
}

// PathCompletions is the legacy completions endpoint (POST).
const PathCompletions = "/completions"

// IsInferencePath reports whether path (with or without APIPrefix) is one
// of the inference endpoints, whose POST body names a model:
// chat/completions, completions, messages, responses.
func IsInferencePath(path string) bool {
	path = strings.TrimSuffix(path, "/")
	return strings.HasSuffix(path, PathCompletions) || strings.HasSuffix(path, PathMessages) ||
		strings.HasSuffix(path, PathResponses)
}
