package caddymodule

// watch_select.go owns which keys of the account the key watch exports one
// by one: the most urgent ones, at most watch_max_keys, chosen while the
// account is read page by page; and the account-wide counts that stand in
// for the rest, so that an alert can fire for a key in use at any size of
// account without a series per key.

import (
	"container/heap"
	"math"
	"slices"
	"strconv"
	"time"
)

// Windows of the watch, the same as monitoring/alerts.yml's.
const (
	// usedRecently is "in use": sent through the gateway within 7 days.
	usedRecently = 7 * 24 * time.Hour
	// usedNow is "still sent" for dead keys: within the last hour.
	usedNow = time.Hour
	// spentShare: a key whose limit is this much spent (under 10 % left)
	// is nearly exhausted.
	spentShare = 0.9
)

// expiryWindows are the expiry alerts' horizons: 24 h, 72 h, 14 days.
var expiryWindows = [...]struct {
	label string
	d     time.Duration
}{{"24h", 24 * time.Hour}, {"72h", 72 * time.Hour}, {"14d", 14 * 24 * time.Hour}}

// keyCondition is a key's state for the watch.
type keyCondition int

const (
	conditionActive keyCondition = iota
	conditionDisabled
	conditionExpired // expired, disabled or not
	conditions
)

var conditionLabels = [conditions]string{"active", "disabled", "expired"}

// useClass is how recently the gateway saw a key used: within the last
// hour, within 7 days (but not the last hour), or not within 7 days.
type useClass int

const (
	usedLastHour useClass = iota
	usedLastWeek
	usedNot
	useClasses
)

var useLabels = [useClasses]string{"1h", "7d", "no"}

// keyClass is what the watch's counts and urgency need of a key, as of one
// time.
type keyClass struct {
	condition keyCondition
	used      useClass
	// expiresWithin[i]: an active key expiring within expiryWindows[i].
	expiresWithin [len(expiryWindows)]bool
	// limitSpent: an active key with a limit, most of it spent.
	limitSpent bool
}

func classify(k *watchedKey, now time.Time) keyClass {
	var c keyClass
	switch {
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		c.condition = conditionExpired
	case k.Disabled:
		c.condition = conditionDisabled
	}
	c.used = usedNot
	if k.LastUsed != 0 {
		switch age := now.Sub(time.Unix(k.LastUsed, 0)); {
		case age < usedNow:
			c.used = usedLastHour
		case age < usedRecently:
			c.used = usedLastWeek
		}
	}
	if c.condition != conditionActive {
		return c
	}
	if k.ExpiresAt != nil {
		for i, w := range expiryWindows {
			c.expiresWithin[i] = k.ExpiresAt.Sub(now) < w.d
		}
	}
	c.limitSpent = limitRatio(k) < 1-spentShare
	return c
}

// limitRatio is the share of a key's limit left, +Inf without a limit.
func limitRatio(k *watchedKey) float64 {
	if k.Limit == nil || k.LimitRemaining == nil || *k.Limit <= 0 {
		return math.Inf(1)
	}
	return *k.LimitRemaining / *k.Limit
}

// urgency orders keys for the series: tier first (higher is more urgent),
// then within a tier a smaller by is more urgent, then listing order.
type urgency struct {
	tier int
	by   float64
	seq  int
}

func (u urgency) lessUrgent(v urgency) bool {
	if u.tier != v.tier {
		return u.tier < v.tier
	}
	if u.by != v.by {
		return u.by > v.by
	}
	return u.seq > v.seq
}

// urgencyOf ranks a key: dead keys still sent, then keys in use by how
// soon they fail (24 h expiry, spent limit, 72 h expiry), dead keys sent
// this week, other keys in use, keys that expire within 14 days or have
// spent their limit unused; tier 0 are keys that do not matter.
func urgencyOf(k *watchedKey, c keyClass, seq int) urgency {
	expiry := math.Inf(1)
	if k.ExpiresAt != nil {
		expiry = float64(k.ExpiresAt.Unix())
	}
	recent := -float64(k.LastUsed)
	inUse := c.used != usedNot
	switch {
	case c.condition != conditionActive && c.used == usedLastHour:
		return urgency{7, recent, seq}
	case inUse && c.expiresWithin[0]:
		return urgency{6, expiry, seq}
	case inUse && c.limitSpent:
		return urgency{5, limitRatio(k), seq}
	case inUse && c.expiresWithin[1]:
		return urgency{4, expiry, seq}
	case c.condition != conditionActive && inUse:
		return urgency{3, recent, seq}
	case inUse:
		return urgency{2, recent, seq}
	case c.expiresWithin[2] || c.limitSpent:
		return urgency{1, expiry, seq}
	}
	return urgency{0, 0, seq}
}

// keyCounts are the account's keys counted by condition and use, by
// expiry window and use, and with a spent limit by use.
type keyCounts struct {
	ByCondition [conditions][useClasses]int         `json:"by_condition"`
	Expiring    [len(expiryWindows)][useClasses]int `json:"expiring"`
	LimitSpent  [useClasses]int                     `json:"limit_spent"`
}

func (n *keyCounts) add(c keyClass) {
	n.ByCondition[c.condition][c.used]++
	for i, in := range c.expiresWithin {
		if in {
			n.Expiring[i][c.used]++
		}
	}
	if c.limitSpent {
		n.LimitSpent[c.used]++
	}
}

// keySelection gathers a read of the account one record at a time: counts
// of every key, and the max most urgent keys in a heap whose top is the
// least urgent of them.
type keySelection struct {
	max      int
	now      time.Time
	total    int
	matter   int // keys with an urgency above 0
	all      keyCounts
	selected selectedHeap
}

type selectedKey struct {
	key     watchedKey
	class   keyClass
	urgency urgency
}

type selectedHeap []selectedKey

func (h selectedHeap) Len() int           { return len(h) }
func (h selectedHeap) Less(i, j int) bool { return h[i].urgency.lessUrgent(h[j].urgency) }
func (h selectedHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *selectedHeap) Push(x any)        { *h = append(*h, x.(selectedKey)) }
func (h *selectedHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func newKeySelection(maxKeys int, now time.Time) *keySelection {
	return &keySelection{max: maxKeys, now: now}
}

// add counts a key and keeps it if it is among the most urgent so far.
func (s *keySelection) add(k watchedKey) {
	c := classify(&k, s.now)
	u := urgencyOf(&k, c, s.total)
	s.total++
	s.all.add(c)
	if u.tier > 0 {
		s.matter++
	}
	if s.max <= 0 {
		return
	}
	if len(s.selected) < s.max {
		heap.Push(&s.selected, selectedKey{k, c, u})
		return
	}
	if s.selected[0].urgency.lessUrgent(u) {
		s.selected[0] = selectedKey{k, c, u}
		heap.Fix(&s.selected, 0)
	}
}

// watchSelection is what a read of the account exports.
type watchSelection struct {
	Keys []watchedKey `json:"keys"`
	// Total is every key read; Dropped the keys that matter (urgency
	// above 0) without series of their own.
	Total   int `json:"total"`
	Dropped int `json:"dropped"`
	// All counts every key read; Named those in Keys.
	All   keyCounts `json:"all"`
	Named keyCounts `json:"named"`
}

// result is the keys to export, in listing order: every key when the
// account fits within max, else only keys that matter. Keys of one
// workspace with one name and label are told apart by a number, since
// they would be one series.
func (s *keySelection) result() watchSelection {
	kept := slices.Clone(s.selected)
	if s.total > s.max {
		kept = slices.DeleteFunc(kept, func(k selectedKey) bool { return k.urgency.tier == 0 })
	}
	slices.SortFunc(kept, func(a, b selectedKey) int { return a.urgency.seq - b.urgency.seq })
	out := watchSelection{Total: s.total, All: s.all}
	var named keyCounts
	seen := make(map[[3]string]int, len(kept))
	mattered := 0
	for _, k := range kept {
		named.add(k.class)
		if k.urgency.tier > 0 {
			mattered++
		}
		id := [3]string{k.key.Workspace, k.key.Name, k.key.Label}
		if n := seen[id]; n > 0 {
			k.key.Name += " (" + strconv.Itoa(n+1) + ")"
		}
		seen[id]++
		out.Keys = append(out.Keys, k.key)
	}
	out.Named = named
	out.Dropped = s.matter - mattered
	return out
}
