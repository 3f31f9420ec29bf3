package caddymodule

// storage.go owns shared knowledge: what one replica learns, the others
// read through Caddy's storage (a shared volume, Redis, Consul, S3, ...).
// Storage is never trusted with a deadline: every call runs under the
// gateway's own, is abandoned when it passes, and a failing storage is
// paused (a circuit breaker) instead of being waited on again.

import (
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Timing of shared knowledge (its layout is shared.go's).
const (
	sharedCleanupEvery = time.Hour
	sharedWriteQueue   = 1024 // pending writes; past it, writes are dropped
	// storageTimeout bounds every storage call, whatever the caller's
	// deadline.
	storageTimeout = 2 * time.Second
	// storageCallsInFlight bounds storage calls running at once, abandoned
	// ones included: a storage that never returns costs at most this many
	// goroutines.
	storageCallsInFlight = 8
	// After a storage error, reads and writes pause for breakerPause,
	// doubling up to breakerMaxPause while errors go on.
	breakerPause    = 2 * time.Second
	breakerMaxPause = time.Minute
	// healthEvery is how often the store checks that what it wrote can be
	// read back: a storage that answers "not found" on errors would
	// otherwise hide an outage.
	healthEvery = time.Minute
)

// errStorageUnavailable means the breaker is open: the storage failed
// moments ago and is not asked again yet.
var errStorageUnavailable = errors.New("shared storage paused after errors")

// sharedStore reads and writes shared entries, off the request path:
// writes go through a bounded queue to one writer, reads happen only while
// a failing request waits for evidence, and no storage error reaches a
// client.
type sharedStore struct {
	storage certmagic.Storage
	// clock is the account's: it times the breaker, the health check and
	// cleanup, and tells whether an entry is live.
	clock  *clock
	logger *zap.Logger
	writes chan sharedWrite
	calls  chan struct{}
	ctx    context.Context
	// account names this account's own entries (the hash scheme).
	account string

	mu        sync.Mutex
	openUntil time.Time
	pause     time.Duration
	down      bool
}

type sharedWrite struct {
	key  string
	data []byte
}

// newSharedStore starts the store's writer, health check and cleanup, which
// run until ctx (the config's lifetime) ends.
func newSharedStore(ctx context.Context, storage certmagic.Storage, clk *clock, managementKey string, logger *zap.Logger) *sharedStore {
	s := openSharedStore(ctx, storage, clk, managementKey, logger)
	go s.writer()
	go s.maintain()
	return s
}

// openSharedStore is the store without its background work: calls made on
// it run only when its caller makes them.
func openSharedStore(ctx context.Context, storage certmagic.Storage, clk *clock, managementKey string, logger *zap.Logger) *sharedStore {
	gatewayMetrics.storageAvailable.Set(1)
	return &sharedStore{
		storage: storage, clock: clk, logger: logger, ctx: ctx,
		writes:  make(chan sharedWrite, sharedWriteQueue),
		calls:   make(chan struct{}, storageCallsInFlight),
		account: sharedAccount(managementKey),
	}
}

// call runs fn against the storage under the gateway's own deadline: the
// earlier of ctx's and storageTimeout. A call the storage does not finish
// in time is abandoned (its goroutine ends when the storage returns). An
// error other than "not found", a timeout, or too many calls in flight
// trips the breaker.
func (s *sharedStore) call(ctx context.Context, op string, fn func(context.Context) error) error {
	if !s.available() {
		gatewayMetrics.storageOps.WithLabelValues(op, "paused").Inc()
		return errStorageUnavailable
	}
	select {
	case s.calls <- struct{}{}:
	default:
		err := errors.New("too many storage calls in flight")
		s.failed(op, err)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	done := make(chan error, 1)
	go func() {
		defer func() { <-s.calls }()
		done <- fn(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	cancel()
	switch {
	case err == nil:
		s.succeeded(op)
	case errors.Is(err, fs.ErrNotExist):
		gatewayMetrics.storageOps.WithLabelValues(op, "not_found").Inc()
	case errors.Is(err, context.Canceled) && s.ctx.Err() != nil:
		// The config is going away: not the storage's fault.
	default:
		s.failed(op, err)
	}
	return err
}

// load reads an entry through call; op names it in the metrics.
func (s *sharedStore) load(ctx context.Context, op, key string) ([]byte, error) {
	var b []byte
	err := s.call(ctx, op, func(ctx context.Context) error {
		var err error
		b, err = s.storage.Load(ctx, key)
		return err
	})
	return b, err
}

// store writes an entry through call. Its error is counted and, when it
// trips the breaker, logged by call: callers need not handle it.
func (s *sharedStore) store(ctx context.Context, op, key string, data []byte) error {
	return s.call(ctx, op, func(ctx context.Context) error { return s.storage.Store(ctx, key, data) })
}

func (s *sharedStore) available() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock.now().After(s.openUntil)
}

func (s *sharedStore) succeeded(op string) {
	gatewayMetrics.storageOps.WithLabelValues(op, "ok").Inc()
	s.mu.Lock()
	wasDown := s.down
	s.down, s.pause = false, 0
	s.mu.Unlock()
	if wasDown {
		gatewayMetrics.storageAvailable.Set(1)
		s.logger.Info("shared storage available again")
	}
}

func (s *sharedStore) failed(op string, err error) {
	gatewayMetrics.storageOps.WithLabelValues(op, "error").Inc()
	s.mu.Lock()
	wasDown := s.down
	s.pause = min(max(2*s.pause, breakerPause), breakerMaxPause)
	s.openUntil, s.down = s.clock.now().Add(s.pause), true
	pause := s.pause
	s.mu.Unlock()
	if !wasDown {
		gatewayMetrics.storageAvailable.Set(0)
		// Storage errors may name the entry (a file path, a Redis key):
		// the fingerprint in it is shortened.
		s.logger.Warn("shared storage unavailable: pausing it, working on local knowledge",
			zap.String("op", op), zap.Error(scrubEntryNames(err)), zap.Duration("pause", pause))
	}
}

func (s *sharedStore) enqueue(key string, data []byte) {
	select {
	case s.writes <- sharedWrite{key, data}:
	default:
		gatewayMetrics.storageOps.WithLabelValues("store", "dropped").Inc()
	}
}

func (s *sharedStore) writer() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case w := <-s.writes:
			_ = s.store(s.ctx, "store", w.key, w.data)
		}
	}
}

// maintain checks the storage's health and cleans up expired entries, once
// an hour across all replicas.
func (s *sharedStore) maintain() {
	s.checkHealth()
	health := s.clock.after(healthEvery)
	cleanup := s.clock.after(time.Second) // soon after start, then hourly
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-health:
			s.checkHealth()
			health = s.clock.after(healthEvery)
		case <-cleanup:
			s.cleanup()
			cleanup = s.clock.after(sharedCleanupEvery)
		}
	}
}

// checkHealth writes a mark and reads it back. A storage that loses it, or
// says it does not exist, is failing, whatever error it reports.
func (s *sharedStore) checkHealth() {
	key := s.healthKey()
	mark := []byte(s.clock.now().UTC().Format(time.RFC3339Nano))
	if s.store(s.ctx, "health", key, mark) != nil {
		return
	}
	got, err := s.load(s.ctx, "health", key)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && string(got) != string(mark)) {
		s.failed("health", errors.New("a mark just written could not be read back"))
	}
}

// instance names this replica's health mark: per process, never reused.
func (s *sharedStore) instance() []byte {
	instanceOnce.Do(func() {
		instanceID = make([]byte, 8)
		_, _ = rand.Read(instanceID) // never fails (crypto/rand)
	})
	return instanceID
}

var (
	instanceOnce sync.Once
	instanceID   []byte
)

// lock takes a storage lock within ctx, never waiting past it even when the
// storage ignores it; a lock the storage grants after that is given back.
func (s *sharedStore) lock(ctx context.Context, name string) (unlock func(), err error) {
	if !s.available() {
		return nil, errStorageUnavailable
	}
	locked := make(chan error, 1)
	go func() { locked <- s.storage.Lock(ctx, name) }()
	select {
	case err = <-locked:
	case <-ctx.Done():
		go func() {
			if <-locked == nil {
				_ = s.storage.Unlock(context.Background(), name)
			}
		}()
		err = ctx.Err()
	}
	if err != nil {
		s.failed("lock", err)
		return nil, err
	}
	return func() {
		if err := s.storage.Unlock(context.Background(), name); err != nil {
			s.failed("unlock", err)
		}
	}, nil
}

func (s *sharedStore) cleanup() {
	if !s.available() {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	unlock, err := s.lock(ctx, sharedCleanupLock)
	if err != nil {
		return
	}
	defer unlock()
	now := s.clock.now()
	var marked bool
	_ = s.call(ctx, "stat", func(ctx context.Context) error {
		info, err := s.storage.Stat(ctx, sharedCleanupMark)
		marked = err == nil && now.Sub(info.Modified) < sharedCleanupEvery/2
		return err
	})
	if marked {
		return // another replica just did it
	}
	var keys []string
	err = s.call(ctx, "list", func(ctx context.Context) error {
		var err error
		keys, err = s.storage.List(ctx, strings.TrimSuffix(sharedPrefix, "/"), false)
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return
	}
	deleted := 0
	for _, key := range keys {
		b, err := s.load(ctx, "load", key)
		if err != nil {
			continue
		}
		if _, live := liveEntry(b, now); live {
			continue
		}
		if s.call(ctx, "delete", func(ctx context.Context) error { return s.storage.Delete(ctx, key) }) == nil {
			deleted++
		}
	}
	deleted += s.cleanupStaleUses(ctx, now)
	_ = s.store(ctx, "store", sharedCleanupMark, []byte(now.UTC().Format(time.RFC3339)))
	if c := s.logger.Check(zapcore.DebugLevel, "shared key entries cleaned up"); c != nil {
		c.Write(zap.Int("entries", len(keys)), zap.Int("deleted", deleted))
	}
}

// staleUses is how long a replica's shared uses are kept once it stopped
// writing them (a replica that restarted writes under a new name): longer
// than any "in use" window of the alert rules.
const staleUses = 8 * 24 * time.Hour

// cleanupStaleUses deletes the uses of replicas gone for staleUses.
func (s *sharedStore) cleanupStaleUses(ctx context.Context, now time.Time) int {
	var names []string
	if s.call(ctx, "list", func(ctx context.Context) error {
		var err error
		names, err = s.storage.List(ctx, s.usesPrefix(), false)
		return err
	}) != nil {
		return 0
	}
	deleted := 0
	for _, name := range names {
		var modified time.Time
		if s.call(ctx, "stat", func(ctx context.Context) error {
			info, err := s.storage.Stat(ctx, name)
			modified = info.Modified
			return err
		}) != nil || now.Sub(modified) < staleUses {
			continue
		}
		if s.call(ctx, "delete", func(ctx context.Context) error { return s.storage.Delete(ctx, name) }) == nil {
			deleted++
		}
	}
	return deleted
}

// scrubEntryNames shortens every full fingerprint (64 hex digits) in a
// storage error (a file path, a Redis key) to the 8 digits logs may carry.
func scrubEntryNames(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var b strings.Builder
	run := 0
	for i := 0; i < len(msg); i++ {
		if lowerHex[msg[i]] {
			run++
			continue
		}
		b.WriteString(shortenHex(msg[i-run : i]))
		b.WriteByte(msg[i])
		run = 0
	}
	b.WriteString(shortenHex(msg[len(msg)-run:]))
	return errors.New(b.String())
}

func shortenHex(s string) string {
	if len(s) >= 32 {
		return s[:8] + "..."
	}
	return s
}
