package openrouter

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"
)

// Every "Provider returned error" of the facts sheet, in both forms of
// metadata.raw: the provider, its own message unwrapped, and whose fault
// it is; and each body that does not show whose fault it is says unknown.
func TestProviderErrorRecognised(t *testing.T) {
	crucible := "Model 'moonshotai/kimi-k2.6' supports at most 1 image per prompt."
	for _, c := range []struct {
		name     string
		status   int
		provider string
		raw      any
		byok     bool
		cause    Cause
		message  string
		typ      string
	}{
		{"invalid request", 400, "Crucible", RawInvalidRequest(crucible), false, CauseRequest, crucible, "invalid_request_error"},
		{"no workers", 503, "Morph", RawNoWorkers(), false, CauseProvider, "No available workers to handle this request. Please try again later.", "no_available_workers"},
		{"region", 403, "OpenAI", RawRegion(), false, CauseRegion, "Country, region, or territory not supported", "unsupported_country_region_territory"},
		{"own key's permission", 403, "Anthropic", RawKeyPermission(), true, CauseOwnKey, "Your API key does not have permission to use the specified resource.", "permission_error"},
		{"own key's quota spent (a 429)", 429, "OpenAI", RawQuotaSpent(), true, CauseOwnKey,
			"You exceeded your current quota, please check your plan and billing details.", "insufficient_quota"},
		{"own key, invalid request is still the request's", 400, "OpenAI", RawInvalidRequest("bad"), true, CauseRequest, "bad", "invalid_request_error"},
		{"a 502 without raw: the provider failed", 502, "Together", nil, false, CauseProvider, "", ""},
		// Unknown: nothing in the body tells whose fault it is.
		{"unknown: 400 without raw", 400, "Crucible", nil, false, CauseUnknown, "", ""},
		{"unknown: 400 with raw saying nothing of a type", 400, "Crucible", "something went wrong", false, CauseUnknown, "something went wrong", ""},
		{"unknown: 404 from the provider", 404, "DeepInfra", Members{{"detail", "Not Found"}}, false, CauseUnknown, "Not Found", ""},
		{"unknown: 403 neither region nor key", 403, "Google", Members{{"error", Members{{"message", "denied"}}}}, false, CauseUnknown, "denied", ""},
		{"unknown: auth error of OpenRouter's own provider key", 403, "OpenAI", RawKeyPermission(), false, CauseUnknown,
			"Your API key does not have permission to use the specified resource.", "permission_error"},
		{"unknown: 429 naming no provider", 429, "", "slow down", false, CauseUnknown, "slow down", ""},
	} {
		for _, form := range []RawForm{RawString, RawObject} {
			fb := ProviderReturned(c.status, c.provider, c.raw, c.byok, form)
			f := Recognise(c.status, fb.Render(EnvelopeOpenAI), nil)
			pe := f.ProviderError
			if f.Kind != KindProviderError || pe == nil {
				t.Errorf("%s (form %d): kind %s, %+v", c.name, form, f.Kind, pe)
				continue
			}
			if pe.Cause != c.cause || pe.Message != c.message || pe.Type != c.typ || pe.Provider != c.provider ||
				f.Provider != c.provider || pe.BYOK != c.byok || pe.Code != c.status {
				t.Errorf("%s (form %d): %+v", c.name, form, *pe)
			}
		}
	}
}

// A body without metadata (the /messages envelope, the /responses docs
// one) names no provider and shows no cause but a 5xx's.
func TestProviderErrorWithoutMetadata(t *testing.T) {
	for status, want := range map[int]Cause{400: CauseUnknown, 403: CauseUnknown, 404: CauseUnknown, 502: CauseProvider, 503: CauseProvider} {
		for _, e := range []Envelope{EnvelopeMessages, EnvelopeResponsesDocs} {
			f := Recognise(status, e.Body(status, MessageProviderError, nil), nil)
			if f.Kind != KindProviderError || f.ProviderError.Cause != want || f.Provider != "" || f.ProviderError.Message != "" {
				t.Errorf("%d in envelope %d: %s %+v", status, e, f.Kind, f.ProviderError)
			}
		}
	}
	// raw neither text nor an object says nothing.
	for _, raw := range []string{`42`, `[1,2]`, `null`, `true`} {
		body := `{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":` + raw + `,"provider_name":"Crucible"}}}`
		if f := Recognise(400, []byte(body), nil); f.ProviderError.Cause != CauseUnknown || f.ProviderError.Message != "" || f.Provider != "Crucible" {
			t.Errorf("raw %s: %+v", raw, f.ProviderError)
		}
	}
	// Malformed raw: a string that starts like JSON and is not is the
	// provider's text as sent; nothing is claimed from it.
	fb := ProviderReturned(400, "Crucible", `{"error":{"type":"invalid_request_error","message":"cut`, false, RawString)
	f := Recognise(400, fb.Render(EnvelopeOpenAI), nil)
	if f.ProviderError.Cause != CauseUnknown || !strings.HasPrefix(f.ProviderError.Message, `{"error"`) {
		t.Errorf("malformed raw: %+v", f.ProviderError)
	}
}

// The shared pool's 429 keeps its kind; the fourth round's 429s are told
// apart by limit_source; a 401 is never a provider error here.
func TestFourthRound429s(t *testing.T) {
	reset := time.Date(2026, 12, 7, 10, 1, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		fb   FailureBody
		kind Kind
		byok bool
		wait time.Duration
	}{
		{"admission control", AdmissionControl(10), KindAdmissionControl, false, 10 * time.Second},
		{"admission control, no limit_source", FailureBody{Status: 429, Message: MessageAdmissionControl}, KindAdmissionControl, false, 0},
		{"free per minute with limit_source", FreePerMinuteSourced(reset), KindFreePerMinute, false, 0},
		{"own provider account", ProviderAccount("OpenAI", "Rate limit reached for requests"), KindProviderPool, true, 0},
		{"shared pool", ProviderPool("m", "Chutes", false, WordingCurrent), KindProviderPool, false, 0},
		{"shared pool, no limit_source", ProviderPool("m", "Chutes", false, WordingNoSource), KindProviderPool, false, 0},
		{"own key's pool", ProviderPool("m", "OpenAI", true, WordingNoSource), KindProviderPool, true, 0},
	} {
		f := Recognise(c.fb.Status, c.fb.Render(EnvelopeOpenAI), c.fb.Header)
		if f.Kind != c.kind || f.BYOK != c.byok || f.RetryAfter != c.wait || f.ProviderError != nil {
			t.Errorf("%s: %s BYOK %v wait %v %+v", c.name, f.Kind, f.BYOK, f.RetryAfter, f.ProviderError)
		}
	}
	if f := Recognise(http.StatusUnauthorized, ProviderReturned(401, "Anthropic", "invalid x-api-key", true, RawString).Render(EnvelopeOpenAI), nil); f.Kind == KindProviderError {
		t.Errorf("a 401 is the 401 reasons' business: %s", f.Kind)
	}
}

// metadata.raw is anyone's text: what is shown of it is bounded, has no
// control or invisible characters, no markup, and nothing key-shaped.
func TestProviderRawIsHostile(t *testing.T) {
	orKey := KeyPrefix + strings.Repeat("0a", 32)
	openaiKey := "sk-proj-" + strings.Repeat("Ab3", 16)
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
	raw := "Invalid key " + orKey + "\x1b[31m red \u202e reversed \u200b\r\nnext <script>alert(1)</script> ![x](https://evil.example/?k=1) " +
		openaiKey + " token " + jwt + " hash " + strings.Repeat("f", 64) + " model anthropic/claude-3-5-sonnet-20241022 id 123e4567-e89b-12d3-a456-426614174000"
	for _, form := range []RawForm{RawString, RawObject} {
		var r any = raw
		if form == RawObject {
			r = Members{{"error", Members{{"message", raw}, {"type", "invalid_request_error\x00<b>"}}}}
		}
		f := Recognise(400, ProviderReturned(400, "Evil\u202e<i>Co</i>\n"+orKey, r, false, form).Render(EnvelopeOpenAI), nil)
		pe := f.ProviderError
		for what, s := range map[string]string{"message": pe.Message, "type": pe.Type, "provider": pe.Provider} {
			for _, secret := range []string{orKey, openaiKey, jwt, strings.Repeat("0a", 32), strings.Repeat("f", 64), "Ab3Ab3Ab3"} {
				if strings.Contains(s, secret) {
					t.Errorf("form %d: %s echoes key material: %q", form, what, s)
				}
			}
			if strings.ContainsAny(s, "<>\x1b\r\n\x00\u202e\u200b") || strings.Contains(s, "](") {
				t.Errorf("form %d: %s has markup or control characters: %q", form, what, s)
			}
			for _, r := range s {
				if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
					t.Errorf("form %d: %s has %U", form, what, r)
				}
			}
		}
		if !strings.Contains(pe.Message, "[redacted]") || !strings.Contains(pe.Message, "anthropic/claude-3-5-sonnet-20241022") ||
			!strings.Contains(pe.Message, "123e4567-e89b-12d3-a456-426614174000") || !strings.Contains(pe.Message, "Invalid key") {
			t.Errorf("form %d: the harmless words are lost: %q", form, pe.Message)
		}
	}
	// The shared pool's provider is shown safe too.
	if f := Recognise(429, ProviderPool("m", "Chutes\n<script>"+orKey, false, WordingCurrent).Render(EnvelopeOpenAI), nil); f.Kind != KindProviderPool ||
		f.Provider != "Chutes ‹script›[redacted]" {
		t.Errorf("pool provider %q", f.Provider)
	}
	long := strings.Repeat("word ", 10000)
	if got := SafeText(long, maxProviderMessage); len(got) > maxProviderMessage+3 || !strings.HasSuffix(got, "...") {
		t.Errorf("unbounded: %d bytes", len(got))
	}
	// A key cut by the scan's bound is dropped, not half shown.
	// Keys before it shrink to "[redacted]", bringing the cut within the
	// bound shown.
	cut := strings.Repeat(orKey+" ", 17) + orKey
	if got := SafeText(cut, maxProviderMessage); strings.Contains(got, "sk-") || strings.Count(got, "[redacted]") != 17 {
		t.Errorf("part of a key shown: %q", got)
	}
	if got := SafeText("é\xff\xfeok", 10); got != "éok" {
		t.Errorf("invalid UTF-8: %q", got)
	}
	if got := SafeText(strings.Repeat("é", 200), 9); got != "éééé..." {
		t.Errorf("cut inside a character: %q", got)
	}
}

// Whatever raw and provider_name hold, recognition ends, and what is
// shown of them is bounded and free of control characters and markup.
func FuzzProviderRaw(f *testing.F) {
	for _, s := range []string{"", "{", `{"error":{"message":"x","type":"invalid_request_error"}}`, `{"error":"{\"error\":{\"message\":\"deep\"}}"}`,
		"\x00\x1b[2J<b>", strings.Repeat("é", 500), KeyPrefix + strings.Repeat("ab", 32)} {
		f.Add(s, "Crucible", 400)
	}
	f.Fuzz(func(t *testing.T, raw, provider string, status int) {
		for _, form := range []RawForm{RawString, RawObject} {
			var r any = raw
			if form == RawObject {
				r = Members{{"error", Members{{"message", raw}, {"code", raw}}}}
			}
			fr := Recognise(status, ProviderReturned(status, provider, r, true, form).Render(EnvelopeOpenAI), nil)
			if pe := fr.ProviderError; pe != nil {
				for _, s := range []string{pe.Message, pe.Type, pe.Provider} {
					if len(s) > maxProviderMessage+3 || strings.ContainsAny(s, "<>\x00\x1b\n\r") {
						t.Fatalf("unsafe: %q", s)
					}
				}
			}
		}
	})
}
