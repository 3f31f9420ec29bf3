package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/time/rate"
)

// Limits on what the metadata endpoints may send back.
const (
	maxKeyResponse    = 64 << 10 // GET /key, GET /keys/{hash}
	maxPageResponse   = 4 << 20  // one page of GET /keys
	maxModelsResponse = 16 << 20 // GET /models: about 0.5 MB for 337 models
	listPageSize      = 100      // OpenRouter's page size for GET /keys
	maxListPages      = 200      // 20,000 keys; past that the listing counts as incomplete
)

// errLookupRefused means the lookup was not sent: the lookup rate is used
// up. It is not a fact about the key.
var errLookupRefused = errors.New("lookup rate exceeded")

// keyMetadata is the part of GET /key's answer the gateway uses. Field
// names are OpenRouter's.
type keyMetadata struct {
	Label           string   `json:"label"`
	Limit           *float64 `json:"limit"`
	LimitRemaining  *float64 `json:"limit_remaining"`
	LimitReset      *string  `json:"limit_reset"`
	Usage           float64  `json:"usage"`
	UsageDaily      float64  `json:"usage_daily"`
	UsageWeekly     float64  `json:"usage_weekly"`
	UsageMonthly    float64  `json:"usage_monthly"`
	IsFreeTier      bool     `json:"is_free_tier"`
	IsManagementKey bool     `json:"is_management_key"`
	// IsProvisioningKey is the older name of IsManagementKey.
	IsProvisioningKey bool       `json:"is_provisioning_key"`
	ExpiresAt         *time.Time `json:"expires_at"`
	RateLimit         *struct {
		Requests int    `json:"requests"`
		Interval string `json:"interval"`
	} `json:"rate_limit"`
}

func (m *keyMetadata) management() bool { return m.IsManagementKey || m.IsProvisioningKey }

// keyRecord is the part of a management API key record the gateway uses.
type keyRecord struct {
	Hash      string     `json:"hash"`
	Label     string     `json:"label"`
	Disabled  bool       `json:"disabled"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// sameAnswer reports whether two records say the same about a key, which is
// what decides whether a label shared by several records can be trusted.
func (r keyRecord) sameAnswer(o keyRecord) bool {
	if r.Disabled != o.Disabled || (r.ExpiresAt == nil) != (o.ExpiresAt == nil) {
		return false
	}
	return r.ExpiresAt == nil || r.ExpiresAt.Equal(*o.ExpiresAt)
}

// keyListing is the management key's whole listing, as read at one time.
type keyListing struct {
	readAt  time.Time
	byHash  map[string]keyRecord
	byLabel map[string][]keyRecord
}

// metadataClient asks OpenRouter about keys. Every request it sends goes to
// the configured upstream and nowhere else: nothing from a client request
// decides a URL.
type metadataClient struct {
	base          string // upstream base URL, without trailing slash
	managementKey string
	timeout       time.Duration
	http          *http.Client
	limiter       *rate.Limiter
}

func newMetadataClient(base, managementKey string, timeout time.Duration, perSecond float64) *metadataClient {
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	burst := int(perSecond)
	if burst < 1 {
		burst = 1
	}
	return &metadataClient{
		base:          base,
		managementKey: managementKey,
		timeout:       timeout,
		http: &http.Client{
			Transport: transport,
			Timeout:   timeout,
			// Lookups never follow redirects: a redirect could carry the
			// bearer key to another host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		limiter: rate.NewLimiter(rate.Limit(perSecond), burst),
	}
}

func (c *metadataClient) close() {
	c.http.CloseIdleConnections()
}

// lookupResult is one answer from a metadata endpoint: the HTTP status, or
// err when there was no usable answer.
type lookupResult struct {
	status int
	err    error
}

// get sends one metadata request. admitted says the caller already took
// its place in the lookup rate; otherwise get waits for one (within ctx).
func (c *metadataClient) get(ctx context.Context, endpoint, path, bearer string, limit int64, admitted bool, into any) lookupResult {
	if !admitted {
		if err := c.limiter.Wait(ctx); err != nil {
			gatewayMetrics.lookups.WithLabelValues(endpoint, outcomeRefused).Inc()
			return lookupResult{err: errLookupRefused}
		}
	}
	start := time.Now()
	res := c.send(ctx, path, bearer, limit, into)
	gatewayMetrics.lookupDuration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
	outcome := outcomeError
	switch {
	case res.err != nil:
	case res.status == http.StatusOK:
		outcome = outcomeOK
	case res.status == http.StatusUnauthorized:
		outcome = outcomeUnauthorized
	case res.status == http.StatusNotFound:
		outcome = outcomeNotFound
	}
	gatewayMetrics.lookups.WithLabelValues(endpoint, outcome).Inc()
	return res
}

func (c *metadataClient) send(ctx context.Context, path, bearer string, limit int64, into any) lookupResult {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return lookupResult{err: err}
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return lookupResult{err: scrubURLError(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return lookupResult{status: resp.StatusCode, err: fmt.Errorf("reading %s answer: %w", path, scrubURLError(err))}
	}
	if resp.StatusCode != http.StatusOK {
		return lookupResult{status: resp.StatusCode}
	}
	if int64(len(body)) > limit {
		return lookupResult{status: resp.StatusCode, err: fmt.Errorf("%s answer larger than %d bytes", path, limit)}
	}
	var envelope struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil || len(envelope.Data) == 0 || string(envelope.Data) == "null" {
		return lookupResult{status: resp.StatusCode, err: fmt.Errorf("%s answer is not the documented JSON", path)}
	}
	if err := json.Unmarshal(envelope.Data, into); err != nil {
		return lookupResult{status: resp.StatusCode, err: fmt.Errorf("%s answer is not the documented JSON", path)}
	}
	return lookupResult{status: resp.StatusCode}
}

// scrubURLError drops the URL from net/http's errors. The URL holds no key
// (keys travel in headers), but a record hash in GET /keys/{hash} is a plain
// sha256 of the key and must not reach a log.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s request: %w", ue.Op, ue.Err)
	}
	return err
}

// keyInfo asks GET /key about key, with the key itself as bearer.
func (c *metadataClient) keyInfo(ctx context.Context, key string, admitted bool) (*keyMetadata, lookupResult) {
	var md keyMetadata
	res := c.get(ctx, endpointKey, "/key", key, maxKeyResponse, admitted, &md)
	if res.err != nil || res.status != http.StatusOK {
		return nil, res
	}
	return &md, res
}

// record asks the management API for the record whose hash is sha256(key).
// A 404 is a normal answer (the hash may not be sha256(key); that is
// unverified).
func (c *metadataClient) record(ctx context.Context, key string) (*keyRecord, lookupResult) {
	var rec keyRecord
	res := c.get(ctx, endpointKeyRecord, "/keys/"+recordHash(key), c.managementKey, maxKeyResponse, false, &rec)
	if res.err != nil || res.status != http.StatusOK {
		return nil, res
	}
	return &rec, res
}

// listing reads every page of the management key's keys, disabled ones
// included. It fails rather than return part of a listing, since only a
// complete listing can say a key is not there.
func (c *metadataClient) listing(ctx context.Context) (*keyListing, error) {
	l := &keyListing{byHash: make(map[string]keyRecord), byLabel: make(map[string][]keyRecord)}
	for page, offset := 0, 0; ; page++ {
		if page == maxListPages {
			return nil, fmt.Errorf("listing has more than %d pages", maxListPages)
		}
		var recs []keyRecord
		res := c.get(ctx, endpointKeysList, "/keys?include_disabled=true&offset="+strconv.Itoa(offset), c.managementKey, maxPageResponse, false, &recs)
		if res.err != nil {
			return nil, res.err
		}
		if res.status != http.StatusOK {
			return nil, fmt.Errorf("listing page %d: status %d", page+1, res.status)
		}
		for _, r := range recs {
			if r.Hash != "" {
				l.byHash[r.Hash] = r
			}
			l.byLabel[r.Label] = append(l.byLabel[r.Label], r)
		}
		if len(recs) < listPageSize {
			break
		}
		offset += len(recs)
	}
	l.readAt = time.Now()
	return l, nil
}

// find matches a key to its record: by hash where OpenRouter's hash is
// sha256(key), otherwise by label, trusting a label only when every record
// with it says the same. found is false when the listing has no record with
// the key's hash or label; rec is nil when a label is shared by records
// that disagree.
func (l *keyListing) find(key string) (rec *keyRecord, found bool) {
	if r, ok := l.byHash[recordHash(key)]; ok {
		return &r, true
	}
	same := l.byLabel[keyLabel(key)]
	if len(same) == 0 {
		return nil, false
	}
	for _, r := range same[1:] {
		if !r.sameAnswer(same[0]) {
			return nil, true
		}
	}
	r := same[0]
	return &r, true
}

// credits reads GET /credits with bearer, which must be a management key.
func (c *metadataClient) credits(ctx context.Context, bearer string) (*accountCredits, lookupResult) {
	var cr accountCredits
	res := c.get(ctx, endpointCredits, "/credits", bearer, maxKeyResponse, false, &cr)
	if res.err != nil || res.status != http.StatusOK {
		return nil, res
	}
	return &cr, res
}

// accountCredits is GET /credits' answer.
type accountCredits struct {
	TotalCredits float64 `json:"total_credits"`
	TotalUsage   float64 `json:"total_usage"`
}

// modelIDs reads the model catalogue, which needs no key.
func (c *metadataClient) modelIDs(ctx context.Context) ([]string, lookupResult) {
	var models []struct {
		ID string `json:"id"`
	}
	res := c.get(ctx, endpointModels, "/models", "", maxModelsResponse, false, &models)
	if res.err != nil || res.status != http.StatusOK {
		return nil, res
	}
	ids := make([]string, len(models))
	for i, m := range models {
		ids[i] = m.ID
	}
	return ids, res
}
