package openrouter

import (
	"testing"
	"time"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// A cap's window ends by the documented UTC calendar: days at 00:00 UTC,
// weeks on Monday, months on the 1st; at a boundary the new window has
// just begun.
func TestWindowResetsAt(t *testing.T) {
	for _, c := range []struct {
		window Window
		now    string
		want   string
	}{
		{WindowDaily, "2026-12-05T22:57:00Z", "2026-12-06T00:00:00Z"},
		{WindowDaily, "2026-12-06T00:00:00Z", "2026-12-07T00:00:00Z"},
		{WindowDaily, "2026-12-06T23:59:59.999999999Z", "2026-12-07T00:00:00Z"},
		{WindowDaily, "2026-12-31T23:59:59.999Z", "2027-01-01T00:00:00Z"},
		{WindowDaily, "2026-01-31T12:00:00Z", "2026-02-01T00:00:00Z"},
		{WindowDaily, "2028-02-28T12:00:00Z", "2028-02-29T00:00:00Z"},
		{WindowDaily, "2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"},
		{WindowDaily, "2027-02-28T05:00:00Z", "2027-03-01T00:00:00Z"},
		// Another zone's instant is read in UTC.
		{WindowDaily, "2026-12-06T10:00:00+14:00", "2026-12-06T00:00:00Z"},
		{WindowDaily, "2026-12-05T20:00:00-05:00", "2026-12-07T00:00:00Z"},

		{WindowWeekly, "2026-12-05T22:57:00Z", "2026-12-07T00:00:00Z"}, // Saturday
		{WindowWeekly, "2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"}, // Monday, exactly
		{WindowWeekly, "2026-12-27T23:59:59.999999999Z", "2026-12-28T00:00:00Z"},
		{WindowWeekly, "2026-12-28T00:00:00.000000001Z", "2027-01-04T00:00:00Z"},
		{WindowWeekly, "2026-12-31T10:00:00Z", "2027-01-04T00:00:00Z"}, // across the year
		{WindowWeekly, "2028-02-26T08:00:00Z", "2028-02-28T00:00:00Z"},
		{WindowWeekly, "2028-02-29T08:00:00Z", "2028-03-06T00:00:00Z"}, // leap day

		{WindowMonthly, "2026-12-15T08:00:00Z", "2027-01-01T00:00:00Z"},
		{WindowMonthly, "2026-01-31T23:59:59Z", "2026-02-01T00:00:00Z"},
		{WindowMonthly, "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"},
		{WindowMonthly, "2028-02-29T23:00:00Z", "2028-03-01T00:00:00Z"},
		{WindowMonthly, "2027-01-31T00:00:00Z", "2027-02-01T00:00:00Z"},
	} {
		got, ok := c.window.ResetsAt(utc(c.now))
		if !ok || !got.Equal(utc(c.want)) || got.Location() != time.UTC {
			t.Errorf("%v at %s: %v %v, want %s", c.window, c.now, got, ok, c.want)
		}
	}
	for _, w := range []Window{WindowTotal, WindowUnknown} {
		if got, ok := w.ResetsAt(utc("2026-12-05T22:57:00Z")); ok || !got.IsZero() {
			t.Errorf("%q resets at %v", w, got)
		}
	}
}

func TestWindowOfLimitReset(t *testing.T) {
	str := func(s string) *string { return &s }
	for _, c := range []struct {
		limitReset *string
		want       Window
	}{
		{nil, WindowTotal},
		{str("daily"), WindowDaily},
		{str("weekly"), WindowWeekly},
		{str("monthly"), WindowMonthly},
		{str("yearly"), WindowUnknown},
		{str(""), WindowUnknown},
	} {
		if got := WindowOfLimitReset(c.limitReset); got != c.want {
			t.Errorf("%v: %v, want %v", c.limitReset, got, c.want)
		}
		if c.want != WindowUnknown && ParseWindow(c.want.String()) != c.want {
			t.Errorf("%v does not read back", c.want)
		}
	}
}

// The free daily allowance ends at the upstream's X-RateLimit-Reset when
// it is ahead, otherwise at the next 00:00 UTC.
func TestFreeDailyResetsAt(t *testing.T) {
	now := utc("2026-12-31T23:30:00Z")
	midnight := utc("2027-01-01T00:00:00Z")
	for _, c := range []struct {
		name  string
		reset time.Time
		want  time.Time
	}{
		{"upstream's", midnight, midnight},
		{"upstream's, not midnight", utc("2027-01-01T00:00:05Z"), utc("2027-01-01T00:00:05Z")},
		{"none", time.Time{}, midnight},
		{"stale", utc("2026-12-31T00:00:00Z"), midnight},
		{"exactly now", now, midnight},
	} {
		if got := FreeDailyResetsAt(now, c.reset); !got.Equal(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestWindowStartedAt(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		w         Window
		now, want string
	}{
		{WindowDaily, "2026-12-07T09:30:00Z", "2026-12-07T00:00:00Z"},
		{WindowDaily, "2026-12-07T00:00:00Z", "2026-12-07T00:00:00Z"},
		{WindowDaily, "2026-12-07T01:30:00+02:00", "2026-12-06T00:00:00Z"},
		{WindowWeekly, "2026-12-07T09:30:00Z", "2026-12-07T00:00:00Z"}, // a Monday
		{WindowWeekly, "2026-12-06T23:59:59Z", "2026-11-30T00:00:00Z"}, // a Sunday
		{WindowWeekly, "2026-01-01T12:00:00Z", "2025-12-29T00:00:00Z"}, // across the year
		{WindowMonthly, "2026-12-31T23:00:00Z", "2026-12-01T00:00:00Z"},
		{WindowMonthly, "2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z"},
	} {
		got, ok := c.w.StartedAt(at(c.now))
		if !ok || !got.Equal(at(c.want)) || got.Location() != time.UTC {
			t.Errorf("%s window holding %s began %v (%v), want %s", c.w, c.now, got, ok, c.want)
		}
		// The window that began then ends where the next begins.
		end, _ := c.w.ResetsAt(at(c.now))
		if next, _ := c.w.StartedAt(end); !next.Equal(end) || !end.After(got) {
			t.Errorf("%s window holding %s: ends %v, which is no window's start", c.w, c.now, end)
		}
	}
	for _, w := range []Window{WindowTotal, WindowUnknown} {
		if _, ok := w.StartedAt(at("2026-12-07T09:30:00Z")); ok {
			t.Errorf("%s window has a start", w)
		}
	}
}
