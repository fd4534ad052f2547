package service

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/opentrack/opentrack/node/store"
)

// tailer reads the change feed once for a whole Watch service and hands
// each entry to the subscriptions that watch its number, so that an
// append wakes only those, not every subscription.
//
// A subscription reads the feed on its own until it reaches the tail, and
// then joins: from then on the tailer queues its entries in the
// subscription's inbox. The tailer never waits for a subscription: one
// whose inbox holds FeedBatch entries is detached and reads on its own
// again, from where it got to, until it catches up and joins once more.
type tailer struct {
	st    store.FeedReader
	batch int
	wake  chan struct{} // cap 1: a join started the tailer

	mu       sync.Mutex
	running  bool                       // pos is valid and the feed is being read
	byNumber map[string][]*subscription // numbers scope, by watched number
	every    []*subscription            // audience scope: they see every entry
	// pos is the feed position up to which every entry has been handed to
	// the subscriptions joined at the time. Written under mu, read
	// without it by heartbeats.
	pos atomic.Uint64

	cancel context.CancelFunc
	done   chan struct{}
}

// inbox is where the tailer queues a joined subscription's entries.
type inbox struct {
	ready chan struct{} // cap 1: entries arrived or the inbox closed

	mu      sync.Mutex
	entries []store.FeedEntry
	closed  bool // not joined: the tailer queues no more
	// busy is set from the join until produce has read up to the join's
	// position, and while produce holds entries taken from here that are
	// not yet queued as frames.
	busy bool
}

// newInbox returns the inbox of a subscription not yet joined.
func newInbox() *inbox { return &inbox{ready: make(chan struct{}, 1), closed: true} }

// startTailer starts the tailer of a registered service; stop ends it.
func startTailer(st store.FeedReader, batch int) *tailer {
	ctx, cancel := context.WithCancel(context.Background())
	t := &tailer{st: st, batch: batch, wake: make(chan struct{}, 1), byNumber: map[string][]*subscription{},
		cancel: cancel, done: make(chan struct{})}
	go t.run(ctx)
	return t
}

// stop ends the tailer and waits for it, once the subscriptions are gone.
func (t *tailer) stop() {
	t.cancel()
	<-t.done
}

// run reads the feed from pos while the tailer runs. A store error
// detaches every subscription, each of which then meets the error on its
// own reader and ends as it would without a tailer; the tailer rests until
// the next join, which a working store allows again.
func (t *tailer) run(ctx context.Context) {
	defer close(t.done)
	for {
		t.mu.Lock()
		running, pos := t.running, t.pos.Load()
		t.mu.Unlock()
		if !running {
			select {
			case <-t.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		entries, err := t.st.Feed(ctx, pos, t.batch)
		if err == nil && len(entries) == 0 {
			err = t.st.WaitFeed(ctx, pos)
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			t.mu.Lock()
			t.running = false
			for _, subs := range t.byNumber {
				t.detachAll(subs)
			}
			t.detachAll(t.every)
			t.mu.Unlock()
		default:
			t.dispatch(entries)
		}
	}
}

// dispatch queues each entry in the inboxes of the subscriptions joined
// for it.
func (t *tailer) dispatch(entries []store.FeedEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range entries {
		e := &entries[i]
		// Backwards, since deliver may detach the subscription at hand,
		// which moves the last one into its place.
		subs := t.byNumber[e.Number]
		for j := len(subs) - 1; j >= 0; j-- {
			t.deliver(subs[j], e)
		}
		for j := len(t.every) - 1; j >= 0; j-- {
			t.deliver(t.every[j], e)
		}
	}
	if len(entries) > 0 {
		t.pos.Store(entries[len(entries)-1].Pos)
	}
}

// deliver queues e for sub, or detaches sub when its inbox is full. The
// caller holds t.mu.
func (t *tailer) deliver(sub *subscription, e *store.FeedEntry) {
	in := sub.inbox
	in.mu.Lock()
	full := len(in.entries) >= t.batch
	if !full {
		in.entries = append(in.entries, *e)
	}
	in.mu.Unlock()
	if full {
		t.detach(sub)
		return
	}
	select {
	case in.ready <- struct{}{}:
	default:
	}
}

// join adds sub, which has read every entry up to pos, and returns the
// tailer's position: sub reads the entries from pos up to there on its
// own, and finds the later ones in its inbox (skipping any it read
// already). The first join starts the tailer from pos.
func (t *tailer) join(sub *subscription, pos uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		t.running = true
		t.pos.Store(pos)
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
	since := t.pos.Load()
	in := sub.inbox
	in.mu.Lock()
	in.closed, in.busy = false, true
	in.mu.Unlock()
	if sub.numbers == nil {
		t.every = append(t.every, sub)
	} else {
		for n := range sub.numbers {
			t.byNumber[n] = append(t.byNumber[n], sub)
		}
	}
	return since
}

// leave removes sub if it is still joined.
func (t *tailer) leave(sub *subscription) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.detach(sub)
}

// detachAll detaches every subscription of subs, a slice that detach
// shrinks. The caller holds t.mu.
func (t *tailer) detachAll(subs []*subscription) {
	for j := len(subs) - 1; j >= 0; j-- {
		t.detach(subs[j])
	}
}

// detach removes sub from the fan-out and closes its inbox, if it is
// joined. The caller holds t.mu.
func (t *tailer) detach(sub *subscription) {
	in := sub.inbox
	in.mu.Lock()
	closed := in.closed
	in.closed = true
	in.mu.Unlock()
	if closed {
		return
	}
	if sub.numbers == nil {
		t.every = remove(t.every, sub)
	} else {
		for n := range sub.numbers {
			if subs := remove(t.byNumber[n], sub); len(subs) > 0 {
				t.byNumber[n] = subs
			} else {
				delete(t.byNumber, n)
			}
		}
	}
	select {
	case in.ready <- struct{}{}:
	default:
	}
}

// remove deletes sub from subs, not keeping the order.
func remove(subs []*subscription, sub *subscription) []*subscription {
	i := slices.Index(subs, sub)
	if i < 0 {
		return subs
	}
	last := len(subs) - 1
	subs[i] = subs[last]
	subs[last] = nil
	return subs[:last]
}

// take waits for entries in the inbox and takes them, handing spare back
// for the next batch. Calling it says that the entries taken before are
// queued as frames. joined is false once the inbox is closed and empty:
// the subscription reads on its own again.
func (in *inbox) take(ctx context.Context, spare []store.FeedEntry) (entries []store.FeedEntry, joined bool, err error) {
	for {
		in.mu.Lock()
		entries, closed := in.entries, in.closed
		in.busy = len(entries) > 0
		if in.busy {
			in.entries = spare[:0]
		}
		in.mu.Unlock()
		if len(entries) > 0 || closed {
			return entries, len(entries) > 0 || !closed, nil
		}
		select {
		case <-in.ready:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// idle reports whether the subscription is joined with nothing taken or
// waiting in its inbox: then every update up to the tailer's position is
// queued.
func (in *inbox) idle() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return !in.closed && !in.busy && len(in.entries) == 0
}
