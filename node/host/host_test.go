package host

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/opentrack/opentrack/node/version"
	"github.com/opentrack/opentrack/protocol"
)

func TestEnsureDefaults(t *testing.T) {
	o := (*Options)(nil).EnsureDefaults()
	require.NoError(t, o.Validate())
	require.Equal(t, defaults.ListenAddrs, o.ListenAddrs)
	require.Equal(t, defaults.Limits, o.Limits)
	require.Equal(t, 512, o.ConnMgrLow)
	require.Equal(t, 768, o.ConnMgrHigh)
	require.Equal(t, time.Minute, o.ConnMgrGrace)
	require.Nil(t, o.Registerer, "no registerer without metrics")

	noQUIC := (&Options{DisableQUIC: true}).EnsureDefaults()
	require.Equal(t, []string{"/ip4/0.0.0.0/tcp/4001"}, noQUIC.ListenAddrs)
	require.NoError(t, noQUIC.Validate())

	kept := (&Options{ConnMgrLow: 10, ConnMgrHigh: 20, Limits: Limits{Track: ServiceLimits{PeerStreams: 3}}}).EnsureDefaults()
	require.Equal(t, 10, kept.ConnMgrLow)
	require.Equal(t, 3, kept.Limits.Track.PeerStreams)
	require.Equal(t, defaults.Limits.Track.Streams, kept.Limits.Track.Streams)
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Options)
		want []string // substrings of the error, all reported at once
	}{
		{"bad listen address", func(o *Options) { o.ListenAddrs = []string{"/ip4/1.2.3.4/tcp/x"} }, []string{`"/ip4/1.2.3.4/tcp/x"`}},
		{"QUIC address without QUIC", func(o *Options) { o.DisableQUIC = true }, []string{"disable_quic"}},
		{"watermarks inverted", func(o *Options) { o.ConnMgrLow, o.ConnMgrHigh = 700, 600 }, []string{"conn_mgr_low"}},
		{"high watermark above the conn limit", func(o *Options) { o.ConnMgrHigh = 1024 }, []string{"conn_mgr_high (1024) must stay below limits.system_conns (1024)"}},
		{"negative grace", func(o *Options) { o.ConnMgrGrace = -time.Second }, []string{"conn_mgr_grace"}},
		{"negative limit", func(o *Options) { o.Limits.PeerMemory = -1 }, []string{"limits.peer_memory (-1) must be positive"}},
		{"peer above system", func(o *Options) { o.Limits.PeerStreams = 9000 }, []string{"limits.peer_streams (9000) exceeds"}},
		{"service above system", func(o *Options) { o.Limits.Track.Memory = 2 << 30 }, []string{"limits.track.memory"}},
		{"service peer above service", func(o *Options) { o.Limits.Info.PeerStreams = 300 }, []string{"limits.info.peer_streams (300) exceeds the enclosing limit (256)"}},
		{"negotiation timeout", func(o *Options) { o.NegotiationTimeout = -time.Second }, []string{"negotiation_timeout (-1s) must be positive"}},
		{"handshake timeout", func(o *Options) { o.HandshakeTimeout = -time.Second }, []string{"handshake_timeout (-1s) must be positive"}},
		{"addr handshakes above total", func(o *Options) { o.Limits.AddrHandshakes = 300 }, []string{"limits.addr_handshakes (300) exceeds the enclosing limit (256)"}},
		{"peer negotiating above peer streams", func(o *Options) { o.Limits.PeerNegotiating = 300 }, []string{"limits.peer_negotiating (300) exceeds the enclosing limit (256)"}},
		{"everything at once", func(o *Options) {
			o.ListenAddrs = []string{"nonsense"}
			o.ConnMgrHigh = 5000
			o.Limits.Watch.Streams = -3
		}, []string{"nonsense", "conn_mgr_high", "limits.watch.streams"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := (&Options{}).EnsureDefaults()
			tc.edit(o)
			err := o.Validate()
			require.ErrorIs(t, err, ErrInvalidOptions)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

// TestLimiter checks that every limit of Options reaches the resource
// manager, for the service scope and the protocol scope alike.
func TestLimiter(t *testing.T) {
	o := (&Options{}).EnsureDefaults()
	l := newLimiter(&o.Limits)

	sys := l.GetSystemLimits()
	require.Equal(t, 1024, sys.GetConnTotalLimit())
	require.Equal(t, 1024, sys.GetConnLimit(network.DirInbound))
	require.Equal(t, 8192, sys.GetStreamTotalLimit())
	require.Equal(t, int64(1<<30), sys.GetMemoryLimit())

	p := l.GetPeerLimits(peer.ID("anyone"))
	require.Equal(t, 8, p.GetConnTotalLimit())
	require.Equal(t, 256, p.GetStreamLimit(network.DirInbound))
	require.Equal(t, int64(64<<20), p.GetMemoryLimit())

	for _, s := range []struct {
		name string
		id   libp2pprotocol.ID
		want ServiceLimits
	}{
		{protocol.TrackServiceName, protocol.TrackID, o.Limits.Track},
		{protocol.WatchServiceName, protocol.WatchID, o.Limits.Watch},
		{protocol.InfoServiceName, protocol.InfoID, o.Limits.Info},
	} {
		for _, lim := range []interface {
			GetStreamTotalLimit() int
			GetStreamLimit(network.Direction) int
			GetMemoryLimit() int64
		}{l.GetServiceLimits(s.name), l.GetProtocolLimits(s.id)} {
			require.Equal(t, s.want.Streams, lim.GetStreamTotalLimit(), s.name)
			require.Equal(t, s.want.Streams, lim.GetStreamLimit(network.DirInbound), s.name)
			require.Equal(t, s.want.Memory, lim.GetMemoryLimit(), s.name)
		}
		for _, lim := range []interface{ GetStreamTotalLimit() int }{l.GetServicePeerLimits(s.name), l.GetProtocolPeerLimits(s.id)} {
			require.Equal(t, s.want.PeerStreams, lim.GetStreamTotalLimit(), s.name)
		}
	}
}

func newKey(t *testing.T) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	require.NoError(t, err)
	return k
}

func newLoopback(t *testing.T, o *Options) host.Host {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	o.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	h, err := New(newKey(t), o)
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

func checkLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func TestNew(t *testing.T) {
	checkLeaks(t)
	a := newLoopback(t, nil)
	b := newLoopback(t, nil)

	// Both transports, both directions.
	var tcp, quic int
	for _, addr := range a.Addrs() {
		switch {
		case strings.Contains(addr.String(), "/tcp/"):
			tcp++
		case strings.Contains(addr.String(), "/quic-v1"):
			quic++
		}
	}
	require.Positive(t, tcp)
	require.Positive(t, quic)

	require.NoError(t, b.Connect(context.Background(), peer.AddrInfo{ID: a.ID(), Addrs: a.Addrs()}))
	require.Eventually(t, func() bool {
		v, err := b.Peerstore().Get(a.ID(), "AgentVersion")
		return err == nil && v == version.Agent
	}, 5*time.Second, 10*time.Millisecond, "identify announces the agent")
}

func TestNewDisableQUIC(t *testing.T) {
	checkLeaks(t)
	h, err := New(newKey(t), &Options{DisableQUIC: true, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	require.NoError(t, err)
	defer h.Close()
	for _, a := range h.Addrs() {
		require.NotContains(t, a.String(), "quic")
	}
	_, err = New(newKey(t), &Options{DisableQUIC: true, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}})
	require.ErrorIs(t, err, ErrInvalidOptions)
}

func TestNewErrors(t *testing.T) {
	checkLeaks(t)
	_, err := New(nil, nil)
	require.ErrorIs(t, err, ErrNoIdentity)
	_, err = New(newKey(t), &Options{ConnMgrHigh: 2000})
	require.ErrorIs(t, err, ErrInvalidOptions)
	// An address the machine does not have fails in libp2p, after the
	// resource and connection managers were built; they must not leak.
	_, err = New(newKey(t), &Options{ListenAddrs: []string{"/ip4/192.0.2.1/tcp/0"}, DisableQUIC: true})
	require.Error(t, err)
	// One address that fails is enough to fail: the registry publishes
	// them all.
	_, err = New(newKey(t), &Options{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/192.0.2.1/tcp/0"}, DisableQUIC: true})
	require.ErrorContains(t, err, "192.0.2.1")
}

func TestNewKeepsOptions(t *testing.T) {
	checkLeaks(t)
	o := &Options{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, DisableQUIC: true}
	h, err := New(newKey(t), o)
	require.NoError(t, err)
	defer h.Close()
	require.Equal(t, &Options{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, DisableQUIC: true}, o)
}

func TestMetrics(t *testing.T) {
	checkLeaks(t)
	reg := prometheus.NewRegistry()
	newLoopback(t, &Options{Metrics: true, Registerer: reg})
	families, err := reg.Gather()
	require.NoError(t, err)
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	require.Contains(t, strings.Join(names, " "), "libp2p_rcmgr_")
}

// TestServicePeerStreams shows a per-service, per-peer stream limit at
// work: the protocol scope, which carries the same limit, refuses the
// third stream before any handler runs, and the stream is reset.
func TestServicePeerStreams(t *testing.T) {
	checkLeaks(t)
	srv := newLoopback(t, &Options{Limits: Limits{Track: ServiceLimits{PeerStreams: 2}}})
	cli := newLoopback(t, nil)

	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	srv.SetStreamHandler(protocol.TrackID, func(s network.Stream) {
		wg.Add(1)
		defer wg.Done()
		if err := s.Scope().SetService(protocol.TrackServiceName); err != nil {
			s.Reset()
			return
		}
		io.Copy(io.Discard, s) // hold the stream until the client is done
		s.Close()
	})
	require.NoError(t, cli.Connect(context.Background(), peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}))

	var resets int
	for range 3 {
		s, err := cli.NewStream(context.Background(), srv.ID(), protocol.TrackID)
		require.NoError(t, err)
		_, err = s.Write([]byte{1})
		require.NoError(t, err)
		defer s.Close()
		s.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := s.Read(make([]byte, 1)); errors.Is(err, network.ErrReset) {
			resets++
		}
	}
	require.Equal(t, 1, resets)
}

// TestListenPortTaken: a second host on a port that another holds
// refuses to start, and says which port and address, even when the
// environment asks libp2p for SO_REUSEPORT. Port 0 still picks a free
// port.
func TestListenPortTaken(t *testing.T) {
	t.Setenv("LIBP2P_TCP_REUSEPORT", "true")
	checkLeaks(t)
	for _, tc := range []struct{ name, listen, proto string }{
		{"tcp", "/ip4/127.0.0.1/tcp/0", "/tcp/"},
		{"quic", "/ip4/127.0.0.1/udp/0/quic-v1", "/udp/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, err := New(newKey(t), &Options{ListenAddrs: []string{tc.listen}})
			require.NoError(t, err)
			t.Cleanup(func() { first.Close() })
			taken := first.Addrs()[0].String()

			_, err = New(newKey(t), &Options{ListenAddrs: []string{taken}})
			require.ErrorIs(t, err, ErrAddrInUse)
			require.ErrorContains(t, err, taken, "the error names the address")
			_, port, _ := strings.Cut(taken, tc.proto)
			port, _, _ = strings.Cut(port, "/")
			require.ErrorContains(t, err, "port "+port+" ", "the error names the port")

			other, err := New(newKey(t), &Options{ListenAddrs: []string{tc.listen}})
			require.NoError(t, err, "port 0 still works")
			other.Close()
		})
	}
}
