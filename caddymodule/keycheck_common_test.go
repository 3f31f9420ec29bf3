package caddymodule

import (
	"html"
	"net/http/httptest"
	"strings"
	"testing"
)

// The key check page lists, without any script, every reason of the table
// with what fixes it and whether a retry helps (provider errors, policy
// 403s, transient 429s among them), and the failures no reason explains:
// failures inside a 200.
func TestKeyCheckPageListsCommonFailures(t *testing.T) {
	kc := newKeyCheck(t, "http://127.0.0.1:1/api/v1", "")
	rec := httptest.NewRecorder()
	if err := kc.ServeHTTP(rec, httptest.NewRequest("GET", "/keycheck", nil), nil); err != nil {
		t.Fatal(err)
	}
	page := html.UnescapeString(rec.Body.String())
	_, list, ok := strings.Cut(page, `<section id="common"`)
	if !ok || !strings.Contains(list, "Common failures and what fixes them") || !strings.Contains(list, "<details><summary>") {
		t.Fatalf("no folded list of common failures:\n%s", page)
	}
	for i := range reasonTable {
		e := &reasonTable[i]
		if !strings.Contains(list, e.headline) || !strings.Contains(list, `<code class="reason">`+string(e.code)+`</code>`) || !strings.Contains(list, e.advice) {
			t.Errorf("%s is not listed with its headline and advice", e.code)
		}
	}
	for _, want := range []string{
		// Policy 403s.
		"Refused by moderation", "Blocked by a guardrail", "Refused under a provider's Terms of Service", "Not available in this region", "Provider key required",
		// Provider errors, whose fault.
		"The provider refused the request", "The provider failed or is over capacity", "A provider refused your own provider key", "A provider returned an error",
		// Transient 429s.
		"Credits not verified in time", "Free-model rate reached", "Provider rate-limited",
		// Failures inside a 200.
		"A reply that stops early (status 200)",
		retryHelps, retryHelpsNot,
	} {
		if !strings.Contains(list, want) {
			t.Errorf("the list lacks %q", want)
		}
	}
	for _, g := range commonFailures[:len(commonFailures)-1] {
		for _, b := range beyondTable.Items {
			for _, it := range g.Items {
				if it.Headline == b.Headline {
					t.Errorf("%q is listed twice: a reason of the table covers it now, drop it from beyondTable", b.Headline)
				}
			}
		}
	}
	// An error page stays alone.
	rec = httptest.NewRecorder()
	req := httptest.NewRequest("PUT", "/keycheck", nil)
	req.Header.Set("Accept", "text/html")
	_ = kc.ServeHTTP(rec, req, nil)
	if !strings.Contains(rec.Body.String(), "<html") {
		t.Fatalf("no error page: %s", rec.Body)
	}
	if strings.Contains(rec.Body.String(), "Common failures") {
		t.Errorf("an error carries the list: %s", rec.Body)
	}
}
