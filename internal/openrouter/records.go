package openrouter

// records.go holds the management API's wire types and page sizes.

import "time"

// Page sizes of the management API's listings.
const (
	// KeysPageSize is how many records one page of GET /keys holds; a
	// shorter page is the last.
	KeysPageSize = 100
	// WorkspacesPageSize is the largest page GET /workspaces serves.
	WorkspacesPageSize = 100
)

// KeyInfo is the "data" of GET /key: what OpenRouter says of the key sent
// as bearer, while it works. Members in the documented order.
type KeyInfo struct {
	Label              string   `json:"label"`
	Limit              *float64 `json:"limit"`
	LimitRemaining     *float64 `json:"limit_remaining"`
	LimitReset         *string  `json:"limit_reset"`
	IncludeBYOKInLimit bool     `json:"include_byok_in_limit"`
	Usage              float64  `json:"usage"`
	UsageDaily         float64  `json:"usage_daily"`
	UsageWeekly        float64  `json:"usage_weekly"`
	UsageMonthly       float64  `json:"usage_monthly"`
	BYOKUsage          float64  `json:"byok_usage"`
	IsFreeTier         bool     `json:"is_free_tier"`
	IsManagementKey    bool     `json:"is_management_key"`
	// IsProvisioningKey is the older name of IsManagementKey.
	IsProvisioningKey bool       `json:"is_provisioning_key"`
	ExpiresAt         *time.Time `json:"expires_at"`
	CreatorUserID     *string    `json:"creator_user_id"`
	RateLimit         *RateLimit `json:"rate_limit"`
	// FreeModelDailyRequests is the account's free-model allowance today
	// (UTC), shared by every ":free" model.
	FreeModelDailyRequests *FreeModelDailyRequests `json:"free_model_daily_requests,omitempty"`
}

// FreeModelDailyRequests is GET /key's free_model_daily_requests.
type FreeModelDailyRequests struct {
	Limit     int `json:"limit"`
	Remaining int `json:"remaining"`
	Used      int `json:"used"`
}

// Management reports whether the key is a management key, under either
// of its names.
func (k *KeyInfo) Management() bool { return k.IsManagementKey || k.IsProvisioningKey }

// RateLimit is a key's request rate limit; Requests -1 means none.
type RateLimit struct {
	Requests int    `json:"requests"`
	Interval string `json:"interval"`
	Note     string `json:"note,omitempty"`
}

// KeyRecord is a key's record in the management API (GET /keys,
// GET /keys/{hash}). Hash is documented as a SHA-256 hex string; that it is
// sha256 of the key is not promised.
type KeyRecord struct {
	Hash               string     `json:"hash"`
	Name               string     `json:"name"`
	Label              string     `json:"label"`
	Disabled           bool       `json:"disabled"`
	Limit              *float64   `json:"limit"`
	LimitRemaining     *float64   `json:"limit_remaining"`
	LimitReset         *string    `json:"limit_reset"`
	IncludeBYOKInLimit bool       `json:"include_byok_in_limit"`
	Usage              float64    `json:"usage"`
	CreatedAt          string     `json:"created_at"`
	UpdatedAt          *string    `json:"updated_at"`
	ExpiresAt          *time.Time `json:"expires_at"`
	CreatorUserID      *string    `json:"creator_user_id"`
	WorkspaceID        string     `json:"workspace_id"`
}

// Workspace is one workspace of an account (GET /workspaces).
type Workspace struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Slug      string    `json:"slug"`
	CreatedAt time.Time `json:"created_at"`
}

// Credits is the "data" of GET /credits: the account's credits bought and
// used, readable with a management key only.
type Credits struct {
	TotalCredits float64 `json:"total_credits"`
	TotalUsage   float64 `json:"total_usage"`
}
