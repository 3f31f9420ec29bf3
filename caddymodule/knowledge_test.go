package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// A key that works is not dead: when OpenRouter refuses it but its own
// GET /key answers 200 right then, the answer says so.
func TestRefusedKeyThatWorksIsValidRetry(t *testing.T) {
	emu, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	key := emu.NewKey(emulator.KeyOptions{})
	rec := serve(t, &h, refused, "POST", "/api/v1/chat/completions", key)
	if got := reasonOf(t, rec); got != "key_valid_retry" {
		t.Errorf("reason %q: %s", got, rec.Body.String())
	}
	if !strings.Contains(rec.Body.String(), "retry") {
		t.Errorf("message: %s", rec.Body.String())
	}
}

// A management key works for GET /key: refused for inference it is a
// management key; refused on a management endpoint, it only needs a retry.
func TestManagementKey(t *testing.T) {
	emu, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	clk := newTestClock(time.Now())
	useClock(&h, clk)
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	if got := reasonOf(t, serve(t, &h, refused, "POST", "/api/v1/chat/completions", mk)); got != "management_key" {
		t.Errorf("inference: %q", got)
	}
	// Within the explain backoff the answer stands...
	if got := reasonOf(t, serve(t, &h, refused, "POST", "/api/v1/chat/completions", mk)); got != "management_key" {
		t.Errorf("inference again: %q", got)
	}
	// ...and after it the refusal is put to GET /key again.
	clk.advance(explainBackoff)
	if got := reasonOf(t, serve(t, &h, refused, "GET", "/api/v1/keys", mk)); got != "key_valid_retry" {
		t.Errorf("management endpoint: %q", got)
	}
}

// An expiry learned while the key worked explains its refusal for good,
// without asking anything again.
func TestLearnedExpiryExplains(t *testing.T) {
	emu, api := startEmulator(t)
	h := Handler{EdgeAnswers: EdgeAnswersOff}
	newHandler(t, &h, api)
	clk := newTestClock(time.Now())
	useClock(&h, clk)
	key := emu.NewKey(emulator.KeyOptions{})
	emu.ExpireIn(key, time.Hour)
	learnNow(h.knowledge, key)
	clk.advance(time.Hour + time.Second)
	before := lookupCount(emu)
	rec := serve(t, &h, refused, "POST", "/api/v1/chat/completions", key)
	if got := reasonOf(t, rec); got != "key_expired" || !strings.Contains(rec.Body.String(), `"expires_at"`) {
		t.Errorf("%q: %s", got, rec.Body.String())
	}
	if n := lookupCount(emu) - before; n != 0 {
		t.Errorf("%d lookups for a key known to have expired", n)
	}
}

// "disabled" counts for cache_ttl from when the management API said so: a
// GET /key 401 meanwhile does not keep it fresh, so a key deleted after it
// was disabled is not called disabled forever.
func TestDisabledGoesStale(t *testing.T) {
	emu, api := startEmulator(t)
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}"}, CacheTTL: caddy.Duration(time.Minute), EdgeAnswers: EdgeAnswersOff}
	newHandler(t, &h, api)
	clk := newTestClock(time.Now())
	useClock(&h, clk)
	key := emu.NewKey(emulator.KeyOptions{Disabled: true})
	if got := reasonOf(t, serve(t, &h, refused, "POST", "/api/v1/chat/completions", key)); got != "key_disabled" {
		t.Fatalf("disabled key: %q", got)
	}
	// Two minutes later the key has been deleted.
	emu.Delete(key)
	clk.advance(2 * time.Minute)
	records := emu.Count("/keys/{hash}")
	rec := serve(t, &h, refused, "POST", "/api/v1/chat/completions", key)
	if got := reasonOf(t, rec); got == "key_disabled" {
		t.Errorf("a stale disabled is still claimed: %s", rec.Body.String())
	}
	if emu.Count("/keys/{hash}") == records {
		t.Error("the management API was not asked again")
	}
}

// A failing request waits for evidence only when a lookup can start at
// once: past the lookup rate its 401 goes out unchanged, counted as busy.
func TestFailingRequestsNeverQueue(t *testing.T) {
	emu, api := startEmulator(t)
	emu.Delay = 100 * time.Millisecond
	h := Handler{LookupRate: 0.001} // one token, then none for 1000 s
	newHandler(t, &h, api)
	busy := testutil.ToFloat64(gatewayMetrics.unexplained.WithLabelValues(classBusy))
	serve(t, &h, refused, "POST", "/api/v1/chat/completions", randomKey()) // takes the only token
	for i := 0; i < 20; i++ {
		if rec := serve(t, &h, refused, "POST", "/api/v1/chat/completions", randomKey()); rec.Body.String() != userNotFound {
			t.Fatalf("request %d: %s", i, rec.Body.String())
		}
	}
	if got := testutil.ToFloat64(gatewayMetrics.unexplained.WithLabelValues(classBusy)) - busy; got != 20 {
		t.Errorf("%v refusals counted busy, want 20", got)
	}
}

// A lookup cut short by the config going away is no answer: no backoff, no
// fact, nothing for the next config to unlearn.
func TestCancelledLookupIsNoFailure(t *testing.T) {
	emu, api := startEmulator(t)
	emu.SetKeyFault(emulator.FaultHang)
	var h Handler
	life, cancel := context.WithCancel(context.Background())
	newHandler(t, &h, api)
	h.knowledge.life = life
	key := randomKey()
	f, _ := h.knowledge.lookupKey(key, fingerprintOf(key), time.Time{}, false, nil)
	if f == nil {
		t.Fatal("no lookup started")
	}
	cancel()
	<-f.done
	st, _ := h.knowledge.cache.get(fingerprintOf(key))
	if st.failures != 0 || st.retryAt != 0 || st.deadAt != 0 || st.aliveAt != 0 {
		t.Errorf("a cancelled lookup left %+v", st)
	}
}

// Tokens that are no OpenRouter key are explained from the token alone,
// without any lookup; a JWT is never called malformed.
func TestTokensExplainedWithoutLookups(t *testing.T) {
	emu, api := startEmulator(t)
	var h Handler
	newHandler(t, &h, api)
	missing := upstreamAnswer(401, http.Header{"Content-Type": {"application/json"}}, []byte(`{"error":{"message":"Missing Authentication header","code":401}}`))
	past := time.Now().Add(-time.Hour).Unix()
	for _, c := range []struct {
		name, token string
		next        caddyhttp.Handler
		want        string
	}{
		{"truncated key", goodKey[:50], refused, "key_malformed"},
		{"quoted key", `"` + goodKey + `"`, refused, "key_malformed"},
		{"Anthropic key", "sk-ant-api03-" + strings.Repeat("a", 60), missing, "not_openrouter_key"},
		{"expired JWT", jwtWith(`{"iss":"openrouter.ai","exp":` + itoa(past) + `}`), refused, "token_expired"},
		{"live JWT", jwtWith(`{"iss":"openrouter.ai","exp":` + itoa(past+7200) + `}`), refused, ""},
		{"another key version", "sk-or-v2-" + strings.Repeat("a", 64), refused, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := serve(t, &h, c.next, "POST", "/api/v1/chat/completions", c.token)
			if got := reasonOf(t, rec); got != c.want {
				t.Errorf("reason %q, want %q: %s", got, c.want, rec.Body.String())
			}
		})
	}
	if n := lookupCount(emu); n != 0 {
		t.Errorf("%d lookups for tokens that need none", n)
	}
}

// A refusal within the explain backoff is still explained from a listing
// read since, without any request.
func TestRefusalWithinBackoffUsesTheListing(t *testing.T) {
	emu, api := startEmulator(t)
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}"}}
	newHandler(t, &h, api)
	deleted := emu.NewKey(emulator.KeyOptions{})
	emu.Delete(deleted)
	fp := fingerprintOf(deleted)
	// As if the first refusal had been explained moments ago, its GET /key
	// answered 401, and the listing were read only afterwards.
	clk := newTestClock(time.Now())
	useClock(&h, clk)
	h.knowledge.cache.update(fp, clk.now(), func(st *keyState, _ bool) bool {
		st.reserveExplain(clk.now())
		st.refused(clk.now())
		return true
	})
	clk.advance(time.Second)
	if _, err := refreshListing(context.Background(), h.acct); err != nil {
		t.Fatal(err)
	}
	// The listing found the management key's own record: the scheme
	// proof starts a probe of reach in the background, whose requests are
	// not the refusal's.
	waitProbe(h.acct)
	before := lookupCount(emu)
	if got := reasonOf(t, serve(t, &h, refused, "POST", "/api/v1/chat/completions", deleted)); got != "key_not_found" {
		t.Errorf("reason %q", got)
	}
	if n := lookupCount(emu) - before; n != 0 {
		t.Errorf("%d requests made", n)
	}
}

// A listing proves a key absent only if it started after the gateway first
// saw the key: a key created after the listing was read, then disabled, is
// not "not found" (the account's hashes are opaque here, so the listing is
// the only evidence). A small account is listed again at once for it; a
// large one (here: a listing costs more than the management budget's
// burst) only once listingRetry has passed.
func TestListingOlderThanTheKeyProvesNothing(t *testing.T) {
	for _, c := range []struct {
		name  string
		rate  float64       // management_rate: 1 makes the account large
		after time.Duration // from the listing to the key's creation and refusal
		want  string
	}{
		// A new listing may start (listingRetry passed): it finds the key.
		{"a new listing is read", 1, 37 * time.Second, "key_disabled"},
		// None may start yet: the refusal stays unexplained.
		{"no new listing yet", 1, 20 * time.Second, ""},
		// A small account's listing fits in the lookup timeout and the
		// management budget: it is read for the key at once.
		{"a small account is listed again", 0, 20 * time.Second, "key_disabled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			emu, api := startEmulator(t)
			emu.OpaqueHashes = true
			mk := emu.NewKey(emulator.KeyOptions{Management: true})
			emu.NewKeys(50, emulator.KeyOptions{})
			t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
			h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}", ManagementRate: c.rate}, EdgeAnswers: EdgeAnswersOff}
			newHandler(t, &h, api)
			clk := newTestClock(time.Now())
			useClock(&h, clk)
			if _, err := refreshListing(context.Background(), h.acct); err != nil {
				t.Fatal(err)
			}
			clk.advance(c.after)
			key := emu.NewKey(emulator.KeyOptions{Disabled: true})
			rec := serve(t, &h, refused, "POST", "/api/v1/chat/completions", key)
			if got := reasonOf(t, rec); got != c.want {
				t.Errorf("reason %q, want %q: %s", got, c.want, rec.Body.String())
			}
		})
	}
}

// With opaque record hashes only a listing begun after a key was first
// seen proves it absent. In a small account, the first refusal of a key
// deleted moments after the last listing is explained by a listing read
// for it, whenever it comes (the issue tried 0, 2, 7 and 17 s); refusals
// at the same time share that one listing.
func TestFirstRefusalOfASmallAccountIsExplained(t *testing.T) {
	emu, api := startEmulator(t)
	emu.OpaqueHashes = true
	mk := emu.NewKey(emulator.KeyOptions{Management: true})
	emu.NewKeys(50, emulator.KeyOptions{})
	t.Setenv("OPENROUTER_KEYS_TEST_MK", mk)
	h := Handler{UpstreamOptions: UpstreamOptions{ManagementKey: "{env.OPENROUTER_KEYS_TEST_MK}", ManagementRate: 100}, EdgeAnswers: EdgeAnswersOff}
	newHandler(t, &h, api)
	clk := newTestClock(time.Now())
	useClock(&h, clk)
	listing, err := refreshListing(context.Background(), h.acct)
	if err != nil {
		t.Fatal(err)
	}
	deleted := func() string {
		k := emu.NewKey(emulator.KeyOptions{})
		emu.Delete(k)
		return k
	}
	for _, at := range []time.Duration{0, 2 * time.Second, 7 * time.Second, 17 * time.Second} {
		clk.advance(at - clk.now().Sub(listing.readAt))
		if got := reasonOf(t, serve(t, &h, refused, "POST", "/api/v1/chat/completions", deleted())); got != "key_not_found" {
			t.Errorf("%v after the last listing: reason %q", at, got)
		}
	}

	// Refusals of new keys at once: one listing serves them all.
	clk.advance(time.Second)
	keys := []string{deleted(), deleted(), deleted(), deleted()}
	before := emu.Count("/keys")
	var wg sync.WaitGroup
	reasons := make([]string, len(keys))
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("POST", "/api/v1/chat/completions", nil)
			req.Header.Set("Authorization", "Bearer "+k)
			_ = h.ServeHTTP(rec, req, refused)
			reasons[i] = rec.Header().Get("X-OpenRouter-Key-Status")
		}()
	}
	wg.Wait()
	for i, r := range reasons {
		if r != "key_not_found" {
			t.Errorf("refusal %d at once: reason %q", i, r)
		}
	}
	// One listing of one workspace of 55 keys: a page, an empty page and
	// the first page again.
	if n := emu.Count("/keys") - before; n > 3 {
		t.Errorf("%d refusals at once read %d pages: more than one listing", len(keys), n)
	}
}
