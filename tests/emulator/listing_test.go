package emulator

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

type workspaceRecord struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Slug      string `json:"slug"`
	CreatedAt string `json:"created_at"`
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestWorkspaces(t *testing.T) {
	s, base := start(t)
	management := s.NewKey(KeyOptions{Management: true})
	ids := []string{s.DefaultWorkspace()}
	for i := 1; i <= 120; i++ {
		ids = append(ids, s.NewWorkspace(fmt.Sprintf("Team %d", i)))
	}
	ids = append(ids, s.NewWorkspace("Team 1"))

	list := func(query string) ([]workspaceRecord, int) {
		t.Helper()
		r := call(t, "GET", base+"/workspaces"+query, management, "")
		var page struct {
			Data       []workspaceRecord `json:"data"`
			TotalCount *int              `json:"total_count"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil || page.TotalCount == nil || page.Data == nil {
			t.Fatalf("%s: no total_count: %s", query, r.body)
		}
		return page.Data, *page.TotalCount
	}
	for _, c := range []struct {
		query       string
		first, size int
	}{
		{"", 0, 50}, {"?limit=100", 0, 100}, {"?offset=100&limit=100", 100, 22}, {"?offset=50", 50, 50}, {"?offset=500", 0, 0},
	} {
		page, total := list(c.query)
		if total != len(ids) || len(page) != c.size {
			t.Errorf("%q: %d workspaces of %d, want %d of %d", c.query, len(page), total, c.size, len(ids))
			continue
		}
		for i, ws := range page {
			if ws.ID != ids[c.first+i] || !uuidPattern.MatchString(ws.ID) || ws.Name == "" || ws.Slug == "" {
				t.Errorf("%q #%d: %+v", c.query, i, ws)
			}
			if _, err := time.Parse(time.RFC3339, ws.CreatedAt); err != nil {
				t.Errorf("created_at %q: %v", ws.CreatedAt, err)
			}
		}
	}
	page, _ := list("?limit=100")
	if page[0].Name != "Default" || page[0].Slug != "default" || page[1].Slug != "team-1" {
		t.Errorf("first workspaces: %+v", page[:2])
	}
	if last, _ := list("?offset=121&limit=1"); last[0].Slug != "team-1-2" {
		t.Errorf("a second %q gets slug %q", "Team 1", last[0].Slug)
	}
	for _, q := range []string{"?limit=101", "?limit=0", "?offset=-1", "?limit=x"} {
		if r := call(t, "GET", base+"/workspaces"+q, management, ""); r.status != 400 {
			t.Errorf("%s: %d %s", q, r.status, r.body)
		}
	}
	if r := call(t, "GET", base+"/workspaces", s.NewKey(KeyOptions{}), ""); r.status != 403 {
		t.Errorf("inference key: %d", r.status)
	}
}

// listAll reads every page of GET /keys as a client does, offset by offset.
func listAll(t *testing.T, base, management, query string) []gotRecord {
	t.Helper()
	var all []gotRecord
	for offset := 0; ; offset += PageSize {
		r := call(t, "GET", base+"/keys?include_disabled=true&offset="+strconv.Itoa(offset)+query, management, "")
		var page []gotRecord
		r.data(t, &page)
		all = append(all, page...)
		if len(page) < PageSize {
			return all
		}
	}
}

func TestKeysPerWorkspace(t *testing.T) {
	s, base := start(t)
	management := s.NewKey(KeyOptions{Management: true, Name: "management"})
	prod := s.NewWorkspace("Production")
	defaults := s.NewKeys(150, KeyOptions{Name: "default"})
	prods := s.NewKeys(130, KeyOptions{Name: "prod", Workspace: prod})
	s.SetDisabled(defaults[10], true)
	s.Delete(defaults[20])

	// Default workspace: most recent first, management key last (oldest).
	all := listAll(t, base, management, "")
	if len(all) != 150 { // 150 + management - deleted
		t.Fatalf("default workspace: %d records", len(all))
	}
	for i, rec := range all {
		want := management
		if i < 149 {
			want = defaults[149-i]
			if 149-i <= 20 {
				want = defaults[148-i]
			}
		}
		if rec.Label != openrouter.Label(want) || rec.WorkspaceID != s.DefaultWorkspace() {
			t.Fatalf("#%d: %+v, want %s in %s", i, rec, openrouter.Label(want), s.DefaultWorkspace())
		}
		if rec.Disabled != (want == defaults[10]) {
			t.Errorf("#%d disabled=%v", i, rec.Disabled)
		}
	}
	// Without include_disabled the disabled key is left out.
	var page []gotRecord
	call(t, "GET", base+"/keys?offset=100", management, "").data(t, &page)
	if len(page) != 49 {
		t.Errorf("second page without disabled keys: %d records", len(page))
	}
	for _, rec := range page {
		if rec.Disabled {
			t.Errorf("a disabled key listed without include_disabled")
		}
	}

	prodAll := listAll(t, base, management, "&workspace_id="+prod)
	if len(prodAll) != 130 || prodAll[0].Label != openrouter.Label(prods[129]) || prodAll[0].WorkspaceID != prod {
		t.Errorf("production workspace: %d records, first %+v", len(prodAll), prodAll[0])
	}
	r := call(t, "GET", base+"/keys?workspace_id=00000000-0000-4000-8000-000000000000", management, "")
	if r.status != 404 || string(r.body) != `{"error":{"message":"Workspace not found","code":404}}` {
		t.Errorf("unknown workspace: %d %s", r.status, r.body)
	}
	if r := call(t, "GET", base+"/keys?offset=-5", management, ""); r.status != 400 {
		t.Errorf("negative offset: %d", r.status)
	}
	// GET /keys/{hash} finds a key of another workspace.
	var rec gotRecord
	call(t, "GET", base+"/keys/"+prodAll[5].Hash, management, "").data(t, &rec)
	if rec.Label != prodAll[5].Label || rec.WorkspaceID != prod {
		t.Errorf("GET /keys/{hash} across workspaces: %+v", rec)
	}
}

// The hook runs between pages: a key created or deleted while a listing is
// read shifts the later pages, so one record is seen twice or skipped.
func TestListingShiftsWhileRead(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(s *Server, keys []string)
		check  func(t *testing.T, seen map[string]int, keys []string)
	}{
		{"created", func(s *Server, _ []string) { s.NewKey(KeyOptions{Name: "new"}) },
			func(t *testing.T, seen map[string]int, keys []string) {
				// Page 2 starts with the last record of page 1, pushed down.
				if n := seen[openrouter.Label(keys[250-100])]; n != 2 {
					t.Errorf("the record at the page boundary was seen %d times, want 2", n)
				}
			}},
		{"deleted", func(s *Server, keys []string) { s.Delete(keys[249]) },
			func(t *testing.T, seen map[string]int, keys []string) {
				// Page 2 starts one further down: the first key it should
				// have held moved up into page 1, which was already read.
				if n := seen[openrouter.Label(keys[250-101])]; n != 0 {
					t.Errorf("the record after the boundary was seen %d times, want 0 (skipped)", n)
				}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, base := start(t)
			management := s.NewKey(KeyOptions{Management: true})
			keys := s.NewKeys(250, KeyOptions{})
			var mu sync.Mutex
			var hookCalls []string
			s.OnListPage(func(ws string, offset int) {
				mu.Lock()
				hookCalls = append(hookCalls, fmt.Sprintf("%s@%d", ws[:8], offset))
				mu.Unlock()
				if offset == 0 {
					c.change(s, keys)
				}
			})
			seen := map[string]int{}
			for _, rec := range listAll(t, base, management, "") {
				seen[rec.Label]++
			}
			c.check(t, seen, keys)
			ws := s.DefaultWorkspace()[:8]
			mu.Lock()
			defer mu.Unlock()
			if want := []string{ws + "@0", ws + "@100", ws + "@200"}; fmt.Sprint(hookCalls) != fmt.Sprint(want) {
				t.Errorf("hook calls %v, want %v", hookCalls, want)
			}
		})
	}
}

func TestListFailures(t *testing.T) {
	s, base := start(t, func(s *Server) { s.ListPageDelay = 50 * time.Millisecond })
	management := s.NewKey(KeyOptions{Management: true})
	s.NewKeys(250, KeyOptions{})
	s.SetListFailsOnPage(2)
	began := time.Now()
	if r := call(t, "GET", base+"/keys?offset=0", management, ""); r.status != 200 {
		t.Errorf("page 1: %d", r.status)
	}
	if took := time.Since(began); took < 50*time.Millisecond {
		t.Errorf("a page came after %v, before ListPageDelay", took)
	}
	if r := call(t, "GET", base+"/keys?offset=100", management, ""); r.status != 500 {
		t.Errorf("page 2: %d, want 500", r.status)
	}
	s.SetListFailsOnPage(0)
	if r := call(t, "GET", base+"/keys?offset=100", management, ""); r.status != 200 {
		t.Errorf("page 2 again: %d", r.status)
	}
}

// 20,000 keys are created and listed across 200 pages, every one once.
func TestManyKeys(t *testing.T) {
	s, base := start(t)
	management := s.NewKey(KeyOptions{Management: true})
	began := time.Now()
	keys := s.NewKeys(20000, KeyOptions{Name: "bulk"})
	created := time.Since(began)
	began = time.Now()
	all := listAll(t, base, management, "")
	listed := time.Since(began)
	t.Logf("20,000 keys: created in %v, listed in %v (%d pages)", created, listed, len(all)/PageSize+1)
	if len(all) != 20001 {
		t.Fatalf("%d records", len(all))
	}
	seen := make(map[string]bool, len(all))
	for _, rec := range all {
		if seen[rec.Hash] {
			t.Fatalf("hash listed twice")
		}
		seen[rec.Hash] = true
	}
	if all[0].Label != openrouter.Label(keys[19999]) || all[19999].Label != openrouter.Label(keys[0]) {
		t.Errorf("not most recent first")
	}
	if r := chat(t, base, keys[12345], "openai/gpt-4o"); r.status != 200 {
		t.Errorf("a bulk key: %d", r.status)
	}
}

func BenchmarkNewKeys(b *testing.B) {
	for b.Loop() {
		New().NewKeys(20000, KeyOptions{})
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/20000keys")
}

func BenchmarkListKeysPage(b *testing.B) {
	s := New()
	management := s.NewKey(KeyOptions{Management: true})
	s.NewKeys(20000, KeyOptions{})
	srv := httptest.NewServer(s)
	defer srv.Close()
	i := 0
	for b.Loop() {
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/keys?include_disabled=true&offset="+strconv.Itoa(i%200*PageSize), nil)
		req.Header.Set("Authorization", "Bearer "+management)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatal(err, resp)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		i++
	}
}
