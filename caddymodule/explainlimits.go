package caddymodule

// explainlimits.go owns a held 402, 403 or 429 on its way back: recognised
// (openrouter.Recognise), given its evidence (evidence.go), rewritten with
// its reason (limits.go) or counted unexplained; and the answer the edge
// gives a key whose cap is known spent.

import (
	"net/http"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Classes of 402, 403 and 429 left unchanged, beside the 401 classes that
// apply to any held body (encoding, not_json, too_large, uneditable).
const (
	// classUnrecognizedFailure: a 402, 403 or 429 whose wording is not
	// known.
	classUnrecognizedFailure = "unrecognized_failure"
	// classNotKeyPrefix + the openrouter.Class: content, moderation,
	// region, context-length or routing failures, not about the key.
	classNotKeyPrefix = "not_key_"
)

// explainLimit rewrites a held 402, 403 or 429 that is a key or account
// failure with what it means and the evidence gathered within the
// failure's deadline; any other passes unchanged, counted by class.
func (h *Handler) explainLimit(hw *heldWriter, r *http.Request, c credential, fp fingerprint, start time.Time) error {
	eb, body, class := h.parseHeld(hw)
	if eb == nil {
		return h.leave(hw, unexplainedClass(hw.heldStatus, class), "")
	}
	f := openrouter.Recognise(hw.heldStatus, body, hw.Header())
	if openrouter.IsModelKind(f.Kind) {
		return h.explainModel(hw, r, eb, body, c, fp)
	}
	switch f.Kind {
	case openrouter.KindNotKey:
		return h.leave(hw, classNotKeyPrefix+string(f.Class), "")
	case openrouter.KindUnrecognised:
		return h.leave(hw, unexplainedClass(hw.heldStatus, classUnrecognizedFailure), "")
	}
	if f.RecordHash != "" && c.isKey() && f.RecordHash.Matches(c.token) {
		// The key's record hash is sha256 of the key: the account's hash
		// scheme is proven, as by a record found by hash. The hash itself
		// goes nowhere but back to this client, inside its body.
		h.acct.proveScheme()
	}
	ev := h.knowledge.limitEvidence(r.Context(), c, fp, f.Kind, start)
	v := limitVerdict(&f, ev, start)
	if !v.known() {
		return h.leave(hw, classUnrecognizedFailure, "")
	}
	v.limit.original = eb.Message()
	// The upstream's envelope for this family, as an edge answer there
	// (a capped key's) takes it.
	h.acct.envelopes.learn(openrouter.FamilyOf(r.URL.Path), eb.Envelope())
	if v.reason == reasonKeyLimitReached && c.isKey() {
		h.knowledge.capReached(fp, v.limit, start)
	}
	out, ok := rewrite(eb, v)
	if !ok {
		return h.leave(hw, classUneditable, "")
	}
	setLimitHeaders(hw.Header(), v)
	err := hw.sendRewritten(out, string(v.reason))
	gatewayMetrics.rewrites.WithLabelValues(string(v.reason)).Inc()
	if ce := h.logger.Check(zapcore.InfoLevel, "explained key or account failure"); ce != nil {
		ce.Write(zap.Int("status", hw.heldStatus), zap.String("reason", string(v.reason)),
			zap.String("key_fingerprint", fingerprintForLog(c, fp)), zap.String("path", r.URL.Path))
	}
	return err
}

// limitEdgeBody is the edge's answer to a key whose cap is known spent:
// OpenRouter's key-limit 403 in the family's envelope, explained as the
// upstream's would have been, with figures from the key's fresh GET /key
// when there is one.
func (h *Handler) limitEdgeBody(family openrouter.Family, v verdict, fp fingerprint) []byte {
	now := h.knowledge.now()
	if md := h.knowledge.limits.known(fp, now); md != nil {
		f := openrouter.Failure{Kind: openrouter.KindKeyCapSpent, Window: v.limit.window}
		resetsAt, never := v.limit.resetsAt, v.limit.neverResets
		keyCapFacts(v.limit, &f, md, now)
		v.limit.resetsAt, v.limit.neverResets = resetsAt, never
	}
	return keyLimitEdgeBody(h.acct.envelopes.forFamily(family), v)
}

// spendsCredits reports whether a request can be refused for a spent cap:
// inference (a POST to a model endpoint). A capped key still reads its own
// GET /key, the model list and the management endpoints, so those are
// never answered at the edge for a cap.
func spendsCredits(r *http.Request) bool {
	return r.Method == http.MethodPost && !openrouter.IsManagementPath(r.URL.Path)
}

// capReached records that OpenRouter refused the key for its spent cap,
// for the edge (edge_capped_for).
func (k *knowledge) capReached(fp fingerprint, facts *limitFacts, now time.Time) {
	k.cache.update(fp, now, func(st *keyState, _ bool) bool {
		st.capReached(now, facts.window, facts.resetsAt)
		return true
	})
}
