package node_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/service/servicetest"
)

// The loopback testnet (authority, carriers, platforms) is in
// integration_test.go.

func connected(n *node.Node, p peer.ID) bool {
	return n.Host.Network().Connectedness(p) == network.Connected
}

// knowsAddrs reports whether n has every listen address of m in its
// peerstore.
func knowsAddrs(n, m *node.Node) bool {
	known := n.Host.Peerstore().Addrs(m.Host.ID())
	for _, a := range m.Host.Addrs() {
		if !slices.ContainsFunc(known, a.Equal) {
			return false
		}
	}
	return true
}

// TestNodeFoundAfterMove: three carriers get the registry from one of
// them, a platform joins, and one carrier restarts on a port that no
// registry lists. The platform's router finds it through the DHT alone.
func TestNodeFoundAfterMove(t *testing.T) {
	servicetest.CheckLeaks(t)
	auth := newAuthority(t)
	ca, cb, cx := launchCarrier(t, auth, "CA"), launchCarrier(t, auth, "CB"), launchCarrier(t, auth, "CX")
	for _, c := range []*testCarrier{ca, cb, cx} {
		require.NotNil(t, c.node.Trust, "a node with an anchor has trust")
		require.NotNil(t, c.node.Router(), "and routes")
	}

	// The authority hands the registry to CA alone. CA's router dials the
	// other nodes, and they take the registry from CA over info.
	reg := auth.sign(t, ca.entry(t), cb.entry(t), cx.entry(t))
	_, err := ca.node.Trust.Install(reg)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return cb.node.Trust.Seq() == 1 && cx.node.Trust.Seq() == 1 }, 10*time.Second, 20*time.Millisecond,
		"the registry spreads from CA through registry exchange")

	p := launchPlatform(t, auth, reg, nil)
	require.Eventually(t, func() bool {
		return connected(p.node, ca.id()) && connected(p.node, cb.id()) && connected(p.node, cx.id()) &&
			connected(cx.node, ca.id()) && connected(cx.node, cb.id())
	}, 10*time.Second, 20*time.Millisecond, "every node connects to the registry nodes")

	// CX restarts on a new port, with the same key and the registry it
	// kept in its repo.
	xid, oldAddrs := cx.id(), cx.node.Addrs()
	cx.restart(t)
	require.Equal(t, xid, cx.id())
	require.EqualValues(t, 1, cx.node.Trust.Seq(), "the registry survives a restart")
	for _, a := range cx.node.Addrs() {
		require.NotContains(t, oldAddrs, a, "the node moved")
	}
	require.Eventually(t, func() bool { return !connected(p.node, xid) }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return knowsAddrs(ca.node, cx.node) && knowsAddrs(cb.node, cx.node) }, 10*time.Second, 20*time.Millisecond,
		"the moved node reconnects to the registry nodes, which learn its new address through identify")
	// Under load the platform can hear of the new address early (the
	// moved node may dial it, or identify may pass it on). Forget every
	// address, so Connect has only the registry's stale one and the DHT.
	if p.node.Host.Network().Connectedness(xid) == network.Connected {
		require.NoError(t, p.node.Host.Network().ClosePeer(xid))
	}
	p.node.Host.Peerstore().ClearAddrs(xid)

	// The registry's address refuses; the DHT has the new one.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, p.node.Router().Connect(ctx, xid))
	conns := p.node.Host.Network().ConnsToPeer(xid)
	require.NotEmpty(t, conns)
	require.Contains(t, cx.node.Addrs(), conns[0].RemoteMultiaddr().String()+"/p2p/"+xid.String(), "connected at the new address")
	info, err := p.cl.Info(ctx, xid, p.trust.Seq())
	require.NoError(t, err)
	require.Equal(t, "CX", info.Carrier)
}

// TestNodeWithoutAnchors: a node whose repo has no trust anchors neither
// routes nor exchanges registries.
func TestNodeWithoutAnchors(t *testing.T) {
	servicetest.CheckLeaks(t)
	c := launchCarrier(t, nil, "CA")
	require.Nil(t, c.node.Trust)
	require.Nil(t, c.node.Router())
}

// TestDefaultReposSideBySide: a carrier repo and two platform repos made
// with no listen or admin flags start together on one machine, each on
// loopback, and their node.json says at which ports.
func TestDefaultReposSideBySide(t *testing.T) {
	servicetest.CheckLeaks(t)
	base := t.TempDir()
	for _, o := range []repo.InitOptions{{Carrier: "SF"}, {Platform: "shop"}, {Platform: "gw"}} {
		name := o.Carrier + o.Platform
		r, err := repo.Init(filepath.Join(base, name), o)
		require.NoError(t, err)
		n, err := node.Start(r, node.Options{})
		require.NoError(t, err, "%s with the default config did not start beside the others", name)
		t.Cleanup(func() { _ = n.Close() })
		info := n.NodeInfo() // what Run writes to node.json
		require.NotEmpty(t, info.Addrs, "%s: node.json has no addresses", name)
		for _, a := range info.Addrs {
			require.True(t, strings.HasPrefix(a, "/ip4/127.0.0.1/"), "%s listens beyond loopback by default: %s", name, a)
			require.NotContains(t, a, "/tcp/0/", "%s: node.json has port 0, not the chosen port: %s", name, a)
		}
		if o.Carrier != "" {
			require.NotEmpty(t, info.AdminURL, "%s: node.json has no admin URL", name)
			require.NotContains(t, info.AdminURL, ":0/", "%s: admin URL %s", name, info.AdminURL)
		}
	}
}
