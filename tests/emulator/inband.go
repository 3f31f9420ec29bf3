package emulator

// inband.go serves the four failures OpenRouter sends inside an HTTP 200
// (openrouter-facts.md, "Errors inside HTTP 200"), one model each: a
// stream that fails after a few words with an error chunk (finish_reason
// "error"), a stream whose error chunk has no choices, an empty success
// whose provider failed (native_finish_reason "error", streamed or not),
// and a non-streaming 200 whose whole body is an error. The failing
// provider is Nvidia, as in the captured body.

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// Models whose 200 carries a failure.
const (
	// ModelIn200StreamError streams two words, then an error chunk
	// (code 429, error_type rate_limit_exceeded, finish_reason "error"),
	// and ends. Not streaming, it answers as ModelIn200Body.
	ModelIn200StreamError = "emulator/in200-stream-error"
	// ModelIn200NoChoices streams two words, then an error chunk with
	// empty choices (code 502, provider_error).
	ModelIn200NoChoices = "emulator/in200-no-choices"
	// ModelIn200NativeError ends with finish_reason "stop",
	// native_finish_reason "error" and no content, streamed or not.
	ModelIn200NativeError = "emulator/in200-native-error"
	// ModelIn200Body answers a non-streaming request with a 200 whose
	// body is an error (code 503, provider_overloaded).
	ModelIn200Body = "emulator/in200-body"
)

// in200Provider is the provider named by the in-200 failures.
const in200Provider = "Nvidia"

// in200ID is the generation id of the in-200 failures.
const in200ID = "gen-1767225600-in200"

// serveIn200 answers the models of this file, and reports whether it did.
func (s *Server) serveIn200(w http.ResponseWriter, r *http.Request, req *inferenceRequest) bool {
	id := in200ID
	overloaded := openrouter.InBandErrorObject{Message: openrouter.UpstreamErrorMessage(in200Provider, "Service temporarily overloaded"),
		Code: http.StatusServiceUnavailable, Metadata: openrouter.InBandMetadata{ErrorType: openrouter.ErrorTypeProviderOverloaded}}
	switch req.Model {
	case ModelIn200StreamError, ModelIn200NoChoices:
		if !req.Stream {
			s.send(w, r, http.StatusOK, openrouter.InBandErrorBody(id, overloaded))
			return true
		}
		var fail map[string]any
		if req.Model == ModelIn200StreamError {
			e := openrouter.InBandErrorObject{Message: openrouter.UpstreamErrorMessage(in200Provider, "Rate limit exceeded"),
				Code: http.StatusTooManyRequests, Metadata: openrouter.InBandMetadata{ErrorType: openrouter.ErrorTypeRateLimitExceeded}}
			fail = in200Chunk(id, req.Model, []any{in200Choice("delta", "", "error", "error")})
			fail["error"] = e
		} else {
			e := openrouter.InBandErrorObject{Message: openrouter.MessageProviderError,
				Code: http.StatusBadGateway, Metadata: openrouter.InBandMetadata{ErrorType: openrouter.ErrorTypeProviderError}}
			fail = in200Chunk(id, req.Model, []any{})
			fail["error"] = e
		}
		s.streamIn200(w, r, id, req.Model, fail)
	case ModelIn200NativeError:
		if !req.Stream {
			body := in200Chunk(id, req.Model, []any{in200Choice("message", "", "stop", openrouter.NativeFinishError)})
			body["object"] = "chat.completion"
			s.writeJSON(w, r, http.StatusOK, body)
			return true
		}
		s.streamIn200(w, r, id, req.Model, in200Chunk(id, req.Model, []any{in200Choice("delta", "", "stop", openrouter.NativeFinishError)}))
	case ModelIn200Body:
		s.send(w, r, http.StatusOK, openrouter.InBandErrorBody(id, overloaded))
	default:
		return false
	}
	return true
}

// in200Chunk is a chunk of the failing provider.
func in200Chunk(id, model string, choices []any) map[string]any {
	return map[string]any{"id": id, "provider": in200Provider, "model": model, "object": "chat.completion.chunk",
		"created": 1767225600, "choices": choices}
}

// in200Choice is a choice with content (in "delta" or "message") and its
// finish reasons.
func in200Choice(member, content, finish, native string) map[string]any {
	return map[string]any{"index": 0, member: map[string]any{"role": "assistant", "content": content},
		"finish_reason": finish, "native_finish_reason": native, "logprobs": nil}
}

// streamIn200 streams keep-alive comments and two words of the reply
// (none for an empty success), then fail, then [DONE], each flushed.
func (s *Server) streamIn200(w http.ResponseWriter, r *http.Request, id, model string, fail map[string]any) {
	send := openStream(w, id)
	data := func(v any) string {
		b, _ := json.Marshal(v)
		return "data: " + string(b) + "\n\n"
	}
	gap := func() bool { return s.eventGap(r) }
	if !send(": OPENROUTER PROCESSING\n\n") || !gap() {
		return
	}
	if model != ModelIn200NativeError {
		for _, word := range strings.SplitAfter(Reply, " ")[:2] {
			c := in200Chunk(id, model, []any{map[string]any{"index": 0, "delta": map[string]any{"content": word}, "finish_reason": nil, "native_finish_reason": nil}})
			if !send(data(c)) || !gap() {
				return
			}
		}
	}
	if send(data(fail)) {
		send("data: [DONE]\n\n")
	}
}
