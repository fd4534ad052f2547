package service

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/opentrack/opentrack/node/internal/deadline"
	"github.com/opentrack/opentrack/protocol"
)

// frame is one encoded update queued for the writer.
type frame struct {
	b        []byte
	reserved int // bytes reserved in the stream scope for b
}

// push queues f. A full queue is waited on, since a burst (one ingest batch
// touching many watched parcels, a replay from an old cursor) outruns
// any network for a moment; only a subscriber that takes no frame for
// WatchStall is behind. push reports false then, when the node has no
// memory for f, or when ctx ends.
func (sub *subscription) push(ctx context.Context, f frame) bool {
	n := len(f.b)
	if sub.queued.Add(int64(n)) > watchQueueAllowance {
		if err := sub.s.Scope().ReserveMemory(n, network.ReservationPriorityMedium); err != nil {
			sub.queued.Add(-int64(n))
			return false
		}
		f.reserved = n
	}
	select {
	case sub.frames <- f:
		return true
	default:
	}
	stall := time.NewTimer(sub.w.opts.WatchStall)
	defer stall.Stop()
	select {
	case sub.frames <- f:
		return true
	case <-stall.C:
	case <-ctx.Done():
	}
	sub.release(f)
	return false
}

// release gives back what a queued frame held.
func (sub *subscription) release(f frame) {
	sub.queued.Add(-int64(len(f.b)))
	if f.reserved > 0 {
		sub.s.Scope().ReleaseMemory(f.reserved)
	}
}

// watchWriter is the writer goroutine's state: the write deadline in
// force.
type watchWriter struct {
	sub     *subscription
	writeAt time.Time
}

// coalesceBuffers holds the buffers in which writers gather queued frames,
// so that memory for them follows the subscriptions writing a burst right
// now, not all those that ever did.
var coalesceBuffers = sync.Pool{New: func() any { return new([]byte) }}

// write writes queued frames, several at a time when they are waiting,
// and a heartbeat whenever the stream has been quiet for Heartbeat. It
// returns when the stream has ended.
func (sub *subscription) write(ctx context.Context, ww *watchWriter) {
	hb := time.NewTimer(sub.w.opts.Heartbeat)
	defer hb.Stop()
	for {
		var err error
		select {
		case f, ok := <-sub.frames:
			if ok {
				ok, err = ww.writeQueued(f)
			}
			if err == nil && !ok {
				ww.finish()
				return
			}
		case <-hb.C:
			// The position is read before the queue is seen empty: every update
			// up to it was queued before, and so has been written.
			pos := sub.position()
			if len(sub.frames) > 0 {
				continue // they go first, and restart the quiet period
			}
			err = ww.send(&protocol.WatchMessage{Type: protocol.WatchHeartbeat, Cursor: sub.w.cursor(pos), Time: time.Now().UnixMilli()})
		case <-ctx.Done():
			sub.s.Reset()
			return
		}
		if err != nil {
			ww.failed(err)
			return
		}
		hb.Reset(sub.w.opts.Heartbeat)
	}
}

// position is the feed position up to which every update is queued: where
// produce got to, or, while it waits on the tailer with nothing to do, the
// tailer's position. The tailer's is read first: it publishes a position
// after queueing its entries in the inboxes.
func (sub *subscription) position() uint64 {
	pos := sub.scanned.Load()
	if tail := sub.w.tailer.pos.Load(); sub.inbox.idle() {
		pos = max(pos, tail)
	}
	return pos
}

// opening writes what every subscription starts with (spec 8.5): the
// statuses, watchCoalesce bytes a Write, then a heartbeat with the cursor
// it starts from. Nothing else is written before it, so no update, and no
// replay, comes ahead of that heartbeat.
func (ww *watchWriter) opening() error {
	sub := ww.sub
	bp := coalesceBuffers.Get().(*[]byte)
	defer coalesceBuffers.Put(bp)
	buf := (*bp)[:0]
	for _, st := range sub.statuses {
		b, err := sub.w.encode(&protocol.WatchMessage{Type: protocol.WatchStatus, Number: st.number, Code: st.code,
			Message: st.msg, RetryAfter: st.retryAfter})
		if err != nil {
			return err
		}
		if len(buf)+len(b) > watchCoalesce {
			if err := ww.write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		buf = append(buf, b...)
	}
	b, err := sub.w.encode(&protocol.WatchMessage{Type: protocol.WatchHeartbeat, Cursor: sub.w.cursor(sub.start), Time: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	buf = append(buf, b...)
	*bp = buf
	if err := ww.write(buf); err != nil {
		return err
	}
	sub.w.count(protocol.WatchStatus, len(sub.statuses))
	sub.w.count(protocol.WatchHeartbeat, 1)
	sub.dropStatuses()
	return nil
}

// dropStatuses lets go of the opening statuses and their memory.
func (sub *subscription) dropStatuses() {
	sub.statuses = nil
	if sub.statusMemory > 0 {
		sub.s.Scope().ReleaseMemory(sub.statusMemory)
		sub.statusMemory = 0
	}
}

// writeQueued writes the update f and those queued behind it, up to
// watchCoalesce bytes, in one Write. open is false when it found the
// queue closed behind them.
func (ww *watchWriter) writeQueued(f frame) (open bool, err error) {
	sub := ww.sub
	if len(f.b) >= watchCoalesce || len(sub.frames) == 0 {
		defer sub.release(f)
		if err := ww.write(f.b); err != nil {
			return true, err
		}
		sub.w.count(protocol.WatchUpdate, 1)
		return true, nil
	}
	bp := coalesceBuffers.Get().(*[]byte)
	buf := append((*bp)[:0], f.b...)
	n := 1
	sub.release(f)
	open = true
gather:
	for len(buf) < watchCoalesce {
		select {
		case g, ok := <-sub.frames:
			if !ok {
				open = false
				break gather
			}
			buf = append(buf, g.b...)
			n++
			sub.release(g)
		default:
			break gather
		}
	}
	err = ww.write(buf)
	if cap(buf) <= 2*watchCoalesce { // a rare huge one is left to the GC
		*bp = buf
		coalesceBuffers.Put(bp)
	}
	if err == nil {
		sub.w.count(protocol.WatchUpdate, n)
	}
	return open, err
}

// send writes one message the writer makes itself and counts it.
func (ww *watchWriter) send(m *protocol.WatchMessage) error {
	b, err := ww.sub.w.encode(m)
	if err == nil {
		err = ww.write(b)
	}
	if err == nil {
		ww.sub.w.count(m.Type, 1)
	}
	return err
}

// write writes b under the write deadline, renewed lazily.
func (ww *watchWriter) write(b []byte) error {
	if deadline.Renew(&ww.writeAt, time.Now(), ww.sub.w.opts.WriteTimeout) {
		if err := ww.sub.s.SetWriteDeadline(ww.writeAt); err != nil {
			return err
		}
	}
	_, err := ww.sub.s.Write(b)
	return err
}

// finish ends the stream once the queue is closed and written: with the
// final message produce left and a close, or, without one (produce ended
// because the subscription is ending), with a reset.
func (ww *watchWriter) finish() {
	sub := ww.sub
	if sub.final == nil {
		sub.s.Reset()
		return
	}
	if err := ww.send(sub.final); err != nil {
		ww.failed(err)
		return
	}
	sub.s.Close()
}

// failed resets a stream that could not be written: the subscriber
// stopped reading for WriteTimeout (counted), or it is gone.
func (ww *watchWriter) failed(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		ww.sub.w.srv.reset(ww.sub.s, reasonTimeout, err)
		return
	}
	ww.sub.s.Reset()
	ww.sub.w.srv.log.Debug("watch write failed", "peer", ww.sub.s.Conn().RemotePeer(), "err", err)
}
