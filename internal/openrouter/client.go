package openrouter

// client.go owns the HTTP client for OpenRouter's API, one method per
// endpoint, and the errors it makes: built without the request's URL,
// path, headers or the answer's body, so that no key, no record hash,
// nothing of an answer can reach a log or a visitor through them. It
// knows nothing of who counts its requests: a Hook is told of each.

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
)

// Limits on what the endpoints may send back.
const (
	maxKeyResponse    = 64 << 10 // GET /key, GET /keys/{hash}, GET /credits, budgets
	maxPageResponse   = 4 << 20  // one page of GET /keys or GET /workspaces
	maxModelsResponse = 16 << 20 // GET /models: about 0.5 MB for 337 models
	// dialTimeout bounds connecting to the upstream whatever the caller's
	// deadline; the caller's context bounds everything else.
	dialTimeout = 10 * time.Second
)

// ErrorKind is why a request has no usable answer.
type ErrorKind uint8

// The kinds of error.
const (
	// ErrorNone: no error.
	ErrorNone ErrorKind = iota
	// ErrorRefused: not sent, the caller's budget of requests is used up.
	// No fact about anything. The client never makes it; its callers do.
	ErrorRefused
	// ErrorCancelled: the caller gave up. No fact either, and no reason
	// for backoff.
	ErrorCancelled
	ErrorTimeout
	ErrorUnreachable
	// ErrorStatus: an HTTP status the endpoint does not document for this
	// call (5xx, 403, ...).
	ErrorStatus
	// ErrorInvalid: 200 with a body that is not the documented JSON.
	ErrorInvalid
	ErrorTooLarge
)

// Error is a failed request, described without anything from the request
// or the answer: the endpoint's name, what went wrong, the status, and for
// transport failures the network error with the URL removed.
type Error struct {
	// Endpoint is the endpoint's name (Endpoint.String()), or what the
	// caller was doing when it made the error itself.
	Endpoint string
	Kind     ErrorKind
	Status   int
	cause    error // scrubbed: never a *url.Error
}

func (e *Error) Error() string {
	s := e.Endpoint + " lookup: " + e.publicText()
	if e.Status != 0 {
		s += fmt.Sprintf(" (status %d)", e.Status)
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// publicText is what a visitor may be told: what went wrong, never where
// (no address, resolver or Go error string).
func (e *Error) publicText() string {
	switch e.Kind {
	case ErrorRefused:
		return "OpenRouter was not asked: too many lookups right now"
	case ErrorCancelled:
		return "the check was cancelled"
	case ErrorTimeout:
		return "OpenRouter did not answer in time"
	case ErrorUnreachable:
		return "OpenRouter could not be reached"
	case ErrorInvalid:
		return "OpenRouter's answer was not the documented JSON"
	case ErrorTooLarge:
		return "OpenRouter's answer was larger than expected"
	}
	return "OpenRouter answered with an unexpected status"
}

// KindOf is the kind of a request's error: ErrorNone for nil, ErrorStatus
// for an error that is not an *Error.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	if err != nil {
		return ErrorStatus
	}
	return ErrorNone
}

// PublicText is what a visitor may be told about err.
func PublicText(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.publicText()
	}
	return "OpenRouter could not be asked"
}

// ContextError is the error of a wait for ctx that ended: cancelled or
// timed out, by the name of what waited.
func ContextError(ctx context.Context, endpoint string, err error) *Error {
	return &Error{Endpoint: endpoint, Kind: transportFailure(ctx, err)}
}

// Outcome is how a request ended, as the metrics count it.
type Outcome string

// The outcomes.
const (
	OutcomeOK           Outcome = "ok"
	OutcomeUnauthorized Outcome = "unauthorized"
	OutcomeNotFound     Outcome = "not_found"
	OutcomeError        Outcome = "error"
	OutcomeCancelled    Outcome = "cancelled"
	OutcomeInvalid      Outcome = "invalid"
)

// Hook is told of every request the client sent: its endpoint, how it
// ended, and how long it took.
type Hook func(e Endpoint, o Outcome, took time.Duration)

// Client asks OpenRouter's API. Every request it sends goes to the base
// URL it was made with and nowhere else: nothing from a caller decides a
// host, and redirects are never followed (they could carry the bearer key
// to another host).
type Client struct {
	base string // API base URL, without trailing slash
	http *http.Client
	hook Hook
}

// NewClient is a client of the API at base (BaseURL, or an emulator's),
// telling hook (if not nil) of every request.
func NewClient(base string, hook Hook) *Client {
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
	return &Client{
		base: base,
		hook: hook,
		http: &http.Client{
			Transport:     transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Close closes the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Result is how a request went: the HTTP status, or Err when there was no
// usable answer.
type Result struct {
	Status int
	Err    error
}

// get sends one request within ctx and decodes the "data" member of a
// 200 answer into into. Statuses other than 200 come back without an
// error when the endpoint documents them (accepted), as an ErrorStatus
// error otherwise.
func (c *Client) get(ctx context.Context, e Endpoint, path, bearer string, limit int64, into any, accepted ...int) Result {
	start := time.Now()
	res := c.send(ctx, e, path, bearer, limit, into, accepted)
	if c.hook != nil {
		c.hook(e, outcomeOf(res), time.Since(start))
	}
	return res
}

// outcomeOf classes a result for the metrics.
func outcomeOf(res Result) Outcome {
	switch KindOf(res.Err) {
	case ErrorNone:
		switch res.Status {
		case http.StatusOK:
			return OutcomeOK
		case http.StatusUnauthorized:
			return OutcomeUnauthorized
		case http.StatusNotFound:
			return OutcomeNotFound
		}
	case ErrorCancelled:
		return OutcomeCancelled
	case ErrorInvalid, ErrorTooLarge:
		return OutcomeInvalid
	}
	return OutcomeError
}

func (c *Client) send(ctx context.Context, e Endpoint, path, bearer string, limit int64, into any, accepted []int) Result {
	fail := func(kind ErrorKind, status int, cause error) Result {
		return Result{Status: status, Err: &Error{Endpoint: e.String(), Kind: kind, Status: status, cause: cause}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return fail(ErrorUnreachable, 0, errors.New("the request could not be built"))
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
				return Result{Status: resp.StatusCode}
			}
		}
		return fail(ErrorStatus, resp.StatusCode, nil)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fail(transportFailure(ctx, err), resp.StatusCode, scrubURL(err))
	}
	if int64(len(body)) > limit {
		return fail(ErrorTooLarge, resp.StatusCode, nil)
	}
	var envelope Data[json.RawMessage]
	if json.Unmarshal(body, &envelope) != nil || len(envelope.Data) == 0 || string(envelope.Data) == "null" ||
		json.Unmarshal(envelope.Data, into) != nil {
		return fail(ErrorInvalid, resp.StatusCode, nil)
	}
	return Result{Status: resp.StatusCode}
}

// transportFailure tells a timeout or a cancellation from an unreachable
// upstream.
func transportFailure(ctx context.Context, err error) ErrorKind {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return ErrorCancelled
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return ErrorTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrorTimeout
	}
	return ErrorUnreachable
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

// Key asks GET /key about key, with the key itself as bearer. A 401 is an
// answer (the key is refused); so is a 404, which no real upstream sends
// and which the caller may report as misconfiguration.
func (c *Client) Key(ctx context.Context, key string) (*KeyInfo, Result) {
	var md KeyInfo
	res := c.get(ctx, EndpointKey, PathKey, key, maxKeyResponse, &md, http.StatusUnauthorized, http.StatusNotFound)
	if res.Err != nil || res.Status != http.StatusOK {
		return nil, res
	}
	return &md, res
}

// KeyRecord asks GET /keys/{hash} for the record with that hash. A 404 is
// an answer: no such record (as far as the lookup reaches).
func (c *Client) KeyRecord(ctx context.Context, managementKey, hash string) (*KeyRecord, Result) {
	var rec KeyRecord
	res := c.get(ctx, EndpointKeyRecord, keyRecordPath(hash), managementKey, maxKeyResponse, &rec, http.StatusNotFound)
	if res.Err != nil || res.Status != http.StatusOK {
		return nil, res
	}
	return &rec, res
}

// KeysPage reads one page of a workspace's key records ("" is the default
// workspace), disabled ones included, from offset (see KeysWalk). Records
// that do not say their workspace are given workspaceID.
func (c *Client) KeysPage(ctx context.Context, managementKey, workspaceID string, offset int) ([]KeyRecord, error) {
	var recs []KeyRecord
	q := KeysQuery{WorkspaceID: workspaceID, IncludeDisabled: true, Offset: offset}
	res := c.get(ctx, EndpointKeys, q.path(), managementKey, maxPageResponse, &recs)
	for i := range recs {
		if recs[i].WorkspaceID == "" {
			recs[i].WorkspaceID = workspaceID
		}
	}
	return recs, res.Err
}

// WorkspacesRequests is how many requests Workspaces makes to read n
// workspaces: every page, and the empty one that ends them.
func WorkspacesRequests(n int) int {
	return (n+workspacesPageSize-1)/workspacesPageSize + 1
}

// Workspaces reads the account's workspaces, page by page until an empty
// page: an error when there are more than limit, or none.
func (c *Client) Workspaces(ctx context.Context, managementKey string, limit int) ([]Workspace, error) {
	var out []Workspace
	for offset := 0; ; {
		var page []Workspace
		q := WorkspacesQuery{Offset: offset, Limit: workspacesPageSize}
		if res := c.get(ctx, EndpointWorkspaces, q.path(), managementKey, maxPageResponse, &page); res.Err != nil {
			return nil, res.Err
		}
		if len(page) == 0 {
			break
		}
		out = append(out, page...)
		offset += len(page)
		if len(out) > limit {
			return nil, fmt.Errorf("more than %d workspaces", limit)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no workspace listed")
	}
	return out, nil
}

// WorkspaceBudgets reads a workspace's budgets; a workspace without
// budgets answers 404, which is none (nil, with the status).
func (c *Client) WorkspaceBudgets(ctx context.Context, managementKey, workspaceID string) ([]WorkspaceBudget, Result) {
	var budgets []WorkspaceBudget
	res := c.get(ctx, EndpointBudgets, budgetsPath(workspaceID), managementKey, maxKeyResponse, &budgets, http.StatusNotFound)
	if res.Err != nil || res.Status != http.StatusOK {
		return nil, res
	}
	return budgets, res
}

// Credits reads GET /credits with bearer, which must be a management key.
func (c *Client) Credits(ctx context.Context, bearer string) (*Credits, Result) {
	var cr Credits
	res := c.get(ctx, EndpointCredits, pathCredits, bearer, maxKeyResponse, &cr)
	if res.Err != nil {
		return nil, res
	}
	return &cr, res
}

// ModelIDs reads the ids of the model catalogue, which needs no key.
func (c *Client) ModelIDs(ctx context.Context) ([]string, Result) {
	return c.modelIDs(ctx, pathModels, "")
}

// modelIDs reads the ids of a model list at path, asked with bearer.
func (c *Client) modelIDs(ctx context.Context, path, bearer string) ([]string, Result) {
	var models []struct {
		ID string `json:"id"`
	}
	res := c.get(ctx, EndpointModels, path, bearer, maxModelsResponse, &models)
	if res.Err != nil {
		return nil, res
	}
	ids := make([]string, len(models))
	for i, m := range models {
		ids[i] = m.ID
	}
	return ids, res
}
