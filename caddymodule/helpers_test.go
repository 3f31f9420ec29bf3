package caddymodule

// helpers_test.go holds the helpers the package's tests share: handlers and
// key checks provisioned against an emulator, requests served through
// them, and the keys and bodies they use. A helper that cannot do its work
// fails the test; none panics.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// newHandler provisions a handler whose lookups go to upstream and whose
// logs, at debug level, are observed.
func newHandler(t *testing.T, h *Handler, upstream string) *observer.ObservedLogs {
	t.Helper()
	h.Upstream = upstream
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	h.logger = zap.New(core)
	h.knowledge.logger = h.logger
	return logs
}

// startEmulator serves an OpenRouter emulator for the test and returns it
// with its API base URL.
func startEmulator(t *testing.T) (*emulator.Server, string) {
	t.Helper()
	emu := emulator.New()
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return emu, srv.URL + "/api/v1"
}

// upstreamAnswer is a fixed response that next writes, as reverse_proxy
// would.
func upstreamAnswer(status int, header http.Header, body []byte) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			w.Write(body)
		}
		return nil
	})
}

// serve sends a request with key as its bearer token through h to next.
func serve(t testing.TB, h *Handler, next caddyhttp.Handler, method, path, key string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatal(err)
	}
	return rec
}

// waitIdle waits until no GET /key of k is in flight.
func waitIdle(t *testing.T, k *knowledge) {
	t.Helper()
	for {
		var f *flight[keyAnswer]
		k.flightsMu.Lock()
		for _, f = range k.flights {
			break
		}
		k.flightsMu.Unlock()
		if f == nil {
			return
		}
		<-f.done // each ends within the lookup timeout
	}
}

var refused = upstreamAnswer(401, http.Header{"Content-Type": {"application/json"}}, []byte(userNotFound))

// reasonOf is the metadata.reason of a rewritten body ("" when unchanged).
func reasonOf(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Error struct {
			Metadata struct {
				Reason string `json:"reason"`
			} `json:"metadata"`
		} `json:"error"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if got := rec.Header().Get("X-OpenRouter-Key-Status"); got != body.Error.Metadata.Reason {
		t.Errorf("header says %q, body %q", got, body.Error.Metadata.Reason)
	}
	return body.Error.Metadata.Reason
}

func newKeyCheck(t *testing.T, upstream, managementKey string) *KeyCheck {
	t.Helper()
	t.Setenv("OPENROUTER_KEYS_TEST_CHECK_MK", managementKey)
	kc := &KeyCheck{UpstreamOptions: UpstreamOptions{Upstream: upstream, ManagementKey: "{env.OPENROUTER_KEYS_TEST_CHECK_MK}",
		LookupTimeout: caddy.Duration(2 * time.Second)}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := kc.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kc.Cleanup() })
	return kc
}

// checkRequest posts body to the key check as a client at ip would.
func checkRequest(t *testing.T, kc *KeyCheck, contentType, body, ip string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("POST", "/keycheck", strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: ip}))
	rec := httptest.NewRecorder()
	if err := kc.ServeHTTP(rec, req, nil); err != nil {
		t.Fatal(err)
	}
	return rec
}

func checkKey(t *testing.T, kc *KeyCheck, key string) (*report, *httptest.ResponseRecorder) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"key": key})
	rec := checkRequest(t, kc, "application/json", string(b), "192.0.2.1")
	var rep report
	if rec.Code == 200 {
		if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(rec.Body.String(), key) && len(key) > 20 {
		t.Fatalf("the report echoes the key")
	}
	return &rep, rec
}

func provision(t testing.TB, h *Handler) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		return err
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	return h.Validate()
}

var goodKey = "sk-or-v1-" + strings.Repeat("0123456789abcdef", 4)

// jwtWith is an unsigned token of a JWT's form with the given payload.
func jwtWith(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(payload)) + "." + enc([]byte("signature"))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// userNotFound is OpenRouter's misleading 401 body, byte for byte.
const userNotFound = `{"error":{"message":"User not found.","code":401}}`

// trackedClients is how many client networks l remembers.
func trackedClients(l *clientLimiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buckets.Len()
}

// testClock is a clock a test sets and advances; it never moves by itself.
// Its timers fire when it is advanced to them.
type testClock struct {
	mu     sync.Mutex
	t      time.Time
	timers []testTimer // set and not yet fired
	// timerSet is closed, and replaced, when a timer is set.
	timerSet chan struct{}
}

type testTimer struct {
	at   time.Time
	fire chan time.Time
}

func newTestClock(t time.Time) *testClock { return &testClock{t: t, timerSet: make(chan struct{})} }

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// advance moves the clock on by d and fires the timers due by then.
func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.timers = slices.DeleteFunc(c.timers, func(tm testTimer) bool {
		if tm.at.After(c.t) {
			return false
		}
		tm.fire <- c.t
		return true
	})
}

// after is a timer of the clock: it fires when the clock is advanced by d,
// at once when d is not positive.
func (c *testClock) after(d time.Duration) <-chan time.Time {
	fire := make(chan time.Time, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if d <= 0 {
		fire <- c.t
		return fire
	}
	c.timers = append(c.timers, testTimer{c.t.Add(d), fire})
	close(c.timerSet)
	c.timerSet = make(chan struct{})
	return fire
}

// pendingTimers is how many timers of the clock are set and not fired.
func (c *testClock) pendingTimers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// awaitTimer returns when a timer of the clock is set and not yet fired
// (at once if one is): a loop timed by the clock, such as the key watch's,
// has done its work and waits for the next round. A loop that waits on
// another clock leaves it waiting until the test binary's -timeout, whose
// goroutine dump names this function.
func (c *testClock) awaitTimer() {
	for {
		c.mu.Lock()
		pending, set := len(c.timers), c.timerSet
		c.mu.Unlock()
		if pending > 0 {
			return
		}
		<-set
	}
}

// useClock makes h's account, and so its gateways, key watch and key
// check, read the time from c.
func useClock(h *Handler, c *testClock) { setClock(h.acct, c) }

func setClock(a *account, c *testClock) {
	now, after := c.now, c.after
	a.clock.set.Store(&now)
	a.clock.timer.Store(&after)
}

// provisionOnClock provisions h with c as its account's clock from the
// start, so that the loops Provision starts (the key watch's) are timed by
// c, and returns the Caddy context h was provisioned in. The account that
// handlers of h's upstream and management key share is made, and c set on
// it, before h joins it.
func provisionOnClock(t *testing.T, h *Handler, c *testClock) caddy.Context {
	t.Helper()
	acct, release, err := accountOf(h.UpstreamOptions.settings())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release) // last: after h's Cleanup, registered below
	setClock(acct, c)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	if h.acct != acct {
		t.Fatal("the handler did not join the account made for it")
	}
	return ctx
}

// expiringAt is a GET /key answer of a key that expires at exp.
func expiringAt(exp time.Time) *keyMetadata { return &keyMetadata{ExpiresAt: &exp} }

// refreshListing reads the account's listing now, whatever the age of the
// cached one, joining a listing in flight.
func refreshListing(lifetime context.Context, a *account) (*keyListing, error) {
	a.listMu.Lock()
	f := a.listFlight
	if f == nil {
		f = a.startListing(lifetime)
	}
	a.listMu.Unlock()
	return f.wait(lifetime)
}

// recordHash is the record hash OpenRouter's management API is documented
// to give a key, sha256 of it in hex, computed here rather than by
// package openrouter so that the tests witness the scheme on their own.
func recordHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
