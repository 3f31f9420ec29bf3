// Package emulator is an OpenRouter API emulator for tests and for trying
// the gateway offline (see cmd/fake-openrouter and README.md). It follows
// what is known of OpenRouter's API: the misleading 401 "User not found."
// for expired, deleted, disabled and management keys used for inference;
// GET /key; the management API (workspaces, keys paged by offset, most
// recent first, one workspace at a time); /models; /chat/completions with
// and without streaming (keep-alive comments, gaps between events, an
// in-band error chunk); /messages (with x-api-key) and /responses with
// their own error envelopes; JWT access tokens as bearers; accounts with a
// balance and free-model allowances, key caps with UTC windows, workspace
// budgets, and every 402/403/429 they and the providers give, with their
// headers; a provider's (BYOK) 401; JSON compressed whenever the
// client accepts it, as OpenRouter's CDN does. Knobs and scenarios make it
// misbehave the ways the real one can (faults per endpoint, transient 401s,
// a listing that shifts while it is read, 401s with trailers or cut short).
//
// Every fact of OpenRouter's API it shares with the gateway (key shape and
// labels, endpoint paths and query parameters, wire types, envelopes,
// messages and failure sentences, the UTC calendar, the record-hash
// scheme) comes from package internal/openrouter: it routes on its paths
// and answers with its builders, spelling none of its own.
package emulator

import (
	"crypto/rand"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// PageSize is OpenRouter's page size for GET /keys.
const PageSize = openrouter.KeysPageSize

// Server is the emulator, serving OpenRouter's API under /api/v1. Its zero
// value is not usable; call New. Set its fields before it serves requests.
type Server struct {
	// Delay is waited before answering any request (for benchmarks).
	Delay time.Duration
	// EventGap is the time between streamed events.
	EventGap time.Duration
	// FlatErrors makes errors outside /messages and /responses use the
	// flat form {"message":...,"code":...} seen in reports.
	FlatErrors bool
	// OpaqueHashes makes record hashes something other than sha256(key),
	// which OpenRouter does not promise, so that only label matching works.
	// It applies to keys created after it is set.
	OpaqueHashes bool
	// ListPageDelay is waited before each GET /keys page, as a slow
	// management API would (gateway tests use 50 ms).
	ListPageDelay time.Duration
	// ResponsesEnvelope is the envelope of /responses errors. New sets
	// openrouter.EnvelopeResponsesDocs (the docs example);
	// openrouter.EnvelopeOpenAI is what OpenRouter's OpenAPI spec and SDK
	// expect. Which one OpenRouter sends is not known.
	ResponsesEnvelope openrouter.Envelope
	// ExpiredJWTMessage is the 401 message for an expired JWT access token.
	// New sets "User not found."; the real message is not known.
	ExpiredJWTMessage string
	// UnauthorizedTrailer makes every 401 announce a trailer (a Trailer
	// header naming TrailerName) and send it, set to TrailerValue, after
	// the body.
	UnauthorizedTrailer bool
	// UnauthorizedCutShort makes every 401 declare its full Content-Length,
	// send half of its body and close the connection.
	UnauthorizedCutShort bool
	// Wording is the generation of 402/403/429 wording: with
	// metadata.limit_source (the zero value), without it, or the older
	// sentences (openrouter.WordingOld).
	Wording openrouter.Wording
	// RateLimitFigures is where 429s put X-RateLimit-*: headers and
	// metadata.headers (the zero value), or only one of them.
	RateLimitFigures RateLimitPlacement
	// Clock is the time limits are counted by (free-model days and
	// minutes, the reset a free-model 429 announces); nil: the time.
	Clock func() time.Time

	userID    string // the account's user, as in a top-level "user_id"
	jwtSecret []byte // signs the account's JWT access tokens
	streams   atomic.Int64

	mu            sync.Mutex
	seq           uint64
	bySecret      map[string]*Key
	byHash        map[string]*Key
	issued        []string // keys and JWTs, in order
	workspaces    []*workspace
	workspaceByID map[string]*workspace
	faults        map[string]Fault
	// faultsChanged is closed (and replaced) whenever a fault is set or
	// cleared: stalls end then, so that a test clearing a fault does not
	// wait for requests stalled by it.
	faultsChanged chan struct{}
	listFailsPage int
	onListPage    func(workspaceID string, offset int)
	synth         *synthetic // nil unless Synthesize
	failNext      map[string]int
	counts        map[string]int
	accounts      map[string]*account // by user id; the emulator's own is userID
	guardrails    map[string][]string // models allowed, by key (catalogue.go)
}

// New returns an emulator of one account with a default workspace and no
// keys.
func New() *Server {
	s := &Server{
		EventGap:          20 * time.Millisecond,
		ResponsesEnvelope: openrouter.EnvelopeResponsesDocs,
		ExpiredJWTMessage: openrouter.MessageUserNotFound,
		userID:            "user_" + randomAlphanumeric(27),
		jwtSecret:         make([]byte, 32),
		bySecret:          make(map[string]*Key),
		byHash:            make(map[string]*Key),
		workspaceByID:     make(map[string]*workspace),
		faults:            make(map[string]Fault),
		faultsChanged:     make(chan struct{}),
		failNext:          make(map[string]int),
		counts:            make(map[string]int),
		accounts:          make(map[string]*account),
	}
	_, _ = rand.Read(s.jwtSecret)
	s.accounts[s.userID] = &account{userID: s.userID, totalCredits: 25, totalUsage: 11.5, freeDay: today(time.Now())}
	s.addWorkspace("Default")
	return s
}

// UserID is the account's user id ("user_..."), as OpenRouter shows it in
// a top-level "user_id" and as the subject of the account's JWTs.
func (s *Server) UserID() string { return s.userID }

// ActiveStreams is how many streamed completions are being written now.
func (s *Server) ActiveStreams() int64 { return s.streams.Load() }

// Count is how many requests reached an endpoint: a template of
// openrouter.Endpoint ("/key" (with its alias /auth/key), "/keys",
// "/keys/{hash}", "/workspaces", ...) or another path ("/chat/completions",
// "/messages", "/responses", ...); all of them for "".
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

// endpointOf names the endpoint of an API path for Count and SetFault:
// its template ("/keys/{hash}") for an endpoint of the management API or
// GET /key (its alias /auth/key included), the path itself otherwise.
func endpointOf(path string) (openrouter.Endpoint, string, string) {
	e, param := openrouter.Route(path)
	if e == openrouter.EndpointNone {
		return e, "", path
	}
	return e, param, e.Template()
}

// ServeHTTP answers under /api/v1.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.Delay > 0 {
		time.Sleep(s.Delay)
	}
	path, ok := strings.CutPrefix(r.URL.Path, openrouter.APIPrefix)
	if !ok {
		s.writeError(w, r, http.StatusNotFound, openrouter.MessageNotFound, nil)
		return
	}
	e, param, endpoint := endpointOf(path)
	s.mu.Lock()
	s.counts[endpoint]++
	fault := s.faults[endpoint]
	s.mu.Unlock()
	if fault != FaultNone {
		s.serveFault(w, r, e, fault)
		return
	}

	get, post := r.Method == http.MethodGet, r.Method == http.MethodPost
	switch {
	case e == openrouter.EndpointModels && get:
		s.models(w, r)
	case path == openrouter.PathModelsUser && get:
		s.withKey(w, r, false, s.userModels)
	case e == openrouter.EndpointKey && get:
		s.withKey(w, r, false, s.keyInfo)
	case e == openrouter.EndpointKeys && get:
		s.withManagementKey(w, r, s.listKeys)
	case e == openrouter.EndpointKeyRecord && get:
		s.withManagementKey(w, r, func(w http.ResponseWriter, r *http.Request, _ *Key) {
			s.getKey(w, r, param)
		})
	case e == openrouter.EndpointWorkspaces && get:
		s.withManagementKey(w, r, s.listWorkspaces)
	case e == openrouter.EndpointCredits && get:
		s.withManagementKey(w, r, s.credits)
	case e == openrouter.EndpointBudgets && get:
		s.withManagementKey(w, r, func(w http.ResponseWriter, r *http.Request, _ *Key) {
			s.workspaceBudgets(w, r, param)
		})
	case path == openrouter.PathChatCompletions && post:
		s.withKey(w, r, true, s.chat)
	case (path == openrouter.PathMessages || path == openrouter.PathResponses) && post:
		s.withKey(w, r, true, func(w http.ResponseWriter, r *http.Request, k *Key) {
			req, _ := readInference(r) // an unreadable body is answered as before
			if s.admit(w, r, k, &req) {
				s.writeJSON(w, r, http.StatusOK, map[string]any{"id": "msg-emulated", "type": "message"})
			}
		})
	default:
		s.writeError(w, r, http.StatusNotFound, openrouter.MessageNotFound, nil)
	}
}

// authenticate does what OpenRouter does with a request's credentials:
// the Authorization header, or on /messages without one, x-api-key. It
// returns the key, or the 401 message.
func (s *Server) authenticate(r *http.Request) (*Key, string) {
	token := r.Header.Get("Authorization")
	if len(token) > 7 && strings.EqualFold(token[:7], "bearer ") {
		token = strings.TrimSpace(token[7:])
	} else if token == "" && openrouter.FamilyOf(r.URL.Path) == openrouter.FamilyMessages {
		token = r.Header.Get("X-Api-Key")
	}
	if token == "" {
		return nil, openrouter.MessageNoCookieAuth
	}
	if k, valid, expired := s.verifyJWT(token); valid {
		if expired {
			return nil, s.expiredJWTMessage()
		}
		return k, ""
	}
	if !strings.HasPrefix(token, openrouter.CredentialPrefix) {
		return nil, openrouter.MessageMissingAuthHeader
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.bySecret[token]
	if k == nil {
		k = s.syntheticBySecret(token)
	}
	if k == nil || k.Deleted || k.Disabled || k.expired(time.Now()) {
		return nil, openrouter.MessageUserNotFound
	}
	cp := *k
	return &cp, ""
}

func (s *Server) expiredJWTMessage() string {
	if s.ExpiredJWTMessage == "" {
		return openrouter.MessageUserNotFound
	}
	return s.ExpiredJWTMessage
}

// withKey runs next for a working credential. Management keys may call
// /key but never inference; inference also honours FailNextRequests.
func (s *Server) withKey(w http.ResponseWriter, r *http.Request, inference bool, next func(http.ResponseWriter, *http.Request, *Key)) {
	k, msg := s.authenticate(r)
	if k != nil && inference && (k.Management || s.takeFailure(k.Secret)) {
		k, msg = nil, openrouter.MessageUserNotFound
	}
	if k == nil {
		s.writeError(w, r, http.StatusUnauthorized, msg, nil)
		return
	}
	next(w, r, k)
}

func (s *Server) withManagementKey(w http.ResponseWriter, r *http.Request, next func(http.ResponseWriter, *http.Request, *Key)) {
	s.withKey(w, r, false, func(w http.ResponseWriter, r *http.Request, k *Key) {
		if !k.Management {
			s.writeError(w, r, http.StatusForbidden, openrouter.MessageManagementOnly, nil)
			return
		}
		next(w, r, k)
	})
}

// FailNextRequests makes the next n inference requests with a working key
// get the transient 401 "User not found." users report, while GET /key
// keeps answering 200.
func (s *Server) FailNextRequests(secret string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key(secret) // must exist
	s.failNext[secret] = n
}

// takeFailure reports whether this inference request with secret is one
// that FailNextRequests asked to fail, and counts it.
func (s *Server) takeFailure(secret string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.failNext[secret]
	if n <= 0 {
		return false
	}
	if n == 1 {
		delete(s.failNext, secret)
	} else {
		s.failNext[secret] = n - 1
	}
	return true
}

const alphanumeric = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func randomAlphanumeric(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphanumeric[int(b[i])%len(alphanumeric)]
	}
	return string(b)
}
