package caddymodule

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// chatOn sends a chat completion on model with key through h to the
// emulator.
func chatOn(t *testing.T, h *Handler, emu *emulator.Server, key, model string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("POST", "/api/v1/chat/completions",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"model":"`+model+`"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, toEmulator(emu)); err != nil {
		t.Fatal(err)
	}
	return rec
}

// A successful request on a model that retires within the window names
// the date; the model is logged once a day, counted by model, and listed
// for the key that used it. Models that do not retire, or retire later
// than the window, pass untouched.
func TestRetiringModelIsAnnounced(t *testing.T) {
	emu, api := startEmulator(t)
	h := Handler{WarnModelRetirement: "7d"}
	logs := newHandler(t, &h, api)
	h.retirement.logger = h.logger
	clk := newTestClock(time.Now())
	useClock(&h, clk)
	if !h.catalogue.await(context.Background()) {
		t.Fatal("no catalogue")
	}
	key := emu.NewKey(emulator.KeyOptions{})
	want := clk.now().UTC().AddDate(0, 0, emulator.RetiringSoonDays).Format(time.DateOnly)
	before := testutil.ToFloat64(gatewayMetrics.retiringModelRequests.WithLabelValues(emulator.ModelRetiringSoon))
	for _, model := range []string{emulator.ModelRetiringSoon, emulator.ModelRetiringSoon + ":nitro"} {
		rec := chatOn(t, &h, emu, key, model)
		if rec.Code != 200 || rec.Header().Get(HeaderModelExpiresAt) != want {
			t.Errorf("%s: %d, %s %q, want %q", model, rec.Code, HeaderModelExpiresAt, rec.Header().Get(HeaderModelExpiresAt), want)
		}
	}
	for _, model := range []string{emulator.ModelRetiringLater, emulator.ModelIDs[0], emulator.ModelIDs[1], "unknown/model"} {
		if rec := chatOn(t, &h, emu, key, model); rec.Code != 200 || rec.Header().Get(HeaderModelExpiresAt) != "" {
			t.Errorf("%s: %d, %s %q", model, rec.Code, HeaderModelExpiresAt, rec.Header().Get(HeaderModelExpiresAt))
		}
	}
	if n := testutil.ToFloat64(gatewayMetrics.retiringModelRequests.WithLabelValues(emulator.ModelRetiringSoon)) - before; n != 2 {
		t.Errorf("%g requests counted on the retiring model, want 2", n)
	}
	if exp := testutil.ToFloat64(gatewayMetrics.retiringModelExpiry.WithLabelValues(emulator.ModelRetiringSoon)); time.Unix(int64(exp), 0).UTC().Format(time.DateOnly) != want {
		t.Errorf("expiry gauge %g", exp)
	}
	warned := func() int {
		return logs.FilterMessage("model in use retires soon").FilterField(zapcore.Field{Key: "model", Type: zapcore.StringType, String: emulator.ModelRetiringSoon}).Len()
	}
	if n := warned(); n != 1 {
		t.Errorf("%d warnings logged the first day, want 1", n)
	}
	clk.advance(24 * time.Hour)
	chatOn(t, &h, emu, key, emulator.ModelRetiringSoon)
	if n := warned(); n != 2 {
		t.Errorf("%d warnings logged after a day, want 2", n)
	}
	if used := h.retirement.usedBy(fingerprintOf(key), clk.now()); len(used) != 1 || used[0].ID != emulator.ModelRetiringSoon {
		t.Errorf("retiring models used by the key: %+v", used)
	}
	if used := h.retirement.usedBy(fingerprintOf(randomKey()), clk.now()); len(used) != 0 {
		t.Errorf("another key used %+v", used)
	}
	// The key check of the account shows it for that key.
	kc := newKeyCheck(t, api, "")
	rep, rec := checkKey(t, kc, key)
	if len(rep.RetiringModels) != 1 || rep.RetiringModels[0].ID != emulator.ModelRetiringSoon || rep.RetiringModels[0].ExpirationDate != want {
		t.Errorf("key check: retiring models %+v", rep.RetiringModels)
	}
	req := httptest.NewRequest("POST", "/keycheck", strings.NewReader("key="+key))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	page := httptest.NewRecorder()
	if err := kc.ServeHTTP(page, req, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.Body.String(), emulator.ModelRetiringSoon+" may be removed after "+want) {
		t.Errorf("key check page (JSON %d) does not name the retiring model: %s", rec.Code, page.Body.String())
	}

	// A window that no listed model's date falls in: no body is parsed.
	short := Handler{WarnModelRetirement: "1d"}
	newHandler(t, &short, api)
	awaitCatalogue(t, &short)
	if rec := chatOn(t, &short, emu, key, emulator.ModelRetiringSoon); rec.Header().Get(HeaderModelExpiresAt) != "" || short.retirement.watches(time.Now()) {
		t.Errorf("a model retiring in %d days, window 1d: %q", emulator.RetiringSoonDays, rec.Header().Get(HeaderModelExpiresAt))
	}

	off := Handler{WarnModelRetirement: "off"}
	newHandler(t, &off, api)
	if rec := chatOn(t, &off, emu, key, emulator.ModelRetiringSoon); rec.Header().Get(HeaderModelExpiresAt) != "" || off.retirement != nil {
		t.Errorf("warn_model_retirement off: %q", rec.Header().Get(HeaderModelExpiresAt))
	}
}

func TestParseWarnModelRetirement(t *testing.T) {
	for in, want := range map[string]time.Duration{"": DefaultWarnModelRetirement, "off": 0, "0": 0, "7d": 7 * 24 * time.Hour, "36h": 36 * time.Hour} {
		if got, err := parseWarnModelRetirement(in); err != nil || got != want {
			t.Errorf("%q: %s %v, want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"-1d", "soon", "on"} {
		if _, err := parseWarnModelRetirement(in); err == nil || !strings.Contains(err.Error(), "warn_model_retirement") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

// What is remembered of the keys that used retiring models is bounded.
func TestRetiringModelsPerKeyAreBounded(t *testing.T) {
	m := newModelRetirement(nil, time.Hour, nil)
	now := time.Now()
	for i := range maxKeysWithRetiringModels + 5 {
		m.note("a/b", fingerprintOf(itoa(int64(i))), true, now)
	}
	fp := fingerprintOf("0")
	for i := range maxRetiringModelsPerKey + 3 {
		m.note("m/"+itoa(int64(i)), fp, true, now)
	}
	if len(m.byKey) != maxKeysWithRetiringModels || len(m.order) != maxKeysWithRetiringModels {
		t.Errorf("%d keys remembered", len(m.byKey))
	}
	if n := len(m.byKey[fp]); n != maxRetiringModelsPerKey {
		t.Errorf("%d models remembered for one key", n)
	}
}

// retiringBytes, which compares a request's model with the few models
// that have an expiration date, answers as the catalogue's index does:
// the exact id first (a listed variant that does not retire is not its
// base's), then the id without its variant, within the window only; with
// more models retiring than it compares, it looks them up.
func TestRetiringBytesAnswersAsTheIndex(t *testing.T) {
	now := time.Now()
	date := func(days int) *string { d := now.AddDate(0, 0, days).Format(openrouter.ExpirationLayout); return &d }
	for _, extra := range []int{0, maxComparedExpiring + 1} {
		read := []openrouter.CatalogueModel{
			{ID: "a/soon", ExpirationDate: date(3)},
			{ID: "a/later", ExpirationDate: date(60)},
			{ID: "a/past", ExpirationDate: date(-2)},
			{ID: "a/stays"},
			{ID: "b/base", ExpirationDate: date(2)},
			{ID: "b/base:free"}, // a listed variant that does not retire
			{ID: "c/x:beta", ExpirationDate: date(1)},
		}
		for i := range extra {
			read = append(read, openrouter.CatalogueModel{ID: "z/" + itoa(int64(i)), ExpirationDate: date(5)})
		}
		cat := &catalogue{}
		cat.snap.Store(buildSnapshot(read, nil, now))
		m := newModelRetirement(cat, 7*24*time.Hour, nil)
		for _, model := range []string{"a/soon", "a/soon:nitro", "a/later", "a/later:free", "a/past", "a/stays", "a/stays:free",
			"b/base", "b/base:free", "b/base:nitro", "c/x:beta", "c/x", "c/x:beta:y", "unknown/model", "unknown:free", ":", "a/soo", "z/3", "z/3:free"} {
			want, wantOK := m.retiring(model, now)
			got := m.retiringBytes([]byte(model), now)
			if (got != nil) != wantOK || got != nil && (got.ID != want.ID || !got.Expiration.Equal(want.Expiration)) {
				t.Errorf("%d more retiring, %q: got %+v, want %q %v", extra, model, got, want.ID, wantOK)
			}
		}
		if m.retiringBytes([]byte("a/soon:nitro"), now) == nil {
			t.Errorf("%d more retiring: a variant of a retiring model is not retiring", extra)
		}
	}
}

// watches, which every inference request runs, compares whole seconds:
// it may watch a second early, never late.
func TestWatchesNeverMissesTheWindow(t *testing.T) {
	soonest := time.Date(2026, 12, 21, 0, 0, 0, 0, time.UTC)
	for _, window := range []time.Duration{0, time.Second, 1500 * time.Millisecond, 14 * 24 * time.Hour, 14*24*time.Hour + 300*time.Millisecond} {
		for _, exp := range []time.Time{soonest, soonest.Add(700 * time.Millisecond)} {
			snap := &catalogueSnapshot{}
			snap.noteExpiration(exp.Add(time.Hour))
			snap.noteExpiration(exp)
			cat := &catalogue{}
			cat.snap.Store(snap)
			m := newModelRetirement(cat, window, zap.NewNop())
			edge := exp.Add(-window)
			for _, off := range []time.Duration{-3 * time.Second, -2 * time.Second, -1001 * time.Millisecond, -time.Second, -999 * time.Millisecond, -time.Nanosecond, 0, time.Nanosecond, 400 * time.Millisecond, time.Second, time.Hour} {
				now := edge.Add(off)
				exact := exp.Sub(now) <= window
				got := m.watches(now)
				if exact && !got {
					t.Errorf("window %s, soonest %s, now %s: within the window, not watched", window, exp, now)
				}
				if !exact && got && exp.Sub(now) > window+2*time.Second {
					t.Errorf("window %s, soonest %s, now %s: watched more than a second early", window, exp, now)
				}
			}
		}
	}
}
