package platform

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// carrier is a servicetest carrier node that serves watch too, with a
// registry that lists it.
type carrier struct {
	srv *servicetest.Server
	reg []byte // the signed registry
	pub ed25519.PublicKey
}

// startCarrier starts a carrier holding parcels parcels of 3 events.
func startCarrier(t *testing.T, parcels int) *carrier {
	t.Helper()
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: parcels, Events: 3})
	w, err := service.NewWatch(service.WatchConfig{Store: srv.Store, Carrier: servicetest.Carrier, Keys: servicetest.Keys(),
		Schemes: []protocol.Scheme{servicetest.Scheme}}, nil)
	require.NoError(t, err)
	w.Register(srv.Host)
	t.Cleanup(w.Unregister)

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	auth, err := protocol.NewSigner(priv)
	require.NoError(t, err)
	node := protocol.NodeEntry{Peer: srv.Host.ID().String()}
	for _, a := range srv.Host.Addrs() {
		node.Addrs = append(node.Addrs, a.String())
	}
	now := time.Now()
	reg, err := protocol.SignRegistry(auth, &protocol.Registry{
		Seq: 1, Issued: now.UnixMilli(), NotBefore: now.Add(-time.Hour).UnixMilli(), NotAfter: now.Add(time.Hour).UnixMilli(),
		Carriers: []protocol.CarrierEntry{{
			Code: servicetest.Carrier, Name: "test", Country: "ZZ", Nodes: []protocol.NodeEntry{node},
			Keys:    []protocol.CarrierKey{{Key: servicetest.Signer().Public(), NotAfter: now.Add(time.Hour).UnixMilli()}},
			Schemes: []protocol.Scheme{servicetest.Scheme},
		}},
	})
	require.NoError(t, err)
	return &carrier{srv: srv, reg: reg, pub: pub}
}

// trust is a trust state with the carrier's authority as anchor, holding
// its registry unless empty.
func (c *carrier) trust(t *testing.T, empty bool) *discovery.Trust {
	t.Helper()
	tr, err := discovery.NewTrust([]ed25519.PublicKey{c.pub}, "", nil)
	require.NoError(t, err)
	if !empty {
		_, err = tr.Install(c.reg)
		require.NoError(t, err)
	}
	return tr
}

func (c *carrier) addrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: c.srv.Host.ID(), Addrs: c.srv.Host.Addrs()}
}

// open opens a platform on a host of its own and closes it at cleanup.
func open(t *testing.T, cfg Config) *Platform {
	t.Helper()
	p, err := Open(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// repoOf is a TrustSource as a repo is one.
type repoOf func() (*discovery.Trust, error)

func (r repoOf) Trust() (*discovery.Trust, error) { return r() }

// deadPeer is a node nothing listens for: a fresh peer ID at a closed
// loopback port.
func deadPeer(t *testing.T) peer.AddrInfo {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	require.NoError(t, err)
	id, err := peer.IDFromPrivateKey(key)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	ai, err := peer.AddrInfoFromString("/ip4/127.0.0.1/tcp/" + strconv.Itoa(port) + "/p2p/" + id.String())
	require.NoError(t, err)
	return *ai
}

func TestOpenErrors(t *testing.T) {
	servicetest.CheckLeaks(t)
	c := startCarrier(t, 0)
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	require.NoError(t, err)
	noAnchors := repoOf(func() (*discovery.Trust, error) { return nil, discovery.ErrNoAnchors })
	broken := errors.New("test: unreadable anchor")
	for _, tc := range []struct {
		name string
		cfg  Config
		opts *Options
		want error
		text []string // in the error, each
	}{
		{"repo without anchors", Config{Repo: noAnchors}, nil, ErrNoAnchors, []string{"platform: the repo trusts no registry authority"}},
		{"repo that fails", Config{Repo: repoOf(func() (*discovery.Trust, error) { return nil, broken })}, nil, broken, nil},
		{"repo without a registry", Config{Repo: repoOf(func() (*discovery.Trust, error) { return c.trust(t, true), nil })}, nil, ErrNoRegistry, nil},
		{"trust without a registry", Config{Trust: c.trust(t, true)}, nil, ErrNoRegistry, nil},
		{"every problem at once", Config{Host: c.srv.Host, Key: key, Trust: c.trust(t, false), Repo: noAnchors},
			&Options{ListenAddrs: []string{"127.0.0.1:4001"}, ExchangeOptions: &discovery.ExchangeOptions{}, Client: &client.Options{RequestTimeout: -time.Second}},
			ErrInvalidOptions, []string{"Config.Host is set", "not both", `listen address "127.0.0.1:4001"`, "ExchangeOptions without Exchange", "RequestTimeout (-1s)"}},
		{"no listen address", Config{}, &Options{ListenAddrs: []string{}}, ErrInvalidOptions, []string{"ListenAddrs is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Open(tc.cfg, tc.opts)
			require.ErrorIs(t, err, tc.want)
			require.Nil(t, p)
			for _, s := range tc.text {
				require.ErrorContains(t, err, s)
			}
		})
	}
}

func TestOpenWithoutRegistryExchanges(t *testing.T) {
	servicetest.CheckLeaks(t)
	c := startCarrier(t, 0)
	p, err := Open(Config{Trust: c.trust(t, true)}, &Options{Exchange: true})
	require.NoError(t, err, "with exchange, a registry will come")
	require.NotNil(t, p.Router())
	require.NoError(t, p.Close())
}

func TestTrack(t *testing.T) {
	servicetest.CheckLeaks(t)
	c := startCarrier(t, 2)
	known, unknown := servicetest.Number(1), servicetest.Number(7)
	withTrust := open(t, Config{Repo: repoOf(func() (*discovery.Trust, error) { return c.trust(t, false), nil })})
	bare := open(t, Config{})
	for _, tc := range []struct {
		name   string
		track  func(ctx context.Context) ([]client.ParcelView, error)
		want   error
		views  int
		source string // of the first view; "" for an error view
		code   string // of the first view
	}{
		{"through the registry", func(ctx context.Context) ([]client.ParcelView, error) {
			return withTrust.Track(ctx, []string{known, unknown}, nil)
		}, nil, 2, client.KeySourceRegistry, ""},
		{"one node, against the registry", func(ctx context.Context) ([]client.ParcelView, error) {
			return withTrust.TrackPeer(ctx, c.addrInfo(), []string{known}, nil)
		}, nil, 1, client.KeySourceRegistry, ""},
		{"one node, against its own keys", func(ctx context.Context) ([]client.ParcelView, error) {
			return bare.TrackPeer(ctx, c.addrInfo(), []string{known}, nil)
		}, nil, 1, client.KeySourceNode, ""},
		{"one node, a number it does not hold", func(ctx context.Context) ([]client.ParcelView, error) {
			return bare.TrackPeer(ctx, c.addrInfo(), []string{unknown}, nil)
		}, nil, 1, "", protocol.CodeNotFound},
		{"no trust to resolve with", func(ctx context.Context) ([]client.ParcelView, error) {
			return bare.Track(ctx, []string{known}, nil)
		}, ErrNoTrust, 0, "", ""},
		{"unreachable node", func(ctx context.Context) ([]client.ParcelView, error) {
			return bare.TrackPeer(ctx, deadPeer(t), []string{known}, nil)
		}, ErrUnreachable, 0, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			views, err := tc.track(ctx)
			require.ErrorIs(t, err, tc.want)
			require.Len(t, views, tc.views)
			if tc.views == 0 {
				return
			}
			require.Equal(t, tc.code, views[0].Error)
			require.Equal(t, tc.source, views[0].KeySource)
			require.Equal(t, tc.source != "", views[0].Verified)
			if tc.views > 1 {
				require.Equal(t, protocol.CodeNotFound, views[1].Error, "the registry's carrier holds no such parcel")
			}
		})
	}
}

func TestUnreachableError(t *testing.T) {
	servicetest.CheckLeaks(t)
	dead := deadPeer(t)
	_, err := open(t, Config{}).TrackPeer(t.Context(), dead, []string{servicetest.Number(1)}, nil)
	var ue *UnreachableError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, dead.ID, ue.Peer)
	require.ErrorContains(t, err, "platform: cannot reach node "+dead.ID.String()+": ")
	require.ErrorContains(t, ue.Err, "connection refused")
}

func TestWatch(t *testing.T) {
	servicetest.CheckLeaks(t)
	c := startCarrier(t, 2)
	number := servicetest.Number(1)
	withTrust := open(t, Config{Trust: c.trust(t, false)})
	bare := open(t, Config{})
	sync := client.WatchOptions{Numbers: []string{number}, Sync: true, MaxBackoff: time.Second}
	for _, tc := range []struct {
		name  string
		watch func(ctx context.Context) (*client.Watcher, error)
		want  error
	}{
		{"through the registry", func(ctx context.Context) (*client.Watcher, error) { return withTrust.Watch(ctx, sync) }, nil},
		{"at one node, against the registry", func(ctx context.Context) (*client.Watcher, error) {
			return withTrust.WatchPeer(ctx, c.addrInfo(), sync)
		}, nil},
		{"at one node, against its own keys", func(ctx context.Context) (*client.Watcher, error) {
			return bare.WatchPeer(ctx, c.addrInfo(), sync)
		}, nil},
		{"no trust to resolve with", func(ctx context.Context) (*client.Watcher, error) { return bare.Watch(ctx, sync) }, ErrNoTrust},
		{"a number no carrier claims", func(ctx context.Context) (*client.Watcher, error) {
			return withTrust.Watch(ctx, client.WatchOptions{Numbers: []string{"SF1234567890"}})
		}, protocol.ErrInvalidNumber},
		{"unreachable node", func(ctx context.Context) (*client.Watcher, error) { return bare.WatchPeer(ctx, deadPeer(t), sync) }, ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			w, err := tc.watch(ctx)
			require.ErrorIs(t, err, tc.want)
			if tc.want != nil {
				return
			}
			defer w.Close()
			select {
			case u := <-w.Updates():
				require.Equal(t, number, u.Number)
				require.True(t, u.Verified, "%+v", u)
				require.Len(t, u.Events, 3, "the parcel's history first")
			case <-ctx.Done():
				t.Fatalf("no update: %v", w.Err())
			}
		})
	}
}

func TestInfo(t *testing.T) {
	servicetest.CheckLeaks(t)
	c := startCarrier(t, 0)
	p := open(t, Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	require.NoError(t, p.Host().Connect(ctx, c.addrInfo()))
	info, err := p.Info(ctx, c.srv.Host.ID())
	require.NoError(t, err)
	require.Equal(t, servicetest.Carrier, info.Carrier)
	require.Equal(t, [][]byte{servicetest.Signer().Public()}, info.Keys)
}

func TestClose(t *testing.T) {
	servicetest.CheckLeaks(t)
	c := startCarrier(t, 1)
	given := servicetest.NewHost(t, nil)
	for _, tc := range []struct {
		name     string
		cfg      Config
		opts     *Options
		hostOpen bool // after Close
	}{
		{"own host", Config{Trust: c.trust(t, false)}, nil, false},
		{"given host", Config{Host: given, Trust: c.trust(t, false)}, &Options{Exchange: true}, true},
		{"no trust", Config{}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Open(tc.cfg, tc.opts)
			require.NoError(t, err)
			h := p.Host()
			require.NoError(t, p.Close())
			require.NoError(t, p.Close(), "Close is idempotent")
			_, err = p.TrackPeer(t.Context(), c.addrInfo(), []string{servicetest.Number(0)}, nil)
			require.Error(t, err, "closed")
			require.Equal(t, tc.hostOpen, connects(t, h, c.srv.Host))
		})
	}
}

// connects reports whether h can still open a connection to to.
func connects(t *testing.T, h, to host.Host) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return h.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()}) == nil
}
