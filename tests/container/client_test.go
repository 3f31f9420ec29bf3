package container

// client_test.go owns the requests the test sends through the container,
// as clients do: a chat completion and a streamed one, an Anthropic-style
// /messages request, and what it reads back (the refusal's reason, the
// stream's events).

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// completion is the body of a chat completion request.
func completion(stream bool) string {
	return fmt.Sprintf(`{"model":"openai/gpt-4o","stream":%v,"messages":[{"role":"user","content":"Hi"}]}`, stream)
}

// request is a chat completion request through the container with key.
func request(key string, stream bool) (*http.Request, error) {
	req, err := http.NewRequest("POST", gateway+"/api/v1/chat/completions", strings.NewReader(completion(stream)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// chat sends a chat completion (not streamed) with key and returns the answer.
func chat(t *testing.T, key string) (status int, header http.Header, body []byte) {
	t.Helper()
	req, err := request(key, false)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := fresh.Do(req)
	if err != nil {
		t.Fatalf("chat completion through the container: %v", err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("chat completion through the container: %v", err)
	}
	return resp.StatusCode, resp.Header, body
}

// messages sends an Anthropic-style request to /messages with the key in
// x-api-key, as Anthropic's clients do, and returns the answer.
func messages(t *testing.T, key string) (status int, body []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", gateway+"/api/v1/messages",
		strings.NewReader(`{"model":"anthropic/claude-3.5-sonnet","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Api-Key", key)
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("Content-Type", "application/json")
	resp, err := fresh.Do(req)
	if err != nil {
		t.Fatalf("/messages through the container: %v", err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("/messages through the container: %v", err)
	}
	return resp.StatusCode, body
}

// reason is the machine-readable reason of an explained refusal,
// error.metadata.reason (in OpenAI's envelope and in Anthropic's).
func reason(body []byte) string {
	var e struct {
		Error struct {
			Metadata struct {
				Reason string `json:"reason"`
			} `json:"metadata"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Metadata.Reason
}

// streamResult is what a client read of a streamed completion.
type streamResult struct {
	status       int
	contentType  string
	content      string    // the deltas' content, joined
	done         bool      // the stream ended with data: [DONE]
	firstEventAt time.Time // when the first data event arrived
	doneAt       time.Time // when data: [DONE] arrived
	err          error
}

// stream sends a streamed chat completion with key and reads it to its
// end.
func stream(t *testing.T, key string) streamResult {
	t.Helper()
	s, err := openStream(key, nil)
	if err != nil {
		t.Fatalf("streamed completion through the container: %v", err)
	}
	return s
}

// openStream sends a streamed chat completion with key and reads its
// events; when the first data event arrives, its time is sent on
// firstEvent (if not nil).
func openStream(key string, firstEvent chan<- time.Time) (streamResult, error) {
	var s streamResult
	req, err := request(key, true)
	if err != nil {
		return s, err
	}
	resp, err := fresh.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	s.status, s.contentType = resp.StatusCode, resp.Header.Get("Content-Type")
	var content strings.Builder
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		data, ok := strings.CutPrefix(lines.Text(), "data: ")
		if !ok {
			continue
		}
		if s.firstEventAt.IsZero() {
			s.firstEventAt = time.Now()
			if firstEvent != nil {
				firstEvent <- s.firstEventAt
			}
		}
		if data == "[DONE]" {
			s.done, s.doneAt = true, time.Now()
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return s, fmt.Errorf("event %q: %w", data, err)
		}
		for _, c := range chunk.Choices {
			content.WriteString(c.Delta.Content)
		}
	}
	s.content = content.String()
	return s, lines.Err()
}
