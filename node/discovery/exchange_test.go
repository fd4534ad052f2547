package discovery_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// exchangePeer is a host that serves info with its Trust's registry and
// runs an Exchange.
type exchangePeer struct {
	h     host.Host
	trust *discovery.Trust
	ex    *discovery.Exchange
}

// startExchangePeer starts a peer for auth holding signed (nil for none);
// everything stops at cleanup.
func startExchangePeer(t *testing.T, auth *authority, signed []byte, opts *discovery.ExchangeOptions) *exchangePeer {
	t.Helper()
	return startExchangePeerOn(t, servicetest.NewHost(t, nil), auth, signed, opts)
}

// startExchangePeerOn is startExchangePeer on a host of the caller's.
func startExchangePeerOn(t *testing.T, h host.Host, auth *authority, signed []byte, opts *discovery.ExchangeOptions) *exchangePeer {
	t.Helper()
	p := &exchangePeer{h: h, trust: newTrust(t, auth, signed)}
	serveInfo(t, p.h, p.trust)
	c, err := client.New(p.h, nil)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	p.ex, err = discovery.NewExchange(p.h, p.trust, c, opts, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.ex.Close()) })
	return p
}

// serveInfo has h answer info with reg's registry until cleanup.
func serveInfo(t *testing.T, h host.Host, reg service.RegistryProvider) {
	t.Helper()
	info, err := service.NewInfo(service.InfoConfig{Registry: reg}, nil)
	require.NoError(t, err)
	info.Register(h)
	t.Cleanup(info.Unregister)
}

// offer is a RegistryProvider that says it holds seq and offers signed,
// whatever signed really is.
type offer struct {
	seq    uint64
	signed []byte
}

func (o offer) Seq() uint64    { return o.seq }
func (o offer) Signed() []byte { return o.signed }

func TestExchangeOnConnect(t *testing.T) {
	servicetest.CheckLeaks(t)
	auth := newAuthority(t)
	reg := newRegistry(t, 1)
	seq1 := auth.sign(t, reg)
	reg.Seq = 2
	seq2 := auth.sign(t, reg)

	a := startExchangePeer(t, auth, seq2, nil)
	b := startExchangePeer(t, auth, seq1, nil)
	empty := startExchangePeer(t, auth, nil, nil)
	servicetest.Connect(t, b.h, a.h)
	servicetest.Connect(t, empty.h, b.h)
	require.Eventually(t, func() bool { return b.trust.Seq() == 2 && empty.trust.Seq() == 2 }, 5*time.Second, 10*time.Millisecond,
		"the newer registry spreads on connect, to a node holding an older one and to one holding none")
	require.Equal(t, seq2, b.trust.Signed())
	require.EqualValues(t, 2, a.trust.Seq(), "the newer side keeps its registry")
}

// TestExchangePeriodic runs in a synctest bubble over mocknet, so that
// the default Interval passes on fake time.
func TestExchangePeriodic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		auth := newAuthority(t)
		reg := newRegistry(t, 1)
		seq1 := auth.sign(t, reg)
		mn, hosts := mockHosts(t, 2)
		a := startExchangePeerOn(t, hosts[0], auth, seq1, nil)
		b := startExchangePeerOn(t, hosts[1], auth, seq1, nil)
		_, err := mn.ConnectPeers(b.h.ID(), a.h.ID())
		require.NoError(t, err)
		synctest.Wait() // the exchange on connect is over, with nothing newer to take

		// A gets a newer edition from the authority while connected; only
		// B's periodic check can find it, one Interval after B started.
		reg.Seq = 2
		_, err = a.trust.Install(auth.sign(t, reg))
		require.NoError(t, err)
		interval := (&discovery.ExchangeOptions{}).EnsureDefaults().Interval
		time.Sleep(interval - time.Millisecond)
		synctest.Wait()
		require.EqualValues(t, 1, b.trust.Seq(), "no check before the interval")
		time.Sleep(time.Millisecond)
		synctest.Wait()
		require.EqualValues(t, 2, b.trust.Seq(), "the check at the interval fetches the newer edition")
	})
}

func TestExchangeRefuses(t *testing.T) {
	servicetest.CheckLeaks(t)
	auth, stranger := newAuthority(t), newAuthority(t)
	now := time.Now()
	reg := newRegistry(t, 2)
	held := auth.sign(t, reg)
	b := startExchangePeer(t, auth, held, nil)

	edition := func(signer *authority, seq uint64, notBefore, notAfter time.Time) []byte {
		r := newRegistry(t, seq)
		r.NotBefore, r.NotAfter = notBefore.UnixMilli(), notAfter.UnixMilli()
		return signer.sign(t, r)
	}
	valid := func(a *authority, seq uint64) []byte { return edition(a, seq, now.Add(-time.Hour), now.Add(time.Hour)) }
	for _, tc := range []struct {
		name  string
		offer offer
		err   error // nil: nothing offered, nothing installed
	}{
		{"signed by a key that is not an anchor", offer{5, valid(stranger, 5)}, protocol.ErrUntrustedIssuer},
		{"expired", offer{5, edition(auth, 5, now.Add(-48*time.Hour), now.Add(-24*time.Hour))}, protocol.ErrExpired},
		{"not yet valid", offer{5, edition(auth, 5, now.Add(24*time.Hour), now.Add(48*time.Hour))}, protocol.ErrExpired},
		{"older, claimed newer", offer{3, valid(auth, 1)}, protocol.ErrStaleRegistry},
		{"same seq, claimed newer", offer{3, valid(auth, 2)}, protocol.ErrStaleRegistry},
		{"garbage", offer{3, []byte("not a registry")}, protocol.ErrMalformed},
		{"claimed newer, nothing sent", offer{3, nil}, nil},
		{"honestly older", offer{1, valid(auth, 1)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := servicetest.NewHost(t, nil)
			serveInfo(t, h, tc.offer)
			// Connecting also starts B's own exchange with h; Sync runs
			// one more, to see the error the background one logs.
			servicetest.Connect(t, b.h, h)
			installed, err := b.ex.Sync(context.Background(), h.ID())
			require.False(t, installed)
			switch {
			case tc.err != nil:
				require.ErrorIs(t, err, tc.err)
			case tc.offer.seq > 2:
				require.ErrorContains(t, err, "did not send it")
			default:
				require.NoError(t, err)
			}
			require.Equal(t, held, b.trust.Signed(), "the registry held is unchanged")
		})
	}
}

func TestExchangeClosed(t *testing.T) {
	servicetest.CheckLeaks(t)
	auth := newAuthority(t)
	p := startExchangePeer(t, auth, nil, nil)
	require.NoError(t, p.ex.Close())
	require.NoError(t, p.ex.Close(), "Close twice")
	_, err := p.ex.Sync(context.Background(), p.h.ID())
	require.ErrorIs(t, err, discovery.ErrClosed)
}

func TestExchangeOptionsValidate(t *testing.T) {
	err := (&discovery.ExchangeOptions{Concurrency: -1, Queue: -2}).EnsureDefaults().Validate()
	require.ErrorIs(t, err, discovery.ErrInvalidOptions)
	require.True(t, strings.Contains(err.Error(), "Concurrency") && strings.Contains(err.Error(), "Queue"), "every problem is reported: %v", err)
	d := (*discovery.ExchangeOptions)(nil).EnsureDefaults()
	require.NoError(t, d.Validate())
	require.Equal(t, 5*time.Minute, d.Interval)
}
