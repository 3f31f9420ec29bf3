package caddymodule

// caddyfile.go owns the Caddyfile syntax of both directives. It reads
// tokens only: values are checked by Validate, as for JSON configs.

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("openrouter_keys", parseKeysCaddyfile)
	// After encode, so that it sees the upstream's own bytes and runs
	// wherever reverse_proxy sits (in a handle block, beside respond)
	// without an order option.
	httpcaddyfile.RegisterDirectiveOrder("openrouter_keys", httpcaddyfile.After, "encode")

	httpcaddyfile.RegisterHandlerDirective("openrouter_keycheck", parseKeyCheckCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("openrouter_keycheck", httpcaddyfile.Before, "respond")
}

func parseKeysCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

func parseKeyCheckCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	kc := new(KeyCheck)
	err := kc.UnmarshalCaddyfile(h.Dispenser)
	return kc, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. The syntax
// is documented once, in docs/configuration.md (a test keeps the two equal).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if ok, err := h.UpstreamOptions.unmarshalSubdirective(d, opt); ok {
			if err != nil {
				return err
			}
			continue
		}
		var err error
		switch opt {
		case "cache_size":
			err = intArg(d, &h.CacheSize)
		case "cache_ttl":
			err = durationArg(d, &h.CacheTTL)
		case "lookup_rate":
			err = floatArg(d, &h.LookupRate)
		case "edge_answers":
			err = oneArg(d, &h.EdgeAnswers)
		case "explain_limits":
			err = oneArg(d, &h.ExplainLimits)
		case "limit_lookup_timeout":
			err = durationArg(d, &h.LimitLookupTimeout)
		case "edge_capped_for":
			err = durationArg(d, &h.EdgeCappedFor)
		case "expiry_skew":
			err = durationArg(d, &h.ExpirySkew)
		case "edge_disabled_for":
			err = durationArg(d, &h.EdgeDisabledFor)
		case "warn_before":
			err = durationArg(d, &h.WarnBefore)
		case "shared_storage":
			if d.NextArg() {
				return d.Errf("shared_storage: takes no value (it uses Caddy's storage)")
			}
			h.SharedStorage = true
		case "watch_max_keys":
			err = intArg(d, &h.WatchMaxKeys)
		case "status_from_inband_error":
			if d.NextArg() {
				return d.Errf("status_from_inband_error: takes no value (present means on)")
			}
			h.StatusFromInbandError = true
		case "warn_model_retirement":
			err = oneArg(d, &h.WarnModelRetirement)
		case "watch_keys":
			h.WatchKeys = caddy.Duration(DefaultWatchInterval)
			if d.CountRemainingArgs() > 0 {
				err = durationArg(d, &h.WatchKeys)
			}
		default:
			return d.Errf("unrecognized subdirective %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// UnmarshalCaddyfile sets up the key check from Caddyfile tokens. The
// syntax is documented once, in docs/configuration.md.
func (kc *KeyCheck) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if ok, err := kc.UpstreamOptions.unmarshalSubdirective(d, opt); ok {
			if err != nil {
				return err
			}
			continue
		}
		switch opt {
		case "rate_limit":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("rate_limit: expects <requests> <window>, such as 30 1m")
			}
			n, err := strconv.Atoi(args[0])
			if err != nil {
				return d.Errf("rate_limit: %q is not a whole number of requests", args[0])
			}
			window, err := caddy.ParseDuration(args[1])
			if err != nil {
				return d.Errf("rate_limit: %q is not a duration such as 1m", args[1])
			}
			kc.RateLimit = &CheckRateLimit{Requests: n, Window: caddy.Duration(window)}
		default:
			return d.Errf("unrecognized subdirective %q", opt)
		}
	}
	return nil
}

// oneArg reads the subdirective's one value.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	opt := d.Val()
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.Errf("%s: expects exactly one value", opt)
	}
	*dst = args[0]
	return nil
}

func intArg(d *caddyfile.Dispenser, dst *int) error {
	opt := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return d.Errf("%s: %q is not a whole number", opt, s)
	}
	*dst = n
	return nil
}

func floatArg(d *caddyfile.Dispenser, dst *float64) error {
	opt := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return d.Errf("%s: %q is not a number", opt, s)
	}
	*dst = f
	return nil
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	opt := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: %q is not a duration such as 30s or 10m", opt, s)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*KeyCheck)(nil)
)
