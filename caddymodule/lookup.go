package caddymodule

// lookup.go owns the HTTP client that asks OpenRouter about keys, and the
// errors it makes: built without the request's URL, path, headers or the
// answer's body, so that no key, no record hash, nothing of an answer can
// reach a log or a visitor through them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Limits on what the metadata endpoints may send back.
const (
	maxKeyResponse    = 64 << 10 // GET /key, GET /keys/{hash}, GET /credits
	maxPageResponse   = 4 << 20  // one page of GET /keys or GET /workspaces
	maxModelsResponse = 16 << 20 // GET /models: about 0.5 MB for 337 models
	// dialTimeout bounds connecting to the upstream whatever the caller's
	// deadline; the caller's context bounds everything else.
	dialTimeout = 10 * time.Second
)

// Metadata endpoints, as they appear in metrics and logs.
const (
	endpointKey        = "key"        // GET /key
	endpointKeyRecord  = "key_record" // GET /keys/{hash}
	endpointKeysList   = "keys_list"  // GET /keys (one per page)
	endpointWorkspaces = "workspaces" // GET /workspaces (one per page)
	endpointCredits    = "credits"    // GET /credits (key check, 402s)
	endpointBudgets    = "budgets"    // GET /workspaces/{id}/budgets (workspace 403s)
	endpointModels     = "models"     // GET /models (key check)
)

// failure is why a lookup has no usable answer.
type failure uint8

const (
	failNone failure = iota
	// failRefused: not sent, its budget is used up. No fact about anything.
	failRefused
	// failCancelled: the caller (a request, a config being unloaded) gave
	// up. No fact either, and no reason for backoff.
	failCancelled
	failTimeout
	failUnreachable
	// failStatus: an HTTP status the endpoint does not document for this
	// call (5xx, 403, ...).
	failStatus
	// failInvalid: 200 with a body that is not the documented JSON.
	failInvalid
	failTooLarge
)

// lookupError is a failed lookup, described without anything from the
// request or the answer: the endpoint's name, what went wrong, the status,
// and for transport failures the network error with the URL removed.
type lookupError struct {
	endpoint string
	kind     failure
	status   int
	cause    error // scrubbed: never a *url.Error
}

func (e *lookupError) Error() string {
	s := e.endpoint + " lookup: " + e.publicText()
	if e.status != 0 {
		s += fmt.Sprintf(" (status %d)", e.status)
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// publicText is what a visitor of the key check may be told: what went
// wrong, never where (no address, resolver or Go error string).
func (e *lookupError) publicText() string {
	switch e.kind {
	case failRefused:
		return "OpenRouter was not asked: too many lookups right now"
	case failCancelled:
		return "the check was cancelled"
	case failTimeout:
		return "OpenRouter did not answer in time"
	case failUnreachable:
		return "OpenRouter could not be reached"
	case failInvalid:
		return "OpenRouter's answer was not the documented JSON"
	case failTooLarge:
		return "OpenRouter's answer was larger than expected"
	}
	return "OpenRouter answered with an unexpected status"
}

// failureOf is the kind of a lookup error, failNone for nil.
func failureOf(err error) failure {
	var le *lookupError
	if errors.As(err, &le) {
		return le.kind
	}
	if err != nil {
		return failStatus
	}
	return failNone
}

// publicError is what a visitor may be told about err.
func publicError(err error) string {
	var le *lookupError
	if errors.As(err, &le) {
		return le.publicText()
	}
	return "OpenRouter could not be asked"
}

// metadataClient asks OpenRouter about keys. Every request it sends goes to
// the configured upstream and nowhere else: nothing from a client request
// decides a URL, and redirects are never followed (they could carry the
// bearer key to another host).
type metadataClient struct {
	base string // upstream base URL, without trailing slash
	http *http.Client
}

func newMetadataClient(base string) *metadataClient {
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   dialTimeout,
		ExpectContinueTimeout: time.Second,
	}
	return &metadataClient{
		base: base,
		http: &http.Client{
			Transport:     transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

func (c *metadataClient) close() { c.http.CloseIdleConnections() }

// lookupResult is one answer from a metadata endpoint: the HTTP status, or
// err when there was no usable answer.
type lookupResult struct {
	status int
	err    error
}

// get sends one metadata request within ctx and decodes the "data" member
// of a 200 answer into into. Statuses other than 200 come back without an
// error when the endpoint documents them (accepted), as a failStatus error
// otherwise.
func (c *metadataClient) get(ctx context.Context, endpoint, path, bearer string, limit int64, into any, accepted ...int) lookupResult {
	start := time.Now()
	res := c.send(ctx, endpoint, path, bearer, limit, into, accepted)
	outcome := "ok"
	switch failureOf(res.err) {
	case failNone:
		switch res.status {
		case http.StatusOK:
		case http.StatusUnauthorized:
			outcome = "unauthorized"
		case http.StatusNotFound:
			outcome = "not_found"
		default:
			outcome = "error"
		}
	case failCancelled:
		outcome = "cancelled"
	case failInvalid, failTooLarge:
		outcome = "invalid"
	default:
		outcome = "error"
	}
	if outcome != "cancelled" {
		gatewayMetrics.lookupDuration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
	}
	gatewayMetrics.lookups.WithLabelValues(endpoint, outcome).Inc()
	return res
}

func (c *metadataClient) send(ctx context.Context, endpoint, path, bearer string, limit int64, into any, accepted []int) lookupResult {
	fail := func(kind failure, status int, cause error) lookupResult {
		return lookupResult{status: status, err: &lookupError{endpoint: endpoint, kind: kind, status: status, cause: cause}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return fail(failUnreachable, 0, errors.New("the request could not be built"))
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fail(transportFailure(ctx, err), 0, scrubURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused; the body of an
		// error answer is never read into anything.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		for _, s := range accepted {
			if s == resp.StatusCode {
				return lookupResult{status: resp.StatusCode}
			}
		}
		return fail(failStatus, resp.StatusCode, nil)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fail(transportFailure(ctx, err), resp.StatusCode, scrubURL(err))
	}
	if int64(len(body)) > limit {
		return fail(failTooLarge, resp.StatusCode, nil)
	}
	var envelope struct {
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal(body, &envelope) != nil || len(envelope.Data) == 0 || string(envelope.Data) == "null" ||
		json.Unmarshal(envelope.Data, into) != nil {
		return fail(failInvalid, resp.StatusCode, nil)
	}
	return lookupResult{status: resp.StatusCode}
}

// transportFailure tells a timeout or a cancellation from an unreachable
// upstream.
func transportFailure(ctx context.Context, err error) failure {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return failCancelled
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return failTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return failTimeout
	}
	return failUnreachable
}

// scrubURL drops the URL from net/http's errors, keeping what went wrong.
// A URL holds no key (keys travel in headers), but GET /keys/{hash} holds
// the record hash, sha256 of the key.
func scrubURL(err error) error {
	var ue *url.Error
	for errors.As(err, &ue) {
		err = ue.Err
	}
	return err
}

// keyMetadata is GET /key's answer.
type keyMetadata = openrouter.KeyInfo

// keyInfo asks GET /key about key, with the key itself as bearer. A 401 is
// an answer (the key is refused); so is a 404, which no real upstream sends
// and which the caller reports as misconfiguration.
func (c *metadataClient) keyInfo(ctx context.Context, key string) (*keyMetadata, lookupResult) {
	var md keyMetadata
	res := c.get(ctx, endpointKey, "/key", key, maxKeyResponse, &md, http.StatusUnauthorized, http.StatusNotFound)
	if res.err != nil || res.status != http.StatusOK {
		return nil, res
	}
	return &md, res
}

// credits reads GET /credits with bearer, which must be a management key.
func (c *metadataClient) credits(ctx context.Context, bearer string) (*openrouter.Credits, lookupResult) {
	var cr openrouter.Credits
	res := c.get(ctx, endpointCredits, "/credits", bearer, maxKeyResponse, &cr)
	if res.err != nil {
		return nil, res
	}
	return &cr, res
}

// modelIDs reads the model catalogue, which needs no key.
func (c *metadataClient) modelIDs(ctx context.Context) ([]string, lookupResult) {
	var models []struct {
		ID string `json:"id"`
	}
	res := c.get(ctx, endpointModels, "/models", "", maxModelsResponse, &models)
	if res.err != nil {
		return nil, res
	}
	ids := make([]string, len(models))
	for i, m := range models {
		ids[i] = m.ID
	}
	return ids, res
}
