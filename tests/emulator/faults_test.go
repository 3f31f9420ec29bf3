package emulator

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Every fault on every metadata endpoint looks to a client as it should.
func TestFaultsPerEndpoint(t *testing.T) {
	const giveUp = 300 * time.Millisecond
	impatient := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: giveUp}
	faults := []struct {
		name   string
		fault  Fault
		giveUp bool                 // the client gives up after a while
		check  func(r reply) string // what is wrong, "" if nothing
	}{
		{"none", FaultNone, false, func(r reply) string {
			if r.err != nil || r.status != 200 || !json.Valid(r.body) {
				return "not a working answer"
			}
			return ""
		}},
		{"hang", FaultHang, true, func(r reply) string {
			if r.status != 0 || !isTimeout(r.err) {
				return "not a timeout without an answer"
			}
			return ""
		}},
		{"500", FaultStatus500, false, func(r reply) string {
			if r.status != 500 || r.header.Get("Content-Type") != "text/html" || !strings.Contains(string(r.body), "<html>") {
				return "not a 500 HTML page"
			}
			return ""
		}},
		{"reset", FaultReset, false, func(r reply) string {
			if r.err == nil || r.status != 0 || isTimeout(r.err) {
				return "not a broken connection"
			}
			return ""
		}},
		{"invalid JSON", FaultInvalidJSON, false, func(r reply) string {
			if r.err != nil || r.status != 200 || len(r.body) == 0 || json.Valid(r.body) {
				return "not a complete 200 with invalid JSON"
			}
			return ""
		}},
		{"huge body", FaultHugeBody, false, func(r reply) string {
			if r.err != nil || r.status != 200 || len(r.body) < 10<<20 {
				return "not a complete 10 MB body"
			}
			return ""
		}},
		{"slow body", FaultSlowBody, true, func(r reply) string {
			if r.status != 200 || r.length != partialBodyLength || len(r.body) == 0 || len(r.body) >= partialBodyLength || !isTimeout(r.err) {
				return "not a 200 whose body stalls part way"
			}
			return ""
		}},
		{"cut body", FaultCutBody, false, func(r reply) string {
			if r.status != 200 || r.length != partialBodyLength || len(r.body) == 0 || len(r.body) >= partialBodyLength || !errors.Is(r.err, io.ErrUnexpectedEOF) {
				return "not a 200 whose body ends early"
			}
			return ""
		}},
		{"404", Fault404, false, func(r reply) string {
			if r.err != nil || r.status != 404 || string(r.body) != `{"error":{"message":"Not Found","code":404}}` {
				return "not a 404 in the OpenAI envelope"
			}
			return ""
		}},
	}
	for _, endpoint := range FaultEndpoints {
		t.Run(endpoint, func(t *testing.T) {
			t.Parallel()
			s := New()
			srv := httptest.NewServer(s)
			management := s.NewKey(KeyOptions{Management: true})
			path := strings.Replace(endpoint, "{hash}", hashOfKey(s, management), 1)
			path = strings.Replace(path, "{id}", s.DefaultWorkspace(), 1)
			s.SetWorkspaceBudget(s.DefaultWorkspace(), "monthly", 100, 0)
			for _, f := range faults {
				s.SetFault(endpoint, f.fault)
				before := s.Count(endpoint)
				client := rawClient
				if f.giveUp {
					client = impatient
				}
				r := callWith(t, client, "GET", srv.URL+"/api/v1"+path, management, "")
				if problem := f.check(r); problem != "" {
					t.Errorf("%s: %s: %d %q (%d bytes of %d) %v", f.name, problem, r.status, truncate(r.body), len(r.body), r.length, r.err)
				}
				// At least once: Go's client retries a GET whose reused
				// connection broke before any answer.
				if s.Count(endpoint) <= before {
					t.Errorf("%s: not counted", f.name)
				}
			}
			s.SetFault(endpoint, FaultNone)
			if r := call(t, "GET", srv.URL+"/api/v1"+path, management, ""); r.status != 200 {
				t.Errorf("after FaultNone: %d", r.status)
			}
			// Every faulted handler ended with its client: Close returns.
			closed := make(chan struct{})
			go func() { srv.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Errorf("a faulted request outlived the client that gave up on it")
			}
		})
	}
}

func hashOfKey(s *Server, secret string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bySecret[secret].Hash
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

// Faults are per endpoint; SetKeyFault is the one of /key and its alias.
func TestFaultScope(t *testing.T) {
	s, base := start(t)
	key := s.NewKey(KeyOptions{})
	s.SetKeyFault(Fault404)
	for _, path := range []string{"/key", "/auth/key"} {
		if r := call(t, "GET", base+path, key, ""); r.status != 404 {
			t.Errorf("%s: %d", path, r.status)
		}
	}
	if r := call(t, "GET", base+"/models", key, ""); r.status != 200 {
		t.Errorf("/models with /key faulted: %d", r.status)
	}
	if r := chat(t, base, key, "openai/gpt-4o"); r.status != 200 {
		t.Errorf("chat with /key faulted: %d", r.status)
	}
	defer func() {
		if recover() == nil {
			t.Errorf("SetFault on an endpoint without faults did not panic")
		}
	}()
	s.SetFault("/chat/completions", FaultHang)
}

// rawExchange sends a request on a fresh connection and returns every byte
// the server sent until it closed the connection.
func rawExchange(t *testing.T, base, method, path, bearer string) string {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	host = host[:strings.Index(host, "/")]
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := chatBody
	if method == "GET" {
		body = ""
	}
	w := bufio.NewWriter(conn)
	_, _ = w.WriteString(method + " /api/v1" + path + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + bearer +
		"\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading the raw answer: %v", err)
	}
	return string(got)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// UnauthorizedTrailer: a 401 announces a trailer and sends it after the
// body; other answers are untouched.
func TestUnauthorizedTrailer(t *testing.T) {
	s, base := start(t, func(s *Server) { s.UnauthorizedTrailer = true })
	past := time.Now().Add(-time.Hour)
	expired := s.NewKey(KeyOptions{ExpiresAt: &past})
	valid := s.NewKey(KeyOptions{})

	raw := rawExchange(t, base, "POST", "/chat/completions", expired)
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 401") || !strings.Contains(head, "\r\nTrailer: "+TrailerName) ||
		!strings.Contains(head, "\r\nTransfer-Encoding: chunked") || strings.Contains(head, "Content-Length") {
		t.Errorf("head:\n%s", head)
	}
	if !strings.HasSuffix(body, "0\r\n"+TrailerName+": "+TrailerValue+"\r\n\r\n") {
		t.Errorf("the trailer does not follow the body:\n%q", body)
	}

	for _, accept := range []string{"identity", "gzip"} {
		r := call(t, "POST", base+"/chat/completions", expired, chatBody, "Accept-Encoding", accept)
		if r.status != 401 || r.err != nil || r.trailer.Get(TrailerName) != TrailerValue {
			t.Errorf("%s: %d, trailer %v, %v", accept, r.status, r.trailer, r.err)
		}
		if accept == "identity" && string(r.body) != `{"error":{"message":"User not found.","code":401}}` {
			t.Errorf("body %s", r.body)
		}
	}
	if r := chat(t, base, valid, "openai/gpt-4o"); r.status != 200 || len(r.trailer) != 0 {
		t.Errorf("a 200: %d, trailer %v", r.status, r.trailer)
	}
	if r := chat(t, base, valid, ModelProviderKeyRejected); r.status != 401 || r.trailer.Get(TrailerName) != TrailerValue {
		t.Errorf("a provider's 401: %d, trailer %v", r.status, r.trailer)
	}
}

// UnauthorizedCutShort: a 401 declares its length, sends half, and the
// connection closes.
func TestUnauthorizedCutShort(t *testing.T) {
	s, base := start(t, func(s *Server) { s.UnauthorizedCutShort = true })
	past := time.Now().Add(-time.Hour)
	expired := s.NewKey(KeyOptions{ExpiresAt: &past})
	full := `{"error":{"message":"User not found.","code":401}}`

	raw := rawExchange(t, base, "GET", "/key", expired)
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 401") || !strings.Contains(head, "\r\nContent-Length: "+itoa(len(full))+"\r\n") {
		t.Errorf("head:\n%s", head)
	}
	if body != full[:len(full)/2] {
		t.Errorf("body %q, want the first half of %q", body, full)
	}

	for _, path := range []string{"/chat/completions", "/messages", "/responses"} {
		r := call(t, "POST", base+path, expired, chatBody, "Accept-Encoding", "gzip")
		if r.status != 401 || r.length <= int64(len(r.body)) || !errors.Is(r.err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: %d, %d of %d bytes, %v", path, r.status, len(r.body), r.length, r.err)
		}
	}
	if r := chat(t, base, s.NewKey(KeyOptions{}), "openai/gpt-4o"); r.status != 200 || r.err != nil {
		t.Errorf("a 200: %d %v", r.status, r.err)
	}
}
