package caddymodule

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// storageDouble is a Caddy storage whose behaviour a test sets: it works
// (in memory), stalls ignoring its context, fails, or says "not found" to
// everything, as some storage modules do on errors.
type storageDouble struct {
	mu      sync.Mutex
	data    map[string][]byte
	mode    atomic.Int32
	calls   atomic.Int32
	release chan struct{}
}

const (
	storageWorks int32 = iota
	storageStalls
	storageFails
	storageLies
)

func newStorageDouble() *storageDouble {
	return &storageDouble{data: map[string][]byte{}, release: make(chan struct{})}
}

func (s *storageDouble) behave() error {
	s.calls.Add(1)
	switch s.mode.Load() {
	case storageStalls:
		<-s.release // ignores every context
		return errors.New("stalled")
	case storageFails:
		return errors.New("connection refused")
	case storageLies:
		return fs.ErrNotExist
	}
	return nil
}

func (s *storageDouble) Store(_ context.Context, key string, v []byte) error {
	if err := s.behave(); err != nil {
		if s.mode.Load() == storageLies {
			return nil // "stored"
		}
		return err
	}
	s.mu.Lock()
	s.data[key] = append([]byte(nil), v...)
	s.mu.Unlock()
	return nil
}

func (s *storageDouble) Load(_ context.Context, key string) ([]byte, error) {
	if err := s.behave(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return v, nil
}

func (s *storageDouble) Delete(_ context.Context, key string) error {
	if err := s.behave(); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.data, key)
	s.mu.Unlock()
	return nil
}

func (s *storageDouble) Exists(ctx context.Context, key string) bool {
	_, err := s.Load(ctx, key)
	return err == nil
}

func (s *storageDouble) List(_ context.Context, prefix string, _ bool) ([]string, error) {
	if err := s.behave(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.data {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out, nil
}

func (s *storageDouble) Stat(_ context.Context, key string) (certmagic.KeyInfo, error) {
	if err := s.behave(); err != nil {
		return certmagic.KeyInfo{}, err
	}
	return certmagic.KeyInfo{Key: key, Modified: time.Now()}, nil
}

func (s *storageDouble) Lock(context.Context, string) error   { return s.behave() }
func (s *storageDouble) Unlock(context.Context, string) error { return nil }

// newTestStore opens a store over st whose clock the test advances.
func newTestStore(t *testing.T, st certmagic.Storage) (*sharedStore, *observer.ObservedLogs, *testClock) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	core, logs := observer.New(zapcore.DebugLevel)
	clk := newTestClock(time.Now())
	var c clock
	clk.drive(&c)
	// No health check or writer runs by itself: each test makes the calls
	// it checks.
	return openSharedStore(ctx, st, &c, "sk-or-v1-mk", zap.New(core)), logs, clk
}

// A storage that ignores its context never sets how long a request waits,
// and once it has failed it is not waited on again for a while.
func TestStorageThatStallsIsNotWaitedOn(t *testing.T) {
	double := newStorageDouble()
	defer close(double.release)
	s, logs, _ := newTestStore(t, double)
	double.mode.Store(storageStalls)

	// The storage never returns before the test ends: a read that returns
	// was not waited on past its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, ok := s.read(ctx, fingerprintOf(goodKey)); ok {
		t.Fatal("a stalled read found an entry")
	}
	if testutil.ToFloat64(gatewayMetrics.storageAvailable) != 0 {
		t.Error("storage_available still says 1")
	}
	// Paused: the next reads do not reach the storage at all.
	before := double.calls.Load()
	for i := 0; i < 100; i++ {
		s.read(context.Background(), fingerprintOf(goodKey))
	}
	if n := double.calls.Load() - before; n != 0 {
		t.Errorf("%d calls reached a paused storage", n)
	}
	if n := logs.FilterMessageSnippet("shared storage unavailable").Len(); n != 1 {
		t.Errorf("%d outage lines logged, want one per state change", n)
	}
}

// Abandoned calls are bounded: a storage that never returns costs a fixed
// number of goroutines, not one per request.
func TestStorageCallsInFlightAreBounded(t *testing.T) {
	double := newStorageDouble()
	defer close(double.release)
	s, _, clk := newTestStore(t, double)
	double.mode.Store(storageStalls)
	for i := 0; i < 50; i++ {
		clk.advance(breakerMaxPause) // every pause has passed
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		s.read(ctx, fingerprintOf(goodKey))
		cancel()
	}
	if n := len(s.calls); n > storageCallsInFlight {
		t.Errorf("%d storage calls in flight", n)
	}
	if n := double.calls.Load(); n > storageCallsInFlight+2 {
		t.Errorf("%d calls reached a stalled storage (health check included)", n)
	}
}

// A failing storage pauses, and comes back when it answers again.
func TestStorageBreakerRecovers(t *testing.T) {
	double := newStorageDouble()
	s, logs, clk := newTestStore(t, double)
	double.mode.Store(storageFails)
	s.read(context.Background(), fingerprintOf(goodKey))
	if s.available() {
		t.Fatal("available right after an error")
	}
	clk.advance(breakerPause - time.Millisecond)
	if s.available() {
		t.Fatal("available before the pause is over")
	}
	double.mode.Store(storageWorks)
	clk.advance(2 * time.Millisecond)
	if !s.available() {
		t.Fatal("still paused once the pause is over")
	}
	s.checkHealth()
	if !s.available() {
		t.Error("not available after a successful check")
	}
	if testutil.ToFloat64(gatewayMetrics.storageAvailable) != 1 || logs.FilterMessage("shared storage available again").Len() != 1 {
		t.Error("recovery not shown in the metric and the log")
	}
}

// A storage that answers "not found" on errors hides an outage; the health
// check, which reads back what it just wrote, shows it.
func TestStorageThatLiesIsCaught(t *testing.T) {
	double := newStorageDouble()
	double.mode.Store(storageLies)
	s, logs, _ := newTestStore(t, double)
	s.checkHealth()
	if s.available() {
		t.Error("available after a mark written could not be read back")
	}
	if logs.FilterMessageSnippet("shared storage unavailable").Len() != 1 {
		t.Error("the outage was not logged")
	}
}

func TestSharedEntryRoundTrip(t *testing.T) {
	now := testNow
	exp := now.Add(time.Hour)
	st := stateOf(now.Add(-time.Hour), func(s *keyState) {
		s.alive(&keyMetadata{IsManagementKey: true, ExpiresAt: &exp}, now.Add(-time.Minute))
		s.applyRecord(&keyRecord{Disabled: true}, now)
	})
	e, ok := sharedEntryOf(st, now, time.Minute)
	if !ok {
		t.Fatal("nothing to share")
	}
	got := newKeyState(now)
	got.mergeShared(e)
	if !got.has(flagExpiry|flagManagement) || got.expiresAt != st.expiresAt || got.disabledAt != st.disabledAt || got.aliveAt != st.aliveAt {
		t.Errorf("round trip: %+v", got)
	}
	// A key seen alive after another replica saw it disabled was enabled
	// again: the older "disabled" does not win.
	later := stateOf(now, func(s *keyState) { s.alive(&keyMetadata{}, now.Add(time.Minute)) })
	later.mergeShared(e)
	if later.disabledAt != 0 {
		t.Error("an older disabled overrode a later sign of life")
	}
	if _, ok := sharedEntryOf(stateOf(now, func(s *keyState) { s.alive(&keyMetadata{}, now) }), now, time.Minute); ok {
		t.Error("a key known only to work was shared")
	}
}

func TestScrubEntryNames(t *testing.T) {
	fp := fingerprintOf(goodKey)
	err := scrubEntryNames(errors.New("open /srv/" + sharedKey(fp) + ": permission denied"))
	if strings.Contains(err.Error(), sharedKey(fp)[len(sharedPrefix):]) || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("scrubbed: %v", err)
	}
}

// The uses a replica shared are deleted once it has been gone longer than
// any "in use" window; a live replica's are kept.
func TestCleanupDeletesStaleUses(t *testing.T) {
	double := newStorageDouble()
	s, _, _ := newTestStore(t, double)
	a, b := s.account+sharedWatchUsed+"a", s.account+sharedWatchUsed+"b"
	ctx := context.Background()
	_ = double.Store(ctx, a, []byte(`{}`))
	_ = double.Store(ctx, b, []byte(`{}`))
	now := time.Now()
	// The double's Stat says "modified now": seen from now both are fresh,
	// seen from 9 days later both are stale.
	if n := s.cleanupStaleUses(ctx, now); n != 0 || !double.Exists(ctx, a) || !double.Exists(ctx, b) {
		t.Errorf("deleted %d fresh use files", n)
	}
	if n := s.cleanupStaleUses(ctx, now.Add(9*24*time.Hour)); n != 2 || double.Exists(ctx, a) || double.Exists(ctx, b) {
		t.Errorf("deleted %d of 2 stale use files", n)
	}
}
