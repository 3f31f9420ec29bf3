package caddymodule

// retirement.go owns the warning before a model retires
// (warn_model_retirement): a request that succeeds on a model whose
// expiration_date (catalogue.go) falls within the window gets
// X-OpenRouter-Model-Expires-At naming the date, the model is logged at
// most once a day, counted on the retiring-model metrics (bounded labels),
// and remembered for the key that used it, for the key check. Nothing of
// it runs unless the catalogue lists a retiring model, and the request's
// model is read from the kept start of its body (reqbody.go), never ahead
// of the upstream.

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Defaults and bounds of the retirement warning.
const (
	// DefaultWarnModelRetirement is how long before its expiration_date
	// a model in use is warned about.
	DefaultWarnModelRetirement = 14 * 24 * time.Hour
	// WarnModelRetirementOff turns the warning off.
	WarnModelRetirementOff = "off"
	// maxRetiringModelSeries is the most models the metrics name; the
	// rest are counted as "other".
	maxRetiringModelSeries = 100
	// retiringModelOther is the label of the models past that bound.
	retiringModelOther = "other"
	// maxKeysWithRetiringModels and maxRetiringModelsPerKey bound what is
	// remembered of which key used which retiring model.
	maxKeysWithRetiringModels = 10_000
	maxRetiringModelsPerKey   = 8
	// HeaderModelExpiresAt names a retiring model's expiration_date.
	HeaderModelExpiresAt = "X-OpenRouter-Model-Expires-At"
)

// retiringSeries are the model labels the metrics use, shared by every
// handler (the metrics are).
var retiringSeries = struct {
	sync.Mutex
	models map[string]struct{}
}{models: make(map[string]struct{})}

// seriesLabel is the label of model: itself while fewer than
// maxRetiringModelSeries models are named, "other" after.
func seriesLabel(model string) string {
	retiringSeries.Lock()
	defer retiringSeries.Unlock()
	if _, ok := retiringSeries.models[model]; ok {
		return model
	}
	if len(retiringSeries.models) >= maxRetiringModelSeries {
		return retiringModelOther
	}
	retiringSeries.models[model] = struct{}{}
	return model
}

// parseWarnModelRetirement reads warn_model_retirement: "" is the default,
// "off" and "0" are off (0), anything else a duration.
func parseWarnModelRetirement(s string) (time.Duration, error) {
	switch s {
	case "":
		return DefaultWarnModelRetirement, nil
	case WarnModelRetirementOff, "0":
		return 0, nil
	}
	d, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("warn_model_retirement: %q is not a duration such as 14d, or off", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("warn_model_retirement: must not be negative, got %s", d)
	}
	return d, nil
}

// modelRetirement warns about the retiring models a gateway's requests use.
type modelRetirement struct {
	catalogue *catalogue
	window    time.Duration
	// windowSecs is window in whole seconds, rounded down, and one more:
	// watches' cheap test, which may watch a second early.
	windowSecs int64
	logger     *zap.Logger

	mu sync.Mutex
	// loggedDay is the UTC day logged holds models logged on.
	loggedDay time.Time
	logged    map[string]struct{}
	// byKey are the retiring models each key used, by fingerprint (never
	// the key), bounded by the constants above; order is the keys in the
	// order they were first recorded, for eviction.
	byKey map[fingerprint][]string
	order []fingerprint
}

func newModelRetirement(cat *catalogue, window time.Duration, logger *zap.Logger) *modelRetirement {
	return &modelRetirement{catalogue: cat, window: window, windowSecs: int64(window/time.Second) + 1, logger: logger,
		logged: make(map[string]struct{}), byKey: make(map[fingerprint][]string)}
}

// watches reports whether a request at now may be on a retiring model:
// the warning is on and the catalogue lists a model whose expiration date
// is within the window. It is all a request costs while none is.
func (m *modelRetirement) watches(now time.Time) bool {
	if m == nil {
		return false
	}
	s := m.catalogue.snap.Load()
	// In whole seconds, a second generous: soon decides exactly.
	return s != nil && s.retiring && s.soonestUnix-now.Unix() <= m.windowSecs
}

// retiring is what the catalogue knows of the model a request named, when
// it retires within the window: the exact id, or the id without its
// variant (":free", ":nitro", ...).
func (m *modelRetirement) retiring(model string, now time.Time) (catalogueModel, bool) {
	if model == "" {
		return catalogueModel{}, false
	}
	cm, ok := m.catalogue.lookup(model)
	if !ok {
		if base, _, cut := strings.Cut(model, ":"); cut {
			cm, ok = m.catalogue.lookup(base)
		}
	}
	if !ok || m.soon(&cm, now) == nil {
		return catalogueModel{}, false
	}
	return cm, true
}

// retiringBytes is retiring for a name read from a request's body, the
// model in the catalogue's snapshot (do not modify) or nil: only the
// models with an expiration date are compared with it (a few, where the
// catalogue has hundreds), without hashing or copying it; with unusually
// many, it is looked up.
func (m *modelRetirement) retiringBytes(model []byte, now time.Time) *catalogueModel {
	s := m.catalogue.snapshot()
	if len(model) == 0 || s == nil {
		return nil
	}
	if len(s.expiring) > maxComparedExpiring {
		if cm, ok := m.retiring(string(model), now); ok {
			return &cm
		}
		return nil
	}
	base := model
	if i := bytes.IndexByte(model, ':'); i >= 0 {
		base = model[:i]
	}
	var variant *catalogueModel // the model without its variant, if that retires
	for _, i := range s.expiring {
		switch cm := &s.models[i]; {
		case string(model) == cm.ID:
			return m.soon(cm, now)
		case len(base) < len(model) && string(base) == cm.ID:
			variant = cm
		}
	}
	if variant == nil {
		return nil
	}
	if _, exact := s.index[string(model)]; exact {
		return nil // the variant is listed, and does not retire
	}
	return m.soon(variant, now)
}

// soon is cm if it retires within the window, else nil.
func (m *modelRetirement) soon(cm *catalogueModel, now time.Time) *catalogueModel {
	if cm.Expiration.IsZero() || cm.Expiration.Sub(now) > m.window {
		return nil
	}
	return cm
}

// maxComparedExpiring is the most models with an expiration date that
// retiringBytes compares one by one.
const maxComparedExpiring = 64

// announce adds the expiration header to a successful response on a
// retiring model, and counts, logs and records its use, as of now (the
// request's start: the window is days long).
func (m *modelRetirement) announce(h http.Header, rb *requestBody, fp fingerprint, c credential, now time.Time) {
	var cm *catalogueModel
	if raw, plain := rb.modelBytes(); plain {
		cm = m.retiringBytes(raw, now)
	} else if named, ok := m.retiring(rb.model(), now); ok {
		cm = &named
	}
	if cm == nil {
		return
	}
	date := cm.Expiration.Format(openrouter.ExpirationLayout)
	h.Set(HeaderModelExpiresAt, date)
	label := seriesLabel(cm.ID)
	gatewayMetrics.retiringModelRequests.WithLabelValues(label).Inc()
	if label != retiringModelOther {
		gatewayMetrics.retiringModelExpiry.WithLabelValues(label).Set(float64(cm.Expiration.Unix()))
	}
	first := m.note(cm.ID, fp, c.isKey(), now)
	if first {
		if ce := m.logger.Check(zapcore.WarnLevel, "model in use retires soon"); ce != nil {
			ce.Write(zap.String("model", cm.ID), zap.String("expiration_date", date),
				zap.Duration("expires_in", cm.Expiration.Sub(now).Round(time.Second)),
				zap.String("key_fingerprint", fingerprintForLog(c, fp)))
		}
	}
}

// note records that the key with fingerprint fp (when isKey) used the
// retiring model id, and reports whether id was not yet logged today.
func (m *modelRetirement) note(id string, fp fingerprint, isKey bool, now time.Time) bool {
	day := now.UTC().Truncate(24 * time.Hour)
	m.mu.Lock()
	defer m.mu.Unlock()
	if isKey {
		used, known := m.byKey[fp]
		if !slices.Contains(used, id) {
			if !known {
				if len(m.order) >= maxKeysWithRetiringModels {
					delete(m.byKey, m.order[0])
					m.order = m.order[1:]
				}
				m.order = append(m.order, fp)
			}
			if len(used) >= maxRetiringModelsPerKey {
				used = used[1:]
			}
			m.byKey[fp] = append(slices.Clip(used), id)
		}
	}
	if !day.Equal(m.loggedDay) {
		m.loggedDay = day
		clear(m.logged)
	}
	if _, ok := m.logged[id]; ok || len(m.logged) >= maxRetiringModelSeries {
		return false
	}
	m.logged[id] = struct{}{}
	return true
}

// usedBy is what the catalogue knows now of the retiring models the key
// with fingerprint fp used through this gateway, those that still retire
// within the window.
func (m *modelRetirement) usedBy(fp fingerprint, now time.Time) []catalogueModel {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	ids := slices.Clone(m.byKey[fp])
	m.mu.Unlock()
	var out []catalogueModel
	for _, id := range ids {
		if cm, ok := m.retiring(id, now); ok {
			out = append(out, cm)
		}
	}
	return out
}

// retiringModelReport is a retiring model a key used, in the key check's
// report.
type retiringModelReport struct {
	ID             string `json:"id"`
	ExpirationDate string `json:"expiration_date"` // YYYY-MM-DD
}

// retiringModelsUsedBy is what the account's gateways saw the key with
// fingerprint fp use of models that retire within their window, soonest
// first.
func (a *account) retiringModelsUsedBy(fp fingerprint, now time.Time) []retiringModelReport {
	var models []catalogueModel
	for _, g := range a.linked() {
		for _, m := range g.retirement.usedBy(fp, now) {
			if !slices.ContainsFunc(models, func(o catalogueModel) bool { return o.ID == m.ID }) {
				models = append(models, m)
			}
		}
	}
	slices.SortFunc(models, func(x, y catalogueModel) int { return x.Expiration.Compare(y.Expiration) })
	var out []retiringModelReport
	for _, m := range models {
		out = append(out, retiringModelReport{ID: m.ID, ExpirationDate: m.Expiration.Format(openrouter.ExpirationLayout)})
	}
	return out
}
