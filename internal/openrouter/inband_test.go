package openrouter

import (
	"strings"
	"testing"
)

// The four forms as captured (openrouter-facts.md), and what is not one.
func TestRecogniseInBand(t *testing.T) {
	for _, c := range []struct {
		name   string
		stream bool
		data   string
		want   InBandFailure
		ok     bool
	}{
		{"error chunk", true,
			`{"id":"gen-1","provider":"Nvidia","object":"chat.completion.chunk","error":{"code":429,"message":"Rate limit exceeded","metadata":{"error_type":"rate_limit_exceeded"}},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}`,
			InBandFailure{Form: InBandStreamError, Provider: "Nvidia", ErrorType: "rate_limit_exceeded", Code: 429, Message: "Rate limit exceeded", GenerationID: "gen-1"}, true},
		{"error chunk, no choices", true,
			`{"id":"gen-2","provider":"groq","choices":[],"error":{"code":502,"message":"Provider returned error"}}`,
			InBandFailure{Form: InBandNoChoices, Provider: "Groq", ErrorType: "none", Code: 502, Message: "Provider returned error", GenerationID: "gen-2"}, true},
		{"error chunk, choices absent, type beside", true,
			`{"error":{"code":"server_error","message":"x","error_type":"timeout"}}`,
			InBandFailure{Form: InBandNoChoices, Provider: "other", ErrorType: "timeout", Message: "x"}, true},
		{"empty success, native error", true,
			`{"id":"gen-3","provider":"Together","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop","native_finish_reason":"error"}]}`,
			InBandFailure{Form: InBandNativeError, Provider: "Together", ErrorType: "none", GenerationID: "gen-3"}, true},
		{"empty success, network error, length", true,
			`{"choices":[{"delta":{},"finish_reason":"length","native_finish_reason":"network_error"}]}`,
			InBandFailure{Form: InBandNativeError, Provider: "other", ErrorType: "network_error"}, true},
		{"body that is an error", false,
			`{"id":"gen-4","error":{"message":"Upstream error from Nvidia: Service temporarily overloaded","code":503,"metadata":{"error_type":"provider_overloaded"}}}`,
			InBandFailure{Form: InBandBody, Provider: "Nvidia", ErrorType: "provider_overloaded", Code: 503, Message: "Upstream error from Nvidia: Service temporarily overloaded", GenerationID: "gen-4"}, true},
		{"body, empty success", false,
			` {"id":"gen-5","choices":[{"message":{"role":"assistant","content":""},"finish_reason":"stop","native_finish_reason":"error"}]}`,
			InBandFailure{Form: InBandNativeError, Provider: "other", ErrorType: "none", GenerationID: "gen-5"}, true},
		{"body, provider from metadata, unknown type", false,
			`{"error":{"message":"m","code":500.5,"metadata":{"error_type":"brand_new","provider_name":"DeepInfra"}}}`,
			InBandFailure{Form: InBandBody, Provider: "DeepInfra", ErrorType: "other", Message: "m"}, true},

		{"content with the word", true, `{"choices":[{"delta":{"content":"\"error\""},"finish_reason":null}]}`, InBandFailure{}, false},
		{"native error with content", true, `{"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop","native_finish_reason":"error"}]}`, InBandFailure{}, false},
		{"native error with a tool call", false, `{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c"}]},"finish_reason":"tool_calls","native_finish_reason":"error"}]}`, InBandFailure{}, false},
		{"a benign finish", true, `{"choices":[{"delta":{"content":""},"finish_reason":"stop","native_finish_reason":"stop"}]}`, InBandFailure{}, false},
		{"error null", true, `{"error":null,"choices":[]}`, InBandFailure{}, false},
		{"done", true, `[DONE]`, InBandFailure{}, false},
		{"not json", true, `{"error":`, InBandFailure{}, false},
	} {
		got, ok := recogniseInBand([]byte(c.data), c.stream)
		if ok != c.ok || got != c.want {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

// Labels never carry what the upstream made up.
func TestInBandLabelsBounded(t *testing.T) {
	for in, want := range map[string]string{"Nvidia": "Nvidia", "nvidia": "Nvidia", " Google AI Studio ": "Google AI Studio",
		"Evil\n<script>": ProviderOther, strings.Repeat("a", 1000): ProviderOther, "": ProviderOther} {
		if got := ProviderLabel(in); got != want {
			t.Errorf("ProviderLabel(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"provider_overloaded": "provider_overloaded", "": ErrorTypeNone, "sk-or-v1-abc": ErrorTypeOther} {
		if got := ErrorTypeLabel(in); got != want {
			t.Errorf("ErrorTypeLabel(%q) = %q, want %q", in, got, want)
		}
	}
	body := string(InBandErrorBody("gen-x", InBandErrorObject{Message: UpstreamErrorMessage("Nvidia", "Service temporarily overloaded"), Code: 503,
		Metadata: InBandMetadata{ErrorType: ErrorTypeProviderOverloaded}}))
	if want := `{"id":"gen-x","error":{"message":"Upstream error from Nvidia: Service temporarily overloaded","code":503,"metadata":{"error_type":"provider_overloaded"}}}`; body != want {
		t.Errorf("InBandErrorBody = %s, want %s", body, want)
	}
}
