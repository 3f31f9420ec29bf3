package caddymodule

// keycheck_common.go owns the key check page's list of common failures and
// what fixes them: every reason of the table in its words for people (its
// headline and advice, and whether a retry helps), grouped by status, and
// the failures OpenRouter reports that no reason of the table explains
// yet. It is built once; the page shows it under the form and the result
// (not under an error, which stays alone), folded, with no script needed.

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// failureGroup is one folded group of the list.
type failureGroup struct {
	Title string
	Items []commonFailure
}

// commonFailure is one failure of the list.
type commonFailure struct {
	Headline string
	// Code is the reason's metadata.reason, "" for a failure the gateway
	// passes unchanged.
	Code   string
	Advice string
	// Retry says whether a retry can help, "" when it depends.
	Retry string
}

// Whether a retry helps, in words.
const (
	retryHelpsNot = "A retry does not help."
	retryHelps    = "A retry can succeed."
)

// groupTitles name the groups of reasons by status.
var groupTitles = map[int]string{
	http.StatusBadRequest:      "Bad request (400): a provider refused the request, or an error of unknown cause",
	http.StatusUnauthorized:    "The key or token is refused (401)",
	http.StatusPaymentRequired: "Payment required (402)",
	http.StatusForbidden:       "Forbidden (403): spending limits and policies",
	// 429: transient limits and capacity, and the free-model allowance.
	http.StatusTooManyRequests: "Too many requests (429)",
	// A provider's outage, at whatever 5xx it came.
	http.StatusServiceUnavailable: "A provider failed (5xx)",
}

// beyondTable are failures OpenRouter reports that no reason of the table
// explains: they pass unchanged, and people still meet them. An item goes
// once a reason of the table covers it.
var beyondTable = failureGroup{
	Title: "Other failures OpenRouter reports",
	Items: []commonFailure{
		{
			Headline: "A reply that stops early (status 200)",
			Advice: `A provider failed after the answer started: OpenRouter says so inside the 200, in a chunk with "error" and finish_reason "error", or in a body with "error" beside the id. ` +
				"The reply is cut short, not complete: retry, or use another provider. The key and the credits are fine.",
		},
	},
}

// commonFailures is the list, built from the reason table.
var commonFailures = func() []failureGroup {
	byStatus := map[int]*failureGroup{}
	var statuses []int
	for i := range reasonTable {
		e := &reasonTable[i]
		g := byStatus[e.status]
		if g == nil {
			title, ok := groupTitles[e.status]
			if !ok {
				title = "Status " + strconv.Itoa(e.status)
			}
			g = &failureGroup{Title: title}
			byStatus[e.status] = g
			statuses = append(statuses, e.status)
		}
		item := commonFailure{Headline: e.headline, Code: string(e.code), Advice: e.advice}
		switch e.retry {
		case retryNo:
			item.Retry = retryHelpsNot
		case retryYes:
			item.Retry = retryHelps
		}
		g.Items = append(g.Items, item)
	}
	slices.Sort(statuses)
	out := make([]failureGroup, 0, len(statuses)+1)
	for _, s := range statuses {
		out = append(out, *byStatus[s])
	}
	return append(out, beyondTable)
}()

// commonIntro leads the list.
var commonIntro = "What OpenRouter's failures mean and what fixes each. The gateway says which one happened in metadata.reason and X-OpenRouter-Key-Status; a 403 or 429 is not always about the key or credits. Settings: keys at " +
	openrouter.URLKeys + ", credits at " + openrouter.URLCredits + ", provider keys at " + openrouter.URLIntegrations + ", privacy and routing at " + openrouter.URLPrivacy + "."

// Common and CommonIntro are for the template.
func (pageData) Common() []failureGroup { return commonFailures }
func (pageData) CommonIntro() string    { return commonIntro }
