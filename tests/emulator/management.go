package emulator

import (
	"net/http"
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
	ws := s.workspaceOf(k)
	s.mu.Unlock()
	limit, left := limits(k)
	s.writeJSON(w, r, http.StatusOK, openrouter.Data[openrouter.KeyInfo]{Data: openrouter.KeyInfo{
		Label: k.Label(), Limit: limit, LimitRemaining: left, LimitReset: k.limitReset(),
		Usage: k.Usage, UsageDaily: k.spent.daily, UsageWeekly: k.spent.weekly, UsageMonthly: k.spent.monthly,
		IsFreeTier: neverPurchased, IsManagementKey: k.Management, IsProvisioningKey: k.Management, ExpiresAt: truncated(k.ExpiresAt),
		RateLimit:              &openrouter.RateLimit{Requests: -1, Interval: "10s", Note: "This field is deprecated and safe to ignore."},
		FreeModelDailyRequests: free, WorkspaceID: ws,
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
	q, ok := openrouter.ParseKeysQuery(r.URL.Query())
	if !ok {
		s.writeError(w, r, http.StatusBadRequest, openrouter.MessageInvalidOffset, nil)
		return
	}
	offset, includeDisabled := q.Offset, q.IncludeDisabled
	if !sleep(r, s.ListPageDelay) {
		return
	}
	s.mu.Lock()
	ws := s.workspaces[0]
	if q.WorkspaceID != "" {
		ws = s.workspaceByID[q.WorkspaceID]
	}
	if ws == nil {
		s.mu.Unlock()
		s.writeError(w, r, http.StatusNotFound, openrouter.MessageWorkspaceNotFound, nil)
		return
	}
	if s.listFailsPage > 0 && offset/PageSize+1 == s.listFailsPage {
		s.mu.Unlock()
		s.writeError(w, r, http.StatusInternalServerError, openrouter.MessageInternalError, nil)
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
	s.writeJSON(w, r, http.StatusOK, openrouter.Data[[]openrouter.KeyRecord]{Data: page})
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
		s.writeError(w, r, http.StatusNotFound, openrouter.MessageKeyNotFound, nil)
		return
	}
	s.writeJSON(w, r, http.StatusOK, openrouter.Data[openrouter.KeyRecord]{Data: rec})
}

// listWorkspaces is GET /workspaces: the account's workspaces, oldest
// (the default one) first, limit (default 50, at most 100) from offset.
func (s *Server) listWorkspaces(w http.ResponseWriter, r *http.Request, _ *Key) {
	q, ok := openrouter.ParseWorkspacesQuery(r.URL.Query())
	if !ok {
		s.writeError(w, r, http.StatusBadRequest, openrouter.MessageInvalidPagination, nil)
		return
	}
	s.mu.Lock()
	page := openrouter.WorkspacesPage{Data: make([]openrouter.Workspace, 0, q.Limit), TotalCount: len(s.workspaces)}
	for i := q.Offset; i < len(s.workspaces) && len(page.Data) < q.Limit; i++ {
		ws := s.workspaces[i]
		page.Data = append(page.Data, openrouter.Workspace{
			ID: ws.ID, Name: ws.Name, Slug: ws.Slug, CreatedAt: ws.CreatedAt.Truncate(time.Second),
		})
	}
	s.mu.Unlock()
	s.writeJSON(w, r, http.StatusOK, page)
}

// credits is GET /credits: the account's total_credits and total_usage.
func (s *Server) credits(w http.ResponseWriter, r *http.Request, k *Key) {
	s.mu.Lock()
	a := s.accountByID(k.AccountID)
	data := openrouter.Credits{TotalCredits: a.totalCredits, TotalUsage: a.totalUsage}
	s.mu.Unlock()
	s.writeJSON(w, r, http.StatusOK, openrouter.Data[openrouter.Credits]{Data: data})
}
