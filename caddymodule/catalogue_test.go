package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// lookupCount is how many requests reached emu other than GET /models,
// which every handler's catalogue reads at start in the background.
func lookupCount(emu *emulator.Server) int {
	return emu.Count("") - emu.Count(openrouter.EndpointModels.Template())
}

// fakeModels is an upstream whose GET /models lists what the test sets,
// or fails with 503 while failing is set, counting the reads.
type fakeModels struct {
	mu      sync.Mutex
	models  []openrouter.ModelListing
	failing bool
	reads   atomic.Int32
}

func (f *fakeModels) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.reads.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	_ = json.NewEncoder(w).Encode(openrouter.Data[[]openrouter.ModelListing]{Data: f.models})
}

func (f *fakeModels) set(failing bool, ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = failing
	f.models = f.models[:0]
	for _, id := range ids {
		f.models = append(f.models, openrouter.ModelListing{Model: openrouter.Model{ID: id, CanonicalSlug: id + "-20260101"}})
	}
}

func startFakeModels(t *testing.T, ids ...string) (*fakeModels, string) {
	f := new(fakeModels)
	f.set(false, ids...)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

// catalogueOnClock makes the catalogue of h's upstream timed by clk, for
// h and the other handlers of that upstream to share.
func catalogueOnClock(t *testing.T, h *Handler, clk *testClock) {
	t.Helper()
	base := h.UpstreamOptions.settings().base
	_, _, err := catalogues.LoadOrNew(base, func() (caddy.Destructor, error) {
		c := newCatalogue(base, zap.NewNop())
		clk.drive(&c.clock)
		go c.loop()
		return c, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = catalogues.Delete(base) })
}

// The emulator's catalogue as the gateway reads it: retiring models with
// their date, "not retiring" for the 2098-12-31 stamp and for null, the
// alias's target, the retired model absent.
func TestCatalogueReadsTheModelList(t *testing.T) {
	emu, api := startEmulator(t)
	now := time.Now().UTC()
	h := Handler{}
	newHandler(t, &h, api)
	if !h.catalogue.await(context.Background()) {
		t.Fatal("no catalogue read")
	}
	soon, ok := h.catalogue.lookup(emulator.ModelRetiringSoon)
	wantDay := now.AddDate(0, 0, emulator.RetiringSoonDays).Format(time.DateOnly)
	if !ok || !soon.Listed || soon.Expiration.Format(time.DateOnly) != wantDay {
		t.Errorf("retiring model: %+v, want expiration %s", soon, wantDay)
	}
	for i, id := range emulator.ModelIDs[:2] { // one stamped 2098-12-31, one null
		if m, ok := h.catalogue.lookup(id); !ok || !m.Expiration.IsZero() {
			t.Errorf("model %d (%s): %+v, want not retiring", i, id, m)
		}
	}
	if m, ok := h.catalogue.lookup(emulator.ModelAlias); !ok || m.AliasTarget != emulator.ModelAliasTarget {
		t.Errorf("alias: %+v", m)
	}
	if m, ok := h.catalogue.lookup(emulator.ModelFreeEndedPaid); !ok || len(m.Parameters) == 0 || m.PromptPrice == "" {
		t.Errorf("paid slug: %+v", m)
	}
	for _, id := range []string{emulator.ModelRetired, emulator.ModelFreeEnded} {
		if m, ok := h.catalogue.lookup(id); ok {
			t.Errorf("%s listed: %+v", id, m)
		}
	}
	if got, want := len(h.catalogue.listed()), len(emu.ListedModelIDs()); got != want {
		t.Errorf("%d models listed, want %d", got, want)
	}
}

// Handlers of one upstream share one catalogue, read once; it is read
// again at its interval on its clock, kept (stale) while a read fails,
// and remembers a model no longer listed with when it was last seen.
func TestCatalogueRefreshesOnItsClockAndServesStale(t *testing.T) {
	f, base := startFakeModels(t, "a/one", "a/two")
	clk := newTestClock(time.Now())
	h := Handler{UpstreamOptions: UpstreamOptions{Upstream: base}}
	catalogueOnClock(t, &h, clk)
	newHandler(t, &h, base)
	other := Handler{}
	newHandler(t, &other, base)
	if other.catalogue != h.catalogue {
		t.Fatal("two catalogues for one upstream")
	}
	clk.awaitTimer() // the first read is done; the loop waits
	if n := f.reads.Load(); n != 1 {
		t.Fatalf("%d reads at start", n)
	}
	first, _ := h.catalogue.lookup("a/two")

	f.set(true)
	clk.advance(DefaultCatalogueRefresh + DefaultCatalogueRefresh/10)
	clk.awaitTimer()
	if m, ok := h.catalogue.lookup("a/two"); !ok || !m.Listed {
		t.Errorf("after a failed read: %+v %v", m, ok)
	}

	f.set(false, "a/one")
	clk.advance(catalogueRetryMin)
	clk.awaitTimer()
	if n := f.reads.Load(); n != 3 {
		t.Errorf("%d reads, want 3 (start, failure, retry)", n)
	}
	m, ok := h.catalogue.lookup("a/two")
	if !ok || m.Listed || !m.LastSeen.Equal(first.LastSeen) || !m.FirstSeen.Equal(first.FirstSeen) {
		t.Errorf("a model no longer listed: %+v %v", m, ok)
	}
	if l := h.catalogue.listed(); len(l) != 1 || l[0].ID != "a/one" || !l[0].FirstSeen.Equal(first.FirstSeen) || l[0].LastSeen.Equal(first.LastSeen) {
		t.Errorf("listed: %+v", l)
	}
}

// A failure that finds nothing read starts one read, and waits for it no
// longer than its context allows.
func TestCatalogueAwaitWithinItsContext(t *testing.T) {
	f, base := startFakeModels(t, "a/one")
	f.set(true)
	h := Handler{}
	newHandler(t, &h, base)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if h.catalogue.await(ctx) {
		t.Fatal("a catalogue from a failing upstream")
	}
	f.set(false, "a/one")
	if !h.catalogue.await(context.Background()) {
		t.Fatal("no read started by await")
	}
	if _, ok := h.catalogue.lookup("a/one"); !ok {
		t.Error("a/one not known")
	}
	var none *catalogue
	if none.await(context.Background()) || none.listed() != nil {
		t.Error("a nil catalogue knows something")
	}
	if _, ok := none.lookup("a/one"); ok {
		t.Error("a nil catalogue knows a model")
	}
}

// The catalogue keeps at most maxCatalogueModels, strings cut to
// maxModelString, and forgets unlisted models past their bounds.
func TestCatalogueIsBounded(t *testing.T) {
	long := make([]byte, 3*maxModelString)
	for i := range long {
		long[i] = 'x'
	}
	now := time.Now()
	read := []openrouter.CatalogueModel{{ID: string(long), Name: string(long)}}
	s := buildSnapshot(read, nil, now)
	if len(s.models[0].ID) != maxModelString || len(s.models[0].Name) != maxModelString {
		t.Errorf("strings not bounded: %d %d", len(s.models[0].ID), len(s.models[0].Name))
	}
	many := make([]openrouter.CatalogueModel, maxCatalogueModels+10)
	for i := range many {
		many[i].ID = "m/" + itoa(int64(i))
	}
	s = buildSnapshot(many, nil, now)
	if len(s.models) != maxCatalogueModels {
		t.Errorf("%d models kept", len(s.models))
	}
	later := buildSnapshot(nil, s, now.Add(time.Hour))
	if len(later.models) != maxUnlistedModels || later.nListed != 0 {
		t.Errorf("%d unlisted kept, %d listed", len(later.models), later.nListed)
	}
	if gone := buildSnapshot(nil, later, now.Add(unlistedForget+2*time.Hour)); len(gone.models) != 0 {
		t.Errorf("%d unlisted models remembered past %s", len(gone.models), unlistedForget)
	}
}
