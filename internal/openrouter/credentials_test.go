package openrouter

import (
	"encoding/json"
	"testing"
)

// Another issuer is one whose host is not OpenRouter's domain; an issuer
// of that domain OpenRouter has not named is neither known nor foreign.
func TestIssuers(t *testing.T) {
	for _, c := range []struct {
		iss            string
		known, foreign bool
	}{
		{"https://openrouter.ai", true, false},
		{"https://openrouter.ai/", true, false},
		{"https://OpenRouter.ai", true, false},
		{"https://clerk.openrouter.ai", true, false},
		{"openrouter.ai", true, false},
		{"https://auth.openrouter.ai", false, false},
		{"https://openrouter.ai:443/oauth", false, false},
		{"", false, false},
		{"https://token.actions.githubusercontent.com", false, true},
		{"https://accounts.google.com", false, true},
		{"https://openrouter.ai.evil.example", false, true},
		{"https://evilopenrouter.ai", false, true},
		{"https://openrouter.ai@evil.example", false, true},
		{"elsewhere", false, true},
	} {
		if IssuerKnown(c.iss) != c.known || IssuerForeign(c.iss) != c.foreign {
			t.Errorf("%q: known %v foreign %v, want %v %v", c.iss, IssuerKnown(c.iss), IssuerForeign(c.iss), c.known, c.foreign)
		}
	}
}

// GET /key's workspace_id: absent, an id, or null for a deleted workspace,
// read and written alike.
func TestWorkspaceRef(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    WorkspaceRef
		deleted bool
	}{
		{`{}`, WorkspaceRef{}, false},
		{`{"workspace_id":"ws-1"}`, WorkspaceRef{Sent: true, ID: "ws-1"}, false},
		{`{"workspace_id":null}`, WorkspaceRef{Sent: true}, true},
	} {
		var k KeyInfo
		if err := json.Unmarshal([]byte(c.in), &k); err != nil || k.WorkspaceID != c.want || k.WorkspaceID.Deleted() != c.deleted {
			t.Errorf("%s: %+v %v", c.in, k.WorkspaceID, err)
		}
		out, _ := json.Marshal(Data[KeyInfo]{Data: k})
		var back Data[KeyInfo]
		if err := json.Unmarshal(out, &back); err != nil || back.Data.WorkspaceID != c.want {
			t.Errorf("%s: round trip %s gives %+v", c.in, out, back.Data.WorkspaceID)
		}
	}
	// Another type (or an empty id) says nothing, and the rest is read.
	for _, in := range []string{`{"workspace_id":7,"label":"x"}`, `{"workspace_id":"","label":"x"}`} {
		var k KeyInfo
		if err := json.Unmarshal([]byte(in), &k); err != nil || k.WorkspaceID.Sent || k.Label != "x" {
			t.Errorf("%s: %+v %v", in, k, err)
		}
	}
}
