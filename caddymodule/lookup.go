package caddymodule

// lookup.go owns how the gateway asks OpenRouter: through package
// openrouter's Client (one method per endpoint, redirects refused, answers
// capped, errors scrubbed of URLs, paths, headers and bodies), made here
// with the hook that counts every request into the gateway's metrics; and
// the short names the gateway's files use for its errors.

import (
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// newMetadataClient is the client of the upstream at base, counting into
// lookups_total and lookup_duration_seconds.
func newMetadataClient(base string) *openrouter.Client {
	return openrouter.NewClient(base, observeLookup)
}

// observeLookup counts one request by endpoint and outcome, and times it
// unless the caller gave up on it.
func observeLookup(e openrouter.Endpoint, o openrouter.Outcome, took time.Duration) {
	if o != openrouter.OutcomeCancelled {
		gatewayMetrics.lookupDuration.WithLabelValues(e.String()).Observe(took.Seconds())
	}
	gatewayMetrics.lookups.WithLabelValues(e.String(), string(o)).Inc()
}

// Endpoints as errors and the "refused" count name them, for lookups the
// gateway did not send.
var (
	endpointKey      = openrouter.EndpointKey.String()
	endpointKeysList = openrouter.EndpointKeys.String()
)

// failure is why a lookup has no usable answer (openrouter.ErrorKind).
type failure = openrouter.ErrorKind

// The failures, by the names the gateway's files use.
const (
	failNone        = openrouter.ErrorNone
	failRefused     = openrouter.ErrorRefused
	failCancelled   = openrouter.ErrorCancelled
	failTimeout     = openrouter.ErrorTimeout
	failUnreachable = openrouter.ErrorUnreachable
	failStatus      = openrouter.ErrorStatus
	failInvalid     = openrouter.ErrorInvalid
	failTooLarge    = openrouter.ErrorTooLarge
)

// failureOf is the kind of a lookup error, failNone for nil.
func failureOf(err error) failure { return openrouter.KindOf(err) }

// publicError is what a visitor may be told about err: what went wrong,
// never where.
func publicError(err error) string { return openrouter.PublicText(err) }

// notAsked is the error of a lookup the gateway did not send, or stopped
// waiting for: what it was for, and why.
func notAsked(what string, why failure) error {
	return &openrouter.Error{Endpoint: what, Kind: why}
}

// keyMetadata is GET /key's answer.
type keyMetadata = openrouter.KeyInfo
