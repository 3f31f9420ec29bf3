package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("openrouter_keys", parseCaddyfile)
	// After encode, so that it sees the upstream's own bytes and runs
	// wherever reverse_proxy sits (in a handle block, beside respond)
	// without an order option.
	httpcaddyfile.RegisterDirectiveOrder("openrouter_keys", httpcaddyfile.After, "encode")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	openrouter_keys [<matcher>] {
//	    upstream          <OpenRouter API base URL, default https://openrouter.ai/api/v1>
//	    management_key    <key, usually {env.OPENROUTER_MANAGEMENT_KEY}; optional>
//	    cache_size        <max keys remembered, default 100000>
//	    cache_ttl         <how long metadata of a working key is trusted, default 10m>
//	    lookup_timeout    <longest metadata lookup, default 5s>
//	    lookup_rate       <max metadata requests per second, default 20>
//	    edge_answers      on|off|malformed
//	    expiry_skew       <past expiry before answering at the edge, default 30s>
//	    edge_disabled_for <how long a disabled key is answered at the edge, default 30s>
//	    warn_before       <announce keys expiring within this window; off by default>
//	    shared_storage    # share what is learned through Caddy's storage
//	}
//
// Every subdirective is optional; `openrouter_keys` alone works with the
// defaults.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if opt == "shared_storage" {
			if d.NextArg() {
				return d.Errf("shared_storage: takes no value (it uses Caddy's storage)")
			}
			h.SharedStorage = true
			continue
		}
		var arg string
		if !d.AllArgs(&arg) {
			return d.Errf("%s: expects exactly one value", opt)
		}
		if ok, err := h.UpstreamOptions.unmarshalSubdirective(d, opt, arg); ok {
			if err != nil {
				return err
			}
			continue
		}
		switch opt {
		case "cache_size":
			n, err := strconv.Atoi(arg)
			if err != nil || n < 0 {
				return d.Errf("cache_size: %q is not a non-negative whole number", arg)
			}
			h.CacheSize = n
		case "lookup_rate":
			f, err := strconv.ParseFloat(arg, 64)
			if err != nil || f < 0 {
				return d.Errf("lookup_rate: %q is not a non-negative number of requests per second", arg)
			}
			h.LookupRate = f
		case "edge_answers":
			switch arg {
			case EdgeAnswersOn, EdgeAnswersOff, EdgeAnswersMalformed:
				h.EdgeAnswers = arg
			default:
				return d.Errf("edge_answers: %q is not one of on, off, malformed", arg)
			}
		case "cache_ttl", "expiry_skew", "edge_disabled_for", "warn_before":
			dur, err := caddy.ParseDuration(arg)
			if err != nil || dur < 0 {
				return d.Errf("%s: %q is not a duration such as 30s or 10m", opt, arg)
			}
			*map[string]*caddy.Duration{
				"cache_ttl":         &h.CacheTTL,
				"expiry_skew":       &h.ExpirySkew,
				"edge_disabled_for": &h.EdgeDisabledFor,
				"warn_before":       &h.WarnBefore,
			}[opt] = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized subdirective %q", opt)
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
