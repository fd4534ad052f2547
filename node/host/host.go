package host

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/transport"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/p2p/transport/tcpreuse"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/opentrack/opentrack/node/version"
	"github.com/opentrack/opentrack/protocol"
)

// New builds and starts a libp2p host with identity priv. A nil opts means
// all defaults; opts itself is not modified.
func New(priv crypto.PrivKey, opts *Options) (host.Host, error) {
	if priv == nil {
		return nil, ErrNoIdentity
	}
	o := Options{}
	if opts != nil {
		o = *opts
		o.ListenAddrs = append([]string(nil), opts.ListenAddrs...)
	}
	o.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}

	rm, cm, err := managers(&o)
	if err != nil {
		return nil, err
	}
	h, err := libp2p.New(libp2pOptions(priv, &o, rm, cm)...)
	if err != nil {
		// libp2p closes these on some error paths and not on others; both
		// Close methods are idempotent.
		rm.Close()
		cm.Close()
		return nil, fmt.Errorf("host: %w", err)
	}
	if err := gateNegotiation(h, &o); err != nil {
		h.Close()
		return nil, err
	}
	if err := listen(h, o.ListenAddrs); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// managers builds the resource and connection managers of o.
func managers(o *Options) (network.ResourceManager, *connmgr.BasicConnMgr, error) {
	var rmOpts []rcmgr.Option
	if !o.Metrics {
		// libp2p.DisableMetrics does not reach the resource manager, whose
		// per-stream accounting is the expensive part.
		rmOpts = append(rmOpts, rcmgr.WithMetricsDisabled())
	}
	rm, err := rcmgr.NewResourceManager(newLimiter(&o.Limits), rmOpts...)
	if err != nil {
		return nil, nil, fmt.Errorf("host: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(o.ConnMgrLow, o.ConnMgrHigh, connmgr.WithGracePeriod(o.ConnMgrGrace))
	if err != nil {
		rm.Close()
		return nil, nil, fmt.Errorf("host: connection manager: %w", err)
	}
	return rm, cm, nil
}

// libp2pOptions are the libp2p options of a host of o.
func libp2pOptions(priv crypto.PrivKey, o *Options, rm network.ResourceManager, cm *connmgr.BasicConnMgr) []libp2p.Option {
	hs := newHandshakes(o.HandshakeTimeout, o.Limits.Handshakes, o.Limits.AddrHandshakes)
	lopts := []libp2p.Option{
		libp2p.Identity(priv),
		// The host listens below, once it is built: libp2p leaks its swarm
		// when listening fails inside New, and accepts a partial failure.
		libp2p.NoListenAddrs,
		// Without SO_REUSEPORT a port another process holds fails to bind;
		// with it, the kernel would split inbound dials between the two.
		libp2p.Transport(func(up transport.Upgrader, rm network.ResourceManager, shared *tcpreuse.ConnMgr) (*tcp.TcpTransport, error) {
			return tcp.NewTCPTransport(&boundedUpgrader{Upgrader: up, h: hs}, rm, shared, tcp.DisableReuseport())
		}),
		// Noise first: it is the cheaper handshake; TLS stays for peers
		// that only speak TLS.
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(tls.ID, tls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.UserAgent(version.Agent),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		// Nodes sit on addresses the registry publishes: no relays, no
		// hole punching, no NAT port mapping, and no AutoNAT probing.
		libp2p.DisableRelay(),
		libp2p.ForceReachabilityPublic(),
	}
	if o.Gater != nil {
		lopts = append(lopts, libp2p.ConnectionGater(o.Gater))
	}
	if !o.DisableQUIC {
		lopts = append(lopts, libp2p.Transport(quic.NewTransport))
	}
	// libp2p's own collectors (swarm, identify, event bus) count per
	// connection and are cheap; only the resource manager's per-stream
	// accounting, switched by Metrics above, is costly.
	if o.Registerer != nil {
		lopts = append(lopts, libp2p.PrometheusRegisterer(o.Registerer))
	} else {
		lopts = append(lopts, libp2p.DisableMetrics())
	}
	return lopts
}

// gateNegotiation puts the negotiation gate in front of the handler the
// basic host installed when it started, before any listener accepts.
func gateNegotiation(h host.Host, o *Options) error {
	sw, ok := h.Network().(interface {
		StreamHandler() network.StreamHandler
		SetStreamHandler(network.StreamHandler)
	})
	if !ok || sw.StreamHandler() == nil {
		return fmt.Errorf("host: the network %T has no stream handler to guard", h.Network())
	}
	sw.SetStreamHandler(newNegotiationGate(o.NegotiationTimeout, o.Limits.PeerNegotiating).wrap(sw.StreamHandler()))
	return nil
}

// listen listens on every address. Every one must work: a node that
// silently skips one is not where the registry says it is.
func listen(h host.Host, addrs []string) error {
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err == nil {
			err = h.Network().Listen(a)
		}
		if err != nil {
			// The swarm flattens the bind error into text.
			if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), syscall.EADDRINUSE.Error()) {
				return fmt.Errorf("%w: port %s of %s: %w", ErrAddrInUse, port(a), s, err)
			}
			return fmt.Errorf("host: listen on %s: %w", s, err)
		}
	}
	return nil
}

// newLimiter turns l into a fixed limiter. The scopes l names are set
// explicitly; the rest (transient, connection, stream, libp2p's own
// services) keep libp2p's defaults scaled to the machine.
func newLimiter(l *Limits) rcmgr.Limiter {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)

	peer := both(l.PeerConns, l.PeerStreams, l.PeerMemory)
	partial := rcmgr.PartialLimitConfig{
		System:       both(l.SystemConns, l.SystemStreams, l.SystemMemory),
		PeerDefault:  peer,
		Service:      map[string]rcmgr.ResourceLimits{},
		ServicePeer:  map[string]rcmgr.ResourceLimits{},
		Protocol:     map[libp2pprotocol.ID]rcmgr.ResourceLimits{},
		ProtocolPeer: map[libp2pprotocol.ID]rcmgr.ResourceLimits{},
		// Streams wait here until they pick a protocol, and connections
		// until their handshake is done; the gate and the handshake bounds
		// keep them below these.
		Transient: rcmgr.ResourceLimits{
			StreamsInbound: rcmgr.LimitVal(l.TransientStreams),
			Streams:        rcmgr.LimitVal(l.TransientStreams + transientOutbound),
			ConnsInbound:   rcmgr.LimitVal(l.Handshakes),
			Conns:          rcmgr.LimitVal(l.Handshakes + transientOutbound),
		},
	}
	for _, s := range []struct {
		name string
		id   libp2pprotocol.ID
		l    ServiceLimits
	}{
		{protocol.TrackServiceName, protocol.TrackID, l.Track},
		{protocol.WatchServiceName, protocol.WatchID, l.Watch},
		{protocol.InfoServiceName, protocol.InfoID, l.Info},
	} {
		// The protocol scope is charged before the handler moves the
		// stream into its service scope, so it gets the same limits;
		// otherwise libp2p's default protocol limits would bind first.
		svc := both(0, s.l.Streams, s.l.Memory)
		// Per peer, memory is bounded by the peer's own budget: spelling it
		// out keeps libp2p's smaller default service-peer memory away.
		svcPeer := both(0, s.l.PeerStreams, l.PeerMemory)
		partial.Service[s.name], partial.Protocol[s.id] = svc, svc
		partial.ServicePeer[s.name], partial.ProtocolPeer[s.id] = svcPeer, svcPeer
	}
	return rcmgr.NewFixedLimiter(partial.Build(scaling.AutoScale()))
}

// transientOutbound is room in the transient scope for what the node
// itself opens: dials during their handshake, streams while they
// negotiate.
const transientOutbound = 256

// both returns limits that cap inbound, outbound and the total alike. A
// zero conns or streams leaves that resource at its default.
func both(conns, streams int, memory int64) rcmgr.ResourceLimits {
	c, s := rcmgr.LimitVal(conns), rcmgr.LimitVal(streams)
	return rcmgr.ResourceLimits{
		Conns: c, ConnsInbound: c, ConnsOutbound: c,
		Streams: s, StreamsInbound: s, StreamsOutbound: s,
		Memory: rcmgr.LimitVal64(memory),
	}
}

// port is a's TCP or UDP port, for errors.
func port(a ma.Multiaddr) string {
	for _, code := range []int{ma.P_TCP, ma.P_UDP} {
		if v, err := a.ValueForProtocol(code); err == nil {
			return v
		}
	}
	return "?"
}
