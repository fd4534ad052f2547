package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

const (
	// MDNSServiceName is the mDNS service OpenTrack nodes announce and
	// browse, so that they find each other and not every libp2p program
	// on the LAN.
	MDNSServiceName = "opentrack"

	// mdnsAddrTTL is how long addresses heard over mDNS stay in the
	// peerstore; a peer still on the LAN announces them again well
	// within it.
	mdnsAddrTTL = 10 * time.Minute
	// mdnsDialTimeout bounds one dial of a peer heard over mDNS.
	mdnsDialTimeout = 10 * time.Second
	// mdnsDialers bounds the dials of peers heard over mDNS in flight at
	// once; a peer heard while all are busy is dialed when it announces
	// itself again.
	mdnsDialers = 4
)

// MDNS finds peers on the local network, for LAN testnets (spec section
// 11.7). It puts their addresses in the peerstore, and connects to those
// the registry lists as nodes; it never connects to anyone else, so a
// stranger on the LAN costs nothing but a peerstore entry.
type MDNS struct {
	h     host.Host
	nodes nodeIndex // of a nil Trust: never connect
	log   *slog.Logger
	svc   mdns.Service
	dials chan struct{} // a slot per dial in flight

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	mu     sync.Mutex // orders wg.Add against Close's wg.Wait
	wg     sync.WaitGroup
	once   sync.Once
}

// StartMDNS announces h on the LAN and browses for other nodes until
// Close. t may be nil on a node without trust anchors: peers are then
// only remembered, never dialed. log may be nil to discard.
func StartMDNS(h host.Host, t *Trust, log *slog.Logger) (*MDNS, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &MDNS{h: h, nodes: nodeIndex{trust: t}, log: log, dials: make(chan struct{}, mdnsDialers)}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.svc = mdns.NewMdnsService(h, MDNSServiceName, notifee{m})
	if err := m.svc.Start(); err != nil {
		m.svc.Close()
		m.cancel()
		return nil, fmt.Errorf("discovery: mdns: %w", err)
	}
	return m, nil
}

// Close stops announcing and browsing and waits for dials in flight.
func (m *MDNS) Close() error {
	var err error
	m.once.Do(func() {
		m.mu.Lock()
		m.cancel()
		m.mu.Unlock()
		err = m.svc.Close()
		m.wg.Wait()
	})
	return err
}

// peerFound remembers ai's addresses and, for a registry node not yet
// connected, dials it in the background. libp2p's mDNS calls it on a
// goroutine of its own, possibly after Close.
func (m *MDNS) peerFound(ai peer.AddrInfo) {
	if ai.ID == m.h.ID() || m.ctx.Err() != nil {
		return
	}
	m.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, mdnsAddrTTL)
	if _, ok := m.nodes.get().addrs[ai.ID]; !ok || m.h.Network().Connectedness(ai.ID) == network.Connected {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return
	}
	select {
	case m.dials <- struct{}{}:
	default:
		// Busy: the peer announces itself again soon.
		return
	}
	m.wg.Go(func() {
		defer func() { <-m.dials }()
		ctx, cancel := context.WithTimeout(m.ctx, mdnsDialTimeout)
		defer cancel()
		if err := m.h.Connect(ctx, ai); err != nil {
			m.log.Debug("mdns peer unreachable", "peer", ai.ID, "err", err)
			return
		}
		m.log.Debug("mdns peer connected", "peer", ai.ID)
	})
}

// notifee hands libp2p's mDNS callbacks to MDNS without exporting them.
type notifee struct{ m *MDNS }

// HandlePeerFound implements mdns.Notifee.
func (n notifee) HandlePeerFound(ai peer.AddrInfo) { n.m.peerFound(ai) }
