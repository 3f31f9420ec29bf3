package openrouter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seen is what a test server saw of one request, and what the hook was
// told of it.
type seen struct {
	path, query, bearer string
}

type observed struct {
	mu    sync.Mutex
	calls []string // endpoint outcome
}

func (o *observed) hook(e Endpoint, out Outcome, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if took < 0 {
		panic("negative duration")
	}
	o.calls = append(o.calls, e.String()+" "+string(out))
}

func (o *observed) last() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.calls) == 0 {
		return ""
	}
	return o.calls[len(o.calls)-1]
}

const (
	testKey  = "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testMgmt = "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"
)

// Every endpoint is asked at its documented path and query, with the
// bearer it needs, and its "data" read into its wire type.
func TestClientEndpoints(t *testing.T) {
	var mu sync.Mutex
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.URL.Path, r.URL.RawQuery, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch p := strings.TrimPrefix(r.URL.Path, "/api/v1"); {
		case p == "/key":
			fmt.Fprint(w, `{"data":{"label":"sk-or-v1-012...def","limit":null,"is_management_key":false}}`)
		case p == "/keys" && r.URL.Query().Get("offset") == "0":
			fmt.Fprint(w, `{"data":[{"hash":"h1","label":"l1"},{"hash":"h2","label":"l2","workspace_id":"w9"}]}`)
		case p == "/keys":
			fmt.Fprint(w, `{"data":[]}`)
		case strings.HasPrefix(p, "/keys/"):
			fmt.Fprint(w, `{"data":{"hash":"`+strings.TrimPrefix(p, "/keys/")+`","disabled":true,"workspace_id":"w1"}}`)
		case p == "/workspaces" && r.URL.Query().Get("offset") == "0":
			fmt.Fprint(w, `{"data":[{"id":"w1","name":"Default","slug":"default","created_at":"2026-01-02T03:04:05Z"}],"total_count":1}`)
		case p == "/workspaces":
			fmt.Fprint(w, `{"data":[],"total_count":1}`)
		case p == "/workspaces/w 1/budgets":
			fmt.Fprint(w, `{"data":[{"limit_usd":500,"reset_interval":"monthly","created_at":"whenever"}]}`)
		case p == "/credits":
			fmt.Fprint(w, `{"data":{"total_credits":25,"total_usage":11.5}}`)
		case p == "/models":
			fmt.Fprint(w, `{"data":[{"id":"a/b","name":"B"},{"id":"c/d"}]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	var o observed
	c := NewClient(srv.URL+"/api/v1", o.hook)
	defer c.Close()
	ctx := context.Background()

	md, res := c.Key(ctx, testKey)
	if res.Err != nil || res.Status != 200 || md == nil || md.Label != "sk-or-v1-012...def" || o.last() != "key ok" {
		t.Errorf("Key: %+v %+v, hook %q", md, res, o.last())
	}
	recs, err := c.KeysPage(ctx, testMgmt, "w1", 0)
	if err != nil || len(recs) != 2 || recs[0].WorkspaceID != "w1" || recs[1].WorkspaceID != "w9" || o.last() != "keys_list ok" {
		t.Errorf("KeysPage: %+v %v, hook %q", recs, err, o.last())
	}
	if recs, err := c.KeysPage(ctx, testMgmt, "", keysPageStep); err != nil || len(recs) != 0 {
		t.Errorf("KeysPage of the default workspace: %+v %v", recs, err)
	}
	rec, res := c.KeyRecord(ctx, testMgmt, "ab12")
	if res.Err != nil || rec == nil || rec.Hash != "ab12" || !rec.Disabled || o.last() != "key_record ok" {
		t.Errorf("KeyRecord: %+v %+v", rec, res)
	}
	wss, err := c.Workspaces(ctx, testMgmt, 10)
	if err != nil || len(wss) != 1 || wss[0].Slug != "default" || o.last() != "workspaces ok" {
		t.Errorf("Workspaces: %+v %v", wss, err)
	}
	budgets, res := c.WorkspaceBudgets(ctx, testMgmt, "w 1")
	if res.Err != nil || len(budgets) != 1 || budgets[0].LimitUSD != 500 || budgets[0].ResetInterval != "monthly" || o.last() != "budgets ok" {
		t.Errorf("WorkspaceBudgets: %+v %+v", budgets, res)
	}
	cr, res := c.Credits(ctx, testMgmt)
	if res.Err != nil || cr == nil || cr.TotalCredits != 25 || cr.TotalUsage != 11.5 || o.last() != "credits ok" {
		t.Errorf("Credits: %+v %+v", cr, res)
	}
	ids, res := c.ModelIDs(ctx)
	if res.Err != nil || strings.Join(ids, ",") != "a/b,c/d" || o.last() != "models ok" {
		t.Errorf("ModelIDs: %v %+v", ids, res)
	}

	want := []seen{
		{"/api/v1/key", "", testKey},
		{"/api/v1/keys", "include_disabled=true&offset=0&workspace_id=w1", testMgmt},
		{"/api/v1/keys", "include_disabled=true&offset=99", testMgmt},
		{"/api/v1/keys/ab12", "", testMgmt},
		{"/api/v1/workspaces", "limit=100&offset=0", testMgmt},
		{"/api/v1/workspaces", "limit=100&offset=1", testMgmt},
		{"/api/v1/workspaces/w 1/budgets", "", testMgmt},
		{"/api/v1/credits", "", testMgmt},
		{"/api/v1/models", "", ""},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests:\n%v\nwant\n%v", got, want)
	}
}

// The statuses an endpoint documents are answers; others are errors that
// say the status and nothing of the body.
func TestClientStatuses(t *testing.T) {
	status := atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(status.Load()))
		fmt.Fprint(w, `{"error":{"message":"User not found. `+testKey+`","code":401}}`)
	}))
	defer srv.Close()
	var o observed
	c := NewClient(srv.URL, o.hook)
	defer c.Close()
	ctx := context.Background()

	for _, s := range []int{401, 404} {
		status.Store(int32(s))
		if md, res := c.Key(ctx, testKey); md != nil || res.Err != nil || res.Status != s {
			t.Errorf("GET /key %d: %+v %+v", s, md, res)
		}
	}
	if o.last() != "key not_found" {
		t.Errorf("hook told %q", o.last())
	}
	status.Store(404)
	if rec, res := c.KeyRecord(ctx, testMgmt, "ab"); rec != nil || res.Err != nil || res.Status != 404 {
		t.Errorf("GET /keys/{hash} 404: %+v %+v", rec, res)
	}
	if b, res := c.WorkspaceBudgets(ctx, testMgmt, "w"); b != nil || res.Err != nil || res.Status != 404 {
		t.Errorf("budgets 404: %+v %+v", b, res)
	}
	for _, s := range []int{401, 403, 500} {
		status.Store(int32(s))
		_, res := c.Credits(ctx, testMgmt)
		if KindOf(res.Err) != ErrorStatus || res.Status != s || !strings.Contains(res.Err.Error(), fmt.Sprintf("(status %d)", s)) {
			t.Errorf("GET /credits %d: %+v", s, res)
		}
		if strings.Contains(res.Err.Error(), "User not found") || strings.Contains(res.Err.Error(), "sk-or-") {
			t.Errorf("the error carries the body: %v", res.Err)
		}
		if _, err := c.KeysPage(ctx, testMgmt, "", 0); KindOf(err) != ErrorStatus {
			t.Errorf("GET /keys %d: %v", s, err)
		}
	}
	if o.last() != "keys_list error" {
		t.Errorf("hook told %q", o.last())
	}
}

// A redirect is never followed: it could carry the bearer key to another
// host.
func TestClientRefusesRedirects(t *testing.T) {
	var reached atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Store(true) }))
	defer elsewhere.Close()
	srv := httptest.NewServer(http.RedirectHandler(elsewhere.URL+"/key", http.StatusFound))
	defer srv.Close()
	c := NewClient(srv.URL, nil)
	defer c.Close()
	md, res := c.Key(context.Background(), testKey)
	if md != nil || KindOf(res.Err) != ErrorStatus || res.Status != http.StatusFound || reached.Load() {
		t.Errorf("redirect: %+v %+v, followed %v", md, res, reached.Load())
	}
}

// Answers larger than an endpoint's cap, or not the documented JSON, are
// errors of their own kind, counted as invalid.
func TestClientBadAnswers(t *testing.T) {
	body := atomic.Value{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, body.Load().(string))
	}))
	defer srv.Close()
	var o observed
	c := NewClient(srv.URL, o.hook)
	defer c.Close()
	for _, b := range []struct {
		body string
		kind ErrorKind
	}{
		{`{"data":{"label":"` + strings.Repeat("a", maxKeyResponse) + `"}}`, ErrorTooLarge},
		{`{"data":{"label":`, ErrorInvalid},
		{`{"data":null}`, ErrorInvalid},
		{`{"label":"x"}`, ErrorInvalid},
		{`{"data":{"label":7}}`, ErrorInvalid},
	} {
		body.Store(b.body)
		md, res := c.Key(context.Background(), testKey)
		if md != nil || KindOf(res.Err) != b.kind || o.last() != "key invalid" {
			t.Errorf("%.40s: %+v %+v, hook %q", b.body, md, res, o.last())
		}
	}
}

// Transport errors say what went wrong without the URL, which for
// GET /keys/{hash} holds the record hash.
func TestClientErrorsScrubbed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	var o observed
	c := NewClient("http://"+addr+"/api/v1", o.hook)
	defer c.Close()
	hash := RecordHashOf(testKey)
	rec, res := c.KeyRecord(context.Background(), testMgmt, hash)
	if rec != nil || KindOf(res.Err) != ErrorUnreachable || o.last() != "key_record error" {
		t.Fatalf("unreachable: %+v %+v, hook %q", rec, res, o.last())
	}
	// The log's text may name the address (operators need it); what a
	// visitor is told names nothing.
	msg := res.Err.Error()
	for _, leak := range []string{hash, "/keys", "http://", testMgmt} {
		if strings.Contains(msg, leak) {
			t.Errorf("the error names %q: %s", leak, msg)
		}
	}
	if !strings.Contains(msg, "connection refused") || strings.Contains(PublicText(res.Err), addr) {
		t.Errorf("the error says %q, publicly %q", msg, PublicText(res.Err))
	}
	if PublicText(res.Err) != "OpenRouter could not be reached" || PublicText(errors.New("x")) != "OpenRouter could not be asked" {
		t.Errorf("public text %q", PublicText(res.Err))
	}
}

// A caller that gives up gets a cancellation, not a fact; one whose
// deadline passes, a timeout.
func TestClientCancelAndTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	var o observed
	c := NewClient(srv.URL, o.hook)
	defer c.Close()

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, res := c.Key(ctx, testKey); KindOf(res.Err) != ErrorCancelled || o.last() != "key cancelled" {
		t.Errorf("cancelled: %+v, hook %q", res, o.last())
	}
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, res := c.Credits(ctx, testMgmt); KindOf(res.Err) != ErrorTimeout || o.last() != "credits error" {
		t.Errorf("timed out: %+v, hook %q", res, o.last())
	}
	if err := ContextError(ctx, "wait", ctx.Err()); err.Kind != ErrorTimeout || err.Error() != "wait lookup: OpenRouter did not answer in time" {
		t.Errorf("ContextError: %v", err)
	}
}

// Workspaces pages until an empty page, within the caller's limit.
func TestClientWorkspacesLimit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("offset") == "0" {
			fmt.Fprint(w, `{"data":[{"id":"a"},{"id":"b"},{"id":"c"}]}`)
			return
		}
		fmt.Fprint(w, `{"data":[]}`)
	}))
	defer srv.Close()
	c := NewClient(srv.URL, nil)
	defer c.Close()
	if wss, err := c.Workspaces(context.Background(), testMgmt, 2); wss != nil || err == nil {
		t.Errorf("over the limit: %+v %v", wss, err)
	}
	if wss, err := c.Workspaces(context.Background(), testMgmt, 3); len(wss) != 3 || err != nil {
		t.Errorf("within the limit: %+v %v", wss, err)
	}
}

// WorkspacesRequests counts what Workspaces asks for: the requests a
// listing charges to the management budget.
func TestWorkspacesRequestsCountsThePages(t *testing.T) {
	for _, n := range []int{1, 3, workspacesPageSize - 1, workspacesPageSize, workspacesPageSize + 1, 2*workspacesPageSize + 7} {
		var requests int
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests++
			q, _ := ParseWorkspacesQuery(r.URL.Query())
			page := []Workspace{}
			for i := q.Offset; i < min(n, q.Offset+q.Limit); i++ {
				page = append(page, Workspace{ID: fmt.Sprint(i)})
			}
			json.NewEncoder(w).Encode(map[string]any{"data": page})
		}))
		c := NewClient(srv.URL, nil)
		if wss, err := c.Workspaces(context.Background(), testMgmt, 1000); len(wss) != n || err != nil {
			t.Errorf("%d workspaces: read %d, %v", n, len(wss), err)
		}
		if got := WorkspacesRequests(n); got != requests {
			t.Errorf("%d workspaces: WorkspacesRequests says %d, Workspaces made %d", n, got, requests)
		}
		c.Close()
		srv.Close()
	}
}
