package emulator

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Key is one key the emulator knows.
type Key struct {
	Secret      string
	Hash        string
	Name        string
	WorkspaceID string
	Management  bool
	Disabled    bool
	Deleted     bool
	ExpiresAt   *time.Time
	CreatedAt   time.Time
	Limit       *float64
	// LimitReset is the window of Limit: "daily", "weekly", "monthly", or
	// "" for a total cap that never resets.
	LimitReset string
	// Usage is what the key spent in all; spent what it spent in the
	// current UTC day, week and month.
	Usage float64
	spent windowSpend
	// AccountID is the user id of the key's account (NewAccount); "" is
	// the emulator's own.
	AccountID string

	seq uint64 // creation order, for listings
}

// Label is OpenRouter's masked form of the key. A JWT, which is not a key,
// is masked the same way (what OpenRouter shows for one is not known).
func (k *Key) Label() string {
	if len(k.Secret) == openrouter.KeyLen {
		return openrouter.Label(k.Secret)
	}
	if len(k.Secret) < 15 {
		return "..."
	}
	return k.Secret[:12] + "..." + k.Secret[len(k.Secret)-3:]
}

func (k *Key) expired(now time.Time) bool { return k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) }

// KeyOptions describe a key to create.
type KeyOptions struct {
	Name       string
	Management bool
	Disabled   bool
	ExpiresAt  *time.Time
	// Limit is the key's credit limit; nil: none.
	Limit *float64
	// LimitReset is the window of Limit: "daily", "weekly", "monthly", or
	// "" for a total cap that never resets.
	LimitReset string
	// Usage is the credit the key has spent.
	Usage float64
	// Workspace is the id of the key's workspace (NewWorkspace); empty:
	// the default workspace.
	Workspace string
	// Account is the user id of another account (NewAccount) the key
	// belongs to; empty: the emulator's own. Such a key is in no listed
	// workspace and cannot be a management key.
	Account string
}

// windowSpend is a key's spending in the calendar windows that held
// counted, the last time it was looked at.
type windowSpend struct {
	counted                time.Time
	daily, weekly, monthly float64
}

// roll brings the key's window spending to now: a window that ended since
// it was last counted starts again at zero, as OpenRouter's caps reset.
// s.mu must be held for a key the emulator holds.
func (k *Key) roll(now time.Time) {
	for _, w := range []struct {
		window openrouter.Window
		spent  *float64
	}{{openrouter.WindowDaily, &k.spent.daily}, {openrouter.WindowWeekly, &k.spent.weekly}, {openrouter.WindowMonthly, &k.spent.monthly}} {
		if end, _ := w.window.ResetsAt(k.spent.counted); !now.Before(end) {
			*w.spent = 0
		}
	}
	k.spent.counted = now
}

// setUsage makes usage the key's spending in all and, as if spent just
// now, in each current window.
func (k *Key) setUsage(usage float64, now time.Time) {
	k.Usage = usage
	k.spent = windowSpend{counted: now, daily: usage, weekly: usage, monthly: usage}
}

// spentInWindow is what counts against the key's limit: its spending in
// the limit's window, or in all for a total cap.
func (k *Key) spentInWindow() float64 {
	switch k.window() {
	case openrouter.WindowDaily:
		return k.spent.daily
	case openrouter.WindowWeekly:
		return k.spent.weekly
	case openrouter.WindowMonthly:
		return k.spent.monthly
	}
	return k.Usage
}

// window is the window of the key's limit.
func (k *Key) window() openrouter.Window {
	if k.LimitReset == "" {
		return openrouter.WindowTotal
	}
	return openrouter.ParseWindow(k.LimitReset)
}

// limitReset is the key's limit_reset: nil for a total cap.
func (k *Key) limitReset() *string {
	if k.LimitReset == "" {
		return nil
	}
	r := k.LimitReset
	return &r
}

// Workspace is one workspace of the account.
type Workspace struct {
	ID        string
	Name      string
	Slug      string
	CreatedAt time.Time
}

// workspace is a Workspace with its keys that are not deleted, oldest
// first (by seq), as GET /keys pages over them.
type workspace struct {
	Workspace
	keys    []*Key
	budgets []*budget
}

// DefaultWorkspace is the id of the account's default workspace, the one
// GET /keys lists when no workspace_id is given.
func (s *Server) DefaultWorkspace() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workspaces[0].ID
}

// NewWorkspace creates a workspace and returns its id.
func (s *Server) NewWorkspace(name string) (id string) {
	return s.addWorkspace(name)
}

func (s *Server) addWorkspace(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	slug := slugOf(name)
	for taken, n := true, 2; taken; n++ {
		taken = false
		for _, ws := range s.workspaces {
			if ws.Slug == slug {
				taken, slug = true, fmt.Sprintf("%s-%d", slugOf(name), n)
				break
			}
		}
	}
	ws := &workspace{Workspace: Workspace{ID: newUUID(), Name: name, Slug: slug, CreatedAt: time.Now().UTC()}}
	s.workspaces = append(s.workspaces, ws)
	s.workspaceByID[ws.ID] = ws
	return ws.ID
}

func slugOf(name string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(name) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(c)
			dash = false
		} else {
			dash = true
		}
	}
	if b.Len() == 0 {
		return "workspace"
	}
	return b.String()
}

// newUUID is a random version 4 UUID, the form of OpenRouter's workspace ids.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// NewKey creates a key and returns its secret.
func (s *Server) NewKey(o KeyOptions) string {
	return s.NewKeys(1, o)[0]
}

// NewKeys creates n keys alike, in one go, and returns their secrets,
// oldest first. 20,000 take a few tens of milliseconds.
func (s *Server) NewKeys(n int, o KeyOptions) []string {
	secrets := make([]string, n)
	raw := make([]byte, 32*n)
	_, _ = rand.Read(raw)
	for i := range secrets {
		secrets[i] = openrouter.KeyPrefix + hex.EncodeToString(raw[32*i:32*i+32])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, secret := range secrets {
		s.addKeyLocked(secret, o)
	}
	return secrets
}

func (s *Server) addKeyLocked(secret string, o KeyOptions) {
	ws := s.workspaces[0]
	if o.Workspace != "" {
		if ws = s.workspaceByID[o.Workspace]; ws == nil {
			panic("emulator: no workspace " + o.Workspace)
		}
	}
	if o.LimitReset != "" && openrouter.ParseWindow(o.LimitReset) == openrouter.WindowUnknown {
		panic("emulator: no limit_reset " + o.LimitReset)
	}
	if o.Account != "" {
		a := s.accounts[o.Account]
		if a == nil || o.Management || o.Workspace != "" {
			panic("emulator: a key of another account needs that account, no workspace and no management")
		}
		ws = a.hidden
	}
	var expires *time.Time
	if o.ExpiresAt != nil {
		t := o.ExpiresAt.UTC()
		expires = &t
	}
	var limit *float64
	if o.Limit != nil {
		l := *o.Limit
		limit = &l
	}
	s.seq++
	k := &Key{
		Secret: secret, Hash: s.hashOf(secret), Name: o.Name, WorkspaceID: ws.ID,
		Management: o.Management, Disabled: o.Disabled, ExpiresAt: expires,
		Limit: limit, LimitReset: o.LimitReset, AccountID: o.Account,
		CreatedAt: time.Now().UTC(), seq: s.seq,
	}
	k.setUsage(o.Usage, s.now())
	s.bySecret[secret] = k
	s.byHash[k.Hash] = k
	s.issued = append(s.issued, secret)
	ws.keys = append(ws.keys, k)
}

// hashOf is a key record's hash: sha256(key), or with OpaqueHashes
// something a client cannot compute.
func (s *Server) hashOf(secret string) string {
	if s.OpaqueHashes {
		sum := sha256.Sum256([]byte("opaque:" + secret))
		return hex.EncodeToString(sum[:])
	}
	return openrouter.RecordHashOf(secret)
}

// key is the key with that secret; it panics for a key the emulator did
// not issue, a mistake in the test. s.mu must be held.
func (s *Server) key(secret string) *Key {
	k := s.bySecret[secret]
	if k == nil {
		panic("emulator: not a key this emulator issued")
	}
	return k
}

// LabelTwin returns a well-formed key that was never issued and has the
// same label as key (key[:12] + zeros + key[70:]), as anyone who has seen
// the label can forge.
func (s *Server) LabelTwin(key string) string {
	if len(key) != openrouter.KeyLen {
		panic("emulator: LabelTwin of a string that is not a key")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fill := range "0123456789abcdef" {
		twin := key[:12] + strings.Repeat(string(fill), openrouter.KeyLen-15) + key[openrouter.KeyLen-3:]
		if twin != key && s.bySecret[twin] == nil {
			return twin
		}
	}
	panic("emulator: every label twin is issued")
}

// ExpireIn gives a key a remaining life of d: it then expires on its own,
// as real keys do.
func (s *Server) ExpireIn(secret string, d time.Duration) {
	t := time.Now().Add(d).UTC()
	s.mu.Lock()
	s.key(secret).ExpiresAt = &t
	s.mu.Unlock()
}

// SetDisabled disables or re-enables a key.
func (s *Server) SetDisabled(secret string, disabled bool) {
	s.mu.Lock()
	s.key(secret).Disabled = disabled
	s.mu.Unlock()
}

// SetUsage sets the credit a key has spent, in all and (as if spent just
// now, by Clock) in its current day, week and month; its limit_remaining
// follows, and comes back when its limit's window ends.
func (s *Server) SetUsage(secret string, usage float64) {
	s.mu.Lock()
	s.key(secret).setUsage(usage, s.now())
	s.mu.Unlock()
}

// Delete deletes a key: it disappears from the management API and gets
// "User not found." everywhere.
func (s *Server) Delete(secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.key(secret)
	if k.Deleted {
		return
	}
	k.Deleted = true
	ws := s.workspaceByID[k.WorkspaceID]
	if ws == nil {
		ws = s.accountByID(k.AccountID).hidden
	}
	i := sort.Search(len(ws.keys), func(i int) bool { return ws.keys[i].seq >= k.seq })
	if i < len(ws.keys) && ws.keys[i] == k {
		ws.keys = append(ws.keys[:i], ws.keys[i+1:]...)
	}
}

// Secrets lists every credential the emulator has issued, keys and JWTs,
// for tests that sweep output for key material.
func (s *Server) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}
