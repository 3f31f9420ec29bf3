package openrouter

import (
	"net/url"
	"strings"
	"testing"
)

// Every endpoint's template routes back to it, with its parameter.
func TestRoute(t *testing.T) {
	for _, e := range Endpoints() {
		path := strings.NewReplacer("{hash}", "ab12", "{id}", "w-1").Replace(e.Template())
		got, param := Route(path)
		if got != e {
			t.Errorf("%s routes to %s", path, got)
		}
		if strings.Contains(e.Template(), "{") && param != "ab12" && param != "w-1" {
			t.Errorf("%s: parameter %q", path, param)
		}
	}
	for path, want := range map[string]Endpoint{
		"/auth/key": EndpointKey, "/chat/completions": EndpointNone, "/workspaces/w/other": EndpointNone, "/keysx": EndpointNone,
	} {
		if got, _ := Route(path); got != want {
			t.Errorf("%s routes to %s, want %s", path, got, want)
		}
	}
	if keyRecordPath("a/b") != "/keys/a%2Fb" || budgetsPath("w 1") != "/workspaces/w%201/budgets" {
		t.Errorf("paths do not escape their parameter: %s %s", keyRecordPath("a/b"), budgetsPath("w 1"))
	}
}

// What the client asks is what the emulator reads.
func TestQueriesRoundTrip(t *testing.T) {
	for _, q := range []KeysQuery{{}, {WorkspaceID: "w-1", IncludeDisabled: true, Offset: 198}} {
		u, err := url.Parse(q.path())
		if err != nil || u.Path != pathKeys {
			t.Fatalf("%s: %v", q.path(), err)
		}
		if got, ok := ParseKeysQuery(u.Query()); !ok || got != q {
			t.Errorf("%s reads as %+v", q.path(), got)
		}
	}
	if _, ok := ParseKeysQuery(url.Values{"offset": {"-1"}}); ok {
		t.Error("a negative offset is accepted")
	}
	q := WorkspacesQuery{Offset: 100, Limit: workspacesPageSize}
	u, _ := url.Parse(q.path())
	if got, ok := ParseWorkspacesQuery(u.Query()); !ok || got != q || u.Path != pathWorkspaces {
		t.Errorf("%s reads as %+v", q.path(), got)
	}
	if got, ok := ParseWorkspacesQuery(url.Values{}); !ok || got.Limit != 50 {
		t.Errorf("no limit reads as %+v", got)
	}
	for _, v := range []url.Values{{"limit": {"0"}}, {"limit": {"101"}}, {"offset": {"x"}}} {
		if _, ok := ParseWorkspacesQuery(v); ok {
			t.Errorf("%v is accepted", v)
		}
	}
}

func TestWorkspaceName(t *testing.T) {
	wss := []Workspace{{ID: "w1", Name: "Research", Slug: "research"}, {ID: "w2", Slug: "ops"}, {ID: "w3"}}
	for id, want := range map[string]string{
		"w1": "Research", "w2": "ops", "w3": "w3",
		// Not among the workspaces read: the id, never "default", which
		// would file a new workspace's keys under another's name.
		"w4": "w4",
		// Keys of the default workspace read without the workspace list.
		"": "default",
	} {
		if got := WorkspaceName(wss, id); got != want {
			t.Errorf("workspace %q is named %q, want %q", id, got, want)
		}
	}
	if got := WorkspaceName([]Workspace{{}}, ""); got != "default" {
		t.Errorf("the default workspace read without the list is named %q", got)
	}
}
