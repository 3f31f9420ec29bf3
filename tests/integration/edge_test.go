package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

func TestExpiredKeyIsAnsweredAtTheEdge(t *testing.T) {
	e := start(t, options{module: "expiry_skew 1s"})
	key, expiry := e.keyExpiringIn(time.Second)
	sleepUntil(expiry.Add(time.Second + 100*time.Millisecond)) // past expiry and the skew margin

	// The gateway says so once...
	if ke := asKeyError(t, func() error { _, err := chat(gatewayBase, key); return err }()); ke.reason != "key_expired" {
		t.Fatalf("first call after expiry: %+v", ke)
	}
	// ...and then answers every retry itself.
	before := e.emu.Count("/chat/completions")
	for i := 0; i < 20; i++ {
		var err error
		if i%2 == 0 {
			_, err = chat(gatewayBase, key)
		} else {
			_, err = streamChat(gatewayBase, key)
		}
		ke := asKeyError(t, err)
		if ke.status != 401 || ke.reason != "key_expired" || !strings.HasPrefix(ke.message, "Key expired.") || !ke.edge {
			t.Fatalf("retry %d: %+v", i, ke)
		}
	}
	if n := e.emu.Count("/chat/completions") - before; n != 0 {
		t.Errorf("the upstream received %d of the 20 retries", n)
	}
	// In the endpoint's own envelope.
	_, b := raw(t, "POST", gatewayBase+"/messages", key, `{}`)
	if !strings.HasPrefix(string(b), `{"type":"error","error":{"type":"authentication_error","message":"Key expired.`) {
		t.Errorf("/messages edge answer: %s", b)
	}
}

func TestKeyWithinSkewGoesUpstream(t *testing.T) {
	e := start(t, options{}) // default expiry_skew 30s
	key, expiry := e.keyExpiringIn(time.Second)
	sleepUntil(expiry)
	before := e.emu.Count("/chat/completions")
	_, err := chat(gatewayBase, key)
	if ke := asKeyError(t, err); ke.reason != "key_expired" || ke.edge {
		t.Errorf("%+v", ke)
	}
	if n := e.emu.Count("/chat/completions") - before; n != 1 {
		t.Errorf("the upstream received %d requests; want 1", n)
	}
}

// The window counts from the second the key was seen disabled (whole
// seconds), so 2s lasts at least 1s: the second request, sent at once, is
// within it however slow the machine.
func TestDisabledKeyIsAnsweredAtTheEdgeBriefly(t *testing.T) {
	e := start(t, options{management: true, module: "edge_disabled_for 2s"})
	key := e.emu.NewKey(emulator.KeyOptions{Disabled: true})
	count := func() int { return e.emu.Count("/chat/completions") }

	_, err := chat(gatewayBase, key)
	if ke := asKeyError(t, err); ke.reason != "key_disabled" || ke.edge || count() != 1 {
		t.Fatalf("first: %+v, upstream saw %d", ke, count())
	}
	windowEnds := time.Now().Add(2 * time.Second) // at the latest
	_, err = chat(gatewayBase, key)
	if ke := asKeyError(t, err); ke.reason != "key_disabled" || !ke.edge || count() != 1 {
		t.Fatalf("within the window: %+v, upstream saw %d", ke, count())
	}
	sleepUntil(windowEnds)
	_, err = chat(gatewayBase, key)
	if ke := asKeyError(t, err); ke.reason != "key_disabled" || ke.edge || count() != 2 {
		t.Fatalf("after the window: %+v, upstream saw %d", ke, count())
	}
	// Re-enabled, it works again as soon as the window has passed.
	windowEnds = time.Now().Add(2 * time.Second)
	e.emu.SetDisabled(key, false)
	sleepUntil(windowEnds)
	if _, err := chat(gatewayBase, key); err != nil {
		t.Fatalf("re-enabled key: %v", err)
	}
	// Having worked, it is no longer taken for disabled.
	e.emu.Delete(key)
	_, err = chat(gatewayBase, key)
	if ke := asKeyError(t, err); ke.status != 401 || ke.reason == "key_disabled" {
		t.Errorf("deleted after re-enabling: %+v", ke)
	}
}

func TestEdgeAnswersOff(t *testing.T) {
	e := start(t, options{module: "edge_answers off\n expiry_skew 1s"})
	key, expiry := e.keyExpiringIn(time.Second)
	sleepUntil(expiry.Add(time.Second + 100*time.Millisecond)) // past the skew margin
	before := e.emu.Count("/chat/completions")
	for i := 0; i < 5; i++ {
		_, err := chat(gatewayBase, key)
		if ke := asKeyError(t, err); ke.reason != "key_expired" || ke.edge {
			t.Fatalf("%+v", ke)
		}
	}
	if n := e.emu.Count("/chat/completions") - before; n != 5 {
		t.Errorf("the upstream received %d of 5 requests", n)
	}
}

func TestEdgeAnswersMalformed(t *testing.T) {
	for _, mode := range []string{"on", "malformed"} {
		e := start(t, options{module: "edge_answers " + mode})
		_, err := chat(gatewayBase, "sk-or-v1-truncated")
		ke := asKeyError(t, err)
		reached := e.emu.Count("/chat/completions")
		if ke.reason != "key_malformed" || ke.edge != (mode == "malformed") || (reached == 0) != (mode == "malformed") {
			t.Errorf("edge_answers %s: %+v, upstream saw %d", mode, ke, reached)
		}
	}
}
