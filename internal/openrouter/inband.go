package openrouter

// inband.go owns the failures OpenRouter sends inside an HTTP 200 (issue
// 26, item 4): what each of the four forms looks like on the wire, how one
// event or body is recognised as one of them, the bounded names (provider,
// error type) a recognised failure is reported under, and the builders the
// emulator serves them with.
//
// The four forms (openrouter-facts.md, "Errors inside HTTP 200"):
//  1. a stream chunk with a top-level "error" and finish_reason "error",
//     after which the stream ends (InBandStreamError);
//  2. a stream chunk with empty (or no) choices and an "error"
//     (InBandNoChoices);
//  3. a benign finish_reason with native_finish_reason "error" or
//     "network_error" and empty content, streamed or not (InBandNativeError);
//  4. a non-streaming 200 whose whole body is an error:
//     {"id":"gen-...","error":{"message":...,"code":503,"metadata":{"error_type":...}}}
//     (InBandBody).

import (
	"bytes"
	"encoding/json"
	"strings"
)

// InBandForm is which of the four forms a failure inside a 200 took.
type InBandForm uint8

// The forms, in the order of the facts sheet.
const (
	InBandNone InBandForm = iota
	InBandStreamError
	InBandNoChoices
	InBandNativeError
	InBandBody
)

// String is the form's metric label value.
func (f InBandForm) String() string {
	switch f {
	case InBandStreamError:
		return "stream_error"
	case InBandNoChoices:
		return "stream_error_no_choices"
	case InBandNativeError:
		return "native_finish_error"
	case InBandBody:
		return "body_error"
	}
	return "none"
}

// The native finish reasons that say a provider failed.
const (
	NativeFinishError        = "error"
	NativeFinishNetworkError = "network_error"
	finishReasonError        = "error"
)

// Error types OpenRouter puts in error.metadata.error_type. The first two
// are captured in bodies of the real API; the others are the types its
// docs and SDK name for provider failures. Anything else is reported as
// ErrorTypeOther, a failure without one as ErrorTypeNone: the error_type
// comes from the upstream's body and must not grow a metric's label set.
const (
	ErrorTypeRateLimitExceeded  = "rate_limit_exceeded"
	ErrorTypeProviderOverloaded = "provider_overloaded"
	ErrorTypeProviderError      = "provider_error"
	ErrorTypeServerError        = "server_error"
	ErrorTypeTimeout            = "timeout"
	ErrorTypeContextLength      = "context_length_exceeded"
	ErrorTypeContentFilter      = "content_filter"
	ErrorTypeInvalidRequest     = "invalid_request"
	// ErrorTypeNetwork is a native_finish_reason "network_error" (form 3
	// names no error_type).
	ErrorTypeNetwork = "network_error"
	ErrorTypeOther   = "other"
	ErrorTypeNone    = "none"
)

var knownErrorTypes = map[string]bool{
	ErrorTypeRateLimitExceeded: true, ErrorTypeProviderOverloaded: true, ErrorTypeProviderError: true,
	ErrorTypeServerError: true, ErrorTypeTimeout: true, ErrorTypeContextLength: true,
	ErrorTypeContentFilter: true, ErrorTypeInvalidRequest: true, ErrorTypeNetwork: true,
}

// ProviderOther is the provider label of a provider not in KnownProviders,
// and of a failure that names none.
const ProviderOther = "other"

// KnownProviders are the inference providers OpenRouter routes to, by the
// name it gives them in a chunk's "provider" member and in "Upstream error
// from <name>:". A failure's provider is one of these or ProviderOther, so
// that a hostile or renamed provider string cannot grow a label set.
var KnownProviders = []string{
	"AI21", "AionLabs", "Alibaba", "Amazon Bedrock", "Anthropic", "AtlasCloud", "Avian", "Azure",
	"Baseten", "Cerebras", "Chutes", "Cloudflare", "Cohere", "Crucible", "Crusoe", "DeepInfra",
	"DeepSeek", "Featherless", "Fireworks", "Friendli", "GMICloud", "Google", "Google AI Studio",
	"Groq", "Hyperbolic", "Inception", "Inference.net", "Infermatic", "Inflection", "Lambda",
	"Liquid", "Mancer", "Minimax", "Mistral", "Moonshot AI", "Morph", "NCompass", "Nebius",
	"NextBit", "Novita", "Nvidia", "OpenAI", "Parasail", "Perplexity", "Phala", "SambaNova",
	"SiliconFlow", "Targon", "Together", "Venice", "xAI", "Z.AI",
}

var providerByLower = func() map[string]string {
	m := make(map[string]string, len(KnownProviders))
	for _, p := range KnownProviders {
		m[strings.ToLower(p)] = p
	}
	return m
}()

// ProviderLabel is name as one of KnownProviders (matched without regard
// to case), or ProviderOther.
func ProviderLabel(name string) string {
	if len(name) > 40 {
		return ProviderOther
	}
	if p, ok := providerByLower[strings.ToLower(strings.TrimSpace(name))]; ok {
		return p
	}
	return ProviderOther
}

// ErrorTypeLabel is t if it is a known error type, ErrorTypeNone when
// empty, ErrorTypeOther otherwise.
func ErrorTypeLabel(t string) string {
	switch {
	case t == "":
		return ErrorTypeNone
	case knownErrorTypes[t]:
		return t
	}
	return ErrorTypeOther
}

// upstreamErrorPrefix starts the message of a failure OpenRouter relays
// from a provider: "Upstream error from Nvidia: Service temporarily
// overloaded".
const upstreamErrorPrefix = "Upstream error from "

// UpstreamErrorMessage is the message of a provider's failure relayed by
// OpenRouter.
func UpstreamErrorMessage(provider, what string) string {
	return upstreamErrorPrefix + provider + ": " + what
}

// InBandFailure is a recognised failure inside a 200. Provider and
// ErrorType are bounded label values (ProviderLabel, ErrorTypeLabel);
// GenerationID and Message are the upstream's, unchecked: whoever logs
// them must bound and redact them.
type InBandFailure struct {
	Form         InBandForm
	Provider     string
	ErrorType    string
	Code         int // the error's code; 0 when it has none or it is not a number
	Message      string
	GenerationID string
}

// inBandWire is what an event or a body may carry of a failure.
type inBandWire struct {
	ID       string          `json:"id"`
	Provider string          `json:"provider"`
	Error    json.RawMessage `json:"error"`
	Choices  []struct {
		FinishReason       *string `json:"finish_reason"`
		NativeFinishReason *string `json:"native_finish_reason"`
		Delta              *struct {
			Content   *string         `json:"content"`
			ToolCalls json.RawMessage `json:"tool_calls"`
		} `json:"delta"`
		Message *struct {
			Content   *string         `json:"content"`
			ToolCalls json.RawMessage `json:"tool_calls"`
		} `json:"message"`
	} `json:"choices"`
}

type inBandError struct {
	Message  string          `json:"message"`
	Code     json.RawMessage `json:"code"`
	Metadata struct {
		ErrorType    string `json:"error_type"`
		ProviderName string `json:"provider_name"`
	} `json:"metadata"`
	// Some docs put error_type in the error itself.
	ErrorType string `json:"error_type"`
}

// RecogniseInBandEvent says whether one server-sent event's data (the JSON
// after "data:") is a failure (forms 1 to 3). Data that is not a JSON
// object, [DONE] included, is none.
func RecogniseInBandEvent(data []byte) (InBandFailure, bool) {
	return recogniseInBand(data, true)
}

// RecogniseInBandBody says whether a whole non-streaming 200 body is a
// failure: an error (form 4) or an empty success whose provider failed
// (form 3).
func RecogniseInBandBody(body []byte) (InBandFailure, bool) {
	return recogniseInBand(body, false)
}

func recogniseInBand(data []byte, stream bool) (InBandFailure, bool) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return InBandFailure{}, false
	}
	var w inBandWire
	if json.Unmarshal(data, &w) != nil {
		return InBandFailure{}, false
	}
	f := InBandFailure{GenerationID: w.ID, Provider: ProviderLabel(w.Provider), ErrorType: ErrorTypeNone}
	if e := bytes.TrimSpace(w.Error); len(e) > 0 && e[0] == '{' {
		var eo inBandError
		if json.Unmarshal(e, &eo) != nil {
			return InBandFailure{}, false
		}
		f.Message = eo.Message
		et := eo.Metadata.ErrorType
		if et == "" {
			et = eo.ErrorType
		}
		f.ErrorType = ErrorTypeLabel(et)
		var code float64
		if json.Unmarshal(eo.Code, &code) == nil && code >= 100 && code <= 599 && code == float64(int(code)) {
			f.Code = int(code)
		}
		if f.Provider == ProviderOther {
			f.Provider = ProviderLabel(eo.Metadata.ProviderName)
		}
		if f.Provider == ProviderOther {
			if rest, ok := strings.CutPrefix(eo.Message, upstreamErrorPrefix); ok {
				name, _, _ := strings.Cut(rest, ":")
				f.Provider = ProviderLabel(name)
			}
		}
		switch {
		case !stream:
			f.Form = InBandBody
		case len(w.Choices) == 0:
			f.Form = InBandNoChoices
		default:
			f.Form = InBandStreamError
		}
		return f, true
	}
	for _, c := range w.Choices {
		if c.NativeFinishReason == nil || c.FinishReason == nil || *c.FinishReason == finishReasonError {
			continue
		}
		native := *c.NativeFinishReason
		if native != NativeFinishError && native != NativeFinishNetworkError {
			continue
		}
		// Empty content: nothing but an empty string (or null) and no
		// tool call in the chunk (or the message).
		content, tools := (*string)(nil), json.RawMessage(nil)
		if stream && c.Delta != nil {
			content, tools = c.Delta.Content, c.Delta.ToolCalls
		} else if !stream && c.Message != nil {
			content, tools = c.Message.Content, c.Message.ToolCalls
		}
		if content != nil && *content != "" || len(tools) > 0 && !bytes.Equal(tools, []byte("null")) && !bytes.Equal(tools, []byte("[]")) {
			continue
		}
		f.Form = InBandNativeError
		if native == NativeFinishNetworkError {
			f.ErrorType = ErrorTypeNetwork
		}
		return f, true
	}
	return InBandFailure{}, false
}

// InBandErrorObject is the error of a failure inside a 200, members in
// OpenRouter's order.
type InBandErrorObject struct {
	Message  string         `json:"message"`
	Code     int            `json:"code"`
	Metadata InBandMetadata `json:"metadata"`
}

// InBandMetadata is an in-band error's metadata.
type InBandMetadata struct {
	ErrorType string `json:"error_type"`
}

// InBandErrorBody is form 4, a non-streaming 200 whose whole body is an
// error: {"id":"gen-...","error":{"message":...,"code":503,"metadata":{"error_type":...}}}.
func InBandErrorBody(id string, e InBandErrorObject) []byte {
	b, _ := json.Marshal(struct {
		ID    string            `json:"id"`
		Error InBandErrorObject `json:"error"`
	}{id, e})
	return b
}
