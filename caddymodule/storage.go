package caddymodule

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Shared knowledge: what one replica learns, the others can read through
// Caddy's storage (file system on a shared volume, Redis, Consul, S3, ...).
const (
	sharedPrefix       = "openrouter_keys/v1/keys/"
	sharedCleanupLock  = "openrouter_keys_cleanup"
	sharedCleanupMark  = "openrouter_keys/v1/last_cleanup"
	sharedKeepExpired  = 30 * 24 * time.Hour // entries of expired keys
	sharedCleanupEvery = time.Hour
	sharedWriteQueue   = 1024 // pending writes; past it, writes are dropped
	storageTimeout     = 2 * time.Second
)

// sharedEntry is what the storage holds per key fingerprint: facts about
// the key, never the key.
type sharedEntry struct {
	// ExpiresAt is the key's expires_at (unix seconds), when known.
	ExpiresAt int64 `json:"expires_at,omitempty"`
	// Management says GET /key reported a management key.
	Management bool `json:"management_key,omitempty"`
	// Disabled and NotFound are the management API's word, as of LearnedAt.
	Disabled bool `json:"disabled,omitempty"`
	NotFound bool `json:"not_found,omitempty"`
	// LearnedAt is when these facts were learned (unix seconds).
	LearnedAt int64 `json:"learned_at"`
	// KeepUntil is the entry's own expiry (unix seconds): cleanup deletes
	// the entry after it.
	KeepUntil int64 `json:"keep_until"`
}

// sharedEntryOf is what st has worth sharing, if anything.
func sharedEntryOf(st keyState, now time.Time, ttl time.Duration) (sharedEntry, bool) {
	e := sharedEntry{
		Management: st.has(flagManagement),
		Disabled:   st.has(flagDisabled),
		NotFound:   st.has(flagNotFound),
		LearnedAt:  now.Unix(),
	}
	switch {
	case st.has(flagHasExpiry):
		e.ExpiresAt = st.expiresAt
		e.KeepUntil = st.expiresAt + int64(sharedKeepExpired/time.Second)
	case e.Management:
		e.KeepUntil = now.Add(sharedKeepExpired).Unix()
	case e.Disabled || e.NotFound:
		e.KeepUntil = now.Add(ttl).Unix()
	default:
		return e, false
	}
	return e, true
}

// apply merges the entry into a local state.
func (e sharedEntry) apply(st *keyState) {
	if e.ExpiresAt != 0 {
		st.flags |= flagHasExpiry
		st.expiresAt = e.ExpiresAt
	}
	if e.Management {
		st.flags |= flagManagement
	}
	learned := e.LearnedAt * int64(time.Second)
	if (e.Disabled || e.NotFound) && learned > st.verdictAt {
		st.flags &^= flagDisabled | flagNotFound
		if e.Disabled {
			st.flags |= flagDisabled
		}
		if e.NotFound {
			st.flags |= flagNotFound
		}
		st.verdictAt = learned
	}
}

// sharedStore reads and writes shared entries, off the request path:
// writes go through a bounded queue to one writer, reads happen only while
// a failing request waits for evidence, and no storage error reaches a
// client.
type sharedStore struct {
	storage certmagic.Storage
	logger  *zap.Logger
	writes  chan sharedWrite
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type sharedWrite struct {
	fp    fingerprint
	entry sharedEntry
}

func newSharedStore(storage certmagic.Storage, logger *zap.Logger) *sharedStore {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sharedStore{storage: storage, logger: logger, writes: make(chan sharedWrite, sharedWriteQueue), ctx: ctx, cancel: cancel}
	s.wg.Add(2)
	go s.writer()
	go s.cleaner()
	return s
}

func (s *sharedStore) stop() {
	s.cancel()
	s.wg.Wait()
}

func sharedKey(fp fingerprint) string { return sharedPrefix + hex.EncodeToString(fp[:]) }

// publish queues an entry for writing; it never blocks.
func (s *sharedStore) publish(fp fingerprint, e sharedEntry) {
	select {
	case s.writes <- sharedWrite{fp, e}:
	default:
		s.count("store", errors.New("queue full"))
	}
}

func (s *sharedStore) writer() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case w := <-s.writes:
			b, _ := json.Marshal(w.entry)
			ctx, cancel := context.WithTimeout(s.ctx, storageTimeout)
			err := s.storage.Store(ctx, sharedKey(w.fp), b)
			cancel()
			s.count("store", scrub(err, w.fp))
		}
	}
}

// read returns the shared entry for a key, if there is a live one.
func (s *sharedStore) read(ctx context.Context, fp fingerprint) (sharedEntry, bool) {
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	b, err := s.storage.Load(ctx, sharedKey(fp))
	if errors.Is(err, fs.ErrNotExist) {
		gatewayMetrics.storageOps.WithLabelValues("load", outcomeNotFound).Inc()
		return sharedEntry{}, false
	}
	s.count("load", scrub(err, fp))
	var e sharedEntry
	if err != nil || json.Unmarshal(b, &e) != nil || e.KeepUntil < time.Now().Unix() {
		return sharedEntry{}, false
	}
	return e, true
}

// cleaner deletes entries past their KeepUntil, once an hour across all
// replicas: the first to take the storage lock does it and leaves a mark.
func (s *sharedStore) cleaner() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Second) // soon after start, then hourly
	defer timer.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-timer.C:
			s.cleanup()
			timer.Reset(sharedCleanupEvery)
		}
	}
}

func (s *sharedStore) cleanup() {
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	if err := s.storage.Lock(ctx, sharedCleanupLock); err != nil {
		s.count("lock", err)
		return
	}
	defer func() { _ = s.storage.Unlock(context.Background(), sharedCleanupLock) }()
	now := time.Now()
	if info, err := s.storage.Stat(ctx, sharedCleanupMark); err == nil && now.Sub(info.Modified) < sharedCleanupEvery/2 {
		return // another replica just did it
	}
	keys, err := s.storage.List(ctx, strings.TrimSuffix(sharedPrefix, "/"), false)
	if errors.Is(err, fs.ErrNotExist) {
		keys, err = nil, nil
	}
	s.count("list", err)
	if err != nil {
		return
	}
	deleted := 0
	for _, key := range keys {
		b, err := s.storage.Load(ctx, key)
		if err != nil {
			continue
		}
		var e sharedEntry
		if json.Unmarshal(b, &e) == nil && e.KeepUntil >= now.Unix() {
			continue
		}
		err = s.storage.Delete(ctx, key)
		s.count("delete", scrubKey(err, key))
		if err == nil {
			deleted++
		}
	}
	_ = s.storage.Store(ctx, sharedCleanupMark, []byte(now.UTC().Format(time.RFC3339)))
	if c := s.logger.Check(zapcore.DebugLevel, "shared key entries cleaned up"); c != nil {
		c.Write(zap.Int("entries", len(keys)), zap.Int("deleted", deleted))
	}
}

// scrub shortens the full fingerprint in a storage error (a file path, a
// Redis key) to the 8 digits logs may carry.
func scrub(err error, fp fingerprint) error {
	return scrubKey(err, sharedKey(fp))
}

func scrubKey(err error, key string) error {
	if err == nil {
		return nil
	}
	full := strings.TrimPrefix(key, sharedPrefix)
	if len(full) < 8 {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), full, full[:8]+"..."))
}

// count records a storage operation, and logs a failure at debug: the
// gateway works on without shared knowledge.
func (s *sharedStore) count(op string, err error) {
	if err == nil {
		gatewayMetrics.storageOps.WithLabelValues(op, outcomeOK).Inc()
		return
	}
	gatewayMetrics.storageOps.WithLabelValues(op, outcomeError).Inc()
	if c := s.logger.Check(zapcore.DebugLevel, "shared storage operation failed"); c != nil {
		c.Write(zap.String("op", op), zap.Error(err))
	}
}
