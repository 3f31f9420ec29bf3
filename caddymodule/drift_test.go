package caddymodule

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// OpenRouter rewording a message shows: each unrecognised text is logged
// once (shortened, tokens redacted) and every unexplained 401 is counted.
func TestUnrecognisedMessagesAreLoggedOnce(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	logger := zap.New(core)
	before := testutil.ToFloat64(gatewayMetrics.unexplained.WithLabelValues(classUnrecognizedMessage))
	reworded := "Unknown user, check key " + goodKey + " and try again"
	for i := 0; i < 5; i++ {
		countUnexplained(logger, classUnrecognizedMessage, reworded)
	}
	countUnexplained(logger, classUnrecognizedMessage, strings.Repeat("long message ", 50))
	countUnexplained(logger, classNotJSON, "")
	if got := testutil.ToFloat64(gatewayMetrics.unexplained.WithLabelValues(classUnrecognizedMessage)) - before; got != 6 {
		t.Errorf("counted %v, want 6", got)
	}
	entries := logs.All()
	if len(entries) != 2 {
		t.Fatalf("%d log lines, want one per distinct message", len(entries))
	}
	first := entries[0].ContextMap()["message"].(string)
	if strings.Contains(first, goodKey[9:30]) || !strings.Contains(first, "[redacted]") || !strings.HasPrefix(first, "Unknown user, check key") {
		t.Errorf("logged %q", first)
	}
	if second := entries[1].ContextMap()["message"].(string); len(second) > maxLoggedMessageLn+3 {
		t.Errorf("a long message is logged whole: %d bytes", len(second))
	}
}

func TestRedactTokens(t *testing.T) {
	for in, want := range map[string]string{
		"User not found.":                     "User not found.",
		"key sk-or-v1-0123456789abcdef01 bad": "key [redacted] bad",
		"token eyJhbGciOiJIUzI1NiJ9.eyJ4Ijox": "token [redacted]",
		"short-words are_fine.":               "short-words are_fine.",
		"":                                    "",
	} {
		if got := redactTokens(in); got != want {
			t.Errorf("redactTokens(%q) = %q, want %q", in, got, want)
		}
	}
}

// The logged unrecognised message is cut at a character boundary.
func TestUnrecognisedMessageCutAtACharacter(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	msg := "a" + strings.Repeat("ü", 200) // two bytes each, from an odd offset
	countUnexplained(zap.New(core), classUnrecognizedMessage, msg)
	if logs.Len() != 1 {
		t.Fatalf("logged %d", logs.Len())
	}
	text := logs.All()[0].ContextMap()["message"].(string)
	if !utf8.ValidString(text) || len(text) > maxLoggedMessageLn+len("...") {
		t.Errorf("logged %q", text)
	}
}
