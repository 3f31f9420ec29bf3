// Package emulator is an OpenRouter API emulator for tests. It follows the
// project's fact sheet (shared/openrouter-facts.md): the misleading 401
// "User not found." for expired, deleted, disabled and management keys used
// for inference; GET /key; the management API with paging; /models;
// /chat/completions with and without streaming (keep-alive comments, gaps
// between events, an in-band error chunk); 402/403/429 with their headers;
// and JSON compressed whenever the client accepts it, as OpenRouter's CDN
// does.
package emulator

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
)

// PageSize is OpenRouter's page size for GET /keys.
const PageSize = 100

// Key is one key the emulator knows.
type Key struct {
	Secret     string
	Hash       string
	Name       string
	Management bool
	Disabled   bool
	Deleted    bool
	ExpiresAt  *time.Time
	CreatedAt  time.Time
	Limit      *float64
	Usage      float64
}

// Label is OpenRouter's masked form of the key.
func (k *Key) Label() string { return k.Secret[:12] + "..." + k.Secret[len(k.Secret)-3:] }

func (k *Key) expired(now time.Time) bool { return k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) }

// KeyOptions describe a key to create.
type KeyOptions struct {
	Name       string
	Management bool
	Disabled   bool
	ExpiresAt  *time.Time
	Limit      *float64
}

// Server is the emulator. Its zero value is not usable; call New.
type Server struct {
	// Delay is waited before answering any request (for benchmarks).
	Delay time.Duration
	// EventGap is the time between streamed events.
	EventGap time.Duration
	// FlatErrors makes errors use the flat form {"message":...,"code":...}.
	FlatErrors bool
	// OpaqueHashes makes record hashes something other than sha256(key),
	// which OpenRouter does not promise, so that only label matching works.
	OpaqueHashes bool

	mu            sync.Mutex
	keyFault      Fault
	listFailsPage int
	streams       atomic.Int64
	keys          map[string]*Key
	order         []*Key // oldest first
	counts        map[string]int
}

// Fault is how GET /key misbehaves, for reliability tests.
type Fault int

// The faults GET /key can be given.
const (
	FaultNone        Fault = iota
	FaultHang              // no answer until the client gives up
	FaultStatus500         // 500 with an HTML body
	FaultReset             // the connection is reset
	FaultInvalidJSON       // 200 with a body that is not JSON
	FaultHugeBody          // 200 with a 10 MB body
)

// SetKeyFault makes GET /key misbehave (FaultNone: behave).
func (s *Server) SetKeyFault(f Fault) {
	s.mu.Lock()
	s.keyFault = f
	s.mu.Unlock()
}

// SetListFailsOnPage makes GET /keys fail with 500 on the given page
// (1-based); 0 never fails.
func (s *Server) SetListFailsOnPage(page int) {
	s.mu.Lock()
	s.listFailsPage = page
	s.mu.Unlock()
}

// ActiveStreams is how many streamed completions are being written now.
func (s *Server) ActiveStreams() int64 { return s.streams.Load() }

// fault answers with the configured GET /key fault, if any.
func (s *Server) fault(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	f := s.keyFault
	s.mu.Unlock()
	switch f {
	case FaultHang:
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	case FaultStatus500:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "<html><body>Internal Server Error</body></html>")
	case FaultReset:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				if tcp, ok := conn.(*net.TCPConn); ok {
					_ = tcp.SetLinger(0) // RST, not FIN
				}
				conn.Close()
			}
		}
	case FaultInvalidJSON:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":{"label":"sk-or-v1-abc...`)
	case FaultHugeBody:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":{"label":"`)
		chunk := strings.Repeat("a", 64<<10)
		for i := 0; i < 160; i++ {
			if _, err := io.WriteString(w, chunk); err != nil {
				return true
			}
		}
		io.WriteString(w, `"}}`)
	default:
		return false
	}
	return true
}

// New returns an emulator with no keys.
func New() *Server {
	return &Server{
		EventGap: 20 * time.Millisecond,
		keys:     make(map[string]*Key),
		counts:   make(map[string]int),
	}
}

// NewKey creates a key and returns its secret.
func (s *Server) NewKey(o KeyOptions) string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return s.addKey("sk-or-v1-"+hex.EncodeToString(b[:]), o)
}

func (s *Server) addKey(secret string, o KeyOptions) string {
	sum := sha256.Sum256([]byte(secret))
	k := &Key{
		Secret: secret, Hash: hex.EncodeToString(sum[:]), Name: o.Name,
		Management: o.Management, Disabled: o.Disabled, ExpiresAt: o.ExpiresAt,
		Limit: o.Limit, CreatedAt: time.Now().UTC(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.OpaqueHashes {
		opaque := sha256.Sum256([]byte("opaque:" + secret))
		k.Hash = hex.EncodeToString(opaque[:])
	}
	s.keys[secret] = k
	s.order = append(s.order, k)
	return secret
}

// ExpireIn gives a key a remaining life of d: it then expires on its own,
// as real keys do.
func (s *Server) ExpireIn(secret string, d time.Duration) {
	t := time.Now().Add(d).UTC()
	s.mu.Lock()
	s.keys[secret].ExpiresAt = &t
	s.mu.Unlock()
}

// SetDisabled disables or re-enables a key.
func (s *Server) SetDisabled(secret string, disabled bool) {
	s.mu.Lock()
	s.keys[secret].Disabled = disabled
	s.mu.Unlock()
}

// Delete deletes a key: it disappears from the management API.
func (s *Server) Delete(secret string) {
	s.mu.Lock()
	s.keys[secret].Deleted = true
	s.mu.Unlock()
}

// Count is how many requests reached an endpoint ("/key", "/keys",
// "/keys/{hash}", "/chat/completions", ...), or all of them for "".
func (s *Server) Count(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if endpoint == "" {
		n := 0
		for _, c := range s.counts {
			n += c
		}
		return n
	}
	return s.counts[endpoint]
}

// Secrets lists every key the emulator has issued, for tests that sweep
// output for key material.
func (s *Server) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.order))
	for _, k := range s.order {
		out = append(out, k.Secret)
	}
	return out
}

// ServeHTTP answers under /api/v1.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.Delay > 0 {
		time.Sleep(s.Delay)
	}
	path, ok := strings.CutPrefix(r.URL.Path, "/api/v1")
	if !ok {
		s.writeError(w, r, http.StatusNotFound, "Not Found", nil)
		return
	}
	endpoint := path
	if strings.HasPrefix(path, "/keys/") {
		endpoint = "/keys/{hash}"
	}
	s.mu.Lock()
	s.counts[endpoint]++
	s.mu.Unlock()

	switch {
	case path == "/models" && r.Method == http.MethodGet:
		s.models(w, r)
	case (path == "/key" || path == "/auth/key") && r.Method == http.MethodGet:
		if !s.fault(w, r) {
			s.withKey(w, r, true, s.keyInfo)
		}
	case path == "/keys" && r.Method == http.MethodGet:
		s.withManagementKey(w, r, s.listKeys)
	case strings.HasPrefix(path, "/keys/") && r.Method == http.MethodGet:
		s.withManagementKey(w, r, func(w http.ResponseWriter, r *http.Request, _ *Key) {
			s.getKey(w, r, strings.TrimPrefix(path, "/keys/"))
		})
	case path == "/credits" && r.Method == http.MethodGet:
		s.withManagementKey(w, r, s.credits)
	case path == "/chat/completions" && r.Method == http.MethodPost:
		s.withKey(w, r, false, s.chat)
	case (path == "/messages" || path == "/responses") && r.Method == http.MethodPost:
		s.withKey(w, r, false, func(w http.ResponseWriter, r *http.Request, _ *Key) {
			s.writeJSON(w, r, http.StatusOK, map[string]any{"id": "msg-emulated", "type": "message"})
		})
	default:
		s.writeError(w, r, http.StatusNotFound, "Not Found", nil)
	}
}

// authenticate does what OpenRouter does with the Authorization header.
func (s *Server) authenticate(r *http.Request) (*Key, string) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return nil, "No cookie auth credentials found"
	}
	token := auth
	if len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		token = strings.TrimSpace(auth[7:])
	}
	if !strings.HasPrefix(token, "sk-or-") {
		return nil, "Missing Authentication header"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[token]
	if k == nil || k.Deleted || k.Disabled || k.expired(time.Now()) {
		return nil, "User not found."
	}
	cp := *k
	return &cp, ""
}

// withKey runs next for a live key. Management keys may call /key but
// never inference.
func (s *Server) withKey(w http.ResponseWriter, r *http.Request, managementAllowed bool, next func(http.ResponseWriter, *http.Request, *Key)) {
	k, msg := s.authenticate(r)
	if k == nil || (k.Management && !managementAllowed) {
		if msg == "" {
			msg = "User not found."
		}
		s.writeError(w, r, http.StatusUnauthorized, msg, nil)
		return
	}
	next(w, r, k)
}

func (s *Server) withManagementKey(w http.ResponseWriter, r *http.Request, next func(http.ResponseWriter, *http.Request, *Key)) {
	s.withKey(w, r, true, func(w http.ResponseWriter, r *http.Request, k *Key) {
		if !k.Management {
			s.writeError(w, r, http.StatusForbidden, "Only management keys can perform this operation", nil)
			return
		}
		next(w, r, k)
	})
}

func timeOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}

func (s *Server) keyInfo(w http.ResponseWriter, r *http.Request, k *Key) {
	var remaining any
	if k.Limit != nil {
		remaining = *k.Limit - k.Usage
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"data": map[string]any{
		"label": k.Label(), "limit": k.Limit, "limit_remaining": remaining, "limit_reset": nil,
		"include_byok_in_limit": false, "usage": k.Usage, "usage_daily": k.Usage, "usage_weekly": k.Usage,
		"usage_monthly": k.Usage, "byok_usage": 0, "is_free_tier": false,
		"is_management_key": k.Management, "is_provisioning_key": k.Management,
		"expires_at": timeOrNil(k.ExpiresAt), "creator_user_id": nil,
		"rate_limit": map[string]any{"requests": -1, "interval": "10s", "note": "This field is deprecated and safe to ignore."},
	}})
}

func record(k *Key) map[string]any {
	return map[string]any{
		"hash": k.Hash, "name": k.Name, "label": k.Label(), "disabled": k.Disabled,
		"limit": k.Limit, "limit_remaining": nil, "limit_reset": nil, "include_byok_in_limit": false,
		"usage": k.Usage, "created_at": k.CreatedAt.Format(time.RFC3339), "updated_at": nil,
		"expires_at": timeOrNil(k.ExpiresAt), "creator_user_id": nil, "workspace_id": "default",
	}
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, _ *Key) {
	offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	s.mu.Lock()
	failPage := s.listFailsPage
	s.mu.Unlock()
	if failPage > 0 && offset/PageSize+1 == failPage {
		s.writeError(w, r, http.StatusInternalServerError, "Internal Server Error", nil)
		return
	}
	includeDisabled := r.URL.Query().Get("include_disabled") == "true"
	s.mu.Lock()
	var live []*Key
	for i := len(s.order) - 1; i >= 0; i-- { // most recent first
		k := s.order[i]
		if k.Deleted || (k.Disabled && !includeDisabled) {
			continue
		}
		live = append(live, k)
	}
	page := []map[string]any{}
	for i := offset; i < len(live) && i < offset+PageSize; i++ {
		page = append(page, record(live[i]))
	}
	s.mu.Unlock()
	s.writeJSON(w, r, http.StatusOK, map[string]any{"data": page})
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request, hash string) {
	s.mu.Lock()
	var found *Key
	for _, k := range s.order {
		if k.Hash == hash && !k.Deleted {
			found = k
		}
	}
	var rec map[string]any
	if found != nil {
		rec = record(found)
	}
	s.mu.Unlock()
	if rec == nil {
		s.writeError(w, r, http.StatusNotFound, "Key not found", nil)
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"data": rec})
}

func (s *Server) credits(w http.ResponseWriter, r *http.Request, _ *Key) {
	s.writeJSON(w, r, http.StatusOK, map[string]any{"data": map[string]any{"total_credits": 25, "total_usage": 11.5}})
}

// ModelIDs are the models the emulator lists.
var ModelIDs = []string{
	"openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet", "anthropic/claude-3-haiku",
	"google/gemini-2.0-flash-001", "meta-llama/llama-3.1-70b-instruct", "mistralai/mistral-large",
	"deepseek/deepseek-chat", "qwen/qwen-2.5-72b-instruct", "x-ai/grok-2",
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		// A dead key sent along may still get the 401.
		if k, msg := s.authenticate(r); k == nil && msg == "User not found." {
			s.writeError(w, r, http.StatusUnauthorized, msg, nil)
			return
		}
	}
	data := make([]map[string]any, 0, len(ModelIDs))
	for i, id := range ModelIDs {
		data = append(data, map[string]any{
			"id": id, "canonical_slug": id, "name": id, "created": 1700000000 + i,
			"description":        strings.Repeat("A model emulated for tests. ", 40),
			"context_length":     128000,
			"architecture":       map[string]any{"modality": "text->text", "input_modalities": []string{"text"}, "output_modalities": []string{"text"}},
			"pricing":            map[string]any{"prompt": "0.0000025", "completion": "0.00001", "request": "0", "image": "0"},
			"top_provider":       map[string]any{"context_length": 128000, "max_completion_tokens": 16384, "is_moderated": true},
			"per_request_limits": nil, "supported_parameters": []string{"max_tokens", "temperature", "stream"},
		})
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"data": data})
}

// Reply is what every emulated completion says, one word per streamed event.
const Reply = "Hello from the OpenRouter emulator."

// Models that make /chat/completions fail the way OpenRouter does.
const (
	ModelNeedsCredits = "emulator/error-402"
	ModelKeyLimit     = "emulator/error-403"
	ModelRateLimited  = "emulator/error-429"
	ModelInBandError  = "emulator/in-band-error"
)

func (s *Server) chat(w http.ResponseWriter, r *http.Request, k *Key) {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		s.writeError(w, r, http.StatusBadRequest, "Invalid JSON body", nil)
		return
	}
	switch req.Model {
	case ModelNeedsCredits:
		s.writeError(w, r, http.StatusPaymentRequired, "This request requires more credits, or fewer max_tokens. You requested up to 16384 tokens, but can only afford 1000.", map[string]any{"provider_name": nil})
		return
	case ModelKeyLimit:
		s.writeError(w, r, http.StatusForbidden, "Key limit exceeded (monthly limit). Manage it using https://openrouter.ai/settings/keys", nil)
		return
	case ModelRateLimited:
		const reset = "1767225600000" // fixed, so that two answers compare byte for byte
		h := w.Header()
		h.Set("Retry-After", "3")
		h.Set("X-RateLimit-Limit", "20")
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Reset", reset)
		s.writeError(w, r, http.StatusTooManyRequests, "Rate limit exceeded: free-models-per-min.",
			map[string]any{"headers": map[string]string{"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}})
		return
	}
	// Fixed, so that the same request answered twice compares byte for byte.
	id, created := "gen-1767225600-emulated", int64(1767225600)
	if !req.Stream {
		s.writeJSON(w, r, http.StatusOK, map[string]any{
			"id": id, "provider": "Emulator", "model": req.Model, "object": "chat.completion", "created": created,
			"choices": []any{map[string]any{"index": 0, "logprobs": nil, "finish_reason": "stop", "native_finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": Reply, "refusal": nil}}},
			"usage": map[string]any{"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
		})
		return
	}
	s.streams.Add(1)
	defer s.streams.Add(-1)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Generation-Id", id)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(s string) bool {
		if _, err := io.WriteString(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	chunk := func(delta map[string]any, finish any, extra map[string]any) string {
		c := map[string]any{"id": id, "provider": "Emulator", "model": req.Model, "object": "chat.completion.chunk", "created": created,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish, "native_finish_reason": finish, "logprobs": nil}}}
		for k, v := range extra {
			c[k] = v
		}
		b, _ := json.Marshal(c)
		return "data: " + string(b) + "\n\n"
	}
	gap := func() bool {
		select {
		case <-r.Context().Done():
			return false
		case <-time.After(s.EventGap):
			return true
		}
	}
	if !send(": OPENROUTER PROCESSING\n\n") || !gap() || !send(": OPENROUTER PROCESSING\n\n") || !gap() {
		return
	}
	words := strings.SplitAfter(Reply, " ")
	for i, word := range words {
		delta := map[string]any{"content": word}
		if i == 0 {
			delta["role"] = "assistant"
		}
		if !send(chunk(delta, nil, nil)) || !gap() {
			return
		}
		if req.Model == ModelInBandError {
			send(chunk(map[string]any{"content": ""}, "error", map[string]any{"error": map[string]any{"code": 502, "message": "Provider returned error"}}))
			send("data: [DONE]\n\n")
			return
		}
		if i == 1 && !send(": OPENROUTER PROCESSING\n\n") {
			return
		}
	}
	send(chunk(map[string]any{}, "stop", map[string]any{"usage": map[string]any{"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)}}))
	send("data: [DONE]\n\n")
}

// Error bodies are structs, not maps, so that their members come in
// OpenRouter's order: {"error":{"message":"User not found.","code":401}}
// byte for byte.
type (
	errorObject struct {
		Message  string         `json:"message"`
		Code     int            `json:"code"`
		Metadata map[string]any `json:"metadata,omitempty"`
	}
	errorEnvelope struct {
		Error errorObject `json:"error"`
	}
	anthropicError struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	responsesError struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		ErrorType string `json:"error_type"`
	}
)

// writeError writes OpenRouter's error envelope for the endpoint.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, status int, msg string, metadata map[string]any) {
	var body any
	switch {
	case strings.HasSuffix(r.URL.Path, "/messages"):
		var e anthropicError
		e.Type, e.Error.Type, e.Error.Message = "error", "authentication_error", msg
		body = e
	case strings.HasSuffix(r.URL.Path, "/responses"):
		var e responsesError
		e.Error.Code, e.Error.Message, e.ErrorType = "server_error", msg, "authentication"
		body = e
	case s.FlatErrors:
		body = errorObject{Message: msg, Code: status, Metadata: metadata}
	default:
		body = errorEnvelope{errorObject{Message: msg, Code: status, Metadata: metadata}}
	}
	s.writeJSON(w, r, status, body)
}

// writeJSON writes v compressed as the client accepts it, brotli first, as
// OpenRouter's CDN does.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("emulator: %v", err))
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Add("Vary", "Accept-Encoding")
	accept := r.Header.Get("Accept-Encoding")
	switch {
	case acceptsEncoding(accept, "br"):
		h.Set("Content-Encoding", "br")
		w.WriteHeader(status)
		bw, _ := brotliWriters.Get().(*brotli.Writer)
		if bw == nil {
			bw = brotli.NewWriterLevel(w, 4)
		} else {
			bw.Reset(w)
		}
		_, _ = bw.Write(b)
		_ = bw.Close()
		brotliWriters.Put(bw)
	case acceptsEncoding(accept, "gzip"):
		h.Set("Content-Encoding", "gzip")
		w.WriteHeader(status)
		gw, _ := gzipWriters.Get().(*gzip.Writer)
		if gw == nil {
			gw = gzip.NewWriter(w)
		} else {
			gw.Reset(w)
		}
		_, _ = gw.Write(b)
		_ = gw.Close()
		gzipWriters.Put(gw)
	default:
		h.Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(status)
		_, _ = w.Write(b)
	}
}

// Compressors are pooled so that the emulator stays cheap under load.
var gzipWriters, brotliWriters sync.Pool

func acceptsEncoding(header, enc string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), enc) {
			continue
		}
		q, found := strings.CutPrefix(strings.TrimSpace(params), "q=")
		if v, err := strconv.ParseFloat(q, 64); found && err == nil && v == 0 {
			return false
		}
		return true
	}
	return false
}
