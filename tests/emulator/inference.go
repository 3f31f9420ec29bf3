package emulator

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// ModelIDs are the models the emulator lists.
var ModelIDs = []string{
	"openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet", "anthropic/claude-3-haiku",
	"google/gemini-2.0-flash-001", "meta-llama/llama-3.1-70b-instruct", "mistralai/mistral-large",
	"deepseek/deepseek-chat", "qwen/qwen-2.5-72b-instruct", "x-ai/grok-2",
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		// No auth needed, but a dead credential sent along may still get
		// the 401; a malformed one is ignored.
		if k, msg := s.authenticate(r); k == nil && msg != openrouter.MessageMissingAuthHeader {
			s.writeError(w, r, http.StatusUnauthorized, msg, nil)
			return
		}
	}
	s.writeJSON(w, r, http.StatusOK, openrouter.Data[[]openrouter.ModelListing]{Data: s.catalogueListing()})
}

// Reply is what every emulated completion says, one word per streamed event.
const Reply = "Hello from the OpenRouter emulator."

// Models that make /chat/completions fail the way OpenRouter does.
const (
	ModelNeedsCredits = "emulator/error-402"
	ModelKeyLimit     = "emulator/error-403"
	ModelRateLimited  = "emulator/error-429"
	ModelInBandError  = "emulator/in-band-error"
	// ModelProviderKeyRejected is a model whose provider refuses the
	// user's own provider key (BYOK): a 401 "Provider returned error" with
	// the provider's raw message and a top-level user_id, for a key that
	// OpenRouter accepted.
	ModelProviderKeyRejected = "emulator/byok-401"
)

// providerErrorMetadata is the metadata of a provider's error, members in
// OpenRouter's order.
type providerErrorMetadata struct {
	Raw          string `json:"raw"`
	ProviderName string `json:"provider_name"`
}

// providerKeyRejected is the body of a BYOK provider's 401:
// {"error":{"message":"Provider returned error","code":401,"metadata":{"raw":"invalid x-api-key","provider_name":"Anthropic"}},"user_id":"user_..."}.
func (s *Server) providerKeyRejected() []byte {
	body := openrouter.EnvelopeOpenAI.Body(http.StatusUnauthorized, openrouter.MessageProviderError,
		providerErrorMetadata{Raw: "invalid x-api-key", ProviderName: "Anthropic"})
	userID, _ := json.Marshal(s.userID)
	out := make([]byte, 0, len(body)+len(userID)+12)
	out = append(out, body[:len(body)-1]...) // all but the closing brace
	out = append(out, `,"user_id":`...)
	out = append(out, userID...)
	return append(out, '}')
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, k *Key) {
	req, err := readInference(r)
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, openrouter.MessageInvalidJSON, nil)
		return
	}
	switch req.Model {
	case ModelProviderKeyRejected:
		s.send(w, r, http.StatusUnauthorized, s.providerKeyRejected())
		return
	case ModelNeedsCredits:
		s.writeFixed(w, r, openrouter.CreditsUnscoped(maxCompletionTokens, 1000))
		return
	case ModelKeyLimit:
		s.writeFixed(w, r, openrouter.KeyLimitExceeded(openrouter.WindowMonthly, "", "", openrouter.WordingOld))
		return
	case ModelRateLimited:
		// A fixed reset, so that two answers compare byte for byte.
		b := openrouter.FreePerMinute429(time.UnixMilli(1767225600000))
		b.Header.Set("Retry-After", "3")
		s.writeFixed(w, r, b)
		return
	}
	if !s.admit(w, r, k, &req) || s.serveIn200(w, r, &req) {
		return
	}
	// Fixed, so that the same request answered twice compares byte for byte.
	id, created := "gen-1767225600-emulated", int64(1767225600)
	if !req.Stream {
		s.writeJSON(w, r, http.StatusOK, map[string]any{
			"id": id, "provider": "Emulator", "model": req.Model, "object": "chat.completion", "created": created,
			"choices": []any{map[string]any{"index": 0, "logprobs": nil, "finish_reason": "stop", "native_finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": Reply, "refusal": nil}}},
			"usage": map[string]any{"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
		})
		return
	}
	s.streams.Add(1)
	defer s.streams.Add(-1)
	send := openStream(w, id)
	chunk := func(delta map[string]any, finish any, extra map[string]any) string {
		c := map[string]any{"id": id, "provider": "Emulator", "model": req.Model, "object": "chat.completion.chunk", "created": created,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish, "native_finish_reason": finish, "logprobs": nil}}}
		for k, v := range extra {
			c[k] = v
		}
		b, _ := json.Marshal(c)
		return "data: " + string(b) + "\n\n"
	}
	gap := func() bool { return s.eventGap(r) }
	if !send(": OPENROUTER PROCESSING\n\n") || !gap() || !send(": OPENROUTER PROCESSING\n\n") || !gap() {
		return
	}
	words := strings.SplitAfter(Reply, " ")
	for i, word := range words {
		delta := map[string]any{"content": word}
		if i == 0 {
			delta["role"] = "assistant"
		}
		if !send(chunk(delta, nil, nil)) || !gap() {
			return
		}
		if req.Model == ModelInBandError {
			send(chunk(map[string]any{"content": ""}, "error", map[string]any{"error": map[string]any{"code": 502, "message": openrouter.MessageProviderError}}))
			send("data: [DONE]\n\n")
			return
		}
		if i == 1 && !send(": OPENROUTER PROCESSING\n\n") {
			return
		}
	}
	send(chunk(map[string]any{}, "stop", map[string]any{"usage": map[string]any{"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)}}))
	send("data: [DONE]\n\n")
}

// openStream answers 200 with a stream's headers (the generation id among
// them) and returns send, which writes and flushes one piece of it and
// reports whether the client is still there.
func openStream(w http.ResponseWriter, id string) (send func(string) bool) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Generation-Id", id)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	return func(s string) bool {
		if _, err := io.WriteString(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
}

// eventGap waits EventGap between two events of a stream, and reports
// whether the client is still there.
func (s *Server) eventGap(r *http.Request) bool {
	select {
	case <-r.Context().Done():
		return false
	case <-time.After(s.EventGap):
		return true
	}
}
