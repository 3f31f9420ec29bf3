package caddymodule

// clock.go owns the clock that everything that waits or stamps reads (set
// by tests), flight (one piece of work several callers wait for), and
// minTime and maxTime.

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// flight is one piece of work that several callers wait for, each until
// its own context is done; the work runs to its own deadline whoever
// stops waiting.
type flight[T any] struct {
	done    chan struct{}
	started time.Time
	value   T
	err     error
}

func newFlight[T any](started time.Time) *flight[T] {
	return &flight[T]{done: make(chan struct{}), started: started}
}

func (f *flight[T]) finish(v T, err error) {
	f.value, f.err = v, err
	close(f.done)
}

// wait returns the flight's result, or a cancelled or timed-out lookup
// error when ctx ends first.
func (f *flight[T]) wait(ctx context.Context) (T, error) {
	select {
	case <-f.done:
		return f.value, f.err
	case <-ctx.Done():
		var zero T
		return zero, openrouter.ContextError(ctx, "wait", ctx.Err())
	}
}

// clock tells the time and times waits: the system's, unless a test set
// another. It is read on every request, so it is one atomic load. What it
// does not time: a context's deadline (Go's, on the system's clock), the
// rate limiters' budgets (they pace requests to OpenRouter in real time),
// and the lookup latency histograms, which measure real time.
type clock struct {
	set atomic.Pointer[func() time.Time]
	// timer times the gateway's own waits (the key watch's between reads,
	// a limit failure's for evidence, the probe's for the budget, the
	// shared store's health checks and cleanup) from the same source as
	// now, so that a test moving the time steps them.
	timer atomic.Pointer[func(time.Duration) <-chan time.Time]
}

func (c *clock) now() time.Time {
	if f := c.set.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// after is a channel that receives the time once d has passed.
func (c *clock) after(d time.Duration) <-chan time.Time {
	if f := c.timer.Load(); f != nil {
		return (*f)(d)
	}
	return time.After(d)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
