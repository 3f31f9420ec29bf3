package openrouter

// wire.go owns the envelope of OpenRouter's successful answers, the wire
// types of the workspace budgets and the model catalogue, and the
// messages of the management API's own refusals. The key and workspace
// types are in records.go.

// Data is OpenRouter's envelope of a successful answer: {"data": ...}.
type Data[T any] struct {
	Data T `json:"data"`
}

// WorkspacesPage is GET /workspaces' answer: a page of workspaces and how
// many the account has.
type WorkspacesPage struct {
	Data       []Workspace `json:"data"`
	TotalCount int         `json:"total_count"`
}

// WorkspaceBudget is one budget of GET /workspaces/{id}/budgets.
// Its times are kept as sent: nothing reads them, and a format they might
// come in must not make the budgets unreadable.
type WorkspaceBudget struct {
	CreatedAt string  `json:"created_at"`
	ID        string  `json:"id"`
	LimitUSD  float64 `json:"limit_usd"`
	// ResetInterval is "daily", "weekly", "monthly" or "lifetime".
	ResetInterval string  `json:"reset_interval"`
	UpdatedAt     *string `json:"updated_at"`
	WorkspaceID   string  `json:"workspace_id"`
}

// BudgetsPage is GET /workspaces/{id}/budgets' answer.
type BudgetsPage struct {
	Data                 []WorkspaceBudget `json:"data"`
	IncludeBYOKInBudgets bool              `json:"include_byok_in_budgets"`
}

// Model is one model of GET /models, the members the emulator serves and
// the gateway may read.
type Model struct {
	ID                  string            `json:"id"`
	CanonicalSlug       string            `json:"canonical_slug"`
	Name                string            `json:"name"`
	Created             int64             `json:"created"`
	Description         string            `json:"description"`
	ContextLength       int               `json:"context_length"`
	Architecture        ModelArchitecture `json:"architecture"`
	Pricing             ModelPricing      `json:"pricing"`
	TopProvider         ModelTopProvider  `json:"top_provider"`
	PerRequestLimits    map[string]any    `json:"per_request_limits"`
	SupportedParameters []string          `json:"supported_parameters"`
}

// ModelArchitecture is a model's modalities.
type ModelArchitecture struct {
	Modality         string   `json:"modality"`
	InputModalities  []string `json:"input_modalities"`
	OutputModalities []string `json:"output_modalities"`
}

// ModelPricing is a model's prices in USD per unit, as decimal strings.
type ModelPricing struct {
	Prompt     string `json:"prompt"`
	Completion string `json:"completion"`
	Request    string `json:"request"`
	Image      string `json:"image"`
}

// ModelTopProvider is what the model's first provider allows.
type ModelTopProvider struct {
	ContextLength       int  `json:"context_length"`
	MaxCompletionTokens int  `json:"max_completion_tokens"`
	IsModerated         bool `json:"is_moderated"`
}

// The messages of the management API's and the router's own refusals.
// Only MessageManagementOnly is documented; the others are what the
// emulator sends where the wording is not known.
const (
	// MessageManagementOnly is the 403 of a management endpoint called
	// with a key that is not a management key.
	MessageManagementOnly = "Only management keys can perform this operation"
	// MessageNotFound is the 404 of a path OpenRouter does not serve.
	MessageNotFound = "Not Found"
	// MessageKeyNotFound is GET /keys/{hash}'s 404.
	MessageKeyNotFound = "Key not found"
	// MessageWorkspaceNotFound is GET /keys' 404 for an unknown
	// workspace_id.
	MessageWorkspaceNotFound = "Workspace not found"
	// MessageBudgetsNotFound is GET /workspaces/{id}/budgets' 404 for a
	// workspace without budgets.
	MessageBudgetsNotFound = "Workspace budgets not found"
	// MessageInvalidOffset is GET /keys' 400 for a bad offset.
	MessageInvalidOffset = "Invalid offset"
	// MessageInvalidPagination is GET /workspaces' 400 for a bad offset
	// or limit.
	MessageInvalidPagination = "Invalid pagination: offset must be 0 or more, limit between 1 and 100"
	// MessageInvalidJSON is the 400 of an inference request whose body is
	// not JSON.
	MessageInvalidJSON = "Invalid JSON body"
	// MessageInternalError is a 500's.
	MessageInternalError = "Internal Server Error"
)
