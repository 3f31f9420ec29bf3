package emulator

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The emulator's bodies are the fact sheet's, byte for byte.
func TestErrorBodiesAreOpenRouters(t *testing.T) {
	s := New()
	srv := httptest.NewServer(s)
	defer srv.Close()
	past := time.Now().Add(-time.Hour)
	expired := s.NewKey(KeyOptions{ExpiresAt: &past})
	for path, want := range map[string]string{
		"/api/v1/chat/completions": `{"error":{"message":"User not found.","code":401}}`,
		"/api/v1/messages":         `{"type":"error","error":{"type":"authentication_error","message":"User not found."}}`,
		"/api/v1/responses":        `{"error":{"code":"server_error","message":"User not found."},"error_type":"authentication"}`,
	} {
		req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+expired)
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || string(b) != want {
			t.Errorf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
	flat := New()
	flat.FlatErrors = true
	flatSrv := httptest.NewServer(flat)
	defer flatSrv.Close()
	req, _ := http.NewRequest("GET", flatSrv.URL+"/api/v1/key", nil)
	req.Header.Set("Authorization", "Bearer "+flat.NewKey(KeyOptions{ExpiresAt: &past}))
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != `{"message":"User not found.","code":401}` {
		t.Errorf("flat: %s", b)
	}
}
