package caddymodule

// account_test.go tests account.go: the account handlers share.

import "testing"

// Handlers that agree on upstream and management key share one account
// whatever management_rate each gives; the lowest rate applies to it.
func TestHandlersShareTheAccountWhateverTheirRates(t *testing.T) {
	a := Handler{UpstreamOptions: UpstreamOptions{ManagementRate: 5}}
	b := Handler{UpstreamOptions: UpstreamOptions{ManagementRate: 0.5}}
	if err := provision(t, &a); err != nil {
		t.Fatal(err)
	}
	if err := provision(t, &b); err != nil {
		t.Fatal(err)
	}
	if a.acct != b.acct {
		t.Fatal("two management rates made two accounts")
	}
	if got := a.acct.management.Limit(); got != 0.5 {
		t.Errorf("the account's management rate is %v, want the lowest, 0.5", got)
	}
	c := Handler{UpstreamOptions: UpstreamOptions{ManagementRate: 0.1}}
	if err := provision(t, &c); err != nil {
		t.Fatal(err)
	}
	if c.acct != a.acct || a.acct.management.Limit() != 0.1 {
		t.Errorf("a third handler with a lower rate: shared %v, rate %v", c.acct == a.acct, a.acct.management.Limit())
	}
}
