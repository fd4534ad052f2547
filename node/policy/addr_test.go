package policy_test

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/policy"
)

func TestAddrKey(t *testing.T) {
	cases := []struct {
		addr string
		want string
	}{
		{"/ip4/198.51.100.7/tcp/4001", "198.51.100.7/32"},
		{"/ip4/198.51.100.7/udp/4001/quic-v1", "198.51.100.7/32"},
		{"/ip6/2001:db8:1:2:3:4:5:6/tcp/4001", "2001:db8:1:2::/64"},
		{"/ip6/2001:db8:1:2:ffff::1/tcp/9", "2001:db8:1:2::/64"},
		{"/ip6/::ffff:198.51.100.7/tcp/1", "198.51.100.7/32"},
		{"/dns4/example.com/tcp/1", "invalid Prefix"},
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			require.Equal(t, tc.want, policy.AddrKey(ma.StringCast(tc.addr)).String())
		})
	}
	require.Equal(t, netip.Prefix{}, policy.AddrKey(nil))
}

// drain has ids, one after another, ask batches of 10 numbers that are
// all not_found, as long as they are admitted, and returns how many
// not_found answers they got in all.
func drain(p *policy.Policy, ids []peer.ID, addr ma.Multiaddr) int {
	served := 0
	for _, id := range ids {
		for {
			ok, _ := p.AdmitTrack(id, addr, 10)
			if !ok {
				break
			}
			p.ObserveNotFound(id, addr, 10)
			served += 10
		}
	}
	return served
}

// TestAddrBudget: fresh peer IDs from one address share its not_found
// budget, and an IPv6 /64 is one address; other addresses keep theirs.
func TestAddrBudget(t *testing.T) {
	const peerBurst, addrBurst = 100, 300
	cases := []struct {
		name        string
		addr, other string
		shared      bool // other is the same source
	}{
		{"ipv4", "/ip4/198.51.100.7/tcp/4001", "/ip4/198.51.100.8/tcp/4001", false},
		{"ipv4 other port", "/ip4/198.51.100.7/tcp/4001", "/ip4/198.51.100.7/udp/5000/quic-v1", true},
		{"ipv6 same /64", "/ip6/2001:db8:0:1::1/tcp/4001", "/ip6/2001:db8:0:1:ffff::2/tcp/4001", true},
		{"ipv6 other /64", "/ip6/2001:db8:0:1::1/tcp/4001", "/ip6/2001:db8:0:2::1/tcp/4001", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, c := newPolicy(t, &policy.Options{NotFoundRate: 1, NotFoundBurst: peerBurst, AddrNotFoundRate: 1, AddrNotFoundBurst: addrBurst}, nil)
			ids := make([]peer.ID, 50)
			for i := range ids {
				ids[i] = newPeer(t)
			}
			served := drain(p, ids, ma.StringCast(tc.addr))
			// The last admitted batch may run the bucket into debt.
			require.LessOrEqual(t, served, addrBurst+10, "50 fresh IDs from one address")
			require.GreaterOrEqual(t, served, addrBurst, "the address's budget is spent whole")
			ok, retry := p.AdmitTrack(newPeer(t), ma.StringCast(tc.other), 1)
			require.Equal(t, !tc.shared, ok, "a fresh peer at %s", tc.other)
			if tc.shared {
				require.Positive(t, retry)
				c.advance(retry)
				ok, _ = p.AdmitTrack(newPeer(t), ma.StringCast(tc.other), 1)
				require.True(t, ok, "admitted again after the wait it was told")
			}
		})
	}
}

// TestGlobalBudget: past the node's ceiling every anonymous peer is
// refused, from any address; a platform is not.
func TestGlobalBudget(t *testing.T) {
	platform := newPeer(t)
	p, c := newPolicy(t, &policy.Options{NotFoundBurst: 50, AddrNotFoundBurst: 50, GlobalNotFoundRate: 10, GlobalNotFoundBurst: 500,
		Platforms: []string{platform.String()}}, nil)
	served := 0
	for i := range 20 {
		served += drain(p, []peer.ID{newPeer(t)}, ma.StringCast("/ip4/198.51.100."+strconv.Itoa(i+1)+"/tcp/1"))
	}
	require.LessOrEqual(t, served, 500+10)
	ok, retry := p.AdmitTrack(newPeer(t), ma.StringCast("/ip4/203.0.113.1/tcp/1"), 1)
	require.False(t, ok, "a fresh peer at a fresh address is refused past the ceiling")
	require.Equal(t, 100*time.Millisecond, retry, "one token at 10 a second, counting the debt of the last batch")
	ok, _ = p.AdmitTrack(platform, ma.StringCast("/ip4/203.0.113.1/tcp/1"), 1)
	require.True(t, ok, "a platform keeps its own budget")
	c.advance(time.Second)
	ok, _ = p.AdmitTrack(newPeer(t), ma.StringCast("/ip4/203.0.113.2/tcp/1"), 1)
	require.True(t, ok, "the ceiling refills")
}

// TestPlatformBudget: a platform, listed in the policy or a node the
// registry names, gets the larger platform budget and is outside its
// address's budget, which anonymous peers beside it spent.
func TestPlatformBudget(t *testing.T) {
	listed, member, anon := newPeer(t), newPeer(t), newPeer(t)
	members := func(id peer.ID) bool { return id == member }
	addr := ma.StringCast("/ip4/198.51.100.7/tcp/4001")
	p, _ := newPolicy(t, &policy.Options{NotFoundBurst: 100, AddrNotFoundBurst: 200, PlatformNotFoundBurst: 1000,
		Platforms: []string{listed.String()}}, members)
	require.LessOrEqual(t, drain(p, []peer.ID{newPeer(t), newPeer(t), newPeer(t)}, addr), 210)
	ok, _ := p.AdmitTrack(anon, addr, 1)
	require.False(t, ok, "the address's budget is spent")
	for _, id := range []peer.ID{listed, member} {
		served := drain(p, []peer.ID{id}, addr)
		require.GreaterOrEqual(t, served, 1000, "a platform's budget is the platform burst")
		require.LessOrEqual(t, served, 1010)
	}
	require.Equal(t, 1, p.Addrs())
}
