package caddymodule

// envelope.go owns which error envelope an answer uses: the one the
// upstream was last seen to use for a 401, or a key or account failure it
// explained, on the same endpoint family, or, before any was seen, the
// family's documented default. An envelope's error_type (the /responses
// docs example) is internal/openrouter's, by status.

import (
	"sync/atomic"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// envelopes remembers, per endpoint family, the envelope of the last 401
// (or explained key or account failure) the upstream sent. The zero value
// knows nothing and answers defaults.
type envelopes struct {
	// seen holds envelope+1 per family; 0 is "none seen".
	seen [openrouter.Families]atomic.Uint32
}

// learn records the envelope of a failure the upstream sent on family f.
func (l *envelopes) learn(f openrouter.Family, e openrouter.Envelope) {
	l.seen[f].Store(uint32(e) + 1)
}

// forFamily is the envelope an answer on family f uses.
func (l *envelopes) forFamily(f openrouter.Family) openrouter.Envelope {
	if v := l.seen[f].Load(); v != 0 {
		return openrouter.Envelope(v - 1)
	}
	return openrouter.DefaultEnvelope(f)
}

// refusalBodies are OpenRouter's "User not found." 401 in each envelope,
// parsed once: an answer given at the edge is that body, rewritten as the
// upstream's own would have been.
var refusalBodies = func() []*errbody.Body {
	all := []openrouter.Envelope{openrouter.EnvelopeOpenAI, openrouter.EnvelopeFlat, openrouter.EnvelopeMessages, openrouter.EnvelopeResponsesDocs}
	out := make([]*errbody.Body, len(all))
	for _, e := range all {
		eb, ok := errbody.Parse(e.Body(401, openrouter.MessageUserNotFound, nil))
		if !ok {
			panic("unparsable refusal body in envelope " + string(rune('0'+e)))
		}
		out[e] = eb
	}
	return out
}()

// edgeBody is the body of an answer given at the edge in envelope e.
func edgeBody(e openrouter.Envelope, v verdict) []byte {
	out, ok := rewrite(refusalBodies[e], v)
	if !ok {
		panic("OpenRouter's own refusal body is always editable")
	}
	return out
}
