package caddymodule

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
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(KeyCheck{})
}

// Defaults of the key check's rate limit: per client IP.
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

	// RateLimit bounds checks per client IP, against key guessing through
	// this page. Default: 30 per 1m.
	RateLimit *CheckRateLimit `json:"rate_limit,omitempty"`

	checker *checker
	release func()
	limiter *windowLimiter
	timeout time.Duration
	logger  *zap.Logger
}

// CheckRateLimit is a number of requests per window.
type CheckRateLimit struct {
	// Requests allowed per window and client IP.
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
	kc.release = release
	requests, window := DefaultCheckRequests, DefaultCheckWindow
	if rl := kc.RateLimit; rl != nil {
		requests = positiveOr(rl.Requests, requests)
		window = positiveOr(time.Duration(rl.Window), window)
	}
	kc.timeout = up.timeout
	kc.checker = &checker{acct: acct, life: ctx}
	kc.limiter = newWindowLimiter(requests, window)
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
	if r.URL.Query().Has("key") {
		// A key in a URL ends up in logs and histories: refuse it, and keep
		// this request out of the access log.
		caddyhttp.SetVar(r.Context(), caddyhttp.LogSkipVar, true)
		return kc.fail(w, r, http.StatusBadRequest, "Do not put a key in the URL: it ends up in logs and browser history. Post it in the request body.")
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return kc.page(w, pageData{})
	case http.MethodPost:
	default:
		h.Set("Allow", "GET, HEAD, POST")
		return kc.fail(w, r, http.StatusMethodNotAllowed, "Use GET for the page and POST to check a key.")
	}
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && !kc.limiter.allow(ip, time.Now()) {
		h.Set("Retry-After", strconv.Itoa(int(kc.limiter.window/time.Second)))
		return kc.fail(w, r, http.StatusTooManyRequests, "Too many checks from this address: try again later.")
	}
	key, status, msg := readKey(w, r)
	if status != 0 {
		return kc.fail(w, r, status, msg)
	}
	ctx, cancel := context.WithTimeout(r.Context(), kc.timeout)
	defer cancel()
	rep, err := kc.checker.check(ctx, key, time.Now())
	if err != nil {
		status := http.StatusBadGateway
		if errors.Is(ctx.Err(), context.DeadlineExceeded) || failureOf(err) == failTimeout {
			status = http.StatusGatewayTimeout
		}
		return kc.fail(w, r, status, "The key could not be checked: "+publicError(err)+".")
	}
	if wantsPage(r) {
		return kc.page(w, pageData{Report: rep})
	}
	return writeJSON(w, http.StatusOK, rep)
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
	var key string
	if mediaType == "application/json" {
		var in struct {
			Key *string `json:"key"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return "", http.StatusBadRequest, `The body is not JSON of the form {"key":"..."}.`
		}
		if in.Key != nil {
			key = *in.Key
		}
	} else {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return "", http.StatusBadRequest, "The form could not be read."
		}
		key = form.Get("key")
	}
	if key == "" {
		return "", http.StatusBadRequest, `No key: send {"key":"sk-or-v1-..."}.`
	}
	return key, 0, ""
}

// wantsPage is true for a browser's form post without JavaScript.
func wantsPage(r *http.Request) bool {
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mediaType == "application/x-www-form-urlencoded" && strings.Contains(r.Header.Get("Accept"), "text/html")
}

func (kc *KeyCheck) page(w http.ResponseWriter, data pageData) error {
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
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(buf.Bytes())
	return err
}

// fail answers an error as JSON, or as the page for a browser's form post.
func (kc *KeyCheck) fail(w http.ResponseWriter, r *http.Request, status int, msg string) error {
	if wantsPage(r) && status != http.StatusTooManyRequests {
		return kc.page(w, pageData{Error: msg})
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

// windowLimiter allows a number of requests per fixed window and client.
type windowLimiter struct {
	mu       sync.Mutex
	requests int
	window   time.Duration
	clients  map[string]*clientWindow
}

type clientWindow struct {
	start time.Time
	count int
}

func newWindowLimiter(requests int, window time.Duration) *windowLimiter {
	return &windowLimiter{requests: requests, window: window, clients: make(map[string]*clientWindow)}
}

// maxTrackedClients bounds the limiter's memory; past it, finished windows
// are dropped.
const maxTrackedClients = 100_000

func (l *windowLimiter) allow(client string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.clients[client]
	if c == nil || now.Sub(c.start) >= l.window {
		if len(l.clients) >= maxTrackedClients {
			for k, old := range l.clients {
				if now.Sub(old.start) >= l.window {
					delete(l.clients, k)
				}
			}
		}
		if len(l.clients) >= maxTrackedClients {
			return false // every tracked client is inside its window: a flood
		}
		c = &clientWindow{start: now}
		l.clients[client] = c
	}
	c.count++
	return c.count <= l.requests
}

// Interface guards
var (
	_ caddy.Provisioner           = (*KeyCheck)(nil)
	_ caddy.CleanerUpper          = (*KeyCheck)(nil)
	_ caddyhttp.MiddlewareHandler = (*KeyCheck)(nil)
	_ caddy.Validator             = (*KeyCheck)(nil)
)
