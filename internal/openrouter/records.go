package openrouter

// records.go holds the management API's wire types (keys, key records,
// workspaces, credits) and page sizes, the one rule that names a
// workspace, and the record-hash scheme.

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Page sizes of the management API's listings.
const (
	// KeysPageSize is how many records one page of GET /keys holds; a
	// shorter page is the last.
	KeysPageSize = 100
	// workspacesPageSize is the largest page GET /workspaces serves.
	workspacesPageSize = 100
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
	// WorkspaceID is the key's workspace; null when it was deleted
	// (credentials.go).
	WorkspaceID WorkspaceRef `json:"workspace_id,omitzero"`
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
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Slug        string    `json:"slug"`
	Description *string   `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   *string   `json:"updated_at"`
}

// defaultWorkspaceName is what people call the workspace GET /keys lists
// without a workspace_id.
const defaultWorkspaceName = "default"

// WorkspaceName is a workspace's name for people and metric labels: its
// name, else its slug; for a workspace not among the account's workspaces
// as read (wss), defaultWorkspaceName when its id is "" (a record of the
// default workspace read without the workspace list) and its id
// otherwise. An id is never called "default": a workspace created since
// the list was read is not the default one, and naming it so would put
// its keys under another workspace's name.
func WorkspaceName(wss []Workspace, id string) string {
	for _, w := range wss {
		if w.ID == id {
			if w.Name != "" {
				return w.Name
			}
			if w.Slug != "" {
				return w.Slug
			}
			break
		}
	}
	if id == "" {
		return defaultWorkspaceName
	}
	return id
}

// RecordHashOf is the record hash OpenRouter's management API is
// documented to give a key: sha256 of the key, in lowercase hex. Whether an
// account's hashes really are that is learned, never assumed. KEY
// MATERIAL: never log or store it.
func RecordHashOf(key string) string {
	sum := RecordHashSum(key)
	return hex.EncodeToString(sum[:])
}

// RecordHashSum is RecordHashOf as bytes.
func RecordHashSum(key string) [sha256.Size]byte {
	return sha256.Sum256([]byte(key))
}

// Identity is what tells a record apart from the others of a listing:
// its hash, or, for a record without one, its label, name and creation.
func (r *KeyRecord) Identity() string {
	if r.Hash != "" {
		return r.Hash
	}
	return r.Label + "|" + r.Name + "|" + r.CreatedAt
}

// Credits is the "data" of GET /credits: the account's credits bought and
// used, readable with a management key only.
type Credits struct {
	TotalCredits float64 `json:"total_credits"`
	TotalUsage   float64 `json:"total_usage"`
}
