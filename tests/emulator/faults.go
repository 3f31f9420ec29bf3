package emulator

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Fault is how a metadata endpoint misbehaves, for reliability tests.
type Fault int

// The faults an endpoint can be given.
const (
	FaultNone        Fault = iota
	FaultHang              // no answer until the client gives up (or the fault is changed)
	FaultStatus500         // 500 with an HTML body
	FaultReset             // the connection is reset
	FaultInvalidJSON       // 200 with a body that is not JSON
	FaultHugeBody          // 200 with a 10 MB body
	FaultSlowBody          // 200, headers and part of the body, then nothing until the client gives up
	FaultCutBody           // 200 declaring a Content-Length, part of the body, then the connection closes
	Fault404               // 404 in the OpenAI envelope, as a wrong upstream path gives
)

// Faults are every fault, for tests that try each.
var Faults = []Fault{FaultHang, FaultStatus500, FaultReset, FaultInvalidJSON, FaultHugeBody, FaultSlowBody, FaultCutBody, Fault404}

// String names the fault, for test names.
func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "none"
	case FaultHang:
		return "hang"
	case FaultStatus500:
		return "500"
	case FaultReset:
		return "reset"
	case FaultInvalidJSON:
		return "invalid JSON"
	case FaultHugeBody:
		return "huge body"
	case FaultSlowBody:
		return "slow body"
	case FaultCutBody:
		return "cut body"
	case Fault404:
		return "404"
	}
	return "fault " + strconv.Itoa(int(f))
}

// FaultEndpoints are the endpoints SetFault accepts: the templates of
// openrouter.Endpoints ("/key", "/keys", "/keys/{hash}", "/workspaces",
// "/workspaces/{id}/budgets", "/credits", "/models").
var FaultEndpoints = faultEndpoints()

func faultEndpoints() []string {
	var out []string
	for _, e := range openrouter.Endpoints() {
		out = append(out, e.Template())
	}
	return out
}

// SetFault makes an endpoint (one of FaultEndpoints; "/key" includes its
// alias /auth/key) misbehave on every request, before any
// authentication; FaultNone: behave.
func (s *Server) SetFault(endpoint string, f Fault) {
	known := false
	for _, e := range FaultEndpoints {
		known = known || e == endpoint
	}
	if !known {
		panic("emulator: SetFault on " + endpoint + ", not one of " + strings.Join(FaultEndpoints, ", "))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == FaultNone {
		delete(s.faults, endpoint)
	} else {
		s.faults[endpoint] = f
	}
	close(s.faultsChanged)
	s.faultsChanged = make(chan struct{})
}

// stall waits until the client gives up, a fault is set or cleared, or
// stallLimit passes.
func (s *Server) stall(r *http.Request) {
	s.mu.Lock()
	changed := s.faultsChanged
	s.mu.Unlock()
	t := time.NewTimer(stallLimit)
	defer t.Stop()
	select {
	case <-r.Context().Done():
	case <-changed:
	case <-t.C:
	}
}

// SetKeyFault makes GET /key misbehave: SetFault("/key", f).
func (s *Server) SetKeyFault(f Fault) { s.SetFault(openrouter.EndpointKey.Template(), f) }

// stallLimit bounds a stall, so that a test that never gives up still ends.
const stallLimit = time.Minute

// partialBodyLength is what FaultSlowBody and FaultCutBody declare.
const partialBodyLength = 4096

// serveFault answers as the fault f of the endpoint says.
func (s *Server) serveFault(w http.ResponseWriter, r *http.Request, endpoint openrouter.Endpoint, f Fault) {
	h := w.Header()
	switch f {
	case FaultHang:
		s.stall(r)
	case FaultStatus500:
		h.Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "<html><body>Internal Server Error</body></html>")
	case FaultReset:
		closeConnection(w, true)
	case FaultInvalidJSON:
		h.Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"data":{"label":"sk-or-v1-abc...`)
	case FaultHugeBody:
		h.Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"data":{"label":"`)
		chunk := strings.Repeat("a", 64<<10)
		for range 160 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, `"}}`)
	case FaultSlowBody, FaultCutBody:
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(partialBodyLength))
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, partialBody(endpoint))
		if f == FaultCutBody {
			closeConnection(w, false)
			return
		}
		_ = http.NewResponseController(w).Flush()
		s.stall(r)
		// Returning short of the Content-Length closes the connection.
	case Fault404:
		s.send(w, r, http.StatusNotFound, openrouter.EnvelopeOpenAI.Body(http.StatusNotFound, openrouter.MessageNotFound, nil))
	}
}

// partialBody is the start of the endpoint's answer.
func partialBody(endpoint openrouter.Endpoint) string {
	switch endpoint {
	case openrouter.EndpointKeys, openrouter.EndpointWorkspaces, openrouter.EndpointBudgets, openrouter.EndpointModels:
		return `{"data":[{"`
	}
	return `{"data":{"`
}
