package caddymodule

// explainmodels.go owns a held 400, 404 or 500 of an inference request
// that OpenRouter's recogniser calls a model failure (an unknown model, no
// endpoints): its evidence gathered (the catalogue, the request's body,
// the key's GET /models/user), its verdict (modelreasons.go) and the
// rewrite in the upstream's envelope, with X-Should-Retry: false. Only
// inference requests' 400, 404 and 500 are held at all: a 404 of GET
// /models/xyz streams through untouched.

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/errbody"
	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// holdsFailure reports whether the holding writer holds a failure of
// this status other than 401 (with explain_limits): a status a reason
// explains, where 400, 404 and 500 only of an inference request (the
// unknown model's 500 is its form before 2026-08-19).
func holdsFailure(status int, inference bool) bool {
	switch status {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusInternalServerError:
		return inference
	}
	return explainsStatus(status)
}

// modelSuggestions is the suggestion index of the catalogue version last
// asked (one at a time: it is rebuilt when the listed slice changes).
var modelSuggestions suggestIndexes

// explainModel rewrites a held model failure with what the evidence
// shows; one it cannot read passes unchanged, counted.
func (h *Handler) explainModel(hw *heldWriter, r *http.Request, eb *errbody.Body, body []byte, c credential, fp fingerprint) error {
	f, ok := openrouter.ReadModelFailure(hw.heldStatus, body)
	if !ok {
		return h.leave(hw, classUnrecognizedFailure, "")
	}
	asked := ""
	if m := hw.body.model(); openrouter.IsSlug(m) {
		asked = m
	}
	ev := h.modelEvidence(r.Context(), &f, asked, hw.body, c, fp)
	v := modelVerdict(&f, asked, ev)
	if o := eb.Message(); !openrouter.LooksLikeKey(o) {
		v.model.original = o
	}
	h.acct.envelopes.learn(openrouter.FamilyOf(r.URL.Path), eb.Envelope())
	out, ok := rewrite(eb, v)
	if !ok {
		return h.leave(hw, classUneditable, "")
	}
	setModelHeaders(hw.Header())
	err := hw.sendRewritten(out, string(v.reason))
	gatewayMetrics.rewrites.WithLabelValues(string(v.reason)).Inc()
	if ce := h.logger.Check(zapcore.InfoLevel, "explained model failure"); ce != nil {
		ce.Write(zap.Int("status", hw.heldStatus), zap.String("reason", string(v.reason)),
			zap.String("key_fingerprint", fingerprintForLog(c, fp)), zap.String("path", r.URL.Path))
	}
	return err
}

// modelEvidence gathers what a model failure can use, within the limit
// lookup deadline: the catalogue (awaited only when it was never read),
// the request's body for a no-endpoints failure, and the key's GET
// /models/user when nothing else can decide and the catalogue lists the
// model.
func (h *Handler) modelEvidence(ctx context.Context, f *openrouter.ModelFailure, asked string, rb *requestBody, c credential, fp fingerprint) modelEvidence {
	var ev modelEvidence
	k := h.knowledge
	ctx, cancel := context.WithTimeout(ctx, k.limits.timeout)
	defer cancel()
	slug := f.Model
	if slug == "" {
		slug = asked
	}
	cat := h.catalogue
	if cat.await(ctx) {
		ev.asked = catalogueFactsOf(cat, slug)
		if listed := cat.listed(); len(listed) > 0 {
			x := suggestIndexFor(&modelSuggestions, listed, func(m *catalogueModel) string { return m.ID })
			ev.suggest = x.suggest
		}
		paid := f.PaidModel
		if paid == "" {
			paid, _ = strings.CutSuffix(slug, freeSuffix)
		}
		if paid != slug {
			ev.paid = catalogueFactsOf(cat, paid)
		}
	}
	if f.Kind != openrouter.KindNoEndpoints {
		return ev
	}
	switch b := rb.bytes(); {
	case rb == nil:
		// An inference POST without a body asks for nothing.
		ev.req = &requestFilters{}
	case b != nil:
		var supported []string
		if ev.asked.listed {
			supported = ev.asked.supported
		}
		req := analyseRequest(b, supported)
		ev.req = &req
	}
	if f.Filter != openrouter.FilterNone || !ev.asked.listed || !c.isKey() {
		return ev
	}
	if ev.req != nil {
		if _, certain := ev.req.certain(); certain {
			return ev
		}
	}
	ev.guardrail = k.keyAllows(ctx, c.token, fp, slug)
	return ev
}

// catalogueFactsOf is what the catalogue knows of slug.
func catalogueFactsOf(cat *catalogue, slug string) catalogueFacts {
	m, ok := cat.lookup(slug)
	if !ok {
		return catalogueFacts{}
	}
	return catalogueFacts{known: true, listed: m.Listed, lastListed: m.LastSeen, expiration: m.Expiration,
		supported: m.Parameters, prompt: m.PromptPrice, completion: m.CompletionPrice}
}

// keyAllows asks GET /models/user with the client's own key (it is the
// key that failed, and it authenticated: the failure is a 404) whether
// the key may use model: one request per key at a time, under the lookup
// rate, waited for within ctx; what comes later is not kept.
func (k *knowledge) keyAllows(ctx context.Context, key string, fp fingerprint, model string) guardrailAnswer {
	done := k.limits.management.DoChan("models-user\x00"+string(fp[:]), func() (any, error) {
		if !k.lookups.Allow() {
			return nil, errNoBudget
		}
		lctx, cancel := context.WithTimeout(k.life, k.timeout)
		defer cancel()
		ids, res := k.acct.client.ModelsForKey(lctx, key)
		return ids, res.Err
	})
	select {
	case <-ctx.Done():
		return guardrailUnknown
	case r := <-done:
		ids, ok := r.Val.([]string)
		switch {
		case r.Err != nil || !ok:
			return guardrailUnknown
		case slices.Contains(ids, model):
			return guardrailAllows
		}
		return guardrailExcludes
	}
}
