package caddymodule

// logsafety.go owns the check, at provision, that no log of the config
// would write a key sent in a header Caddy does not redact (x-api-key), and
// the warning naming the filter that keeps it out.

import (
	"runtime"
	"slices"
	"sync"
	"weak"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Caddy writes every request header into its logs except Authorization,
// Cookie, Set-Cookie and Proxy-Authorization (and those too when the
// server's log_credentials is on). Anthropic-style clients send their key in
// x-api-key, so Caddy writes that key in full into three kinds of line:
//
//   - the access log ("handled request"), from a copy of the request taken
//     before any handler runs;
//   - the error log ("http.log.error", at ERROR level whenever a handler
//     fails with a 5xx, such as reverse_proxy failing to reach OpenRouter),
//     from the same copy, whether or not access logs are on;
//   - reverse_proxy's debug line "upstream roundtrip", from the request it
//     sends upstream (and rewrite's debug line "rewrote request", for
//     handle_path, uri and rewrite, which the same filter covers).
//
// No handler can keep the header out of those lines without removing it
// from what is proxied: Caddy offers no hook for it. Caddy's filter log
// encoder can, so Caddyfile.example ships
//
//	format filter {
//		request>headers>X-Api-Key replace REDACTED
//	}
//
// in the site's log and in the global default log, and the module warns at
// provision when a log that would carry the key lacks such a filter.

// redactedKeyHeaders are the request headers the module reads a key from
// that Caddy writes into its logs: x-api-key always, Authorization only
// when the server logs credentials. Names are as Caddy logs them, in Go's
// canonical form.
func redactedKeyHeaders(logCredentials bool) []string {
	if logCredentials {
		return []string{"X-Api-Key", "Authorization"}
	}
	return []string{"X-Api-Key"}
}

// filterLines are the lines of a Caddyfile `format filter` block that keep
// headers out of a log, for the warning.
func filterLines(headers []string) []string {
	lines := make([]string, len(headers))
	for i, h := range headers {
		lines[i] = "request>headers>" + h + " replace REDACTED"
	}
	return lines
}

// warnedServers remembers the servers already warned about, so that a
// server with several openrouter_keys handlers warns once per config load.
// A server is a new value at every load; the entry goes when it does.
var warnedServers = struct {
	sync.Mutex
	set map[weak.Pointer[caddyhttp.Server]]struct{}
}{set: make(map[weak.Pointer[caddyhttp.Server]]struct{})}

// firstWarning reports whether srv has not been warned about yet, and
// remembers that it has now.
func firstWarning(srv *caddyhttp.Server) bool {
	k := weak.Make(srv)
	warnedServers.Lock()
	defer warnedServers.Unlock()
	if _, ok := warnedServers.set[k]; ok {
		return false
	}
	warnedServers.set[k] = struct{}{}
	runtime.AddCleanup(srv, func(k weak.Pointer[caddyhttp.Server]) {
		warnedServers.Lock()
		delete(warnedServers.set, k)
		warnedServers.Unlock()
	}, k)
	return true
}

// warnIfKeysReachLogs warns, once per server and config load, when one of
// Caddy's logs would write the key header of a request to the server being
// provisioned. It looks only at how the config routes and encodes log
// lines; it writes nothing to them.
func warnIfKeysReachLogs(ctx caddy.Context, logger *zap.Logger) {
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil {
		return // not provisioned inside an HTTP server (unit tests)
	}
	leaking, headers := keyLeaks(ctx, srv)
	if len(leaking) == 0 || !firstWarning(srv) {
		return
	}
	logger.Warn("Caddy's logs will write API keys in full: add a log filter, as Caddyfile.example does",
		zap.String("server", srv.Name()),
		zap.Strings("loggers", leaking),
		zap.Strings("headers", headers),
		zap.Strings("filter_lines", filterLines(headers)),
		zap.String("where", "inside `format filter { }` of the site's `log` block for http.log.access loggers, "+
			"and of the global `log default` block for the others"))
}

// keyLeaks lists the loggers that would write srv's key headers, and those
// headers.
func keyLeaks(ctx caddy.Context, srv *caddyhttp.Server) (leaking, headers []string) {
	logCredentials := srv.Logs != nil && srv.Logs.ShouldLogCredentials
	headers = redactedKeyHeaders(logCredentials)

	type target struct {
		name  string
		level zapcore.Level // the most severe level its request lines use
	}
	var targets []target
	// The access and error logs are named after the server's logger names,
	// as caddyhttp names them: "http.log.access" and "http.log.error", with
	// ".<name>" for each non-empty name. Access lines use INFO, or ERROR for
	// a 5xx; error lines carrying the request use ERROR for a 5xx.
	if srv.Logs != nil {
		for _, n := range loggerSuffixes(srv.Logs) {
			targets = append(targets, target{"http.log.access" + n, zapcore.ErrorLevel})
		}
		for _, n := range loggerSuffixes(srv.Logs) {
			targets = append(targets, target{"http.log.error" + n, zapcore.ErrorLevel})
		}
	} else {
		targets = append(targets, target{"http.log.error", zapcore.ErrorLevel})
	}
	// reverse_proxy logs the request it sends upstream at DEBUG.
	targets = append(targets, target{"http.handlers.reverse_proxy", zapcore.DebugLevel})

	for _, t := range targets {
		core := ctx.Logger(namedLogger(t.name)).Core()
		if core.Enabled(t.level) && len(headersEncodedBy(core, headers)) > 0 {
			leaking = append(leaking, t.name)
		}
	}
	return leaking, headers
}

// loggerSuffixes are the suffixes Caddy appends to "http.log.access" and
// "http.log.error" for a server's requests: "" or "."+name for the default
// logger name and each host's logger names.
func loggerSuffixes(logs *caddyhttp.ServerLogConfig) []string {
	suffix := func(n string) string {
		if n == "" {
			return ""
		}
		return "." + n
	}
	var hosts []string
	for _, names := range logs.LoggerNames {
		for _, n := range names {
			hosts = append(hosts, suffix(n))
		}
	}
	slices.Sort(hosts) // a stable order for the warning
	out := []string{suffix(logs.DefaultLoggerName)}
	for _, s := range hosts {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// namedLogger is a stand-in module whose ID is a logger name: Caddy picks
// the logs a module's logger writes to by its ID, with the same include and
// exclude rules it applies to logger names, so ctx.Logger(namedLogger(n))
// reaches every log a line of logger n can reach (and, where a log includes
// only a sub-logger of n, one more).
type namedLogger string

func (n namedLogger) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: caddy.ModuleID(n), New: func() caddy.Module { return n }}
}

// headersEncodedBy returns those of headers whose values core's encoders
// would write, were a request carrying them logged as Caddy logs requests:
// an object "request" holding an object "headers" holding one array of
// values per header.
//
// It relies on zap's ioCore.With, which clones the encoder and encodes the
// fields at once into that clone, without writing anything: a value whose
// marshaler runs is a value the encoder keeps. Caddy's filter encoder
// replaces or deletes a field before its marshaler runs, whether the filter
// names the header, request>headers or request. A filter that transforms
// values (hash, regexp) runs the marshaler and so counts as writing the
// key: the check cannot see what such a filter keeps, and hash keeps the
// first 4 bytes of the key's plain SHA-256, which is OpenRouter's record
// hash of the key. All the logs a logger reaches are probed at once, whatever
// their levels: when one unfiltered log takes the logger's lines only at a
// level above the one in question, the check warns needlessly; it never
// stays silent when a standard encoder (zap's, Caddy's json, console,
// filter, append, journald) would write the key. A custom log core that
// encodes lazily escapes the check.
func headersEncodedBy(core zapcore.Core, headers []string) []string {
	seen := new(encodedHeaders)
	core.With([]zapcore.Field{zap.Object("request", probeRequest{headers: headers, seen: seen})})
	seen.Lock()
	defer seen.Unlock()
	var out []string
	for _, h := range headers { // in the order given, whatever the cores' order
		if slices.Contains(seen.names, h) {
			out = append(out, h)
		}
	}
	return out
}

// encodedHeaders collects the headers whose values an encoder asked for.
type encodedHeaders struct {
	sync.Mutex
	names []string
}

func (e *encodedHeaders) add(name string) {
	e.Lock()
	defer e.Unlock()
	e.names = append(e.names, name)
}

// probeValue stands for a header's values: an encoder that writes them
// calls MarshalLogArray.
type probeValue struct {
	name string
	seen *encodedHeaders
}

// probeValueText is what a probe writes into the encoder's copy: never a
// key, and never written to any log.
const probeValueText = "openrouter_keys log probe"

func (p probeValue) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	p.seen.add(p.name)
	enc.AppendString(probeValueText)
	return nil
}

type probeHeaders struct {
	names []string
	seen  *encodedHeaders
}

func (p probeHeaders) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for _, n := range p.names {
		if err := enc.AddArray(n, probeValue{name: n, seen: p.seen}); err != nil {
			return err
		}
	}
	return nil
}

type probeRequest struct {
	headers []string
	seen    *encodedHeaders
}

func (p probeRequest) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return enc.AddObject("headers", probeHeaders{names: p.headers, seen: p.seen})
}
