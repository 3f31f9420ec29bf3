package caddymodule

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UpstreamOptions say how a handler reaches OpenRouter's metadata
// endpoints. openrouter_keys and openrouter_keycheck share them.
type UpstreamOptions struct {
	// The OpenRouter API base URL that key metadata is read from. For the
	// gateway it must be the API reverse_proxy talks to.
	// Default: https://openrouter.ai/api/v1
	Upstream string `json:"upstream,omitempty"`

	// A management key of the account whose keys pass through, usually
	// "{env.OPENROUTER_MANAGEMENT_KEY}". With it, disabled and deleted keys
	// can be told apart; without it (or when it resolves to an empty
	// string) only what GET /key says is known. Placeholders are resolved
	// when the config loads; the key is sent to the upstream only, and
	// never logged.
	ManagementKey string `json:"management_key,omitempty"`

	// How long one metadata lookup may take. Default: 5s.
	LookupTimeout caddy.Duration `json:"lookup_timeout,omitempty"`
}

// upstreamSettings are the options checked, resolved and defaulted.
type upstreamSettings struct {
	base, managementKey string
	timeout             time.Duration
}

func (o UpstreamOptions) resolve() (upstreamSettings, error) {
	s := upstreamSettings{base: DefaultUpstream, timeout: DefaultLookupTimeout}
	if o.Upstream != "" {
		u, err := url.Parse(o.Upstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return s, fmt.Errorf("upstream: %q is not an http(s) URL", o.Upstream)
		}
		s.base = strings.TrimSuffix(u.String(), "/")
	}
	// The management key is resolved now, once; an error names the
	// placeholder at most, never a value.
	mk, err := caddy.NewReplacer().ReplaceOrErr(o.ManagementKey, false, true)
	if err != nil {
		return s, fmt.Errorf("management_key: %v", err)
	}
	s.managementKey = strings.TrimSpace(mk)
	if strings.ContainsAny(s.managementKey, " \t\r\n") {
		return s, fmt.Errorf("management_key: contains whitespace")
	}
	switch {
	case o.LookupTimeout < 0:
		return s, fmt.Errorf("lookup_timeout: must not be negative, got %s", time.Duration(o.LookupTimeout))
	case o.LookupTimeout > 0:
		s.timeout = time.Duration(o.LookupTimeout)
	}
	return s, nil
}

// unmarshalSubdirective reads upstream, management_key or lookup_timeout
// with its one value; it reports false for any other subdirective.
func (o *UpstreamOptions) unmarshalSubdirective(d *caddyfile.Dispenser, opt, arg string) (bool, error) {
	switch opt {
	case "upstream":
		o.Upstream = arg
	case "management_key":
		o.ManagementKey = arg
	case "lookup_timeout":
		dur, err := caddy.ParseDuration(arg)
		if err != nil || dur < 0 {
			return true, d.Errf("lookup_timeout: %q is not a duration such as 5s", arg)
		}
		o.LookupTimeout = caddy.Duration(dur)
	default:
		return false, nil
	}
	return true, nil
}
