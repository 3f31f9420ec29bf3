package caddymodule

// upstream.go owns the options both handlers share: where OpenRouter is,
// the management key, and the budgets of the lookups made there.

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Defaults of the shared options.
const (
	DefaultUpstream       = openrouter.BaseURL
	DefaultLookupTimeout  = 5 * time.Second
	DefaultManagementRate = 5.0
)

// UpstreamOptions say how a handler reaches OpenRouter's metadata
// endpoints. openrouter_keys and openrouter_keycheck share them, and share
// what they learn when they agree on them.
type UpstreamOptions struct {
	// The OpenRouter API base URL that key metadata is read from. For the
	// gateway it must be the API reverse_proxy talks to, ending in /api/v1.
	// Default: https://openrouter.ai/api/v1
	Upstream string `json:"upstream,omitempty"`

	// A management key of the account whose keys pass through, usually
	// "{env.OPENROUTER_MANAGEMENT_KEY}". With it, disabled and deleted keys
	// can be told apart; without it (or when it resolves to an empty
	// string) only what GET /key says is known. Placeholders are resolved
	// when the config loads; the key is sent to the upstream only, and
	// never logged.
	ManagementKey string `json:"management_key,omitempty"`

	// How long a failing request (or a key check) waits for evidence.
	// Working requests never wait. Default: 5s.
	LookupTimeout caddy.Duration `json:"lookup_timeout,omitempty"`

	// The most management requests per second made one key at a time
	// (GET /keys/{hash}, GET /credits), for failing requests and key checks
	// together, so that no number of them costs the account more. Listings
	// have their own budget: at most one every 30s; but a small account,
	// whose last listing took no more requests than twice this rate and
	// less time than lookup_timeout, is listed again at once for a key
	// first seen after that listing began, its requests taken from this
	// budget. Handlers of one upstream and management key share one
	// account and one budget: the lowest management_rate among them
	// applies. Default: 5.
	ManagementRate float64 `json:"management_rate,omitempty"`
}

// upstreamSettings are the options resolved, with defaults for zero values.
type upstreamSettings struct {
	base, managementKey string
	timeout             time.Duration
	managementRate      float64
}

// settings resolves the options. Invalid values are reported by validate;
// here they fall back to defaults, so that provisioning never fails on
// them.
func (o UpstreamOptions) settings() upstreamSettings {
	s := upstreamSettings{base: DefaultUpstream, timeout: DefaultLookupTimeout, managementRate: DefaultManagementRate}
	if base, err := o.upstreamBase(); err == nil && base != "" {
		s.base = base
	}
	if mk, err := o.managementKey(); err == nil {
		s.managementKey = mk
	}
	if o.LookupTimeout > 0 {
		s.timeout = time.Duration(o.LookupTimeout)
	}
	if o.ManagementRate > 0 {
		s.managementRate = o.ManagementRate
	}
	return s
}

func (o UpstreamOptions) upstreamBase() (string, error) {
	if o.Upstream == "" {
		return "", nil
	}
	u, err := url.Parse(o.Upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("upstream: %q is not an http(s) URL", o.Upstream)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// managementKey resolves the key's placeholders. An error names the
// placeholder at most, never a value.
func (o UpstreamOptions) managementKey() (string, error) {
	mk, err := caddy.NewReplacer().ReplaceOrErr(o.ManagementKey, false, true)
	if err != nil {
		return "", fmt.Errorf("management_key: %v", err)
	}
	mk = strings.TrimSpace(mk)
	if strings.ContainsFunc(mk, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", errors.New("management_key: contains whitespace or control characters")
	}
	return mk, nil
}

// validate reports the first invalid value, naming the option.
func (o UpstreamOptions) validate() error {
	if _, err := o.upstreamBase(); err != nil {
		return err
	}
	if _, err := o.managementKey(); err != nil {
		return err
	}
	if o.LookupTimeout < 0 {
		return fmt.Errorf("lookup_timeout: must not be negative, got %s", time.Duration(o.LookupTimeout))
	}
	if o.ManagementRate < 0 {
		return fmt.Errorf("management_rate: must not be negative, got %g", o.ManagementRate)
	}
	return nil
}

// logSettings says, once at provision, what the options mean for what can
// be explained.
func (s upstreamSettings) logSettings(logger *zap.Logger) {
	if !strings.HasSuffix(s.base, openrouter.APIPrefix) {
		logger.Warn("upstream does not end in "+openrouter.APIPrefix+": key metadata is read from {upstream}"+openrouter.PathKey+
			", which on OpenRouter is "+openrouter.BaseURL+openrouter.PathKey,
			zap.String("upstream", s.base))
	}
	if s.managementKey == "" {
		logger.Info("no management key configured: expired keys and management keys are explained, disabled and deleted keys are not (set management_key)")
	}
}

// unmarshalSubdirective reads one of the shared subdirectives with its
// value; it reports false for any other. Values are checked by Validate.
func (o *UpstreamOptions) unmarshalSubdirective(d *caddyfile.Dispenser, opt string) (bool, error) {
	switch opt {
	case "upstream":
		return true, oneArg(d, &o.Upstream)
	case "management_key":
		return true, oneArg(d, &o.ManagementKey)
	case "lookup_timeout":
		return true, durationArg(d, &o.LookupTimeout)
	case "management_rate":
		return true, floatArg(d, &o.ManagementRate)
	}
	return false, nil
}
