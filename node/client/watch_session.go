package client

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/node/internal/deadline"
	"github.com/opentrack/opentrack/protocol"
)

// frame is one message read from a stream, or why reading stopped.
type frame struct {
	msg *protocol.WatchMessage
	err error
	// pre is an update's signed head, parsed and its signature checked by
	// a worker while earlier frames are handled; read it once ready is
	// closed. Signature checks are most of an update's cost, and they
	// need no state, so they run on every core while the watcher applies
	// updates in order on one.
	pre   *checkedHead
	ready chan struct{}
}

// session runs one subscription on p until its stream ends, and reports
// whether any message arrived on it.
func (w *Watcher) session(ctx context.Context, p peer.ID) (progress bool, err error) {
	s, err := w.open(ctx, p)
	if err != nil {
		return false, err
	}
	w.answered = map[string]bool{}
	frames, stop := w.pipeline(s)
	defer stop()
	// A cursor is written once the stream ends, however it ends, so that
	// a restart after a failure resumes from what was handed over. Failing
	// that outranks why the stream ended.
	defer func() {
		if ferr := w.flush(); ferr != nil {
			err = ferr
		}
	}()

	var resyncAt <-chan time.Time
	if w.resync {
		t := time.NewTimer(resyncGrace)
		defer t.Stop()
		resyncAt = t.C
	}
	var flushAt <-chan time.Time
	if w.opts.CursorFile != "" {
		t := time.NewTicker(w.opts.CursorInterval)
		defer t.Stop()
		flushAt = t.C
	}
	for {
		var out chan<- WatchUpdate // nil, and so never ready, with nothing pending
		var head WatchUpdate
		if len(w.pending) > 0 {
			out, head = w.out, w.pending[0]
		}
		select {
		case <-ctx.Done():
			return progress, ctx.Err()
		case out <- head:
			w.taken()
		case <-resyncAt:
			resyncAt = nil
			if err := w.resyncAll(ctx, p); err != nil {
				return progress, err
			}
			w.markLive()
		case <-flushAt:
			if err := w.flush(); err != nil {
				return progress, err
			}
		case f := <-frames:
			if f.err != nil {
				return progress, f.err
			}
			progress = true
			if err := w.takeFrame(ctx, p, f, &resyncAt); err != nil {
				return progress, err
			}
		}
	}
}

// pipeline reads s's frames on one goroutine and checks their heads'
// signatures on GOMAXPROCS others, ahead of the loop that applies them in
// order. stop resets s, which unblocks the reader, and waits for them.
func (w *Watcher) pipeline(s network.Stream) (frames <-chan *frame, stop func()) {
	ahead := 2 * runtime.GOMAXPROCS(0)
	out := make(chan *frame, ahead)
	checks := make(chan *frame, ahead)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(checks)
		w.read(s, out, checks, done)
	})
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for f := range checks {
				f.pre = checkHead(f.msg.Head, w.opts.Keys)
				close(f.ready)
			}
		})
	}
	return out, func() {
		close(done)
		s.Reset() // a subscription ends either way
		wg.Wait()
	}
}

// takeFrame handles f once its head is checked. The first frame after
// the opening's statuses shows the subscription is live: a resync still
// waited for (resyncAt) runs then.
func (w *Watcher) takeFrame(ctx context.Context, p peer.ID, f *frame, resyncAt *<-chan time.Time) error {
	if f.ready != nil {
		<-f.ready
	}
	if err := w.handle(ctx, p, f.msg, f.pre); err != nil {
		return err
	}
	if f.msg.Type == protocol.WatchStatus {
		return nil // the opening goes on up to its heartbeat (spec 8.5)
	}
	if *resyncAt != nil {
		*resyncAt = nil
		if err := w.resyncAll(ctx, p); err != nil {
			return err
		}
	}
	if !w.resync {
		w.markLive()
	}
	return nil
}

// open connects to p, opens a watch stream and sends the subscription
// from the current cursor.
func (w *Watcher) open(ctx context.Context, p peer.ID) (network.Stream, error) {
	if w.c.isClosed() {
		return nil, ErrClosed
	}
	req := protocol.WatchRequest{Numbers: w.numbers, Audience: w.opts.Audience, Cursor: w.cursor, Grant: w.opts.Grant}
	msg, err := protocol.Marshal(&req)
	if err != nil {
		return nil, fmt.Errorf("client: watch request: %w", err)
	}
	// The watcher paces its own attempts; the swarm's dial backoff, which
	// grows with every failed dial, would keep it from a node that is
	// back on its address.
	octx, cancel := context.WithTimeout(network.WithForceDirectDial(ctx, "opentrack watch"), w.c.opts.ConnectTimeout)
	defer cancel()
	if w.opts.Connector != nil {
		if err := w.opts.Connector.Connect(octx, p); err != nil {
			return nil, fmt.Errorf("client: connect to %s: %w", p, err)
		}
	}
	s, err := w.c.h.NewStream(octx, p, protocol.WatchID)
	if err != nil {
		return nil, fmt.Errorf("client: open watch stream: %w", err)
	}
	if err := s.Scope().SetService(protocol.WatchServiceName); err != nil {
		s.Reset()
		return nil, fmt.Errorf("client: watch stream: %w", err)
	}
	if err := s.SetWriteDeadline(time.Now().Add(w.c.opts.RequestTimeout)); err != nil {
		s.Reset()
		return nil, wrap(err)
	}
	if err := protocol.WriteFrame(s, msg, protocol.MaxWatchRequest); err != nil {
		s.Reset()
		return nil, fmt.Errorf("client: send watch request: %w", err)
	}
	return s, nil
}

// read decodes the frames of s and passes them on, each update's head to
// checks as well, until the stream fails, stays silent past IdleTimeout,
// or stop closes.
func (w *Watcher) read(s network.Stream, out, checks chan<- *frame, stop <-chan struct{}) {
	frames := protocol.NewFrameReader(s, protocol.MaxWatchFrame)
	var readAt time.Time
	for {
		f := &frame{}
		if deadline.Renew(&readAt, time.Now(), w.opts.IdleTimeout) {
			if err := s.SetReadDeadline(readAt); err != nil {
				f.err = wrap(err)
			}
		}
		if f.err == nil {
			f.msg, f.err = readMessage(frames)
		}
		if f.err == nil && f.msg.Type == protocol.WatchUpdate {
			f.ready = make(chan struct{})
			select {
			case checks <- f:
			case <-stop:
				return
			}
		}
		select {
		case out <- f:
		case <-stop:
			return
		}
		if f.err != nil {
			return
		}
	}
}

// readMessage reads and checks one server message.
func readMessage(frames *protocol.FrameReader) (*protocol.WatchMessage, error) {
	body, err := frames.Next()
	if err == io.EOF {
		return nil, fmt.Errorf("client: watch stream ended: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("client: read watch message: %w", err)
	}
	var m protocol.WatchMessage
	if err := protocol.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("client: watch message: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("client: watch message: %w", err)
	}
	return &m, nil
}

// handle processes one message. A returned error ends the stream.
func (w *Watcher) handle(ctx context.Context, p peer.ID, m *protocol.WatchMessage, pre *checkedHead) error {
	switch m.Type {
	case protocol.WatchUpdate:
		if err := w.update(ctx, p, m, pre); err != nil {
			return err
		}
		w.setCursor(m.Cursor)
	case protocol.WatchHeartbeat:
		w.setCursor(m.Cursor)
	case protocol.WatchCatchUp:
		w.setCursor(m.Cursor)
		return errCatchUp
	case protocol.WatchStatus:
		return w.status(ctx, m)
	case protocol.WatchError:
		e := &protocol.Error{Code: m.Code, Msg: "client: watch: " + codeText(m.Code, m.Message)}
		switch m.Code {
		case protocol.CodeUnknownCursor:
			return errUnknownCursor
		case protocol.CodeBadRequest, protocol.CodeTooMany, protocol.CodeForbidden:
			return fmt.Errorf("%w: %w", ErrWatchRefused, e)
		}
		// rate_limited, unavailable, internal and codes this version does
		// not know: the node may serve again later.
		return e
	}
	return nil
}
