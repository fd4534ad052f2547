package service

import (
	"bytes"
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/opentrack/opentrack/node/internal/deadline"
	"github.com/opentrack/opentrack/protocol"
)

// trackStream is the server's state of one track stream: the frame reader,
// the reused response buffer, and the deadlines, which it renews lazily
// (deadline.Renew): the idle and write deadlines and the store
// context's may pass up to a tenth of their period late.
type trackStream struct {
	t      *Track
	s      network.Stream
	frames *protocol.FrameReader
	out    bytes.Buffer // the response frame buffer, reused across requests

	base   context.Context // the service's; ends at Unregister
	ctx    context.Context // bounds store calls; renewed lazily
	cancel context.CancelFunc
	ctxAt  time.Time

	readAt, writeAt time.Time // the deadlines in force
	begun           time.Time // when the current request's first bytes arrived
	reading         bool      // a request has begun
	strict          bool      // the read deadline is the request deadline
}

// awaitRequest prepares the wait for the next request under the idle
// deadline.
func (ts *trackStream) awaitRequest(now time.Time) {
	if ts.strict {
		ts.readAt = time.Time{} // a request deadline, however far, is not an idle one
	}
	ts.reading, ts.strict = false, false
	if deadline.Renew(&ts.readAt, now, ts.t.opts.IdleTimeout) {
		ts.s.SetReadDeadline(ts.readAt)
	}
}

// Read feeds the frame reader. A request that arrives in one read, the
// usual case, costs no deadline change; one that takes more reads must be
// complete within RequestTimeout of its first byte.
func (ts *trackStream) Read(p []byte) (int, error) {
	if ts.reading && !ts.strict {
		ts.strict = true
		ts.readAt = ts.begun.Add(ts.t.opts.RequestTimeout)
		ts.s.SetReadDeadline(ts.readAt)
	}
	n, err := ts.s.Read(p)
	if n > 0 && !ts.reading {
		ts.reading, ts.begun = true, time.Now()
	}
	return n, err
}

// requestContext is the context for the store calls of a request that
// began at now: it leaves them at least RequestTimeout.
func (ts *trackStream) requestContext(now time.Time) context.Context {
	if deadline.Renew(&ts.ctxAt, now, ts.t.opts.RequestTimeout) {
		if ts.cancel != nil {
			ts.cancel()
		}
		ts.ctx, ts.cancel = context.WithDeadline(ts.base, ts.ctxAt)
	}
	return ts.ctx
}

// write sends resp as one frame in one Write, in the reused buffer. A
// response larger than the stream's standing reservation reserves the
// excess while it is written; without memory the peer is told to come
// back.
func (ts *trackStream) write(resp *protocol.TrackResponse) error {
	frame, err := protocol.MarshalFrame(&ts.out, resp, protocol.MaxTrackResponse)
	if err != nil {
		return err
	}
	if extra := len(frame) - trackResponseAllowance; extra > 0 {
		if err := ts.s.Scope().ReserveMemory(extra, network.ReservationPriorityHigh); err != nil {
			ts.out = bytes.Buffer{}
			*resp = *requestError(protocol.CodeUnavailable, "node is out of memory for this response", unavailableRetry)
			return ts.write(resp)
		}
		defer ts.s.Scope().ReleaseMemory(extra)
	}
	if deadline.Renew(&ts.writeAt, time.Now(), ts.t.opts.WriteTimeout) {
		if err := ts.s.SetWriteDeadline(ts.writeAt); err != nil {
			return err
		}
	}
	_, err = ts.s.Write(frame)
	if ts.out.Cap() > trackResponseAllowance {
		ts.out = bytes.Buffer{} // an idle stream should not pin a large buffer
	}
	return err
}

func (ts *trackStream) close() {
	if ts.cancel != nil {
		ts.cancel()
	}
}
