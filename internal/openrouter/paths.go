package openrouter

// paths.go owns where OpenRouter's API answers: its base URL, every
// endpoint path and query parameter the gateway and the emulator use, the
// routing of a path to its endpoint, and the URLs of OpenRouter's settings
// pages that answers point people to.

import (
	"net/url"
	"strconv"
	"strings"
)

// BaseURL is OpenRouter's API; every path below is relative to it.
const BaseURL = "https://openrouter.ai" + APIPrefix

// APIPrefix is the path under which OpenRouter serves its API.
const APIPrefix = "/api/v1"

// The paths of the endpoints, relative to BaseURL.
const (
	// PathKey is GET /key: the bearer key's own metadata.
	PathKey = "/key"
	// pathKeyLegacy is GET /key's older alias.
	pathKeyLegacy = "/auth/key"
	// pathKeys is GET /keys: one page of a workspace's key records.
	pathKeys = "/keys"
	// pathWorkspaces is GET /workspaces: one page of the account's
	// workspaces.
	pathWorkspaces = "/workspaces"
	// pathCredits is GET /credits: the account's credits.
	pathCredits = "/credits"
	// pathModels is GET /models: the public model catalogue.
	pathModels = "/models"
	// PathChatCompletions, PathMessages and PathResponses are the
	// inference endpoints (POST).
	PathChatCompletions = "/chat/completions"
	PathMessages        = "/messages"
	PathResponses       = "/responses"
)

// The query parameters of the paged endpoints.
const (
	queryIncludeDisabled = "include_disabled"
	queryOffset          = "offset"
	queryLimit           = "limit"
	queryWorkspaceID     = "workspace_id"
)

// The URLs of OpenRouter's settings pages, where people fix what an answer
// explains; OpenRouter's own failure sentences end with them too.
const (
	URLCredits      = "https://openrouter.ai/settings/credits"
	URLKeys         = "https://openrouter.ai/settings/keys"
	URLIntegrations = "https://openrouter.ai/settings/integrations"
	URLPrivacy      = "https://openrouter.ai/settings/privacy"
)

// keyPageURL is the page of one key that a key-limit 403 names: its
// workspace's slug and its record hash (key material).
func keyPageURL(workspaceSlug, recordHash string) string {
	return "https://openrouter.ai/workspaces/" + workspaceSlug + "/keys/" + recordHash
}

// Endpoint is one of the endpoints the gateway reads and the emulator
// serves.
type Endpoint uint8

// The endpoints.
const (
	// EndpointNone is no endpoint of this list (an inference endpoint, or
	// an unknown path).
	EndpointNone Endpoint = iota
	// EndpointKey is GET /key (and its alias /auth/key).
	EndpointKey
	// EndpointKeys is GET /keys, one page.
	EndpointKeys
	// EndpointKeyRecord is GET /keys/{hash}.
	EndpointKeyRecord
	// EndpointWorkspaces is GET /workspaces, one page.
	EndpointWorkspaces
	// EndpointBudgets is GET /workspaces/{id}/budgets.
	EndpointBudgets
	// EndpointCredits is GET /credits.
	EndpointCredits
	// EndpointModels is GET /models.
	EndpointModels
	endpointCount
)

// Endpoints are every endpoint, EndpointNone aside.
func Endpoints() []Endpoint {
	out := make([]Endpoint, 0, endpointCount-1)
	for e := EndpointNone + 1; e < endpointCount; e++ {
		out = append(out, e)
	}
	return out
}

var endpointNames = [endpointCount][2]string{
	// metric label, path template
	EndpointNone:       {"none", ""},
	EndpointKey:        {"key", PathKey},
	EndpointKeyRecord:  {"key_record", pathKeys + "/{hash}"},
	EndpointKeys:       {"keys_list", pathKeys},
	EndpointWorkspaces: {"workspaces", pathWorkspaces},
	EndpointBudgets:    {"budgets", pathWorkspaces + "/{id}/budgets"},
	EndpointCredits:    {"credits", pathCredits},
	EndpointModels:     {"models", pathModels},
}

// String is the endpoint's name in metrics and errors: "key",
// "key_record", "keys_list", "workspaces", "budgets", "credits", "models".
func (e Endpoint) String() string {
	if e < endpointCount {
		return endpointNames[e][0]
	}
	return "endpoint_" + strconv.Itoa(int(e))
}

// Template is the endpoint's path with its parameter named: "/key",
// "/keys/{hash}", "/workspaces/{id}/budgets", ...; "" for EndpointNone.
func (e Endpoint) Template() string {
	if e < endpointCount {
		return endpointNames[e][1]
	}
	return ""
}

// Route is the endpoint of an API path (without APIPrefix) and its path
// parameter: the record hash of /keys/{hash}, the workspace id of
// /workspaces/{id}/budgets (unescaped). EndpointNone for any other path.
func Route(path string) (e Endpoint, param string) {
	switch path {
	case PathKey, pathKeyLegacy:
		return EndpointKey, ""
	case pathKeys:
		return EndpointKeys, ""
	case pathWorkspaces:
		return EndpointWorkspaces, ""
	case pathCredits:
		return EndpointCredits, ""
	case pathModels:
		return EndpointModels, ""
	}
	if hash, ok := strings.CutPrefix(path, pathKeys+"/"); ok {
		return EndpointKeyRecord, hash
	}
	if rest, ok := strings.CutPrefix(path, pathWorkspaces+"/"); ok {
		if id, ok := strings.CutSuffix(rest, budgetsSuffix); ok {
			return EndpointBudgets, id
		}
	}
	return EndpointNone, ""
}

const budgetsSuffix = "/budgets"

// keyRecordPath is GET /keys/{hash}'s path.
func keyRecordPath(hash string) string { return pathKeys + "/" + url.PathEscape(hash) }

// budgetsPath is GET /workspaces/{id}/budgets' path.
func budgetsPath(workspaceID string) string {
	return pathWorkspaces + "/" + url.PathEscape(workspaceID) + budgetsSuffix
}

// KeysQuery is what a GET /keys request asks: a workspace ("" is the
// default one), disabled keys or not, from an offset.
type KeysQuery struct {
	WorkspaceID     string
	IncludeDisabled bool
	Offset          int
}

// path is the request's path and query.
func (q KeysQuery) path() string {
	v := url.Values{queryOffset: {strconv.Itoa(q.Offset)}}
	if q.IncludeDisabled {
		v.Set(queryIncludeDisabled, "true")
	}
	if q.WorkspaceID != "" {
		v.Set(queryWorkspaceID, q.WorkspaceID)
	}
	return pathKeys + "?" + v.Encode()
}

// ParseKeysQuery reads a GET /keys request's query; ok is false for an
// offset that is not a non-negative integer.
func ParseKeysQuery(v url.Values) (q KeysQuery, ok bool) {
	q.WorkspaceID = v.Get(queryWorkspaceID)
	q.IncludeDisabled = v.Get(queryIncludeDisabled) == "true"
	q.Offset, ok = nonNegative(v.Get(queryOffset), 0)
	return q, ok
}

// WorkspacesQuery is what a GET /workspaces request asks: Limit
// workspaces (1 to workspacesPageSize) from Offset.
type WorkspacesQuery struct {
	Offset, Limit int
}

// workspacesDefaultLimit is the page size of GET /workspaces without a
// limit.
const workspacesDefaultLimit = 50

// path is the request's path and query.
func (q WorkspacesQuery) path() string {
	return pathWorkspaces + "?" + url.Values{
		queryLimit: {strconv.Itoa(q.Limit)}, queryOffset: {strconv.Itoa(q.Offset)},
	}.Encode()
}

// ParseWorkspacesQuery reads a GET /workspaces request's query; ok is
// false for an offset or limit out of range.
func ParseWorkspacesQuery(v url.Values) (q WorkspacesQuery, ok bool) {
	var okOffset, okLimit bool
	q.Offset, okOffset = nonNegative(v.Get(queryOffset), 0)
	q.Limit, okLimit = nonNegative(v.Get(queryLimit), workspacesDefaultLimit)
	return q, okOffset && okLimit && q.Limit >= 1 && q.Limit <= workspacesPageSize
}

// nonNegative reads a non-negative integer query parameter, def when
// absent.
func nonNegative(s string, def int) (int, bool) {
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}
