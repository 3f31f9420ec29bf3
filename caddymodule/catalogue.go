package caddymodule

// catalogue.go owns the model catalogue: OpenRouter's model list (GET
// /models) as this upstream last read it, with what earlier reads showed
// of models no longer listed. One catalogue serves every handler of an
// upstream (catalogues, a caddy.UsagePool keyed by the upstream's base
// URL); it is read at start in the background and refreshed on its own
// clock (jittered, single flight, backing off after a failure), bounded in
// memory, and served stale when a refresh fails. It is never on the path of
// a request that succeeds: failures read it, and wait for it (await) only
// when nothing was ever read.

import (
	"context"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Bounds and timing of the catalogue.
const (
	// DefaultCatalogueRefresh is how often the catalogue is read again.
	DefaultCatalogueRefresh = time.Hour
	// catalogueReadTimeout bounds one read of GET /models.
	catalogueReadTimeout = 30 * time.Second
	// catalogueRetryMin is the first wait after a failed read; it doubles
	// up to the refresh interval.
	catalogueRetryMin = time.Minute
	// maxCatalogueModels is the most models one read keeps; a longer list
	// is cut (OpenRouter lists about 340).
	maxCatalogueModels = 50_000
	// maxUnlistedModels is the most models kept that earlier reads listed
	// and the latest does not; the oldest LastSeen go first.
	maxUnlistedModels = 10_000
	// unlistedForget is how long a model no longer listed is remembered.
	unlistedForget = 90 * 24 * time.Hour
	// maxModelString bounds every string kept of a model (ids, slugs,
	// names, prices, parameters); maxModelParameters its parameters.
	maxModelString     = 256
	maxModelParameters = 64
)

// catalogueModel is what the catalogue knows of one model id.
type catalogueModel struct {
	ID            string
	CanonicalSlug string
	Name          string
	// Expiration is when OpenRouter may remove the model; zero when it is
	// not retiring (null, or the 2098-12-31 stamp).
	Expiration time.Time
	// Parameters are its supported_parameters (shared between models
	// with the same set: do not modify).
	Parameters []string
	// AliasTarget is alias_target.slug of a ~author/...-latest alias.
	AliasTarget string
	// PromptPrice and CompletionPrice are its pricing, as OpenRouter
	// sends them (decimal strings).
	PromptPrice, CompletionPrice string
	// FirstSeen and LastSeen are the first and last read that listed it.
	FirstSeen, LastSeen time.Time
	// Listed: the latest read lists it.
	Listed bool
}

// catalogueSnapshot is one read of the catalogue, never modified once
// published.
type catalogueSnapshot struct {
	read time.Time // when the read was made
	// models are the listed models (the first nListed), then those that
	// earlier reads listed, most recently seen first.
	models  []catalogueModel
	nListed int
	index   map[string]int32
	// retiring: some listed model has an expiration date, the soonest
	// of which is soonest, so a successful request's model is worth
	// looking up when that date is within the window.
	retiring bool
	soonest  time.Time
	// soonestUnix is soonest in Unix seconds, which every inference
	// request compares (time.Time.Sub costs more than the rest of it).
	soonestUnix int64
	// expiring are the indices in models of those with an expiration
	// date, listed or not: the only ones a request's model can retire
	// as, compared without hashing (retirement.go).
	expiring []int32
}

// catalogue is OpenRouter's model list as this upstream last read it.
type catalogue struct {
	// clock is the catalogue's own (tests set it), for its waits and the
	// times it stamps on models.
	clock  clock
	client *openrouter.Client
	logger *zap.Logger
	life   context.Context
	end    context.CancelFunc
	every  time.Duration

	snap atomic.Pointer[catalogueSnapshot]

	mu      sync.Mutex
	reading *flight[struct{}] // the read in progress, or nil

	// base is the upstream's; shared, when a handler of it has
	// shared_storage, is that handler's store: reads are published there,
	// and a catalogue that has read nothing yet starts from the one there.
	base   string
	shared atomic.Pointer[sharedStore]
}

// catalogues are shared by every handler of an upstream, across reloads.
var catalogues = caddy.NewUsagePool()

// catalogueOf loads the catalogue of the upstream at base, or makes it
// and starts its reads. release must be called when the handler is
// cleaned up.
func catalogueOf(base string, logger *zap.Logger) (*catalogue, func(), error) {
	v, _, err := catalogues.LoadOrNew(base, func() (caddy.Destructor, error) {
		c := newCatalogue(base, logger)
		go c.loop()
		return c, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return v.(*catalogue), func() { _, _ = catalogues.Delete(base) }, nil
}

// newCatalogue is the catalogue of the upstream at base, nothing read.
func newCatalogue(base string, logger *zap.Logger) *catalogue {
	life, end := context.WithCancel(context.Background())
	return &catalogue{client: newMetadataClient(base), logger: logger, life: life, end: end, every: DefaultCatalogueRefresh, base: base}
}

// Destruct ends the catalogue's reads when no handler uses it.
func (c *catalogue) Destruct() error {
	c.end()
	c.client.Close()
	return nil
}

// loop reads the catalogue now and then every interval (jittered by up to
// a tenth either way), sooner after a failure, until the catalogue's life
// ends.
func (c *catalogue) loop() {
	retry := catalogueRetryMin
	for {
		wait := jitter(c.every)
		if !c.readNow() {
			wait = min(retry, c.every)
			retry = min(2*retry, c.every)
		} else {
			retry = catalogueRetryMin
		}
		select {
		case <-c.life.Done():
			return
		case <-c.clock.after(wait):
		}
	}
}

// jitter is d give or take up to a tenth, so that replicas started
// together do not read together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/10 + rand.N(d/5+1)
}

// readNow reads the catalogue, joining a read in progress, and reports
// whether it succeeded.
func (c *catalogue) readNow() bool {
	f, _ := c.start()
	_, err := f.wait(c.life)
	return err == nil
}

// start returns the read in progress, or starts one.
func (c *catalogue) start() (*flight[struct{}], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading != nil {
		return c.reading, false
	}
	f := newFlight[struct{}](c.clock.now())
	c.reading = f
	go func() {
		ctx, cancel := context.WithTimeout(c.life, catalogueReadTimeout)
		defer cancel()
		err := c.read(ctx)
		c.mu.Lock()
		c.reading = nil
		c.mu.Unlock()
		f.finish(struct{}{}, err)
	}()
	return f, true
}

// read asks GET /models and publishes what it lists; on failure the last
// read stays.
func (c *catalogue) read(ctx context.Context) error {
	models, res := c.client.Models(ctx)
	if res.Err != nil {
		if c.logger != nil && c.life.Err() == nil {
			c.logger.Debug("model catalogue not read", zap.String("error", openrouter.PublicText(res.Err)))
		}
		return res.Err
	}
	snap := buildSnapshot(models, c.snap.Load(), c.clock.now())
	c.snap.Store(snap)
	if s := c.shared.Load(); s != nil {
		s.storeCatalogue(c.base, snap)
	}
	return nil
}

// share makes the catalogue publish its reads through s and, while it has
// read nothing, start from what another replica published: read in the
// background, never on a request's path.
func (c *catalogue) share(s *sharedStore) {
	if c == nil || s == nil {
		return
	}
	c.shared.Store(s)
	if c.snap.Load() != nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(c.life, storageTimeout)
		defer cancel()
		if snap, ok := s.loadCatalogue(ctx, c.base); ok {
			// Only where no read of its own came first.
			c.snap.CompareAndSwap(nil, snap)
		}
	}()
}

// snapshotOfShared is the snapshot of a catalogue another replica
// published, within this catalogue's bounds.
func snapshotOfShared(sc sharedCatalogue) *catalogueSnapshot {
	n := min(len(sc.Models), maxCatalogueModels+maxUnlistedModels)
	s := &catalogueSnapshot{read: time.Unix(sc.ReadAt, 0), models: make([]catalogueModel, 0, n), index: make(map[string]int32, n)}
	params := make(map[string][]string)
	var unlisted []catalogueModel
	for _, w := range sc.Models[:n] {
		id := clip(w.ID)
		if _, dup := s.index[id]; dup || id == "" {
			continue
		}
		exp := w.Expiration
		m := catalogueModel{ID: id, CanonicalSlug: clip(w.Slug), Expiration: openrouter.ParseExpiration(&exp),
			Parameters: internParameters(params, w.Parameters), AliasTarget: clip(w.AliasTarget),
			FirstSeen: time.Unix(w.FirstSeen, 0), LastSeen: time.Unix(w.LastSeen, 0), Listed: w.Listed}
		if m.Listed && s.nListed >= maxCatalogueModels || !m.Listed && len(unlisted) >= maxUnlistedModels {
			continue
		}
		if !m.Listed {
			unlisted = append(unlisted, m)
			s.index[id] = -1 // placed below
			continue
		}
		s.noteExpiration(m.Expiration)
		s.index[id] = int32(len(s.models))
		s.models = append(s.models, m)
		s.nListed++
	}
	for _, m := range unlisted {
		s.index[m.ID] = int32(len(s.models))
		s.models = append(s.models, m)
	}
	return s
}

// lookup is what the catalogue knows of id: listed by the latest read, or
// by an earlier one (Listed false).
func (c *catalogue) lookup(id string) (catalogueModel, bool) {
	if c == nil {
		return catalogueModel{}, false
	}
	s := c.snap.Load()
	if s == nil {
		return catalogueModel{}, false
	}
	i, ok := s.index[id]
	if !ok {
		return catalogueModel{}, false
	}
	return s.models[i], true
}

// snapshot is the latest read, or nil (do not modify).
func (c *catalogue) snapshot() *catalogueSnapshot {
	if c == nil {
		return nil
	}
	return c.snap.Load()
}

// listed is the models of the latest read (do not modify).
func (c *catalogue) listed() []catalogueModel {
	if c == nil {
		return nil
	}
	if s := c.snap.Load(); s != nil {
		return s.models[:s.nListed:s.nListed]
	}
	return nil
}

// await reports whether a read exists; if none was ever made it starts
// one (or joins the one in progress) and waits for it within ctx.
func (c *catalogue) await(ctx context.Context) bool {
	if c == nil {
		return false
	}
	if c.snap.Load() != nil {
		return true
	}
	f, _ := c.start()
	_, _ = f.wait(ctx)
	return c.snap.Load() != nil
}

// buildSnapshot makes the snapshot of a read at now: the listed models
// (bounded), what the previous snapshot knew of each (FirstSeen), and the
// models it knew that this read does not list, within their bounds.
func buildSnapshot(read []openrouter.CatalogueModel, prev *catalogueSnapshot, now time.Time) *catalogueSnapshot {
	n := min(len(read), maxCatalogueModels)
	s := &catalogueSnapshot{read: now, models: make([]catalogueModel, 0, n), index: make(map[string]int32, n)}
	params := make(map[string][]string)
	for i := range read[:n] {
		w := &read[i]
		id := clip(w.ID)
		if id == "" {
			continue
		}
		if _, dup := s.index[id]; dup {
			continue
		}
		m := catalogueModel{
			ID: id, CanonicalSlug: clip(w.CanonicalSlug), Name: clip(w.Name),
			Expiration: w.Expiration(), Parameters: internParameters(params, w.SupportedParameters),
			PromptPrice: clip(w.Pricing.Prompt), CompletionPrice: clip(w.Pricing.Completion),
			FirstSeen: now, LastSeen: now, Listed: true,
		}
		if w.AliasTarget != nil {
			m.AliasTarget = clip(w.AliasTarget.Slug)
		}
		if prev != nil {
			if j, ok := prev.index[id]; ok {
				m.FirstSeen = prev.models[j].FirstSeen
			}
		}
		s.noteExpiration(m.Expiration)
		s.add(m)
	}
	s.nListed = len(s.models)
	if prev == nil {
		return s
	}
	var gone []catalogueModel
	for _, m := range prev.models {
		if _, ok := s.index[m.ID]; ok || now.Sub(m.LastSeen) > unlistedForget {
			continue
		}
		m.Listed = false
		gone = append(gone, m)
	}
	sort.SliceStable(gone, func(i, j int) bool { return gone[i].LastSeen.After(gone[j].LastSeen) })
	for _, m := range gone[:min(len(gone), maxUnlistedModels)] {
		s.add(m)
	}
	return s
}

// add appends m to the snapshot's models and indexes it.
func (s *catalogueSnapshot) add(m catalogueModel) {
	i := int32(len(s.models))
	s.index[m.ID] = i
	if !m.Expiration.IsZero() {
		s.expiring = append(s.expiring, i)
	}
	s.models = append(s.models, m)
}

// noteExpiration takes a listed model's expiration into retiring and
// soonest.
func (s *catalogueSnapshot) noteExpiration(exp time.Time) {
	if exp.IsZero() {
		return
	}
	if !s.retiring || exp.Before(s.soonest) {
		s.soonest, s.soonestUnix = exp, exp.Unix()
	}
	s.retiring = true
}

// clip bounds a string the catalogue keeps, copying a cut one so that the
// rest is not kept alive.
func clip(s string) string {
	if len(s) > maxModelString {
		return strings.Clone(s[:maxModelString])
	}
	return s
}

// internParameters bounds a model's supported_parameters and shares one
// slice between the models that support the same set (most do).
func internParameters(seen map[string][]string, ps []string) []string {
	if len(ps) == 0 {
		return nil
	}
	ps = ps[:min(len(ps), maxModelParameters)]
	key := strings.Join(ps, "\x00")
	if p, ok := seen[key]; ok {
		return p
	}
	p := make([]string, len(ps))
	for i, s := range ps {
		p[i] = clip(s)
	}
	seen[key] = p
	return p
}
