package caddymodule

// handler.go owns the openrouter_keys handler: its options and their
// defaults, Provision, Validate and Cleanup, and ServeHTTP: the edge
// answer, passing the request on, and explaining a held failure.

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the handler's options.
const (
	DefaultCacheSize       = 100_000
	DefaultCacheTTL        = 10 * time.Minute
	DefaultLookupRate      = 20.0
	DefaultExpirySkew      = 30 * time.Second
	DefaultEdgeDisabledFor = 30 * time.Second
	DefaultWatchInterval   = 10 * time.Minute
	DefaultWatchMaxKeys    = 1000
	// DefaultLimitLookupTimeout is the longest a 402, 403 or 429 waits
	// for evidence: well under a second, since the failure is the answer
	// the client waits for.
	DefaultLimitLookupTimeout = 250 * time.Millisecond
	DefaultEdgeCappedFor      = 30 * time.Second
)

// Values of ExplainLimits.
const (
	ExplainLimitsOn  = "on"
	ExplainLimitsOff = "off"
)

// Values of EdgeAnswers.
const (
	EdgeAnswersOn        = "on"
	EdgeAnswersOff       = "off"
	EdgeAnswersMalformed = "malformed"
)

// Handler sits in front of reverse_proxy to OpenRouter and turns its
// misleading failures into accurate ones: a 401 "User not found." into key
// expired, disabled, malformed, not found, a management key used for
// inference, an expired access token, another provider's key, a provider
// refusing its own credentials, or a key that works and only needs a
// retry; with explain_limits (the default), a key or account 402, 403 or
// 429 into which limit was hit (the key's cap, the account's balance, a
// workspace budget, the free-model allowance, a provider), its figures and
// when it resets. Keys known dead, and keys whose cap is known spent, are
// answered at the edge (edge_answers). It learns each key's metadata in
// the background (GET /key, and the management API when given a
// management key) into a bounded cache keyed by a fingerprint of the key,
// never the key itself. Every other response passes through untouched,
// streams included.
//
// Zero values mean the default, except for warn_before and watch_keys,
// where zero (or absence) means off.
type Handler struct {
	// Where and how key metadata is read: upstream, management_key,
	// lookup_timeout, management_rate.
	UpstreamOptions

	// The most keys remembered at once. Default: 100000.
	CacheSize int `json:"cache_size,omitempty"`

	// How long facts that can change (a key works, is disabled, is not in
	// the account) are trusted, each from when it was learned. A key's
	// expiry is trusted for good, since OpenRouter never changes it.
	// Default: 10m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// The most GET /key lookups sent to the upstream per second, so that a
	// flood of random keys cannot turn the gateway into a flood of
	// lookups. A failing request waits for a lookup only if one can start
	// at once; otherwise its 401 goes out unchanged. Default: 20.
	LookupRate float64 `json:"lookup_rate,omitempty"`

	// Whether the gateway answers requests itself when it knows for certain
	// that they would fail: "on" answers keys known to have expired (and,
	// briefly, keys a record matched by hash reported disabled);
	// "malformed" also answers tokens that are certainly no OpenRouter
	// credential (malformed keys, other providers' keys, and on inference
	// requests JWTs of issuers other than OpenRouter's); "off" sends
	// every request upstream. Default: on.
	EdgeAnswers string `json:"edge_answers,omitempty"`

	// How long past its expiry a key must be before it is answered at the
	// edge, so that a clock a little ahead of OpenRouter's never refuses a
	// key that still works. Default: 30s.
	ExpirySkew caddy.Duration `json:"expiry_skew,omitempty"`

	// How long a key the management API reported disabled is answered at
	// the edge; after that it goes upstream again, since a disabled key can
	// be re-enabled. Counted in whole seconds from when it was seen
	// disabled, so it may end up to a second early. Default: 30s.
	EdgeDisabledFor caddy.Duration `json:"edge_disabled_for,omitempty"`

	// Warn about keys that expire within this window: successful responses
	// get X-OpenRouter-Key-Expires-At (RFC 3339) and
	// X-OpenRouter-Key-Expires-In (seconds), and a warning with the key's
	// fingerprint and label is logged once per key per day. Off when zero.
	WarnBefore caddy.Duration `json:"warn_before,omitempty"`

	// Share what is learned with other replicas through Caddy's configured
	// storage (the "storage" global option): each key's facts under its
	// fingerprint, never the key. A 401 this replica cannot explain reads
	// the shared entry first. Storage is never on the path of a working
	// request, never waited on past the request's own deadline, and its
	// errors never fail one.
	SharedStorage bool `json:"shared_storage,omitempty"`

	// Read every key of the account (all workspaces) at this interval and
	// export each key's expiry, limit, disabled state and last use on
	// Caddy's /metrics, for alerting. Needs management_key. Off when zero;
	// the Caddyfile's bare `watch_keys` means 10m.
	WatchKeys caddy.Duration `json:"watch_keys,omitempty"`

	// The most keys watch_keys exports one by one (up to six series
	// each, about 0.8 KB of /metrics a key): every key of an account that
	// has no more; in a larger account the most urgent of the keys that
	// matter (dead keys still sent, keys in use about to expire or run out
	// of their limit, other keys in use, keys expiring within 14 days),
	// the rest only in account-wide counts (account_keys*), which the
	// alerts read too. Default: 1000.
	WatchMaxKeys int `json:"watch_max_keys,omitempty"`

	// Whether 402, 403 and 429 key and account failures are explained:
	// "on" says which limit was hit (the key's cap, the account's
	// balance, a workspace budget, the free-model allowance, a provider),
	// its figures, when it resets and the one fix, with X-Should-Retry
	// and Retry-After; "off" passes them byte for byte, not even held.
	// "on" also explains a provider's error ("Provider returned error",
	// at any status it comes with) and OpenRouter's admission-control
	// 429. Default: on.
	ExplainLimits string `json:"explain_limits,omitempty"`

	// The longest a 402, 403 or 429 waits for evidence (the key's own
	// GET /key, the account's balance, the workspace's budgets); never
	// longer than lookup_timeout. What arrives later serves the next
	// failure. Default: 250ms.
	LimitLookupTimeout caddy.Duration `json:"limit_lookup_timeout,omitempty"`

	// How long a key whose own cap is known spent (its GET /key shows
	// nothing left, or OpenRouter answered its key-limit 403) is answered
	// at the edge with the same 403, never past the cap's reset: a limit
	// can be raised at any time. Follows edge_answers: never with "off".
	// Counted in whole seconds from when the cap was seen spent, so it may
	// end up to a second early. Default: 30s.
	EdgeCappedFor caddy.Duration `json:"edge_capped_for,omitempty"`

	// Send a non-streaming 200 whose whole body is an error
	// ({"id":"gen-...","error":{"code":503,...}}) with the status its code
	// states (400 to 599), the body unchanged, so that clients raise it
	// (and the OpenAI SDKs retry it as they retry that status). It holds
	// JSON 200s of POST requests until their first bytes show a success
	// (up to 512 bytes; OpenRouter's whitespace keep-alives before a body
	// are held with it), and a compressed one whole, up to 2 KiB.
	// Streams are never held. Default: off.
	StatusFromInbandError bool `json:"status_from_inband_error,omitempty"`
	// Warn about models that retire within this window: a successful
	// request on a model whose expiration_date (OpenRouter's model list,
	// read hourly in the background) is that close gets
	// X-OpenRouter-Model-Expires-At with the date, the model is logged
	// once a day and counted on the retiring_model_* metrics, and the key
	// check shows it for the keys that used it. A duration such as 14d,
	// or "off". Default: 14d.
	WarnModelRetirement string `json:"warn_model_retirement,omitempty"`

	explainLimits bool
	knowledge     *knowledge
	acct          *account
	release       func()
	unlink        func()
	cachePoolKey  string
	edge          edgeRule
	warnBefore    time.Duration
	watch         *keyWatch
	logger        *zap.Logger
	// catalogue is the upstream's model catalogue (catalogue.go), shared
	// with its other handlers; releaseCatalogue lets go of it.
	catalogue        *catalogue
	releaseCatalogue func()
	retirement       *modelRetirement // nil when warn_model_retirement is off
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.openrouter_keys",
		New: func() caddy.Module { return new(Handler) },
	}
}

// UnmarshalJSON decodes the handler's config, naming the option in every
// error.
func (h *Handler) UnmarshalJSON(b []byte) error {
	return decodeOptions(b, h)
}

// Provision sets up the handler with its options, defaults for zero
// values; Validate, which Caddy runs next, reports invalid ones.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	up := h.UpstreamOptions.settings()
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	acct, release, err := accountOf(up)
	if err != nil {
		return err
	}
	h.acct, h.release = acct, release
	h.catalogue, h.releaseCatalogue, err = catalogueOf(up.base, h.logger)
	if err != nil {
		return err
	}

	size := positiveOr(h.CacheSize, DefaultCacheSize)
	lookupRate := positiveOr(h.LookupRate, DefaultLookupRate)
	// What was learned survives reloads that keep the upstream, the
	// management key and the size; a new lookup_rate applies to it.
	h.cachePoolKey = fmt.Sprintf("%s|%s|%d", up.base, fingerprintOf(up.managementKey).short(), size)
	pooled, _, err := gatewayCaches.LoadOrNew(h.cachePoolKey, func() (caddy.Destructor, error) {
		return gatewayCache{newKeyCache(size), rate.NewLimiter(rate.Limit(lookupRate), max(1, int(lookupRate))), newUsageLog()}, nil
	})
	if err != nil {
		return err
	}
	gc := pooled.(gatewayCache)
	gc.lookups.SetLimit(rate.Limit(lookupRate))
	gc.lookups.SetBurst(max(1, int(lookupRate)))
	opts := knowledgeOptions{
		fresh:        freshness{ttl: positiveOr(time.Duration(h.CacheTTL), DefaultCacheTTL)},
		timeout:      up.timeout,
		limitTimeout: min(positiveOr(time.Duration(h.LimitLookupTimeout), DefaultLimitLookupTimeout), up.timeout),
		logger:       h.logger,
	}
	if h.SharedStorage {
		opts.shared = newSharedStore(ctx, ctx.Storage(), &acct.clock, up.managementKey, h.logger)
	}
	watching := h.WatchKeys > 0 && up.managementKey != ""
	if watching {
		opts.usage = gc.usage
	}
	h.knowledge = newKnowledge(ctx, acct, gc, opts)
	h.explainLimits = h.ExplainLimits != ExplainLimitsOff
	if opts.shared != nil {
		go h.knowledge.loadSchemeProof()
	}
	h.catalogue.share(opts.shared)
	h.edge = edgeRule{
		dead:        h.EdgeAnswers != EdgeAnswersOff,
		malformed:   h.EdgeAnswers == EdgeAnswersMalformed,
		skew:        positiveOr(time.Duration(h.ExpirySkew), DefaultExpirySkew),
		disabledFor: positiveOr(time.Duration(h.EdgeDisabledFor), DefaultEdgeDisabledFor),
	}
	if h.explainLimits {
		h.edge.cappedFor = positiveOr(time.Duration(h.EdgeCappedFor), DefaultEdgeCappedFor)
	}
	h.warnBefore = max(time.Duration(h.WarnBefore), 0)
	if window, err := parseWarnModelRetirement(h.WarnModelRetirement); err == nil && window > 0 {
		h.retirement = newModelRetirement(h.catalogue, window, h.logger)
	}
	if watching {
		h.watch = startKeyWatch(ctx, h.knowledge, time.Duration(h.WatchKeys), positiveOr(h.WatchMaxKeys, DefaultWatchMaxKeys), h.logger)
		h.watch.register(ctx.GetMetricsRegistry())
	}
	// The key check of the account reads what this gateway learns and
	// when its watch saw keys used; proofs about the account reach the
	// other replicas through its shared store.
	h.unlink = acct.link(&gatewayLink{cache: gc.keyCache, fresh: opts.fresh, shared: opts.shared, watch: h.watch, retirement: h.retirement})
	up.logSettings(h.logger)
	warnIfKeysReachLogs(ctx, h.logger)
	return nil
}

// positiveOr is v, or def when v is not positive.
func positiveOr[T int | float64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// Validate reports the first invalid option value, naming the option.
func (h *Handler) Validate() error {
	if err := h.UpstreamOptions.validate(); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		val  caddy.Duration
	}{
		{"cache_ttl", h.CacheTTL},
		{"expiry_skew", h.ExpirySkew},
		{"edge_disabled_for", h.EdgeDisabledFor},
		{"warn_before", h.WarnBefore},
		{"watch_keys", h.WatchKeys},
		{"limit_lookup_timeout", h.LimitLookupTimeout},
		{"edge_capped_for", h.EdgeCappedFor},
	} {
		if d.val < 0 {
			return fmt.Errorf("%s: must not be negative, got %s", d.name, time.Duration(d.val))
		}
	}
	if _, err := parseWarnModelRetirement(h.WarnModelRetirement); err != nil {
		return err
	}
	if h.CacheSize < 0 {
		return fmt.Errorf("cache_size: must not be negative, got %d", h.CacheSize)
	}
	if h.WatchMaxKeys < 0 {
		return fmt.Errorf("watch_max_keys: must not be negative, got %d", h.WatchMaxKeys)
	}
	if h.LookupRate < 0 {
		return fmt.Errorf("lookup_rate: must not be negative, got %g", h.LookupRate)
	}
	switch h.EdgeAnswers {
	case "", EdgeAnswersOn, EdgeAnswersOff, EdgeAnswersMalformed:
	default:
		return fmt.Errorf("edge_answers: %q is not one of on, off, malformed", h.EdgeAnswers)
	}
	switch h.ExplainLimits {
	case "", ExplainLimitsOn, ExplainLimitsOff:
	default:
		return fmt.Errorf("explain_limits: %q is not one of on, off", h.ExplainLimits)
	}
	if h.WatchKeys > 0 {
		if mk, _ := h.UpstreamOptions.managementKey(); mk == "" {
			return errors.New("watch_keys: needs management_key (the account's keys can only be listed with one)")
		}
		if time.Duration(h.WatchKeys) < time.Second {
			return fmt.Errorf("watch_keys: an interval under 1s would list the account continuously, got %s", time.Duration(h.WatchKeys))
		}
	}
	return nil
}

// Cleanup lets go of what the next config does not use. Lookups in flight
// end with the config's context.
func (h *Handler) Cleanup() error {
	if h.unlink != nil {
		h.unlink()
	}
	if h.cachePoolKey != "" {
		_, _ = gatewayCaches.Delete(h.cachePoolKey)
	}
	if h.releaseCatalogue != nil {
		h.releaseCatalogue()
	}
	if h.release != nil {
		h.release()
	}
	return nil
}

// Destruct lets go of the pooled cache.
func (g gatewayCache) Destruct() error { return g.keyCache.Destruct() }

var heldWriters = sync.Pool{New: func() any { return new(heldWriter) }}

// ServeHTTP answers a key known dead or capped at the edge, passes every
// other request on, and explains a held 401 (with explain_limits, a 402,
// 403 or 429 too) on its way back. Requests without a credential pass
// untouched.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	c, fp := requestCredential(r)
	start := h.acct.clock.now()
	var st keyState
	switch {
	case c.kind == credNone:
	case c.isKey():
		h.knowledge.observe(c, &fp, start, &st)
		if !h.edge.mayAnswer(&st) {
			break
		}
		if v := h.edge.verdict(st, start); v.known() && (v.limit == nil || spendsCredits(r)) {
			return h.answerAtEdge(w, r, v, fp)
		}
	default:
		if v := h.edge.tokenVerdict(c, start); v.known() {
			return h.answerAtEdge(w, r, v, fp)
		}
	}
	return h.passOn(w, r, next, &c, &fp, &st, start)
}

// passOn runs the rest of the chain with the writer that holds the
// failures it may explain. c, fp and st are ServeHTTP's, read only.
func (h *Handler) passOn(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, c *credential, fp *fingerprint, st *keyState, start time.Time) error {
	hw := heldWriters.Get().(*heldWriter) // reset when it was put back
	hw.ResponseWriter = w
	hw.holdLimits = h.explainLimits
	hw.inband.arm(r, h)
	hw.inference = isInferencePost(r)
	if hw.inference {
		// The body's start is kept only for what reads it: a model
		// failure's analysis (explain_limits) and the retirement warning.
		retiring := h.retirement.watches(start)
		if h.explainLimits || retiring {
			hw.body = peekRequestBody(r, &hw.peek)
		}
		if hw.body != nil && retiring {
			hw.retire, hw.fp, hw.cred, hw.start = h.retirement, *fp, *c, start
		}
	}
	if c.isKey() && h.warnBefore > 0 && st.expiresWithin(start, h.warnBefore) {
		hw.expiresAt, hw.clock = st.expiry(), &h.acct.clock
		h.knowledge.warnExpiring(*c, *fp, *st, start)
	}
	defer func() {
		if p := recover(); p != nil {
			// reverse_proxy aborts a response whose body failed mid-read by
			// panicking (http.ErrAbortHandler) after flushing what it had:
			// a held 401 goes out as far as it came, as without this module.
			hw.abort()
			panic(p)
		}
		hw.body.release()
		hw.reset()
		heldWriters.Put(hw)
	}()
	err := next.ServeHTTP(hw, r)
	if !hw.holding {
		hw.inband.end()
		if c.isKey() && st.failedBefore() && hw.status >= 200 && hw.status < 300 {
			// The key works (again): what made it fail is over.
			h.knowledge.sawWorking(*fp)
		}
		return err
	}
	if err != nil {
		// The chain's error is what Caddy must see; a write error of the
		// release would only repeat it.
		_ = hw.release()
		return err
	}
	if hw.heldStatus == http.StatusOK {
		return h.settleInband(hw)
	}
	if hw.heldStatus != http.StatusUnauthorized {
		return h.explainLimit(hw, r, *c, *fp, start)
	}
	return h.explain(hw, r, *c, *fp, start)
}

// explain rewrites a held 401 when the gateway knows (or can learn within
// the lookup timeout) what it means; otherwise it releases the 401
// unchanged and counts why.
func (h *Handler) explain(hw *heldWriter, r *http.Request, c credential, fp fingerprint, start time.Time) error {
	eb, _, class := h.parseHeld(hw)
	if eb == nil {
		return h.leave(hw, class, "")
	}
	f := refusal{status: http.StatusUnauthorized, msg: openrouter.AuthMessageOf(eb.Message()), body: eb, cred: c, now: start}
	family := openrouter.FamilyOf(r.URL.Path)
	if f.msg != openrouter.AuthOther && eb.Message() != "" {
		h.acct.envelopes.learn(family, eb.Envelope())
	}
	v, needsEvidence, class := decide(f)
	if needsEvidence {
		v, class = h.knowledge.explainKey(r.Context(), c, fp, !openrouter.IsManagementPath(r.URL.Path), start)
	}
	if class == classUnrecognizedMessage {
		return h.leave(hw, class, eb.Message())
	}
	if !v.known() {
		return h.leave(hw, class, "")
	}
	out, ok := rewrite(eb, v)
	if !ok {
		return h.leave(hw, classUneditable, "")
	}
	err := hw.sendRewritten(out, string(v.reason))
	gatewayMetrics.rewrites.WithLabelValues(string(v.reason)).Inc()
	if ce := h.logger.Check(zapcore.InfoLevel, "explained misleading 401"); ce != nil {
		ce.Write(zap.String("reason", string(v.reason)), zap.String("key_fingerprint", fingerprintForLog(c, fp)), zap.String("path", r.URL.Path))
	}
	return err
}

// parseHeld decodes and parses the held body (returning the decoded bytes
// too), or says why it cannot.
func (h *Handler) parseHeld(hw *heldWriter) (*errbody.Body, []byte, string) {
	encodings := hw.Header().Values("Content-Encoding")
	if len(encodings) > 1 {
		return nil, nil, classEncoding
	}
	body, err := errbody.Decode(hw.buf.Bytes(), strings.Join(encodings, ""))
	if err != nil {
		return nil, nil, classEncoding
	}
	eb, ok := errbody.Parse(body)
	if !ok {
		return nil, nil, classNotJSON
	}
	return eb, body, ""
}

// leave releases the held 401 unchanged and counts it as unexplained.
func (h *Handler) leave(hw *heldWriter, class, message string) error {
	countUnexplained(h.logger, class, message)
	return hw.release()
}

// fingerprintForLog is the short fingerprint of an OpenRouter key, or "-"
// for any other credential (never hashed: a flood of garbage tokens costs
// nothing).
func fingerprintForLog(c credential, fp fingerprint) string {
	if !c.isKey() {
		return "-"
	}
	return fp.short()
}

// answerAtEdge answers a request without calling the upstream, with the
// body the rewrite would have produced, in the envelope the upstream uses
// on that endpoint: a dead key's 401, or a capped key's 403
// (explainlimits.go).
func (h *Handler) answerAtEdge(w http.ResponseWriter, r *http.Request, v verdict, fp fingerprint) error {
	family := openrouter.FamilyOf(r.URL.Path)
	status, out := http.StatusUnauthorized, []byte(nil)
	if v.limit != nil {
		status, out = http.StatusForbidden, h.limitEdgeBody(family, v, fp)
	} else {
		out = edgeBody(h.acct.envelopes.forFamily(family), v)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(out)))
	hdr.Set("X-OpenRouter-Key-Status", string(v.reason))
	hdr.Set("X-OpenRouter-Keys-Answer", "edge")
	if v.limit != nil {
		setLimitHeaders(hdr, v)
	}
	w.WriteHeader(status)
	_, err := w.Write(out)
	gatewayMetrics.edgeAnswers.WithLabelValues(string(v.reason)).Inc()
	if ce := h.logger.Check(zapcore.DebugLevel, "answered at the edge"); ce != nil {
		// Only keys have a fingerprint; a malformed or foreign token has none.
		short := "-"
		if v.entry().edge != edgeToken {
			short = fp.short()
		}
		ce.Write(zap.String("reason", string(v.reason)), zap.String("key_fingerprint", short))
	}
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
