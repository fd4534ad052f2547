package host

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/opentrack/opentrack/internal/options"
)

// ErrInvalidOptions is wrapped by Validate with the list of problems.
var ErrInvalidOptions = errors.New("host: invalid options")

// ErrNoIdentity means New was called without a private key. The node's
// libp2p key is its identity in the registry, so it is never generated here.
var ErrNoIdentity = errors.New("host: no identity key")

// ErrAddrInUse means a listen address's port is held by another socket,
// most likely another node: the host refuses to share it.
var ErrAddrInUse = errors.New("host: listen port already in use")

// Options configure the libp2p host. The zero value of a field means its
// default; call EnsureDefaults to fill them in and Validate to check them.
// The node config file embeds Options, hence the TOML tags.
type Options struct {
	// ListenAddrs are the multiaddrs the host listens on.
	// Default: ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"].
	ListenAddrs []string `toml:"listen_addrs"`

	// DisableQUIC leaves out the QUIC transport, for networks that drop
	// UDP. A /quic-v1 listen address is then a configuration error.
	// Default: false (QUIC on).
	DisableQUIC bool `toml:"disable_quic"`

	// ConnMgrLow is the number of connections the connection manager trims
	// down to once it passes ConnMgrHigh. Default: 512.
	ConnMgrLow int `toml:"conn_mgr_low"`

	// ConnMgrHigh is the connection count above which the connection
	// manager starts trimming. It must stay below Limits.SystemConns, so
	// that trimming starts before the resource manager refuses
	// connections. Default: 768.
	ConnMgrHigh int `toml:"conn_mgr_high"`

	// ConnMgrGrace is how long a new connection is exempt from trimming.
	// Default: 1m.
	ConnMgrGrace time.Duration `toml:"conn_mgr_grace"`

	// NegotiationTimeout bounds how long an inbound stream may take to
	// pick its protocol (multistream-select) before it is reset. A client
	// sends its protocol with its first write. Default: 3s.
	NegotiationTimeout time.Duration `toml:"negotiation_timeout"`

	// HandshakeTimeout bounds an inbound TCP connection's security and
	// muxer handshakes; one that takes longer is closed. Default: 5s.
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`

	// Limits is the resource-manager budget. Every limit is set
	// explicitly; libp2p's machine-scaled defaults apply only to the
	// scopes not named here (transient, per-connection, per-stream, and
	// libp2p's own services).
	Limits Limits `toml:"limits"`

	// Metrics turns on the resource manager's Prometheus metrics, whose
	// per-stream accounting costs 10–14% CPU on each side of a
	// connection. Default: false.
	Metrics bool `toml:"metrics"`

	// Registerer receives libp2p's collectors (swarm, identify, and the
	// resource manager's when Metrics is on). Default: nil, no libp2p
	// metrics, or prometheus.DefaultRegisterer when Metrics is on. A node
	// passes its own metrics.Metrics.Registry so that many nodes fit in
	// one process.
	Registerer prometheus.Registerer `toml:"-"`

	// Gater, when set, vets every connection before and after its
	// handshake. Testnets use it to cut links between nodes on purpose.
	// Default: nil, every connection allowed.
	Gater connmgr.ConnectionGater `toml:"-"`
}

// Limits is the resource-manager budget of the host. Memory is accounted,
// not allocated: it bounds what yamux windows and stream handlers may
// reserve (yamux reserves 256 KiB per open stream).
type Limits struct {
	// SystemConns bounds connections, inbound and outbound together, over
	// the whole host. Default: 1024.
	SystemConns int `toml:"system_conns"`
	// SystemStreams bounds open streams over the whole host. Default: 8192.
	SystemStreams int `toml:"system_streams"`
	// SystemMemory bounds reserved memory over the whole host, in bytes.
	// Default: 1 GiB.
	SystemMemory int64 `toml:"system_memory"`

	// PeerConns bounds connections to one peer. Default: 8.
	PeerConns int `toml:"peer_conns"`
	// PeerStreams bounds open streams with one peer. Default: 256.
	PeerStreams int `toml:"peer_streams"`
	// PeerMemory bounds memory reserved for one peer, in bytes.
	// Default: 64 MiB.
	PeerMemory int64 `toml:"peer_memory"`

	// PeerNegotiating bounds one peer's inbound streams that have not yet
	// picked a protocol; more are reset at once. A peer may open all the
	// streams its services allow it at once, so the default is their sum:
	// Track, Watch and Info PeerStreams (84 with their defaults).
	PeerNegotiating int `toml:"peer_negotiating"`
	// TransientStreams bounds inbound streams over all peers that have not
	// yet picked a protocol: the resource manager's transient scope.
	// Default: 1024.
	TransientStreams int `toml:"transient_streams"`
	// Handshakes bounds inbound TCP connections in their handshake over
	// all sources; more are closed at once. It is also the transient
	// scope's inbound connection limit. Default: 256.
	Handshakes int `toml:"handshakes"`
	// AddrHandshakes bounds inbound TCP connections in their handshake
	// from one source address (IPv4 /32, IPv6 /64). Default: 32.
	AddrHandshakes int `toml:"addr_handshakes"`

	// Track bounds the /opentrack/track service.
	// Default: 4096 streams, 256 MiB, 64 streams per peer.
	Track ServiceLimits `toml:"track"`
	// Watch bounds the /opentrack/watch service.
	// Default: 4096 streams, 256 MiB, 16 streams per peer.
	Watch ServiceLimits `toml:"watch"`
	// Info bounds the /opentrack/info service.
	// Default: 256 streams, 16 MiB, 4 streams per peer.
	Info ServiceLimits `toml:"info"`
}

// ServiceLimits bound one protocol service. They apply to both the
// service scope and the protocol scope of its protocol ID, so libp2p's
// default protocol limits never undercut them.
type ServiceLimits struct {
	// Streams bounds open streams of the service over all peers.
	Streams int `toml:"streams"`
	// Memory bounds memory the service's handlers reserve, in bytes.
	Memory int64 `toml:"memory"`
	// PeerStreams bounds open streams of the service with one peer.
	PeerStreams int `toml:"peer_streams"`
}

// Defaults of the negotiation and handshake bounds that tests refer to.
const (
	DefaultPeerNegotiating = 64 + 16 + 4 // the services' default PeerStreams
	DefaultAddrHandshakes  = 32
)

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else.
var defaults = Options{
	// TCP first: with DisableQUIC, the TCP address alone is the default.
	ListenAddrs:  []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
	ConnMgrLow:   512,
	ConnMgrHigh:  768,
	ConnMgrGrace: time.Minute,
	// A multistream-select round trip on loopback takes well under a
	// millisecond; the rest is room for a loaded machine.
	NegotiationTimeout: 3 * time.Second,
	HandshakeTimeout:   5 * time.Second,
	Limits: Limits{
		SystemConns:   1024,
		SystemStreams: 8192,
		SystemMemory:  1 << 30,
		PeerConns:     8,
		PeerStreams:   256,
		PeerMemory:    64 << 20,
		// EnsureDefaults sums the services' PeerStreams as they are set;
		// this is that sum with their defaults.
		PeerNegotiating:  DefaultPeerNegotiating,
		TransientStreams: 1024,
		Handshakes:       256,
		AddrHandshakes:   DefaultAddrHandshakes,
		Track:            ServiceLimits{Streams: 4096, Memory: 256 << 20, PeerStreams: 64},
		Watch:            ServiceLimits{Streams: 4096, Memory: 256 << 20, PeerStreams: 16},
		Info:             ServiceLimits{Streams: 256, Memory: 16 << 20, PeerStreams: 4},
	},
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	listen := defaults.ListenAddrs
	if o.DisableQUIC {
		listen = listen[:1]
	}
	options.DefaultSlice(&o.ListenAddrs, listen)
	options.Default(&o.ConnMgrLow, defaults.ConnMgrLow)
	options.Default(&o.ConnMgrHigh, defaults.ConnMgrHigh)
	options.Default(&o.ConnMgrGrace, defaults.ConnMgrGrace)
	options.Default(&o.NegotiationTimeout, defaults.NegotiationTimeout)
	options.Default(&o.HandshakeTimeout, defaults.HandshakeTimeout)
	l, d := &o.Limits, &defaults.Limits
	options.Default(&l.SystemConns, d.SystemConns)
	options.Default(&l.SystemStreams, d.SystemStreams)
	options.Default(&l.SystemMemory, d.SystemMemory)
	options.Default(&l.PeerConns, d.PeerConns)
	options.Default(&l.PeerStreams, d.PeerStreams)
	options.Default(&l.PeerMemory, d.PeerMemory)
	options.Default(&l.TransientStreams, d.TransientStreams)
	options.Default(&l.Handshakes, d.Handshakes)
	options.Default(&l.AddrHandshakes, d.AddrHandshakes)
	l.Track.ensureDefaults(d.Track)
	l.Watch.ensureDefaults(d.Watch)
	l.Info.ensureDefaults(d.Info)
	options.Default(&l.PeerNegotiating, l.Track.PeerStreams+l.Watch.PeerStreams+l.Info.PeerStreams)
	if o.Metrics {
		options.Default(&o.Registerer, prometheus.DefaultRegisterer)
	}
	return o
}

func (s *ServiceLimits) ensureDefaults(d ServiceLimits) {
	options.Default(&s.Streams, d.Streams)
	options.Default(&s.Memory, d.Memory)
	options.Default(&s.PeerStreams, d.PeerStreams)
}

// Validate checks o after EnsureDefaults and reports every problem at
// once, wrapped in ErrInvalidOptions.
func (o *Options) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if len(o.ListenAddrs) == 0 {
		add("listen_addrs is empty")
	}
	for _, s := range o.ListenAddrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			add("listen address %q: %v", s, err)
			continue
		}
		if o.DisableQUIC && isQUIC(a) {
			add("listen address %q needs QUIC, which disable_quic turns off", s)
		}
	}
	l := &o.Limits
	if o.ConnMgrLow <= 0 || o.ConnMgrHigh <= o.ConnMgrLow {
		add("conn_mgr_low (%d) must be positive and below conn_mgr_high (%d)", o.ConnMgrLow, o.ConnMgrHigh)
	}
	if o.ConnMgrHigh >= l.SystemConns {
		add("conn_mgr_high (%d) must stay below limits.system_conns (%d), or the resource manager refuses connections before the connection manager trims any", o.ConnMgrHigh, l.SystemConns)
	}
	if o.ConnMgrGrace < 0 {
		add("conn_mgr_grace (%s) is negative", o.ConnMgrGrace)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"negotiation_timeout", o.NegotiationTimeout}, {"handshake_timeout", o.HandshakeTimeout}} {
		if d.v <= 0 {
			add("%s (%s) must be positive", d.name, d.v)
		}
	}
	for _, c := range []struct {
		name      string
		v, system int64
	}{
		{"system_conns", int64(l.SystemConns), -1},
		{"system_streams", int64(l.SystemStreams), -1},
		{"system_memory", l.SystemMemory, -1},
		{"peer_conns", int64(l.PeerConns), int64(l.SystemConns)},
		{"peer_streams", int64(l.PeerStreams), int64(l.SystemStreams)},
		{"peer_memory", l.PeerMemory, l.SystemMemory},
		{"transient_streams", int64(l.TransientStreams), int64(l.SystemStreams)},
		{"peer_negotiating", int64(l.PeerNegotiating), int64(min(l.PeerStreams, l.TransientStreams))},
		{"handshakes", int64(l.Handshakes), int64(l.SystemConns)},
		{"addr_handshakes", int64(l.AddrHandshakes), int64(l.Handshakes)},
	} {
		checkLimit(add, "limits."+c.name, c.v, c.system)
	}
	for _, s := range []struct {
		name string
		l    ServiceLimits
	}{{"track", l.Track}, {"watch", l.Watch}, {"info", l.Info}} {
		prefix := "limits." + s.name + "."
		checkLimit(add, prefix+"streams", int64(s.l.Streams), int64(l.SystemStreams))
		checkLimit(add, prefix+"memory", s.l.Memory, l.SystemMemory)
		checkLimit(add, prefix+"peer_streams", int64(s.l.PeerStreams), int64(min(s.l.Streams, l.PeerStreams)))
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(p, "; "))
	}
	return nil
}

// checkLimit reports a limit that is not positive or exceeds its parent
// scope's (parent < 0: no parent).
func checkLimit(add func(string, ...any), name string, v, parent int64) {
	switch {
	case v <= 0:
		add("%s (%d) must be positive", name, v)
	case parent >= 0 && v > parent:
		add("%s (%d) exceeds the enclosing limit (%d)", name, v, parent)
	}
}

func isQUIC(a ma.Multiaddr) bool {
	for _, c := range a {
		if c.Code() == ma.P_QUIC_V1 || c.Code() == ma.P_QUIC {
			return true
		}
	}
	return false
}
