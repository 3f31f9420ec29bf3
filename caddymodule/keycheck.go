package caddymodule

// keycheck.go owns the key check's HTTP side: the openrouter_keycheck
// handler, what a request may carry (never a key in its URL), the per-client
// limit, and errors that tell a visitor what went wrong, never where.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

func init() {
	caddy.RegisterModule(KeyCheck{})
}

// Defaults of the key check's rate limit, per client.
const (
	DefaultCheckRequests = 30
	DefaultCheckWindow   = time.Minute
	maxCheckBody         = 16 << 10 // a key is 73 bytes; a form or JSON with it, far less than this
)

// KeyCheck serves a page where a person pastes an OpenRouter key and sees
// what is wrong with it, and the same check as a JSON API: GET answers the
// page, POST ({"key":"..."} as JSON, or a form field "key") the report.
// The key is never logged, stored or echoed beyond its masked label; a key
// in the query string is refused, and that request kept out of the access
// log. When the same Caddy runs openrouter_keys, the check reads what the
// gateway learned about the key, and adds nothing to it.
type KeyCheck struct {
	// Where and how the key is checked: upstream, management_key (with it,
	// the check tells disabled and deleted keys apart, and shows the
	// account's credits for keys of that account), lookup_timeout (the
	// whole check answers within it).
	UpstreamOptions

	// RateLimit bounds checks per client, against key guessing and against
	// using this page to send OpenRouter traffic: a token bucket per client
	// address (IPv6: per /64) as Caddy determines it, which honours the
	// server's trusted_proxies and otherwise ignores X-Forwarded-For.
	// Default: 30 per 1m.
	RateLimit *CheckRateLimit `json:"rate_limit,omitempty"`

	checker *checker
	release func()
	limiter *clientLimiter
	timeout time.Duration
	logger  *zap.Logger
}

// CheckRateLimit is a number of requests per window: a client may send
// Requests at once, and one more every Window/Requests after that.
type CheckRateLimit struct {
	// Requests allowed per window and client.
	Requests int `json:"requests,omitempty"`
	// Window is the length of the window. Default: 1m.
	Window caddy.Duration `json:"window,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (KeyCheck) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.openrouter_keycheck",
		New: func() caddy.Module { return new(KeyCheck) },
	}
}

// UnmarshalJSON decodes the key check's config, naming the option in every
// error.
func (kc *KeyCheck) UnmarshalJSON(b []byte) error {
	return decodeOptions(b, kc)
}

// Provision sets up the check with its options, defaults for zero values;
// Validate reports invalid ones.
func (kc *KeyCheck) Provision(ctx caddy.Context) error {
	kc.logger = ctx.Logger()
	up := kc.UpstreamOptions.settings()
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	acct, release, err := accountOf(up)
	if err != nil {
		return err
	}
	// The check reads the upstream's model catalogue (catalogue.go), as
	// its gateways do.
	cat, releaseCatalogue, err := catalogueOf(up.base, kc.logger)
	if err != nil {
		release()
		return err
	}
	kc.release = func() { releaseCatalogue(); release() }
	requests, window := DefaultCheckRequests, DefaultCheckWindow
	if rl := kc.RateLimit; rl != nil {
		requests = positiveOr(rl.Requests, requests)
		window = positiveOr(time.Duration(rl.Window), window)
	}
	kc.timeout = up.timeout
	kc.checker = &checker{acct: acct, life: ctx, catalogue: cat}
	kc.limiter = newClientLimiter(requests, window, maxTrackedClients)
	return nil
}

// Validate reports the first invalid option value, naming the option.
func (kc *KeyCheck) Validate() error {
	if err := kc.UpstreamOptions.validate(); err != nil {
		return err
	}
	if rl := kc.RateLimit; rl != nil && (rl.Requests < 0 || rl.Window < 0) {
		return fmt.Errorf("rate_limit: must not be negative")
	}
	return nil
}

// Cleanup lets go of the account unless another handler uses it.
func (kc *KeyCheck) Cleanup() error {
	if kc.release != nil {
		kc.release()
	}
	return nil
}

// ServeHTTP answers the page and the check; it never calls next.
func (kc *KeyCheck) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if urlCarriesSecret(r.URL) || originalURLCarriesSecret(r) {
		// A URL ends up in access logs, proxies' logs and browser
		// histories: refuse it, and keep this request out of the access
		// log.
		caddyhttp.SetVar(r.Context(), caddyhttp.LogSkipVar, true)
		return kc.fail(w, r, http.StatusBadRequest, headlineNotChecked,
			"Never put a key in a URL: it ends up in logs and browser history. Paste it into the field, or post it in the request body.")
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return kc.page(w, http.StatusOK, pageData{})
	case http.MethodPost:
	default:
		h.Set("Allow", "GET, HEAD, POST")
		return kc.fail(w, r, http.StatusMethodNotAllowed, headlineNotChecked, "Use GET for the page and POST to check a key.")
	}
	if err := crossOrigin.Check(r); err != nil {
		// Another site's page posting here would run checks from its
		// visitors' browsers and addresses.
		return kc.fail(w, r, http.StatusForbidden, headlineNotChecked,
			"Keys are checked from this page or from programs, not from other sites' pages.")
	}
	if ok, wait := kc.limiter.allow(clientNetwork(r), kc.checker.acct.clock.now()); !ok {
		secs := retryAfterSeconds(wait)
		h.Set("Retry-After", strconv.Itoa(secs))
		noRetryAfterLongWait(h, kc.checker.acct.clock.now())
		return kc.fail(w, r, http.StatusTooManyRequests, "Too many checks",
			fmt.Sprintf("Too many checks from this address: try again in %s.", waitText(secs)))
	}
	key, status, msg := readKey(w, r)
	if status != 0 {
		headline := headlineNotChecked
		if msg == msgNoKeyForm {
			headline = headlineNoKey
		}
		return kc.fail(w, r, status, headline, msg)
	}
	ctx, cancel := context.WithTimeout(r.Context(), kc.timeout)
	defer cancel()
	now := kc.checker.acct.clock.now()
	rep, err := kc.checker.check(ctx, key, now)
	if err != nil {
		// The visitor learns what went wrong; where (addresses, resolvers,
		// Go's error strings) goes to the debug log only.
		kc.logger.Debug("key check could not ask OpenRouter", zap.Error(err))
		status := http.StatusBadGateway
		if errors.Is(ctx.Err(), context.DeadlineExceeded) || failureOf(err) == failTimeout {
			status = http.StatusGatewayTimeout
		}
		return kc.fail(w, r, status, headlineNotChecked, "The key could not be checked: "+publicError(err)+".")
	}
	if wantsPage(r) {
		return kc.page(w, http.StatusOK, pageData{Result: viewOf(rep, now)})
	}
	return writeJSON(w, http.StatusOK, rep)
}

// waitText is a wait of secs seconds in words.
func waitText(secs int) string {
	if secs < 120 {
		return plural(secs, "second")
	}
	return plural((secs+59)/60, "minute")
}

// crossOrigin refuses posts that browsers mark as coming from another
// site (Sec-Fetch-Site, or Origin for older browsers); programs send
// neither, and are served.
var crossOrigin = http.NewCrossOriginProtection()

// urlCarriesSecret reports whether the path or the query of u holds
// anything that looks like a credential, under any parameter name, as a
// name, with any separator (& and ;, which url.ParseQuery drops, and =),
// percent-encoded once or more. Only the raw forms are read: what Go
// parses out of a query is not what a log writes down.
func urlCarriesSecret(u *url.URL) bool {
	isSep := func(r rune) bool { return r == '&' || r == ';' || r == '=' || r == '/' }
	for _, raw := range []string{u.RawQuery, u.EscapedPath()} {
		for _, piece := range strings.FieldsFunc(raw, isSep) {
			// Each decoding of the piece, until it stops changing: a
			// double-encoded key is still a key to whoever reads the log.
			for range 4 {
				if textCarriesSecret(piece) {
					return true
				}
				decoded, err := url.QueryUnescape(piece)
				if err != nil || decoded == piece {
					break
				}
				piece = decoded
			}
		}
	}
	return false
}

// originalURLCarriesSecret checks the URL as the client sent it, which is
// what the access log writes down, when a rewrite before this handler
// changed it.
func originalURLCarriesSecret(r *http.Request) bool {
	orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	return ok && orig.URL != nil && orig.URL != r.URL && urlCarriesSecret(orig.URL)
}

// textCarriesSecret reports whether s holds a run of key characters that
// the module's credential table takes for a credential: an OpenRouter key
// of any version or shape, a JWT, another provider's key.
func textCarriesSecret(s string) bool {
	notKeyChar := func(r rune) bool { return r >= utf8.RuneSelf || (!base64URL[r] && r != '.') || r == '=' }
	for _, run := range strings.FieldsFunc(s, notKeyChar) {
		switch classifyToken(run).kind {
		case credKey, credOtherVersion, credJWT, credForeign:
			return true
		}
		// A malformed or upper-cased OpenRouter key is still one.
		if lower := strings.ToLower(run); strings.HasPrefix(lower, openrouter.CredentialPrefix) || strings.Contains(lower, openrouter.KeyPrefix) {
			return true
		}
	}
	return false
}

// readKey takes the key from a JSON or form body; on failure it returns the
// status and message to answer with.
func readKey(w http.ResponseWriter, r *http.Request) (string, int, string) {
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mediaType != "application/json" && mediaType != "application/x-www-form-urlencoded" {
		return "", http.StatusUnsupportedMediaType, `Send the key as JSON ({"key":"..."}, Content-Type application/json) or as a form field "key".`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCheckBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return "", http.StatusRequestEntityTooLarge, fmt.Sprintf("The request body is over %d bytes; a key check needs far less.", maxCheckBody)
	}
	if err != nil {
		return "", http.StatusBadRequest, "The request body could not be read."
	}
	if mediaType == "application/json" {
		var in struct {
			Key *string `json:"key"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return "", http.StatusBadRequest, `The body is not JSON of the form {"key":"..."}.`
		}
		if in.Key == nil || *in.Key == "" {
			return "", http.StatusBadRequest, `No key: send {"key":"sk-or-v1-..."}.`
		}
		return *in.Key, 0, ""
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return "", http.StatusBadRequest, "The form could not be read."
	}
	if key := form.Get("key"); key != "" {
		return key, 0, ""
	}
	return "", http.StatusBadRequest, msgNoKeyForm
}

// wantsPage is true for a browser: a form post or a page request that
// accepts HTML. API clients (JSON posts, Accept without text/html) get
// JSON.
func wantsPage(r *http.Request) bool {
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		return false
	}
	if r.Method != http.MethodPost {
		return true
	}
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mediaType == "application/x-www-form-urlencoded"
}

func (kc *KeyCheck) page(w http.ResponseWriter, status int, data pageData) error {
	data.Style, data.Script = pageStyle, pageScript
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, data); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// fail answers an error as JSON, or as the page for a browser.
func (kc *KeyCheck) fail(w http.ResponseWriter, r *http.Request, status int, headline, msg string) error {
	if wantsPage(r) {
		return kc.page(w, status, pageData{Error: &pageError{Headline: headline, Message: msg}})
	}
	var body struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message = status, msg
	return writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, err = w.Write(b)
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*KeyCheck)(nil)
	_ caddy.CleanerUpper          = (*KeyCheck)(nil)
	_ caddyhttp.MiddlewareHandler = (*KeyCheck)(nil)
	_ caddy.Validator             = (*KeyCheck)(nil)
)
