package integration

// Differential tests of the 401s the gateway holds: what reaches the
// client must be what plain reverse_proxy in front of the same upstream
// gives (status, headers but Date, body, trailers as trailers, a body cut
// short), over HTTP/1.1 and cleartext HTTP/2, except for a rewritten
// body, whose difference is the point.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

// bothProtocols makes Caddy's servers speak HTTP/1.1 and cleartext
// HTTP/2 (prior knowledge), as a gateway behind a load balancer may.
const bothProtocols = "servers {\n\t\tprotocols h1 h2c\n\t}"

// rawHTTP1 sends one HTTP/1.1 request on a connection of its own and
// returns every byte the server sent until it closed the connection:
// status line, header, chunk framing and trailer section as on the wire.
func rawHTTP1(t *testing.T, port int, method, path, key, body string, header ...string) []byte {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("localhost:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	var req strings.Builder
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: localhost:%d\r\nConnection: close\r\n", method, path, port)
	if key != "" {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", key)
	}
	if body != "" {
		fmt.Fprintf(&req, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] != "" {
			fmt.Fprintf(&req, "%s: %s\r\n", header[i], header[i+1])
		}
	}
	req.WriteString("\r\n")
	req.WriteString(body)
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(conn)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading the response: %v", err)
	}
	recordResponse(out)
	return out
}

// withoutDate drops the Date line from a raw response's header.
func withoutDate(raw []byte) []byte {
	head, rest, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	var out []byte
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		if !bytes.HasPrefix(line, []byte("Date: ")) {
			out = append(out, line...)
			out = append(out, "\r\n"...)
		}
	}
	return append(append(out, "\r\n"...), rest...)
}

// parseRaw reads a raw HTTP/1.1 response as a client would.
func parseRaw(t *testing.T, raw []byte) wire {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("not an HTTP response: %v\n%q", err, raw)
	}
	b, err := io.ReadAll(resp.Body)
	return wire{proto: resp.Proto, status: resp.StatusCode, header: comparableHeader(resp.Header), body: b, trailer: resp.Trailer, err: err}
}

// trailerSection is the end of a chunked HTTP/1.1 body that carries the
// emulator's trailer after the last chunk.
var trailerSection = "\r\n0\r\n" + emulator.TrailerName + ": " + emulator.TrailerValue + "\r\n\r\n"

// TestHeldUnauthorizedKeepsItsTrailers: a 401 that announces a trailer
// keeps it as a trailer, whether the gateway leaves the 401 unchanged
// (byte for byte what plain reverse_proxy sends) or rewrites it.
func TestHeldUnauthorizedKeepsItsTrailers(t *testing.T) {
	const unrecognised = "Access token expired (wording the gateway does not know)"
	e := start(t, options{global: bothProtocols, emulator: func(s *emulator.Server) {
		s.UnauthorizedTrailer = true
		s.ExpiredJWTMessage = unrecognised
	}})
	deleted := e.emu.NewKey(emulator.KeyOptions{})
	e.emu.Delete(deleted)
	expiredJWT := e.emu.NewJWT(time.Now().Add(-time.Hour))
	expiring, expiry := e.keyExpiringIn(time.Second)
	sleepUntil(expiry) // expired, within expiry_skew: it goes upstream and is rewritten
	body := `{"model":"openai/gpt-4o","messages":[]}`
	h2c := h2cTransport()
	defer h2c.CloseIdleConnections()
	unexplained := func() float64 { return metricSum(t, "caddy_openrouter_keys_unexplained_total{") }

	t.Run("left unchanged", func(t *testing.T) {
		before := unexplained()
		sent := 0
		for _, c := range []struct{ name, key string }{
			{"no credential", ""},
			{"unrecognised message", expiredJWT},
			{"key without evidence", deleted},
		} {
			for _, enc := range []string{"", "gzip"} {
				name := fmt.Sprintf("%s (Accept-Encoding %q)", c.name, enc)
				// HTTP/1.1, as on the wire.
				gwRaw := rawHTTP1(t, gatewayPort, "POST", "/api/v1/chat/completions", c.key, body, "Accept-Encoding", enc)
				plRaw := rawHTTP1(t, plainPort, "POST", "/api/v1/chat/completions", c.key, body, "Accept-Encoding", enc)
				sent++
				if !bytes.Equal(withoutDate(gwRaw), withoutDate(plRaw)) {
					t.Errorf("%s over HTTP/1.1: the gateway's bytes differ from plain reverse_proxy's:\n gateway %q\n plain   %q", name, gwRaw, plRaw)
				}
				gw := parseRaw(t, gwRaw)
				if gw.status != 401 || !bytes.HasSuffix(gwRaw, []byte(trailerSection)) || gw.trailer.Get(emulator.TrailerName) != emulator.TrailerValue {
					t.Errorf("%s over HTTP/1.1: status %d, trailer %v; want 401 with the trailer after the last chunk:\n%q", name, gw.status, gw.trailer, gwRaw)
				}
				if gw.header.Get(emulator.TrailerName) != "" {
					t.Errorf("%s over HTTP/1.1: the trailer came as a header", name)
				}
				// HTTP/2.
				gw = fetch(t, h2c, "POST", gatewayBase+"/chat/completions", c.key, body, "Accept-Encoding", enc)
				pl := fetch(t, h2c, "POST", plainBase+"/chat/completions", c.key, body, "Accept-Encoding", enc)
				sent++
				if d := sameWire(gw, pl); d != "" {
					t.Errorf("%s over h2c: differs from plain reverse_proxy: %s", name, d)
				}
				if gw.proto != "HTTP/2.0" || gw.status != 401 || gw.trailer.Get(emulator.TrailerName) != emulator.TrailerValue || gw.header.Get(emulator.TrailerName) != "" {
					t.Errorf("%s over h2c: %s %d, header %v, trailer %v; want HTTP/2.0 401 with the trailer as a trailer", name, gw.proto, gw.status, gw.header, gw.trailer)
				}
			}
		}
		// Each went through the gateway's explanation and was left as is.
		if n := unexplained() - before; n != float64(sent) {
			t.Errorf("%v of %d 401s counted as unexplained", n, sent)
		}
	})

	t.Run("rewritten", func(t *testing.T) {
		for _, enc := range []string{"", "gzip", "br"} {
			check := func(proto string, gw, pl wire, raw []byte) {
				t.Helper()
				name := fmt.Sprintf("over %s (Accept-Encoding %q)", proto, enc)
				if gw.status != 401 || pl.status != 401 || !strings.Contains(string(gw.body), `"reason":"key_expired"`) {
					t.Errorf("%s: %d %s; want 401 explained as key_expired", name, gw.status, gw.body)
				}
				// The trailer still arrives, as a trailer.
				if gw.trailer.Get(emulator.TrailerName) != emulator.TrailerValue || gw.header.Get(emulator.TrailerName) != "" || gw.err != nil {
					t.Errorf("%s: trailer %v, header %v, end of body %v", name, gw.trailer, gw.header, gw.err)
				}
				if raw != nil && !bytes.HasSuffix(raw, []byte(trailerSection)) {
					t.Errorf("%s: no trailer section after the last chunk:\n%q", name, raw)
				}
				// The header is plain reverse_proxy's, but for what a new
				// identity-encoded body of a new length changes, and the
				// reason.
				want := pl.header.Clone()
				want.Del("Content-Encoding")
				want.Del("Content-Length")
				want.Set("X-Openrouter-Key-Status", "key_expired")
				if !equalHeader(gw.header, want) {
					t.Errorf("%s: header\n gateway %v\n want    %v", name, gw.header, want)
				}
			}
			gwRaw := rawHTTP1(t, gatewayPort, "POST", "/api/v1/chat/completions", expiring, body, "Accept-Encoding", enc)
			plRaw := rawHTTP1(t, plainPort, "POST", "/api/v1/chat/completions", expiring, body, "Accept-Encoding", enc)
			check("HTTP/1.1", parseRaw(t, gwRaw), parseRaw(t, plRaw), gwRaw)
			check("h2c", fetch(t, h2c, "POST", gatewayBase+"/chat/completions", expiring, body, "Accept-Encoding", enc),
				fetch(t, h2c, "POST", plainBase+"/chat/completions", expiring, body, "Accept-Encoding", enc), nil)
		}
	})
}

// TestHeldUnauthorizedCutShort: a 401 whose body breaks off mid-read
// reaches the client as plain reverse_proxy delivers it: the status, the
// declared length, the part of the body that came, then the connection
// closed (a reset stream over HTTP/2). The gateway neither waits for the
// rest nor rewrites what it cannot have read whole, even for a key it
// could explain.
func TestHeldUnauthorizedCutShort(t *testing.T) {
	e := start(t, options{global: bothProtocols, emulator: func(s *emulator.Server) { s.UnauthorizedCutShort = true }})
	expiring, expiry := e.keyExpiringIn(time.Second)
	sleepUntil(expiry) // within expiry_skew: goes upstream, would be rewritten
	deleted := e.emu.NewKey(emulator.KeyOptions{})
	e.emu.Delete(deleted)
	// No request body: with one, reverse_proxy's abort races (under -race)
	// its own access log reading the body's length against the transport
	// still copying the body, in Caddy itself, gateway or not. A 401 needs
	// no body.
	body := ""
	h2c := h2cTransport()
	defer h2c.CloseIdleConnections()
	for _, c := range []struct{ name, key string }{{"unknown key", deleted}, {"key known to have expired", expiring}} {
		for _, enc := range []string{"", "gzip"} {
			name := fmt.Sprintf("%s (Accept-Encoding %q)", c.name, enc)
			begin := time.Now()
			gwRaw := rawHTTP1(t, gatewayPort, "POST", "/api/v1/chat/completions", c.key, body, "Accept-Encoding", enc)
			took := time.Since(begin)
			plRaw := rawHTTP1(t, plainPort, "POST", "/api/v1/chat/completions", c.key, body, "Accept-Encoding", enc)
			if !bytes.Equal(withoutDate(gwRaw), withoutDate(plRaw)) {
				t.Errorf("%s over HTTP/1.1: the gateway's bytes differ from plain reverse_proxy's:\n gateway %q\n plain   %q", name, gwRaw, plRaw)
			}
			gw := parseRaw(t, gwRaw)
			if gw.status != 401 || len(gw.body) == 0 || gw.err == nil || gw.header.Get("X-Openrouter-Key-Status") != "" {
				t.Errorf("%s over HTTP/1.1: %d, %d bytes, end of body %v, header %v; want the 401 cut short", name, gw.status, len(gw.body), gw.err, gw.header)
			}
			if took > time.Second {
				t.Errorf("%s over HTTP/1.1: the cut-short 401 took %v", name, took)
			}

			gw = fetch(t, h2c, "POST", gatewayBase+"/chat/completions", c.key, body, "Accept-Encoding", enc)
			pl := fetch(t, h2c, "POST", plainBase+"/chat/completions", c.key, body, "Accept-Encoding", enc)
			if d := sameWire(gw, pl); d != "" {
				t.Errorf("%s over h2c: differs from plain reverse_proxy: %s", name, d)
			}
			if gw.proto != "HTTP/2.0" || gw.status != 401 || gw.err == nil {
				t.Errorf("%s over h2c: %s %d, end of body %v; want the HTTP/2 stream reset after the partial 401", name, gw.proto, gw.status, gw.err)
			}
		}
	}
}

// TestUneditableMetadataPassesUnchanged: a 401 the gateway could explain,
// but whose metadata it cannot edit without loss or ambiguity ("reason"
// twice, more members than it edits, a metadata that is not an object),
// passes unchanged, says no reason, and is counted as uneditable. Other
// members written twice are kept byte for byte, and the 401 explained.
func TestUneditableMetadataPassesUnchanged(t *testing.T) {
	var many strings.Builder
	for i := range 65 {
		fmt.Fprintf(&many, `,"m%d":%d`, i, i)
	}
	const repeated = `{"error":{"message":"User not found.","code":401,"metadata":{"hint":"a","hint":"b"}}}`
	bodies := map[string]string{
		"reason twice": `{"error":{"message":"User not found.","code":401,"metadata":{"reason":"a","reason":"b"}}}`,
		"65 members":   `{"error":{"message":"User not found.","code":401,"metadata":{` + many.String()[1:] + `}}}`,
		"a string":     `{"error":{"message":"User not found.","code":401,"metadata":"not an object"}}`,
	}
	// In front of the emulator: inference requests that ask for one of
	// these bodies get it as their 401.
	wrap := func(emu http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, ok := bodies[r.Header.Get("X-Test-Metadata")]
			if r.Header.Get("X-Test-Metadata") == "repeated" {
				b, ok = repeated, true
			}
			if !ok || r.URL.Path != "/api/v1/chat/completions" {
				emu.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, b)
		})
	}
	e := start(t, options{wrap: wrap})
	key, expiry := e.keyExpiringIn(time.Second)
	sleepUntil(expiry)
	body := `{"model":"openai/gpt-4o","messages":[]}`
	const uneditable = `caddy_openrouter_keys_unexplained_total{class="uneditable"}`
	before := metric(t, uneditable)
	for name, want := range bodies {
		gw, gwBody := raw(t, "POST", gatewayBase+"/chat/completions", key, body, "X-Test-Metadata", name)
		pl, plBody := raw(t, "POST", plainBase+"/chat/completions", key, body, "X-Test-Metadata", name)
		if gw.StatusCode != 401 || string(gwBody) != want || string(plBody) != want {
			t.Errorf("%s: %d %s; want the 401 unchanged", name, gw.StatusCode, gwBody)
		}
		if !equalHeader(comparableHeader(gw.Header), comparableHeader(pl.Header)) || gw.Header.Get("X-Openrouter-Key-Status") != "" {
			t.Errorf("%s: header\n gateway %v\n plain   %v", name, gw.Header, pl.Header)
		}
	}
	// Defect 7: a member other than "reason" written twice loses nothing.
	gw, gwBody := raw(t, "POST", gatewayBase+"/chat/completions", key, body, "X-Test-Metadata", "repeated")
	if gw.Header.Get("X-Openrouter-Key-Status") != "key_expired" || !strings.Contains(string(gwBody), `"metadata":{"hint":"a","hint":"b","reason":"key_expired","expires_at":"`) {
		t.Errorf("metadata with a member twice: %d %s; want it explained, both members kept", gw.StatusCode, gwBody)
	}
	if n := metric(t, uneditable) - before; n != float64(len(bodies)) {
		t.Errorf("%s moved by %v; want %d", uneditable, n, len(bodies))
	}
	// The key is explained whenever the metadata can be edited: it was
	// the metadata, not the key, that kept the body unchanged.
	_, err := chat(gatewayBase, key)
	if ke := asKeyError(t, err); ke.reason != "key_expired" {
		t.Errorf("the same key's ordinary 401: %+v", ke)
	}
}
