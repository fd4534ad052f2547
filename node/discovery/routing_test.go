package discovery_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/test"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// authority is a registry authority for tests.
type authority struct {
	signer *protocol.Signer
}

func newAuthority(t *testing.T) *authority {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	s, err := protocol.NewSigner(priv)
	require.NoError(t, err)
	return &authority{signer: s}
}

// anchors is the authority's key as trust anchors.
func (a *authority) anchors() []ed25519.PublicKey { return []ed25519.PublicKey{a.signer.Public()} }

// sign signs r.
func (a *authority) sign(t *testing.T, r *protocol.Registry) []byte {
	t.Helper()
	b, err := protocol.SignRegistry(a.signer, r)
	require.NoError(t, err)
	return b
}

// newRegistry returns a registry edition valid from an hour ago for a
// day, with one carrier per host, each listing that host as its node at
// its current addresses.
func newRegistry(t *testing.T, seq uint64, hosts ...host.Host) *protocol.Registry {
	t.Helper()
	now := time.Now().UnixMilli()
	r := &protocol.Registry{Seq: seq, Issued: now, NotBefore: now - time.Hour.Milliseconds(), NotAfter: now + 24*time.Hour.Milliseconds()}
	for i, h := range hosts {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		var addrs []string
		for _, a := range h.Addrs() {
			addrs = append(addrs, a.String())
		}
		r.Carriers = append(r.Carriers, protocol.CarrierEntry{
			// Codes sort in host order: CA, CB, ...
			Code: fmt.Sprintf("C%c", 'A'+i), Name: fmt.Sprintf("Carrier %d", i), Country: "DE",
			Keys:    []protocol.CarrierKey{{Key: pub, NotBefore: r.NotBefore, NotAfter: r.NotAfter}},
			Nodes:   []protocol.NodeEntry{{Peer: h.ID().String(), Addrs: addrs}},
			Schemes: []protocol.Scheme{},
		})
	}
	return r
}

// newTrust returns an in-memory Trust for auth holding signed, if any.
func newTrust(t *testing.T, auth *authority, signed []byte) *discovery.Trust {
	t.Helper()
	tr, err := discovery.NewTrust(auth.anchors(), "", nil)
	require.NoError(t, err)
	if signed != nil {
		_, err := tr.Install(signed)
		require.NoError(t, err)
	}
	return tr
}

// fastRouter bootstraps every 100ms, so tests do not wait for a minute.
var fastRouter = &discovery.RouterOptions{BootstrapInterval: 100 * time.Millisecond, DialTimeout: 2 * time.Second, LookupTimeout: 5 * time.Second}

// newRouter starts a Router over h and closes it at cleanup.
func newRouter(t *testing.T, h host.Host, tr *discovery.Trust) *discovery.Router {
	t.Helper()
	r, err := discovery.NewRouter(h, tr, fastRouter, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.Close()) })
	return r
}

// mockHosts are n hosts on an in-memory network, linked but not
// connected. Made inside a synctest bubble, they belong to it: unlike
// loopback TCP, mocknet's pipes block durably, so fake time advances
// while a stream waits. synctest.Test fails on goroutines left in the
// bubble, which stands in for servicetest.CheckLeaks.
func mockHosts(t *testing.T, n int) (mocknet.Mocknet, []host.Host) {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	hosts := make([]host.Host, n)
	for i := range hosts {
		var err error
		hosts[i], err = mn.GenPeer()
		require.NoError(t, err)
	}
	require.NoError(t, mn.LinkAll())
	return mn, hosts
}

func connected(a, b host.Host) bool { return a.Network().Connectedness(b.ID()) == network.Connected }

func TestRouterBootstrapsToRegistryNodes(t *testing.T) {
	servicetest.CheckLeaks(t)
	auth := newAuthority(t)
	hosts := []host.Host{servicetest.NewHost(t, nil), servicetest.NewHost(t, nil), servicetest.NewHost(t, nil)}
	signed := auth.sign(t, newRegistry(t, 1, hosts...))
	routers := make([]*discovery.Router, len(hosts))
	for i, h := range hosts {
		routers[i] = newRouter(t, h, newTrust(t, auth, signed))
	}
	require.Eventually(t, func() bool {
		for i, a := range hosts {
			for _, b := range hosts[i+1:] {
				if !connected(a, b) {
					return false
				}
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "every registry node connects to the others")
	require.Eventually(t, func() bool {
		for _, r := range routers {
			if r.RoutingTableSize() != len(hosts)-1 {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "the DHT routing tables hold the other registry nodes")

	for _, p := range hosts[0].Network().Peers() {
		proto, err := hosts[0].Peerstore().FirstSupportedProtocol(p, "/opentrack/kad/1.0.0")
		require.NoError(t, err)
		require.Equal(t, "/opentrack/kad/1.0.0", string(proto), "the private DHT's protocol ID")
	}
}

// TestRouterBootstrapsOnNewRegistry runs in a synctest bubble over
// mocknet, so that "not before a registry" is checked on fake time.
func TestRouterBootstrapsOnNewRegistry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		auth := newAuthority(t)
		_, hosts := mockHosts(t, 2)
		a, b := hosts[0], hosts[1]
		ta := newTrust(t, auth, nil) // no registry yet: nothing to dial
		slow := *fastRouter
		slow.BootstrapInterval = time.Hour
		r, err := discovery.NewRouter(a, ta, &slow, nil)
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })

		time.Sleep(time.Minute)
		synctest.Wait()
		require.False(t, connected(a, b))
		_, err = ta.Install(auth.sign(t, newRegistry(t, 1, b)))
		require.NoError(t, err)
		synctest.Wait()
		require.True(t, connected(a, b), "a newer registry makes the router dial its nodes at once, not at the next interval")
	})
}

func TestConnectReusesConnection(t *testing.T) {
	servicetest.CheckLeaks(t)
	auth := newAuthority(t)
	a, b := servicetest.NewHost(t, nil), servicetest.NewHost(t, nil)
	signed := auth.sign(t, newRegistry(t, 1, b))
	r := newRouter(t, a, newTrust(t, auth, signed))
	ctx := context.Background()

	require.Eventually(t, func() bool { return connected(a, b) }, 5*time.Second, 10*time.Millisecond)
	before := a.Network().ConnsToPeer(b.ID())
	require.Len(t, before, 1)
	for range 3 {
		require.NoError(t, r.Connect(ctx, b.ID()))
	}
	after := a.Network().ConnsToPeer(b.ID())
	require.Len(t, after, 1)
	require.Equal(t, before[0].ID(), after[0].ID(), "Connect kept the connection it had")

	// Without a connection, Connect dials the registry's address.
	require.NoError(t, a.Network().ClosePeer(b.ID()))
	require.Eventually(t, func() bool { return !connected(a, b) }, 5*time.Second, 10*time.Millisecond)
	a.Peerstore().ClearAddrs(b.ID())
	require.NoError(t, r.Connect(ctx, b.ID()))
	require.True(t, connected(a, b))
}

func TestConnectErrors(t *testing.T) {
	servicetest.CheckLeaks(t)
	auth := newAuthority(t)
	a := servicetest.NewHost(t, nil)
	r := newRouter(t, a, newTrust(t, auth, nil))
	ctx := context.Background()

	err := r.Connect(ctx, a.ID())
	require.ErrorIs(t, err, swarm.ErrDialToSelf)

	stranger := test.RandPeerIDFatal(t)
	err = r.Connect(ctx, stranger)
	require.ErrorIs(t, err, discovery.ErrUnreachable)
	require.Contains(t, err.Error(), "no known addresses")

	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "Close twice")
	require.ErrorIs(t, r.Connect(ctx, stranger), discovery.ErrClosed)
}

func TestRouterOptionsValidate(t *testing.T) {
	o := (&discovery.RouterOptions{BootstrapPeers: -1, DialTimeout: -time.Second}).EnsureDefaults()
	err := o.Validate()
	require.ErrorIs(t, err, discovery.ErrInvalidOptions)
	require.True(t, strings.Contains(err.Error(), "BootstrapPeers") && strings.Contains(err.Error(), "DialTimeout"), "every problem is reported: %v", err)

	d := (*discovery.RouterOptions)(nil).EnsureDefaults()
	require.NoError(t, d.Validate())
	require.Equal(t, time.Minute, d.BootstrapInterval)
	require.Equal(t, 8, d.BootstrapPeers)
}
