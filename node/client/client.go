package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/internal/options"
	"github.com/opentrack/opentrack/node/internal/deadline"
	"github.com/opentrack/opentrack/protocol"
)

// Errors of a Client as a whole, not of one lookup.
var (
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("client: closed")
	// ErrInvalidOptions is wrapped by New with the list of problems.
	ErrInvalidOptions = errors.New("client: invalid options")
)

// largeResponse is the frame size above which a stream's read buffer is
// dropped after use rather than pooled with the stream.
const largeResponse = 64 << 10

// Options tune a Client. The zero value of a field means its default.
type Options struct {
	// MaxIdleStreams is how many idle track streams are kept per peer for
	// reuse. Keep it within the server's per-peer track stream limit
	// (node/host default 64). Default: 16.
	MaxIdleStreams int
	// IdleTimeout is how long a stream may sit idle in the pool before it
	// is closed instead of reused. It stays below the server's idle
	// timeout (protocol.StreamIdleTimeout, 60s), so the client does not
	// send on a stream the server is about to reset. Default: 30s.
	IdleTimeout time.Duration
	// RequestTimeout bounds one request and its response when ctx has no
	// earlier deadline. Default: 5s, half the server's.
	RequestTimeout time.Duration
	// ConnectTimeout bounds connecting to one of a carrier's registry
	// nodes in TrackNumbers before the next node is tried. It leaves room
	// for a dial at the registry's addresses that times out and a peer
	// routing lookup after it. Default: 20s.
	ConnectTimeout time.Duration
	// MaxHistoryEvents bounds how many events of one parcel a lookup
	// reads: a history that goes on past them (spec 6.3) is shown
	// partial, never verified. Default: 10000 events (10 full pages).
	MaxHistoryEvents int
	// MaxHistoryPages bounds how many results (pages) of one parcel a
	// lookup reads, against a node that sends tiny pages. Default: 100.
	MaxHistoryPages int
	// TamperResponse is a test hook: when set, Track calls it on every
	// decoded response before checking it, as if the bytes had been
	// altered in transit, so that tests can show verification catches it.
	// Default: nil. Production code leaves it nil.
	TamperResponse func(p peer.ID, resp *protocol.TrackResponse)
}

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else.
var defaults = Options{
	MaxIdleStreams:   16,
	IdleTimeout:      30 * time.Second,
	RequestTimeout:   5 * time.Second,
	ConnectTimeout:   20 * time.Second,
	MaxHistoryEvents: 10000,
	MaxHistoryPages:  100,
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	options.Default(&o.MaxIdleStreams, defaults.MaxIdleStreams)
	options.Default(&o.IdleTimeout, defaults.IdleTimeout)
	options.Default(&o.RequestTimeout, defaults.RequestTimeout)
	options.Default(&o.ConnectTimeout, defaults.ConnectTimeout)
	options.Default(&o.MaxHistoryEvents, defaults.MaxHistoryEvents)
	options.Default(&o.MaxHistoryPages, defaults.MaxHistoryPages)
	return o
}

// Validate checks o after EnsureDefaults and reports every problem at once.
func (o *Options) Validate() error {
	var p []string
	if o.MaxIdleStreams < 0 {
		p = append(p, fmt.Sprintf("MaxIdleStreams (%d) is negative", o.MaxIdleStreams))
	}
	if o.IdleTimeout <= 0 {
		p = append(p, fmt.Sprintf("IdleTimeout (%s) must be positive", o.IdleTimeout))
	}
	if o.RequestTimeout <= 0 {
		p = append(p, fmt.Sprintf("RequestTimeout (%s) must be positive", o.RequestTimeout))
	}
	if o.ConnectTimeout <= 0 {
		p = append(p, fmt.Sprintf("ConnectTimeout (%s) must be positive", o.ConnectTimeout))
	}
	if o.MaxHistoryEvents < 0 {
		p = append(p, fmt.Sprintf("MaxHistoryEvents (%d) is negative", o.MaxHistoryEvents))
	}
	if o.MaxHistoryPages < 0 {
		p = append(p, fmt.Sprintf("MaxHistoryPages (%d) is negative", o.MaxHistoryPages))
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(p, "; "))
	}
	return nil
}

// Client talks to OpenTrack nodes through a libp2p host. It is safe for
// concurrent use; Close releases its idle streams.
type Client struct {
	h        host.Host
	opts     Options
	notifiee *network.NotifyBundle

	mu     sync.Mutex
	idle   map[peer.ID][]*trackStream // newest last
	closed bool

	// staleRetries counts requests tried again on a fresh stream because
	// the pooled one had gone while idle.
	staleRetries atomic.Int64
}

// trackStream is a track stream with its reader and write buffer, which
// live as long as the stream so that reuse allocates nothing.
type trackStream struct {
	s               network.Stream
	frames          *protocol.FrameReader
	buf             []byte
	idleSince       time.Time
	readAt, writeAt time.Time // the deadlines in force
}

// New returns a client over h. opts may be nil for defaults; it is not
// modified.
func New(h host.Host, opts *Options) (*Client, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if err := o.EnsureDefaults().Validate(); err != nil {
		return nil, err
	}
	c := &Client{h: h, opts: o, idle: make(map[peer.ID][]*trackStream)}
	// Streams of a closed connection are dead; drop them at once rather
	// than discover it on the next request.
	c.notifiee = &network.NotifyBundle{DisconnectedF: func(_ network.Network, conn network.Conn) { c.dropConn(conn) }}
	h.Network().Notify(c.notifiee)
	return c, nil
}

// Track sends one track request to p and returns the response, checked for
// shape (one result per query, in order, each for the number asked) but
// not verified: see VerifyResult. grant may be nil.
func (c *Client) Track(ctx context.Context, p peer.ID, queries []protocol.TrackQuery, grant []byte) (*protocol.TrackResponse, error) {
	req := protocol.TrackRequest{Queries: queries, Grant: grant}
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("client: track request: %w", err)
	}
	msg, err := protocol.Marshal(&req)
	if err != nil {
		return nil, fmt.Errorf("client: track request: %w", err)
	}
	for {
		st, reused, err := c.get(ctx, p)
		if err != nil {
			return nil, err
		}
		resp, err := c.roundTrip(ctx, p, st, msg, queries)
		if err == nil {
			c.put(p, st)
			return resp, nil
		}
		st.s.Reset()
		// A pooled stream can end while idle (the server's idle timeout, a
		// restart): the request then meets a reset or the end of the
		// stream, and a request that could not be written on it never
		// reached the node. Track only reads, so one more try on a fresh
		// stream is safe; the peer's other idle streams are likely gone
		// too. A read timeout or a bad response is not retried.
		stale := errors.Is(err, network.ErrReset) || errors.Is(err, io.EOF) || errors.Is(err, errSend)
		if !reused || !stale || ctx.Err() != nil {
			return nil, err
		}
		c.staleRetries.Add(1)
		c.dropPeer(p)
	}
}

// errSend marks a request that failed before it was written.
var errSend = errors.New("client: send track request")

// roundTrip writes one request frame and reads one response frame.
func (c *Client) roundTrip(ctx context.Context, p peer.ID, st *trackStream, msg []byte, queries []protocol.TrackQuery) (*protocol.TrackResponse, error) {
	if err := c.arm(ctx, st); err != nil {
		return nil, err
	}
	stop := watch(ctx, st.s)
	resp, err := c.exchange(p, st, msg, queries)
	if !stop() {
		return nil, fmt.Errorf("client: track: %w", ctx.Err())
	}
	return resp, err
}

func (c *Client) exchange(p peer.ID, st *trackStream, msg []byte, queries []protocol.TrackQuery) (*protocol.TrackResponse, error) {
	var err error
	if st.buf, err = protocol.AppendFrame(st.buf[:0], msg, protocol.MaxTrackRequest); err != nil {
		return nil, fmt.Errorf("client: track request: %w", err)
	}
	if _, err := st.s.Write(st.buf); err != nil {
		return nil, fmt.Errorf("%w: %w", errSend, err)
	}
	body, err := st.frames.Next()
	if err != nil {
		return nil, fmt.Errorf("client: read track response: %w", err)
	}
	var resp protocol.TrackResponse
	if err := protocol.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("client: track response: %w", err)
	}
	if len(body) > largeResponse {
		// The response was read whole and the server sends nothing
		// unasked, so a fresh reader loses no bytes and frees the buffer.
		st.frames = protocol.NewFrameReader(st.s, protocol.MaxTrackResponse)
	}
	if c.opts.TamperResponse != nil {
		c.opts.TamperResponse(p, &resp)
	}
	if err := resp.Validate(len(queries)); err != nil {
		return nil, fmt.Errorf("client: track response: %w", err)
	}
	if resp.Error == nil {
		for i := range resp.Results {
			if got := resp.Results[i].Number; !sameNumber(got, queries[i].Number) {
				return nil, fmt.Errorf("client: track response: %w: result %d is for %q, asked %q", protocol.ErrInvalid, i, got, queries[i].Number)
			}
		}
	}
	return &resp, nil
}

// sameNumber reports whether a result's number answers the query's: the
// server echoes a number normalized, or as sent when it does not normalize.
func sameNumber(got, asked string) bool {
	if got == asked {
		return true
	}
	n, err := protocol.NormalizeNumber(asked)
	return err == nil && n == got
}

// arm sets the deadlines of a request on a pooled stream: ctx's deadline
// when it comes before RequestTimeout, otherwise RequestTimeout renewed
// lazily (deadline.Renew), so that a stream in steady use does not
// set two deadlines per request.
func (c *Client) arm(ctx context.Context, st *trackStream) error {
	now := time.Now()
	if d, ok := ctx.Deadline(); ok && d.Sub(now) < c.opts.RequestTimeout {
		if !d.After(now) {
			// Past its deadline, though its timer may not have fired yet:
			// say so, rather than fail the write with a stream timeout.
			return context.DeadlineExceeded
		}
		st.readAt, st.writeAt = d, d
		return wrap(st.s.SetDeadline(d))
	}
	if deadline.Renew(&st.readAt, now, c.opts.RequestTimeout) {
		if err := st.s.SetReadDeadline(st.readAt); err != nil {
			return wrap(err)
		}
	}
	if deadline.Renew(&st.writeAt, now, c.opts.RequestTimeout) {
		return wrap(st.s.SetWriteDeadline(st.writeAt))
	}
	return nil
}

func wrap(err error) error {
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// watch resets s if ctx ends before the returned stop is called, which
// unblocks a pending read or write; stop reports false if ctx ended the
// stream.
func watch(ctx context.Context, s network.Stream) (stop func() bool) {
	if ctx.Done() == nil {
		return func() bool { return true } // no goroutine or allocation for a context that never ends
	}
	return context.AfterFunc(ctx, func() { s.Reset() })
}

// get returns an idle stream to p, or opens one. reused tells which.
func (c *Client) get(ctx context.Context, p peer.ID) (st *trackStream, reused bool, err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, false, ErrClosed
	}
	pool := c.idle[p]
	if n := len(pool); n > 0 && time.Since(pool[n-1].idleSince) < c.opts.IdleTimeout {
		st, c.idle[p] = pool[n-1], pool[:n-1]
		c.mu.Unlock()
		return st, true, nil
	}
	// The newest idle stream is too old, so all of them are.
	delete(c.idle, p)
	c.mu.Unlock()
	closeAll(pool)

	s, err := c.h.NewStream(ctx, p, protocol.TrackID)
	if err != nil {
		return nil, false, fmt.Errorf("client: open track stream: %w", err)
	}
	if err := s.Scope().SetService(protocol.TrackServiceName); err != nil {
		s.Reset()
		return nil, false, fmt.Errorf("client: track stream: %w", err)
	}
	return &trackStream{s: s, frames: protocol.NewFrameReader(s, protocol.MaxTrackResponse)}, false, nil
}

// put returns a healthy stream to the pool, or closes it when the pool is
// full or the client closed.
func (c *Client) put(p peer.ID, st *trackStream) {
	st.idleSince = time.Now()
	c.mu.Lock()
	if c.closed || len(c.idle[p]) >= c.opts.MaxIdleStreams {
		c.mu.Unlock()
		st.s.Close()
		return
	}
	c.idle[p] = append(c.idle[p], st)
	c.mu.Unlock()
}

// dropPeer closes every idle stream to p.
func (c *Client) dropPeer(p peer.ID) {
	c.mu.Lock()
	pool := c.idle[p]
	delete(c.idle, p)
	c.mu.Unlock()
	closeAll(pool)
}

// dropConn forgets the idle streams of a closed connection.
func (c *Client) dropConn(conn network.Conn) {
	p := conn.RemotePeer()
	c.mu.Lock()
	var dead []*trackStream
	live := c.idle[p][:0]
	for _, st := range c.idle[p] {
		if st.s.Conn() == conn {
			dead = append(dead, st)
		} else {
			live = append(live, st)
		}
	}
	if len(live) == 0 {
		delete(c.idle, p)
	} else if c.idle != nil {
		c.idle[p] = live
	}
	c.mu.Unlock()
	for _, st := range dead {
		st.s.Reset()
	}
}

func closeAll(pool []*trackStream) {
	for _, st := range pool {
		st.s.Close()
	}
}

// Close closes the idle streams and stops the client; streams in use are
// closed when their request ends. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	pools := c.idle
	c.idle = nil
	c.mu.Unlock()
	c.h.Network().StopNotify(c.notifiee)
	for _, pool := range pools {
		closeAll(pool)
	}
	return nil
}

// Info asks p what it is. haveSeq is the registry sequence the caller
// holds; the answer carries the node's signed registry when it is newer.
func (c *Client) Info(ctx context.Context, p peer.ID, haveSeq uint64) (*protocol.Info, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	msg, err := protocol.Marshal(&protocol.InfoRequest{RegistrySeq: haveSeq})
	if err != nil {
		return nil, fmt.Errorf("client: info request: %w", err)
	}
	s, err := c.h.NewStream(ctx, p, protocol.InfoID)
	if err != nil {
		return nil, fmt.Errorf("client: open info stream: %w", err)
	}
	if err := s.Scope().SetService(protocol.InfoServiceName); err != nil {
		s.Reset()
		return nil, fmt.Errorf("client: info stream: %w", err)
	}
	deadline := time.Now().Add(c.opts.RequestTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := s.SetDeadline(deadline); err != nil {
		s.Reset()
		return nil, wrap(err)
	}
	stop := watch(ctx, s)
	info, err := exchangeInfo(s, msg)
	if !stop() {
		return nil, fmt.Errorf("client: info: %w", ctx.Err())
	}
	if err != nil {
		s.Reset()
		return nil, err
	}
	s.Close()
	return info, nil
}

func exchangeInfo(s network.Stream, msg []byte) (*protocol.Info, error) {
	if err := protocol.WriteFrame(s, msg, protocol.MaxInfoRequest); err != nil {
		return nil, fmt.Errorf("client: send info request: %w", err)
	}
	body, err := protocol.NewFrameReader(s, protocol.MaxInfoResponse).Next()
	if err != nil {
		return nil, fmt.Errorf("client: read info: %w", err)
	}
	var info protocol.Info
	if err := protocol.Unmarshal(body, &info); err != nil {
		return nil, fmt.Errorf("client: info: %w", err)
	}
	if err := info.Validate(); err != nil {
		return nil, fmt.Errorf("client: info: %w", err)
	}
	return &info, nil
}
