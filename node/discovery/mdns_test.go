package discovery_test

import (
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/service/servicetest"
)

// multicastUp reports whether some interface can carry mDNS; sandboxes
// without one cannot run the test, which is then skipped, not failed.
func multicastUp() bool {
	ifs, err := net.Interfaces()
	if err != nil {
		return false
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagMulticast != 0 {
			return true
		}
	}
	return false
}

func TestMDNS(t *testing.T) {
	if !multicastUp() {
		t.Skip("no multicast-capable interface is up")
	}
	servicetest.CheckLeaks(t)
	auth := newAuthority(t)
	a, listed, stranger := servicetest.NewHost(t, nil), servicetest.NewHost(t, nil), servicetest.NewHost(t, nil)
	ta := newTrust(t, auth, auth.sign(t, newRegistry(t, 1, listed)))
	start := func(h host.Host, tr *discovery.Trust) {
		t.Helper()
		m, err := discovery.StartMDNS(h, tr, nil)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, m.Close()) })
	}
	start(a, ta)
	start(listed, nil) // no trust anchors: remembers peers, dials none
	start(stranger, nil)

	require.Eventually(t, func() bool { return connected(a, listed) }, 10*time.Second, 20*time.Millisecond,
		"a registry node heard over mDNS is connected")
	require.Eventually(t, func() bool { return len(a.Peerstore().Addrs(stranger.ID())) > 0 }, 10*time.Second, 20*time.Millisecond,
		"a stranger heard over mDNS is remembered")
	require.False(t, connected(a, stranger), "but not dialed")
	require.False(t, connected(listed, stranger), "a node without a registry dials no one")
}
