package testnet

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// gater refuses connections with blocked peers, both ways: dials before
// they start, and inbound connections once the handshake names the peer.
type gater struct {
	mu      sync.RWMutex
	blocked map[peer.ID]bool
}

func newGater() *gater { return &gater{blocked: map[peer.ID]bool{}} }

func (g *gater) block(p peer.ID) {
	g.mu.Lock()
	g.blocked[p] = true
	g.mu.Unlock()
}

func (g *gater) unblock(p peer.ID) {
	g.mu.Lock()
	delete(g.blocked, p)
	g.mu.Unlock()
}

func (g *gater) allowed(p peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return !g.blocked[p]
}

func (g *gater) InterceptPeerDial(p peer.ID) bool                 { return g.allowed(p) }
func (g *gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allowed(p) }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
