package caddymodule

// drift.go owns the 401s the gateway leaves unchanged: each is counted by
// class, and the first of each unrecognised message is logged once, so that
// OpenRouter rewording its messages shows up instead of silently turning
// the gateway off.

import (
	"sync"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Bounds of the unrecognised-message log.
const (
	maxLoggedMessages  = 64  // distinct messages logged per process
	maxLoggedMessageLn = 160 // bytes of a message that are logged
)

var seenMessages = struct {
	sync.Mutex
	set map[string]struct{}
}{set: make(map[string]struct{})}

// countUnexplained counts a 401 left unchanged, and logs the message of an
// unrecognised one the first time it is seen. Only the message text is
// logged, shortened, with anything that could be a token in it redacted;
// never headers or the rest of the body.
func countUnexplained(logger *zap.Logger, class, message string) {
	gatewayMetrics.unexplained.WithLabelValues(class).Inc()
	if class != classUnrecognizedMessage {
		return
	}
	text := redactTokens(message)
	if len(text) > maxLoggedMessageLn {
		cut := maxLoggedMessageLn
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut-- // never inside a character
		}
		text = text[:cut] + "..."
	}
	seenMessages.Lock()
	_, seen := seenMessages.set[text]
	if !seen && len(seenMessages.set) < maxLoggedMessages {
		seenMessages.set[text] = struct{}{}
	} else {
		seen = true
	}
	seenMessages.Unlock()
	if !seen {
		logger.Info("401 with a message the gateway does not recognise: passed unchanged (OpenRouter may have reworded it)",
			zap.String("message", text))
	}
}

// redactTokens replaces every run of 16 or more characters that tokens are
// made of (letters, digits, "-", "_", ".") by "[redacted]": an upstream
// message that echoes a key must not put it in a log.
func redactTokens(s string) string {
	out := make([]byte, 0, len(s))
	run := 0
	flush := func(end int) {
		if run >= 16 {
			out = append(out, "[redacted]"...)
		} else {
			out = append(out, s[end-run:end]...)
		}
		run = 0
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if base64URL[c] && c != '=' || c == '.' {
			run++
			continue
		}
		flush(i)
		out = append(out, c)
	}
	flush(len(s))
	return string(out)
}
