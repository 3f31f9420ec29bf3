package caddymodule

import (
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// edgePolicy is which dead keys the gateway answers itself.
type edgePolicy struct {
	dead        bool          // expired keys, and briefly disabled ones
	malformed   bool          // tokens that are no OpenRouter key
	skew        time.Duration // how long past expiry before answering
	disabledFor time.Duration // how long after "disabled" was learned
}

// edgeVerdict is what the gateway may answer itself, without asking the
// upstream: a key past its expiry by more than the skew margin (an expiry
// never changes), or a key the management API reported disabled moments
// ago. Keys that are merely unknown always go upstream.
func (h *Handler) edgeVerdict(st keyState, now time.Time) verdict {
	if !h.edge.dead {
		return verdict{}
	}
	if st.has(flagHasExpiry) && now.Add(-h.edge.skew).Unix() >= st.expiresAt {
		return verdict{reason: reasonExpired, expiresAt: st.expiry()}
	}
	if st.has(flagDisabled) && now.UnixNano()-st.verdictAt < int64(h.edge.disabledFor) {
		return verdict{reason: reasonDisabled}
	}
	return verdict{}
}

// answerAtEdge answers a dead key without calling the upstream, with the
// body the rewrite would have produced in the endpoint's own envelope.
func (h *Handler) answerAtEdge(w http.ResponseWriter, r *http.Request, v verdict, fp fingerprint) error {
	out := upstreamShape(r.URL.Path).rewrite(v)
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(out)))
	hdr.Set("X-OpenRouter-Key-Status", string(v.reason))
	hdr.Set("X-OpenRouter-Keys-Answer", "edge")
	w.WriteHeader(http.StatusUnauthorized)
	_, err := w.Write(out)
	gatewayMetrics.edgeAnswers.WithLabelValues(string(v.reason)).Inc()
	if c := h.logger.Check(zapcore.DebugLevel, "answered dead key at the edge"); c != nil {
		c.Write(zap.String("reason", string(v.reason)), zap.String("key_fingerprint", fingerprintForLog(fp, v.reason != reasonMalformed)))
	}
	return err
}
