package emulator

import (
	"net/http"
	"strconv"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// SetListFailsOnPage makes GET /keys fail with 500 on the given page
// (1-based, by offset); 0 never fails.
func (s *Server) SetListFailsOnPage(page int) {
	s.mu.Lock()
	s.listFailsPage = page
	s.mu.Unlock()
}

// OnListPage sets a hook called for each GET /keys page served, with the
// workspace listed and the page's offset. It runs once the page's content
// is fixed and before the page is sent, so that whatever it changes
// (creating or deleting keys) is in place before the client can ask for
// the next page: the listing shifts under the reader, as offset paging
// does in reality. nil removes the hook.
func (s *Server) OnListPage(hook func(workspaceID string, offset int)) {
	s.mu.Lock()
	s.onListPage = hook
	s.mu.Unlock()
}

// truncated is t to the second, as OpenRouter writes times, or nil.
func truncated(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := t.UTC().Truncate(time.Second)
	return &c
}

// limits are a key's limit and limit_remaining (limit - what it spent in
// the limit's window), or nils. The key must be rolled to now.
func limits(k *Key) (limit, remaining *float64) {
	if k.Limit == nil {
		return nil, nil
	}
	l, r := *k.Limit, *k.Limit-k.spentInWindow()
	return &l, &r
}

// current is the key with that secret rolled to now, copied; a JWT
// (not held) as it is. s.mu must be held.
func (s *Server) current(k *Key) Key {
	if held := s.bySecret[k.Secret]; held != nil {
		held.roll(s.now())
		return *held
	}
	return *k
}

func (s *Server) keyInfo(w http.ResponseWriter, r *http.Request, k *Key) {
	s.mu.Lock()
	cur := s.current(k)
	k = &cur
	a := s.accountByID(k.AccountID)
	free := a.freeModelDailyRequests(s.now())
	neverPurchased := a.totalCredits == 0
	s.mu.Unlock()
	limit, left := limits(k)
	s.writeJSON(w, r, http.StatusOK, map[string]any{"data": openrouter.KeyInfo{
		Label: k.Label(), Limit: limit, LimitRemaining: left, LimitReset: k.limitReset(),
		Usage: k.Usage, UsageDaily: k.spent.daily, UsageWeekly: k.spent.weekly, UsageMonthly: k.spent.monthly,
		IsFreeTier: neverPurchased, IsManagementKey: k.Management, IsProvisioningKey: k.Management, ExpiresAt: truncated(k.ExpiresAt),
		RateLimit:              &openrouter.RateLimit{Requests: -1, Interval: "10s", Note: "This field is deprecated and safe to ignore."},
		FreeModelDailyRequests: free,
	}})
}

// record is a key's management record, rolled to now. s.mu must be held.
func (s *Server) record(k *Key) openrouter.KeyRecord {
	k.roll(s.now())
	limit, left := limits(k)
	return openrouter.KeyRecord{
		Hash: k.Hash, Name: k.Name, Label: k.Label(), Disabled: k.Disabled,
		Limit: limit, LimitRemaining: left, LimitReset: k.limitReset(), Usage: k.Usage,
		CreatedAt: k.CreatedAt.Format(time.RFC3339), ExpiresAt: truncated(k.ExpiresAt), WorkspaceID: k.WorkspaceID,
	}
}

// queryInt reads a non-negative integer query parameter, def when absent.
func queryInt(r *http.Request, name string, def int) (int, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 0
}

// sleep waits d or until the client gives up, and reports whether it may
// go on.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.Context().Done():
		return false
	case <-t.C:
		return true
	}
}

// listKeys is GET /keys: one workspace's keys (the default one unless
// workspace_id), most recent first, PageSize per page from offset,
// disabled ones only with include_disabled=true.
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, _ *Key) {
	offset, ok := queryInt(r, "offset", 0)
	if !ok {
		s.writeError(w, r, http.StatusBadRequest, "Invalid offset", nil)
		return
	}
	includeDisabled := r.URL.Query().Get("include_disabled") == "true"
	if !sleep(r, s.ListPageDelay) {
		return
	}
	s.mu.Lock()
	ws := s.workspaces[0]
	if id := r.URL.Query().Get("workspace_id"); id != "" {
		ws = s.workspaceByID[id]
	}
	if ws == nil {
		s.mu.Unlock()
		s.writeError(w, r, http.StatusNotFound, "Workspace not found", nil)
		return
	}
	if s.listFailsPage > 0 && offset/PageSize+1 == s.listFailsPage {
		s.mu.Unlock()
		s.writeError(w, r, http.StatusInternalServerError, "Internal Server Error", nil)
		return
	}
	// With disabled keys included every key counts, and the page starts
	// right at the offset; without, the disabled ones are skipped first.
	start, skip := len(ws.keys)-1, offset
	if includeDisabled {
		start, skip = start-offset, 0
	}
	page := make([]openrouter.KeyRecord, 0, PageSize)
	for i := start; i >= 0 && len(page) < PageSize; i-- { // most recent first
		k := ws.keys[i]
		if k.Disabled && !includeDisabled {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		page = append(page, s.record(k))
	}
	if len(page) < PageSize { // the synthetic keys are older
		page = s.syntheticPage(page, ws, max(0, offset-visible(ws.keys, includeDisabled)), includeDisabled)
	}
	hook, id := s.onListPage, ws.ID
	s.mu.Unlock()
	if hook != nil {
		hook(id, offset)
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"data": page})
}

// getKey is GET /keys/{hash}: a key of any workspace of the account.
func (s *Server) getKey(w http.ResponseWriter, r *http.Request, hash string) {
	s.mu.Lock()
	var rec openrouter.KeyRecord
	k := s.byHash[hash]
	if k == nil {
		k = s.syntheticByHash(hash)
	}
	found := k != nil && !k.Deleted && k.AccountID == ""
	if found {
		rec = s.record(k)
	}
	s.mu.Unlock()
	if !found {
		s.writeError(w, r, http.StatusNotFound, "Key not found", nil)
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"data": rec})
}

// listWorkspaces is GET /workspaces: the account's workspaces, oldest
// (the default one) first, limit (default 50, at most 100) from offset.
func (s *Server) listWorkspaces(w http.ResponseWriter, r *http.Request, _ *Key) {
	offset, okOffset := queryInt(r, "offset", 0)
	limit, okLimit := queryInt(r, "limit", 50)
	if !okOffset || !okLimit || limit < 1 || limit > openrouter.WorkspacesPageSize {
		s.writeError(w, r, http.StatusBadRequest, "Invalid pagination: offset must be 0 or more, limit between 1 and 100", nil)
		return
	}
	s.mu.Lock()
	total := len(s.workspaces)
	data := make([]map[string]any, 0, limit)
	for i := offset; i < total && len(data) < limit; i++ {
		ws := s.workspaces[i]
		data = append(data, map[string]any{
			"id": ws.ID, "name": ws.Name, "slug": ws.Slug, "description": nil,
			"created_at": ws.CreatedAt.Format(time.RFC3339), "updated_at": nil,
		})
	}
	s.mu.Unlock()
	s.writeJSON(w, r, http.StatusOK, map[string]any{"data": data, "total_count": total})
}

// credits is GET /credits: the account's total_credits and total_usage.
func (s *Server) credits(w http.ResponseWriter, r *http.Request, k *Key) {
	s.mu.Lock()
	a := s.accountByID(k.AccountID)
	data := map[string]any{"total_credits": a.totalCredits, "total_usage": a.totalUsage}
	s.mu.Unlock()
	s.writeJSON(w, r, http.StatusOK, map[string]any{"data": data})
}
