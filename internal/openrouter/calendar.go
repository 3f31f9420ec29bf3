package openrouter

// calendar.go owns OpenRouter's limit calendar: a key cap's window
// (limit_reset) and when it resets, by the documented UTC rule: days start
// at 00:00 UTC, weeks on Monday, months on the 1st; a cap without a reset
// never resets. The free-model daily allowance resets at 00:00 UTC too.

import "time"

// Window is a key cap's window: limit_reset in GET /key and key records,
// or the window a failure's sentence names.
type Window uint8

// The windows.
const (
	// WindowUnknown: not said.
	WindowUnknown Window = iota
	WindowDaily
	WindowWeekly
	WindowMonthly
	// WindowTotal is a cap that never resets (limit_reset null on a key
	// with a limit; "total" in failure sentences).
	WindowTotal
)

// String is the window as OpenRouter writes it ("daily", ..., "total"),
// "" when unknown.
func (w Window) String() string {
	switch w {
	case WindowDaily:
		return "daily"
	case WindowWeekly:
		return "weekly"
	case WindowMonthly:
		return "monthly"
	case WindowTotal:
		return "total"
	}
	return ""
}

// ParseWindow reads a window as OpenRouter writes it; anything else is
// WindowUnknown.
func ParseWindow(s string) Window {
	switch s {
	case "daily":
		return WindowDaily
	case "weekly":
		return WindowWeekly
	case "monthly":
		return WindowMonthly
	case "total":
		return WindowTotal
	}
	return WindowUnknown
}

// WindowOfLimitReset is the window of a key with a limit, from its
// limit_reset: null is a total cap that never resets.
func WindowOfLimitReset(limitReset *string) Window {
	if limitReset == nil {
		return WindowTotal
	}
	return ParseWindow(*limitReset)
}

// ResetsAt is when the window that holds now ends and the cap starts
// afresh: the next 00:00 UTC (daily), the next Monday 00:00 UTC (weekly),
// the 1st of the next month 00:00 UTC (monthly). At exactly a boundary a
// window has just begun, so the next boundary is returned. ok is false
// for WindowTotal (never resets) and WindowUnknown (not known).
func (w Window) ResetsAt(now time.Time) (t time.Time, ok bool) {
	start, ok := w.StartedAt(now)
	switch {
	case !ok:
		return time.Time{}, false
	case w == WindowDaily:
		return start.AddDate(0, 0, 1), true
	case w == WindowWeekly:
		return start.AddDate(0, 0, 7), true
	}
	return start.AddDate(0, 1, 0), true
}

// StartedAt is when the window that holds now began: 00:00 UTC today
// (daily), Monday 00:00 UTC (weekly), the 1st 00:00 UTC (monthly). At
// exactly a boundary a window has just begun, so now is returned. ok is
// false for WindowTotal and WindowUnknown, which have no start.
func (w Window) StartedAt(now time.Time) (t time.Time, ok bool) {
	now = now.UTC()
	y, m, d := now.Date()
	switch w {
	case WindowDaily:
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC), true
	case WindowWeekly:
		return time.Date(y, m, d-(int(now.Weekday())+6)%7, 0, 0, 0, 0, time.UTC), true
	case WindowMonthly:
		return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC), true
	}
	return time.Time{}, false
}

// FreeDailyResetsAt is when the free-model daily allowance comes back:
// X-RateLimit-Reset when the upstream sent one still ahead of now (zero
// when not sent), otherwise the next 00:00 UTC.
func FreeDailyResetsAt(now, rateLimitReset time.Time) time.Time {
	if !rateLimitReset.IsZero() && rateLimitReset.After(now) {
		return rateLimitReset.UTC()
	}
	t, _ := WindowDaily.ResetsAt(now)
	return t
}
