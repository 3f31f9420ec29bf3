package emulator

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// start serves a new emulator, configured by configure before it serves,
// and returns it with its API base URL.
func start(t *testing.T, configure ...func(*Server)) (*Server, string) {
	t.Helper()
	s := New()
	for _, c := range configure {
		c(s)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL + "/api/v1"
}

// reply is a response as a client reads it off the wire (no transparent
// decompression), with the error reading it ended with, if any.
type reply struct {
	status  int
	header  http.Header
	trailer http.Header
	body    []byte
	length  int64 // the declared Content-Length, -1 if none
	err     error // from the round trip or from reading the body
}

// message is the error message of a body in any of OpenRouter's envelopes.
func (r reply) message() string {
	var v struct {
		Message string `json:"message"`
		Error   struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.body, &v)
	if v.Error.Message != "" {
		return v.Error.Message
	}
	return v.Message
}

// data decodes the "data" member of a JSON body into v.
func (r reply) data(t *testing.T, v any) {
	t.Helper()
	var env struct{ Data json.RawMessage }
	if err := json.Unmarshal(r.body, &env); err != nil || env.Data == nil {
		t.Fatalf("not a data body (%d): %.200s", r.status, r.body)
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		t.Fatalf("data: %v: %.200s", err, r.body)
	}
}

var rawClient = &http.Client{
	Transport: &http.Transport{DisableCompression: true},
	Timeout:   30 * time.Second,
}

// call sends a request with a bearer (none if "") and extra header pairs.
func call(t *testing.T, method, url, bearer, body string, header ...string) reply {
	t.Helper()
	return callWith(t, rawClient, method, url, bearer, body, header...)
}

func callWith(t *testing.T, client *http.Client, method, url, bearer, body string, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err, length: -1}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, trailer: resp.Trailer, body: b, length: resp.ContentLength, err: err}
}

const chatBody = `{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}`

// chat posts a chat completion of model with bearer.
func chat(t *testing.T, base, bearer, model string) reply {
	t.Helper()
	return call(t, "POST", base+"/chat/completions", bearer, strings.Replace(chatBody, "openai/gpt-4o", model, 1))
}

// gotRecord is the part of a management record the tests look at, as a
// client decodes it.
type gotRecord struct {
	Hash           string   `json:"hash"`
	Name           string   `json:"name"`
	Label          string   `json:"label"`
	Disabled       bool     `json:"disabled"`
	Limit          *float64 `json:"limit"`
	LimitRemaining *float64 `json:"limit_remaining"`
	Usage          float64  `json:"usage"`
	CreatedAt      string   `json:"created_at"`
	ExpiresAt      *string  `json:"expires_at"`
	WorkspaceID    string   `json:"workspace_id"`
}

func ptr[T any](v T) *T { return &v }
