package service

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/version"
	"github.com/opentrack/opentrack/protocol"
)

const (
	// infoStreamMemory is reserved while an info stream is open: the
	// request buffer. The response is mostly the registry, which the
	// RegistryProvider holds anyway.
	infoStreamMemory = protocol.MaxInfoRequest
	// protocolPrefix selects the protocols an info answer lists.
	protocolPrefix = "/opentrack/"
	// maxInfoKeys and maxVersionLen are what protocol.Info.Validate lets
	// a peer send.
	maxInfoKeys   = 16
	maxVersionLen = 64
)

// RegistryProvider gives the info service the newest signed registry the
// node holds; node/discovery implements it.
type RegistryProvider interface {
	// Seq is the sequence number of the registry held, 0 for none.
	Seq() uint64
	// Signed is the COSE-signed registry of sequence Seq.
	Signed() []byte
}

// InfoConfig is what an Info service reports.
type InfoConfig struct {
	// Carrier is the carrier the node serves; empty on a platform node.
	Carrier string
	// Version is the software version reported, "opentrack/<version>" by
	// the spec (section 8.6), at most 64 bytes. Default: version.Agent.
	Version string
	// Keys are the carrier's current public signing keys, a hint for
	// peers; the registry is what binds them.
	Keys []ed25519.PublicKey
	// Registry provides the signed registry; nil when the node has none.
	Registry RegistryProvider
	// Metrics receives reset counts; nil for none.
	Metrics *metrics.Metrics
	// Logger receives bad peer input at debug level; nil discards.
	Logger *slog.Logger
}

// Info serves /opentrack/info/1.0.0: one InfoRequest, one Info, then the
// stream closes.
type Info struct {
	cfg  InfoConfig
	opts Options
	keys [][]byte
	srv  server
}

// NewInfo checks cfg and opts (nil for defaults) and builds the service.
func NewInfo(cfg InfoConfig, opts *Options) (*Info, error) {
	o, err := resolve(opts)
	var p []string
	if err != nil {
		p = append(p, err.Error())
	}
	if cfg.Version == "" {
		cfg.Version = version.Agent
	}
	if len(cfg.Version) > maxVersionLen {
		p = append(p, fmt.Sprintf("version is %d bytes, at most %d", len(cfg.Version), maxVersionLen))
	}
	if cfg.Carrier != "" {
		if err := protocol.ValidCarrierCode(cfg.Carrier); err != nil {
			p = append(p, "carrier: "+err.Error())
		}
	}
	if len(cfg.Keys) > maxInfoKeys {
		p = append(p, fmt.Sprintf("%d keys, at most %d", len(cfg.Keys), maxInfoKeys))
	}
	i := &Info{cfg: cfg, opts: o, srv: newServer(protocol.InfoID, "info", cfg.Metrics, cfg.Logger)}
	for n, k := range cfg.Keys {
		if len(k) != ed25519.PublicKeySize {
			p = append(p, fmt.Sprintf("key %d is %d bytes, want %d", n, len(k), ed25519.PublicKeySize))
		}
		i.keys = append(i.keys, k)
	}
	if err := problems(p); err != nil {
		return nil, err
	}
	return i, nil
}

// Register starts serving info streams on h. Register once.
func (i *Info) Register(h host.Host) { i.srv.register(h, i.handle) }

// Unregister stops serving, resets open streams and waits for their
// handlers to return.
func (i *Info) Unregister() { i.srv.unregister() }

func (i *Info) handle(s network.Stream) {
	_, done, ok := i.srv.open(s, protocol.InfoServiceName, infoStreamMemory)
	if !ok {
		return
	}
	defer done()
	if err := s.SetDeadline(time.Now().Add(i.opts.RequestTimeout)); err != nil {
		s.Reset()
		return
	}
	body, err := protocol.NewFrameReader(s, protocol.MaxInfoRequest).Next()
	if err != nil {
		i.srv.readFailed(s, err)
		return
	}
	var req protocol.InfoRequest
	if err := protocol.Unmarshal(body, &req); err != nil {
		i.srv.reset(s, reasonDecode, err)
		return
	}
	msg, err := protocol.Marshal(i.info(&req))
	if err == nil {
		err = protocol.WriteFrame(s, msg, protocol.MaxInfoResponse)
	}
	if err != nil {
		s.Reset()
		i.srv.log.Debug("info reply failed", "peer", s.Conn().RemotePeer(), "err", err)
		return
	}
	s.Close()
}

// info builds the answer to req.
func (i *Info) info(req *protocol.InfoRequest) *protocol.Info {
	info := &protocol.Info{
		Carrier:   i.cfg.Carrier,
		Version:   i.cfg.Version,
		Protocols: i.protocols(),
		Limits:    protocol.DefaultLimits(),
		Keys:      i.keys,
	}
	if r := i.cfg.Registry; r != nil {
		info.RegistrySeq = r.Seq()
		if req.RegistrySeq < info.RegistrySeq {
			info.Registry = r.Signed()
		}
	}
	return info
}

// protocols lists the OpenTrack protocols the host answers right now, so
// the answer follows what is registered rather than a config list.
func (i *Info) protocols() []string {
	h := i.srv.host()
	if h == nil {
		return nil
	}
	var out []string
	for _, id := range h.Mux().Protocols() {
		if strings.HasPrefix(string(id), protocolPrefix) {
			out = append(out, string(id))
		}
	}
	slices.Sort(out)
	return out
}
