package store

import (
	"context"
	"fmt"
	"sync"
)

// FeedSignal is the in-process broadcast behind WaitFeed, shared by the
// backends: a writer publishes each new feed tail after its commit, and
// waiters block on a channel that the next publish closes, so thousands
// of idle watchers cost nothing and no one polls.
type FeedSignal struct {
	mu      sync.Mutex
	tail    uint64
	changed chan struct{} // closed and replaced by each Publish
	closed  bool
}

// NewFeedSignal returns a signal whose feed starts at tail.
func NewFeedSignal(tail uint64) *FeedSignal {
	return &FeedSignal{tail: tail, changed: make(chan struct{})}
}

// Publish records a committed feed tail and wakes every waiter.
func (f *FeedSignal) Publish(tail uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set(tail)
}

// set records tail and wakes the waiters; the caller holds mu.
func (f *FeedSignal) set(tail uint64) {
	f.tail = tail
	close(f.changed)
	f.changed = make(chan struct{})
}

// Advance publishes tail if it is beyond the last published one. It is
// for backends that learn of commits from several sources (their own
// appends, other replicas' notifications, polls), which may arrive out of
// order.
func (f *FeedSignal) Advance(tail uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if tail > f.tail {
		f.set(tail)
	}
}

// Tail returns the last published tail: every position up to it is
// committed and readable.
func (f *FeedSignal) Tail() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tail
}

// Close wakes every waiter with ErrClosed, now and later.
func (f *FeedSignal) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		close(f.changed)
	}
}

// Wait implements Store.WaitFeed: it returns nil once the tail is beyond
// after, ErrUnknownCursor if after is beyond the tail, ErrClosed after
// Close, or ctx's error.
func (f *FeedSignal) Wait(ctx context.Context, after uint64) error {
	for {
		f.mu.Lock()
		closed, tail, changed := f.closed, f.tail, f.changed
		f.mu.Unlock()
		switch {
		case closed:
			return fmt.Errorf("wait feed: %w", ErrClosed)
		case after > tail:
			return fmt.Errorf("wait feed after %d (tail %d): %w", after, tail, ErrUnknownCursor)
		case tail > after:
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
