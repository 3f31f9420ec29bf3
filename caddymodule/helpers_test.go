package caddymodule

// helpers_test.go holds the helpers the package's tests share: handlers and
// key checks provisioned against an emulator, upstream answers (the
// emulator's, fixed bodies, OpenRouter's failures), a fake account's
// listings, requests served through them, the keys, bodies, states and
// clocks they use, and readers of what comes back (bodies, metrics). A
// helper that cannot do its work fails the test; none panics.

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
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

func setClock(a *account, c *testClock) { c.drive(&a.clock) }

// drive makes clk read the time from c and time its waits by c's timers.
func (c *testClock) drive(clk *clock) {
	now, after := c.now, c.after
	clk.set.Store(&now)
	clk.timer.Store(&after)
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

// toEmulator is a next handler that sends the request to the emulator, as
// reverse_proxy to OpenRouter would.
func toEmulator(emu *emulator.Server) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		emu.ServeHTTP(w, r)
		return nil
	})
}

// failureAnswer is next answering with an OpenRouter failure body in
// envelope e, its headers included, and counting its calls.
func failureAnswer(fb openrouter.FailureBody, e openrouter.Envelope, calls *atomic.Int32) caddyhttp.Handler {
	body := fb.Render(e)
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if calls != nil {
			calls.Add(1)
		}
		for k, v := range fb.Header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(fb.Status)
		_, err := w.Write(body)
		return err
	})
}

// errorOf is the object holding the message in any envelope.
func errorOf(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var top map[string]any
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, body)
	}
	if e, ok := top["error"].(map[string]any); ok {
		return e
	}
	return top
}

func metadataOf(t *testing.T, body []byte) map[string]any {
	t.Helper()
	md, _ := errorOf(t, body)["metadata"].(map[string]any)
	return md
}

func f64(v float64) *float64 { return &v }

// unscopedAfford is the 402 "can only afford" without the URL that tells
// the key's cap from the account's balance.
func unscopedAfford(requested, affordable int64) openrouter.FailureBody {
	fb := openrouter.BalanceAfford(requested, affordable, openrouter.WordingNoSource)
	fb.Message = fb.Message[:strings.Index(fb.Message, " To increase")]
	return fb
}

// randomKey is a well-formed key that no account holds.
func randomKey() string {
	var b [32]byte
	rand.Read(b[:])
	return "sk-or-v1-" + hex.EncodeToString(b[:])
}

// learnNow makes the gateway ask GET /key about key (within its lookup
// rate) and waits for the answer to be stored.
func learnNow(k *knowledge, key string) {
	if f, _ := k.lookupKey(key, fingerprintOf(key), time.Time{}, false, nil); f != nil {
		<-f.done
	}
}

var okNext = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(okBody)
	return err
})

// encode encodes b as enc ("raw-deflate": deflate without zlib's wrapper);
// any other enc leaves b as it is.
func encode(t testing.TB, enc string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch enc {
	case "gzip":
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "br":
		w := brotli.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "zstd":
		w, _ := zstd.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "deflate":
		w := zlib.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "raw-deflate":
		w, _ := flate.NewWriter(&buf, flate.DefaultCompression)
		w.Write(b)
		w.Close()
	default:
		return b
	}
	return buf.Bytes()
}

// stateOf is the state a key reaches through steps, the first of which
// sees it at first.
func stateOf(first time.Time, steps ...func(*keyState)) keyState {
	st := newKeyState(first)
	for _, step := range steps {
		step(&st)
	}
	return st
}

// fakeAccount serves GET /workspaces and GET /keys as OpenRouter pages
// them, with a hook between pages.
type fakeAccount struct {
	mu         sync.Mutex
	workspaces []workspace
	keys       map[string][]keyRecord // by workspace, most recent first
	afterPage  func(ws string, offset int)
	failWS     bool
	requests   int
	// holdUntil, when not zero, holds the first requests until that many
	// are in flight at once, which proves they are sent in parallel.
	holdUntil   int
	held        chan struct{}
	keysHeld    int
	maxInFlight int
	inFlight    int
	made        int
}

func (f *fakeAccount) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests++
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	var hold chan struct{}
	if f.holdUntil != 0 && r.URL.Path == "/api/v1/keys" {
		hold = f.held
		if f.keysHeld++; f.keysHeld == f.holdUntil {
			close(f.held)
			f.holdUntil = 0
		}
	}
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inFlight--; f.mu.Unlock() }()
	if hold != nil {
		<-hold
	}
	q := r.URL.Query()
	offset, _ := strconv.Atoi(q.Get("offset"))
	var data any
	switch r.URL.Path {
	case "/api/v1/workspaces":
		if f.failWS {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		limit, _ := strconv.Atoi(q.Get("limit"))
		f.mu.Lock()
		data = f.workspaces[min(offset, len(f.workspaces)):min(offset+limit, len(f.workspaces))]
		f.mu.Unlock()
	case "/api/v1/keys":
		ws := q.Get("workspace_id")
		f.mu.Lock()
		all := f.keys[ws]
		data = all[min(offset, len(all)):min(offset+openrouter.KeysPageSize, len(all))]
		f.mu.Unlock()
		defer func() {
			if f.afterPage != nil {
				f.afterPage(ws, offset)
			}
		}()
	default:
		w.WriteHeader(http.StatusNotFound)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"data": data})
}

func (f *fakeAccount) add(ws string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fresh := make([]keyRecord, n)
	for i := range fresh {
		f.made++
		key := fmt.Sprintf("sk-or-v1-%064x", f.made)
		fresh[n-1-i] = keyRecord{Hash: recordHash(key), Label: openrouter.Label(key), WorkspaceID: ws}
	}
	f.keys[ws] = append(fresh, f.keys[ws]...)
}

func newFakeAccount(workspaces ...string) *fakeAccount {
	f := &fakeAccount{keys: map[string][]keyRecord{}}
	for _, id := range workspaces {
		f.workspaces = append(f.workspaces, workspace{ID: id, Name: "ws " + id})
	}
	return f
}

// series gathers the registry into "name{workspace,name,label}" -> value.
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetValue())
			}
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = value(m)
		}
	}
	return out
}

// value is a gauge's or a counter's value.
func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

// waitProbe waits for the account's probe of reach in flight, if any.
func waitProbe(a *account) {
	a.probeMu.Lock()
	f := a.probe
	a.probeMu.Unlock()
	if f != nil {
		<-f.done // ends within probeTimeout
	}
}

// linkTestStore links to h's account a gateway whose shared store, over a
// storage double, keeps its writes queued for the test to read.
func linkTestStore(t *testing.T, h *Handler) *sharedStore {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := openSharedStore(ctx, newStorageDouble(), &h.acct.clock, h.acct.managementKey, zap.NewNop())
	t.Cleanup(h.acct.link(&gatewayLink{cache: newKeyCache(16), shared: s}))
	return s
}

// recordHash is the record hash OpenRouter's management API is documented
// to give a key, sha256 of it in hex, computed here rather than by
// package openrouter so that the tests witness the scheme on their own.
func recordHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
