package host

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/protocol"
)

// echoTrack serves protocol.TrackID on h: one byte back per byte.
func echoTrack(t *testing.T, h host.Host) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	h.SetStreamHandler(protocol.TrackID, func(s network.Stream) {
		wg.Add(1)
		defer wg.Done()
		if err := s.Scope().SetService(protocol.TrackServiceName); err != nil {
			s.Reset()
			return
		}
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(s, s)
		s.Close()
	})
}

// trackOnce opens a track stream from c to srv and has one byte echoed.
func trackOnce(ctx context.Context, c host.Host, srv peer.ID) error {
	s, err := c.NewStream(ctx, srv, protocol.TrackID)
	if err != nil {
		return err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Write([]byte{7}); err != nil {
		return err
	}
	_, err = io.ReadFull(s, make([]byte, 1))
	return err
}

// flood opens n streams from each of attackers to srv that never finish
// multistream-select: a varint length, then nothing.
func flood(t *testing.T, ctx context.Context, srv peer.AddrInfo, attackers, n int) []network.Stream {
	t.Helper()
	var held []network.Stream
	for range attackers {
		a := newLoopback(t, &Options{Limits: Limits{PeerStreams: 4096, SystemStreams: 8192, TransientStreams: 4096}})
		require.NoError(t, a.Connect(ctx, srv))
		for range n {
			s, err := a.Network().NewStream(network.WithNoDial(ctx, "flood"), srv.ID)
			require.NoError(t, err)
			_, _ = s.Write([]byte{0x13})
			held = append(held, s)
		}
	}
	t.Cleanup(func() {
		for _, s := range held {
			s.Reset()
		}
	})
	return held
}

// TestNegotiationFlood is defect 5 of issue 16: 5 peers hold 1000
// streams that never negotiate. New clients still get track streams
// while they are held, and each such stream is reset once its
// negotiation time is up.
func TestNegotiationFlood(t *testing.T) {
	checkLeaks(t)
	t.Run("new clients served", func(t *testing.T) {
		// A negotiation time longer than the test: the flood is held
		// throughout, so the clients are served beside it, not after it.
		srv := newLoopback(t, &Options{NegotiationTimeout: time.Hour})
		echoTrack(t, srv)
		ai := peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		flood(t, ctx, ai, 5, 200)
		for i := range 20 {
			c := newLoopback(t, nil)
			require.NoError(t, c.Connect(ctx, ai), "client %d connects", i)
			require.NoError(t, trackOnce(ctx, c, srv.ID()), "client %d gets a track stream during the flood", i)
		}
	})
	t.Run("reset when time is up", func(t *testing.T) {
		srv := newLoopback(t, &Options{NegotiationTimeout: 100 * time.Millisecond})
		ai := peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i, s := range flood(t, ctx, ai, 1, DefaultPeerNegotiating) {
			_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err := io.Copy(io.Discard, s) // the server's multistream header, then the end
			require.ErrorIs(t, err, network.ErrReset, "stream %d is reset by the server, not left to time out here", i)
		}
	})
}

// halfOpen opens n TCP connections from the loopback address from to
// addr that send nothing.
func halfOpen(t *testing.T, from string, to ma.Multiaddr, n int) []net.Conn {
	t.Helper()
	_, hostport, err := manet.DialArgs(to)
	require.NoError(t, err)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i], err = d.Dial("tcp", hostport)
		require.NoError(t, err)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// open reports how many of conns the server has not closed: a read
// that times out rather than ending.
func open(conns []net.Conn) int {
	n := 0
	for _, c := range conns {
		// Past what the server sent first (its multistream header).
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
			n++
		}
	}
	return n
}

// newTCPLoopback is newLoopback without QUIC.
func newTCPLoopback(t *testing.T, o *Options) host.Host {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	o.DisableQUIC, o.ListenAddrs = true, []string{"/ip4/127.0.0.1/tcp/0"}
	h, err := New(newKey(t), o)
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

func tcpAddr(t *testing.T, h host.Host) ma.Multiaddr {
	t.Helper()
	for _, a := range h.Addrs() {
		if _, err := a.ValueForProtocol(ma.P_TCP); err == nil {
			return a
		}
	}
	t.Fatal("no TCP address")
	return nil
}

// TestHalfOpenFlood is the second half of defect 5: 100 TCP connections
// from one address that never start their handshake. New peers from
// other addresses connect while they are held, connections past the
// per-address bound are closed at once, and the rest once their
// handshake time is up.
func TestHalfOpenFlood(t *testing.T) {
	checkLeaks(t)
	t.Run("new peers served", func(t *testing.T) {
		srv := newTCPLoopback(t, &Options{HandshakeTimeout: time.Hour})
		echoTrack(t, srv)
		attack := halfOpen(t, "127.0.0.2", tcpAddr(t, srv), 100)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		ai := peer.AddrInfo{ID: srv.ID(), Addrs: []ma.Multiaddr{tcpAddr(t, srv)}}
		for i := range 10 {
			c := newTCPLoopback(t, nil)
			require.NoError(t, c.Connect(ctx, ai), "peer %d connects during the flood", i)
			require.NoError(t, trackOnce(ctx, c, srv.ID()), "peer %d", i)
		}
		require.Equal(t, DefaultAddrHandshakes, open(attack), "the flood was held while the peers connected, up to the per-address bound")
	})
	t.Run("closed when time is up", func(t *testing.T) {
		srv := newTCPLoopback(t, &Options{HandshakeTimeout: 100 * time.Millisecond})
		for i, c := range halfOpen(t, "127.0.0.2", tcpAddr(t, srv), 10) {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err := io.Copy(io.Discard, c) // the server's multistream header, then the end
			require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "connection %d is closed by the server, not left to time out here", i)
		}
	})
}
