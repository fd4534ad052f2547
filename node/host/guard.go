package host

import (
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/transport"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/opentrack/opentrack/node/internal/sourcekey"
)

// negotiationGate bounds inbound streams that have not yet picked a
// protocol. libp2p gives them 10 s and counts them only in the transient
// scope, which streams that never negotiate fill for every peer; here a
// peer may have only so many at once, the rest are reset at once, and
// each gets NegotiationTimeout.
type negotiationGate struct {
	timeout time.Duration
	perPeer int

	mu sync.Mutex
	n  map[peer.ID]int
}

func newNegotiationGate(timeout time.Duration, perPeer int) *negotiationGate {
	return &negotiationGate{timeout: timeout, perPeer: perPeer, n: map[peer.ID]int{}}
}

// wrap returns the swarm's stream handler with the gate in front of
// next, the host's own handler, which negotiates and dispatches.
func (g *negotiationGate) wrap(next network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		p := s.Conn().RemotePeer()
		if !g.enter(p) {
			_ = s.ResetWithError(network.StreamResourceLimitExceeded)
			return
		}
		ns := &negotiatingStream{Stream: s, leave: func() { g.leave(p) }}
		// Not stopped once negotiated: expire then finds it done. Stopping
		// would need the timer under a lock it fires against.
		time.AfterFunc(g.timeout, ns.expire)
		defer ns.done()
		next(ns)
	}
}

func (g *negotiationGate) enter(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n[p] >= g.perPeer {
		return false
	}
	g.n[p]++
	return true
}

func (g *negotiationGate) leave(p peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n[p]--; g.n[p] <= 0 {
		delete(g.n, p)
	}
}

// negotiatingStream is an inbound stream until it has a protocol. The
// host clears the negotiation deadline, then sets the protocol; either
// ends the negotiation.
type negotiatingStream struct {
	network.Stream
	leave func()
	once  sync.Once
}

// done ends the negotiation, if it is still on, and reports whether it
// was.
func (s *negotiatingStream) done() bool {
	first := false
	s.once.Do(func() {
		first = true
		s.leave()
	})
	return first
}

func (s *negotiatingStream) expire() {
	if s.done() {
		_ = s.Stream.ResetWithError(network.StreamProtocolNegotiationFailed)
	}
}

func (s *negotiatingStream) SetDeadline(t time.Time) error {
	if t.IsZero() {
		s.done()
	}
	return s.Stream.SetDeadline(t)
}

func (s *negotiatingStream) SetProtocol(id libp2pprotocol.ID) error {
	s.done()
	return s.Stream.SetProtocol(id)
}

// handshakes bounds inbound TCP connections that have not finished their
// security and muxer handshakes, per source and in total, and closes one
// that takes longer than timeout. libp2p allows each 15 s and bounds
// them only in the transient scope, which half-open connections fill.
type handshakes struct {
	timeout        time.Duration
	total, perAddr int

	mu      sync.Mutex
	n       int
	byAddr  map[netip.Prefix]int
	pending map[string]*handshakeConn // by remote address
}

func newHandshakes(timeout time.Duration, total, perAddr int) *handshakes {
	return &handshakes{timeout: timeout, total: total, perAddr: perAddr,
		byAddr: map[netip.Prefix]int{}, pending: map[string]*handshakeConn{}}
}

// start admits c, or reports false if a bound is reached.
func (h *handshakes) start(c manet.Conn) (*handshakeConn, bool) {
	key := sourcekey.Of(c.RemoteMultiaddr())
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n >= h.total || h.byAddr[key] >= h.perAddr {
		return nil, false
	}
	h.n++
	h.byAddr[key]++
	hc := &handshakeConn{Conn: c, h: h, key: key, remote: c.RemoteMultiaddr().String()}
	h.pending[hc.remote] = hc
	time.AfterFunc(h.timeout, hc.expire) // finds hc done once upgraded

	return hc, true
}

// upgraded ends the handshake of the connection from remote.
func (h *handshakes) upgraded(remote ma.Multiaddr) {
	h.mu.Lock()
	hc := h.pending[remote.String()]
	h.mu.Unlock()
	if hc != nil {
		hc.done()
	}
}

func (h *handshakes) end(hc *handshakeConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n--
	if h.byAddr[hc.key]--; h.byAddr[hc.key] <= 0 {
		delete(h.byAddr, hc.key)
	}
	if h.pending[hc.remote] == hc {
		delete(h.pending, hc.remote)
	}
}

// handshakeConn is a raw inbound connection during its handshake.
type handshakeConn struct {
	manet.Conn
	h      *handshakes
	key    netip.Prefix
	remote string
	once   sync.Once
}

func (c *handshakeConn) done() bool {
	first := false
	c.once.Do(func() {
		first = true
		c.h.end(c)
	})
	return first
}

func (c *handshakeConn) expire() {
	if c.done() {
		_ = c.Conn.Close()
	}
}

func (c *handshakeConn) Close() error {
	c.done()
	return c.Conn.Close()
}

// The TCP transport sets keep-alive and linger on what it accepts.

func (c *handshakeConn) SetKeepAlive(on bool) error {
	if k, ok := c.Conn.(interface{ SetKeepAlive(bool) error }); ok {
		return k.SetKeepAlive(on)
	}
	return nil
}

func (c *handshakeConn) SetKeepAlivePeriod(d time.Duration) error {
	if k, ok := c.Conn.(interface{ SetKeepAlivePeriod(time.Duration) error }); ok {
		return k.SetKeepAlivePeriod(d)
	}
	return nil
}

func (c *handshakeConn) SetLinger(sec int) error {
	if k, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return k.SetLinger(sec)
	}
	return nil
}

// boundedListener admits accepted connections into h, closing those
// over a bound at once.
type boundedListener struct {
	manet.Listener
	h *handshakes
}

func (l *boundedListener) Accept() (manet.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if hc, ok := l.h.start(c); ok {
			return hc, nil
		}
		_ = c.Close()
	}
}

// upgradedListener tells h when a connection has finished its handshake.
type upgradedListener struct {
	transport.Listener
	h *handshakes
}

func (l *upgradedListener) Accept() (transport.CapableConn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.h.upgraded(c.RemoteMultiaddr())
	}
	return c, err
}

// boundedUpgrader puts the TCP transport's listeners under h; dials and
// the upgrade itself are the upgrader's.
type boundedUpgrader struct {
	transport.Upgrader
	h *handshakes
}

func (u *boundedUpgrader) GateMaListener(l manet.Listener) transport.GatedMaListener {
	return u.Upgrader.GateMaListener(&boundedListener{Listener: l, h: u.h})
}

func (u *boundedUpgrader) UpgradeGatedMaListener(t transport.Transport, l transport.GatedMaListener) transport.Listener {
	return &upgradedListener{Listener: u.Upgrader.UpgradeGatedMaListener(t, l), h: u.h}
}
