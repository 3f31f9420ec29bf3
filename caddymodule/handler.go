package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the handler's options.
const (
	DefaultUpstream        = "https://openrouter.ai/api/v1"
	DefaultCacheSize       = 100_000
	DefaultCacheTTL        = 10 * time.Minute
	DefaultLookupTimeout   = 5 * time.Second
	DefaultLookupRate      = 20.0
	DefaultExpirySkew      = 30 * time.Second
	DefaultEdgeDisabledFor = 30 * time.Second
)

// Values of EdgeAnswers.
const (
	EdgeAnswersOn        = "on"
	EdgeAnswersOff       = "off"
	EdgeAnswersMalformed = "malformed"
)

// Handler sits in front of reverse_proxy to OpenRouter and turns its
// misleading 401 "User not found." into an accurate error: key expired,
// disabled, malformed, not found, or a management key used for inference.
// It learns each key's metadata in the background (GET /key, and the
// management API when given a management key) into a bounded cache keyed by
// a fingerprint of the key, never the key itself. Every other response
// passes through untouched, streams included.
type Handler struct {
	// Where and how key metadata is read: upstream, management_key,
	// lookup_timeout (a failing request waits for evidence at most this
	// long; working requests never wait).
	UpstreamOptions

	// The most keys remembered at once. Default: 100000.
	CacheSize int `json:"cache_size,omitempty"`

	// How long the metadata of a working key is trusted before it is read
	// again. A key's expiry is trusted for good, since OpenRouter never
	// changes it. Default: 10m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// The most metadata requests sent to the upstream per second, GET /key
	// and management calls together, so that a flood of random keys cannot
	// turn the gateway into a flood of lookups. Default: 20.
	LookupRate float64 `json:"lookup_rate,omitempty"`

	// Whether the gateway answers requests itself when it knows for certain
	// that the key is dead: "on" answers keys known to have expired (and,
	// briefly, keys known to be disabled); "malformed" also answers keys
	// that are not OpenRouter keys at all; "off" sends every request
	// upstream. Default: on.
	EdgeAnswers string `json:"edge_answers,omitempty"`

	// How long past its expiry a key must be before it is answered at the
	// edge, so that a clock a little ahead of OpenRouter's never refuses a
	// key that still works. Default: 30s.
	ExpirySkew caddy.Duration `json:"expiry_skew,omitempty"`

	// How long a key the management API reported disabled is answered at
	// the edge; after that it goes upstream again, since a disabled key can
	// be re-enabled. Default: 30s.
	EdgeDisabledFor caddy.Duration `json:"edge_disabled_for,omitempty"`

	// Warn about keys that expire within this window: successful responses
	// get X-OpenRouter-Key-Expires-At (RFC 3339) and
	// X-OpenRouter-Key-Expires-In (seconds), and a warning with the key's
	// fingerprint and label is logged once per key per day. Off when zero
	// (the default).
	WarnBefore caddy.Duration `json:"warn_before,omitempty"`

	// Share what is learned with other replicas through Caddy's configured
	// storage (the "storage" global option): each key's facts under its
	// fingerprint, never the key. A 401 this replica cannot explain reads
	// the shared entry first. Storage is never on the path of a working
	// request, and its errors never fail one. Entries of expired keys are
	// kept 30 days.
	SharedStorage bool `json:"shared_storage,omitempty"`

	knowledge  *knowledge
	edge       edgePolicy
	warnBefore time.Duration
	poolKey    string
	logger     *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.openrouter_keys",
		New: func() caddy.Module { return new(Handler) },
	}
}

// keyCaches holds the learned keys across config reloads: a reload that
// keeps the upstream, size and management key keeps what was learned.
var keyCaches = caddy.NewUsagePool()

type pooledCache struct{ *keyCache }

func newPooledCache(size int) pooledCache {
	c := pooledCache{newKeyCache(size)}
	liveCaches.Lock()
	liveCaches.set[c.keyCache] = struct{}{}
	liveCaches.Unlock()
	return c
}

// Destruct runs when no config uses the cache any more.
func (c pooledCache) Destruct() error {
	liveCaches.Lock()
	delete(liveCaches.set, c.keyCache)
	liveCaches.Unlock()
	return nil
}

// Provision validates the options, fills in defaults and sets up the cache.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	warnIfKeysReachLogs(ctx, h.logger)
	cfg, err := h.settings()
	if err != nil {
		return err
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	h.poolKey = fmt.Sprintf("%s|%d|%s", cfg.base, cfg.cacheSize, fingerprintOf(cfg.managementKey).short())
	pooled, _, err := keyCaches.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return newPooledCache(cfg.cacheSize), nil
	})
	if err != nil {
		return err
	}
	client := newMetadataClient(cfg.base, cfg.managementKey, cfg.timeout, cfg.lookupRate)
	h.knowledge = newKnowledge(pooled.(pooledCache).keyCache, client, cfg.cacheTTL, h.logger)
	if h.SharedStorage {
		h.knowledge.shared = newSharedStore(ctx.Storage(), h.logger)
	}
	h.edge = cfg.edge
	h.warnBefore = cfg.warnBefore
	return nil
}

// Cleanup stops lookups in flight and lets go of the cache unless the
// next config uses it.
func (h *Handler) Cleanup() error {
	if h.knowledge != nil {
		h.knowledge.stop()
	}
	if h.poolKey != "" {
		_, _ = keyCaches.Delete(h.poolKey)
	}
	return nil
}

// settings are the options checked, resolved and defaulted.
type settings struct {
	upstreamSettings
	cacheSize  int
	cacheTTL   time.Duration
	lookupRate float64
	edge       edgePolicy
	warnBefore time.Duration
}

func (h *Handler) settings() (settings, error) {
	s := settings{
		cacheSize: DefaultCacheSize, cacheTTL: DefaultCacheTTL, lookupRate: DefaultLookupRate,
		edge: edgePolicy{dead: true, skew: DefaultExpirySkew, disabledFor: DefaultEdgeDisabledFor},
	}
	up, err := h.UpstreamOptions.resolve()
	if err != nil {
		return s, err
	}
	s.upstreamSettings = up
	for _, d := range []struct {
		name string
		val  caddy.Duration
		dst  *time.Duration
	}{
		{"cache_ttl", h.CacheTTL, &s.cacheTTL},
		{"expiry_skew", h.ExpirySkew, &s.edge.skew},
		{"edge_disabled_for", h.EdgeDisabledFor, &s.edge.disabledFor},
		{"warn_before", h.WarnBefore, &s.warnBefore},
	} {
		if d.val < 0 {
			return s, fmt.Errorf("%s: must not be negative, got %s", d.name, time.Duration(d.val))
		}
		if d.val > 0 {
			*d.dst = time.Duration(d.val)
		}
	}
	switch {
	case h.CacheSize < 0:
		return s, fmt.Errorf("cache_size: must not be negative, got %d", h.CacheSize)
	case h.CacheSize > 0:
		s.cacheSize = h.CacheSize
	}
	switch {
	case h.LookupRate < 0:
		return s, fmt.Errorf("lookup_rate: must not be negative, got %g", h.LookupRate)
	case h.LookupRate > 0:
		s.lookupRate = h.LookupRate
	}
	switch h.EdgeAnswers {
	case "", EdgeAnswersOn:
	case EdgeAnswersOff:
		s.edge.dead = false
	case EdgeAnswersMalformed:
		s.edge.malformed = true
	default:
		return s, fmt.Errorf("edge_answers: %q is not one of on, off, malformed", h.EdgeAnswers)
	}
	return s, nil
}

var heldWriters = sync.Pool{New: func() any { return new(heldWriter) }}

// ServeHTTP passes the request on and explains a misleading 401 on its way
// back. Requests without a key pass untouched.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	cred := credentialOf(r.Header)
	if cred.key == "" {
		return next.ServeHTTP(w, r)
	}
	var (
		fp        fingerprint
		st        keyState
		expiresAt int64 // announced on success, with warn_before
	)
	wellFormed := wellFormedKey(cred.key)
	if wellFormed {
		now := time.Now()
		fp = fingerprintOf(cred.key)
		st, _ = h.knowledge.observe(cred.key, fp, now)
		if v := h.edgeVerdict(st, now); v.known() {
			return h.answerAtEdge(w, r, v, fp)
		}
		if h.warnBefore > 0 && st.has(flagHasExpiry) && st.expiresAt > now.Unix() && st.expiresAt <= now.Add(h.warnBefore).Unix() {
			expiresAt = st.expiresAt
			h.knowledge.warnExpiring(cred.key, fp, st, now)
		}
	} else if h.edge.malformed {
		return h.answerAtEdge(w, r, verdict{reason: reasonMalformed}, fp)
	}

	hw := heldWriters.Get().(*heldWriter)
	hw.reset(w)
	hw.expiresAt = expiresAt
	defer func() {
		hw.reset(nil)
		heldWriters.Put(hw)
	}()
	err := next.ServeHTTP(hw, r)
	if !hw.holding {
		if st.has(flagDead|flagDisabled|flagNotFound) && hw.status >= 200 && hw.status < 300 {
			// The key works (again): what made it fail is over.
			h.knowledge.sawWorking(fp)
		}
		return err
	}
	if err != nil {
		_ = hw.release()
		return err
	}
	return h.explainUnauthorized(hw, r, cred, fp, wellFormed)
}

// explainUnauthorized rewrites a held 401 when it is OpenRouter's misleading
// message and the gateway knows (or can learn within the lookup timeout)
// why; otherwise it releases the 401 unchanged.
func (h *Handler) explainUnauthorized(hw *heldWriter, r *http.Request, cred credential, fp fingerprint, wellFormed bool) error {
	hdr := hw.Header()
	encodings := hdr.Values("Content-Encoding")
	if len(encodings) > 1 {
		return hw.release()
	}
	body, err := decodeBody(hw.buf.Bytes(), strings.Join(encodings, ""))
	if err != nil {
		return hw.release()
	}
	eb, ok := parseErrorBody(body)
	if !ok {
		return hw.release()
	}
	msg := authMessageOf(eb.message)
	if msg == msgOther {
		return hw.release()
	}
	inference := !isManagementPath(r.URL.Path)
	var st keyState
	if wellFormed {
		st, _ = h.knowledge.cache.get(fp)
	}
	v := classify(msg, cred, st, time.Now(), inference, h.knowledge.ttl)
	if !v.known() && msg == msgUserNotFound && wellFormed {
		st = h.knowledge.explain(r.Context(), cred.key, fp, inference)
		v = classify(msg, cred, st, time.Now(), inference, h.knowledge.ttl)
	}
	if !v.known() {
		return hw.release()
	}
	out := eb.rewrite(v)
	hdr.Del("Content-Encoding")
	hdr.Del("Etag")
	hdr.Set("Content-Length", strconv.Itoa(len(out)))
	hdr.Set("X-OpenRouter-Key-Status", string(v.reason))
	hw.holding, hw.wroteHeader = false, true
	hw.ResponseWriter.WriteHeader(http.StatusUnauthorized)
	_, err = hw.ResponseWriter.Write(out)
	gatewayMetrics.rewrites.WithLabelValues(string(v.reason)).Inc()
	if c := h.logger.Check(zapcore.InfoLevel, "explained misleading 401"); c != nil {
		c.Write(zap.String("reason", string(v.reason)), zap.String("key_fingerprint", fingerprintForLog(fp, wellFormed)), zap.String("path", r.URL.Path))
	}
	return err
}

// fingerprintForLog is the short fingerprint, or "-" for a token that is
// no OpenRouter key (never hashed, so that the flood of garbage tokens
// costs nothing).
func fingerprintForLog(fp fingerprint, wellFormed bool) string {
	if !wellFormed {
		return "-"
	}
	return fp.short()
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
