package node_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/keyfile"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/protocol/numbertest"
)

// This file is the loopback testnet of the trust and discovery tests: a
// registry authority, carrier nodes and platform nodes built from real
// repos, and the integration tests that run on it. security_test.go uses
// the same harness.

// testRouter keeps peer routing quick on loopback: a restarted node
// rejoins at once, and a dead address is given up on fast.
var testRouter = discovery.RouterOptions{BootstrapInterval: 500 * time.Millisecond, DialTimeout: 2 * time.Second, LookupTimeout: 5 * time.Second}

// testClient bounds each attempt well inside the tests' deadlines.
var testClient = client.Options{RequestTimeout: 5 * time.Second, ConnectTimeout: 8 * time.Second}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testAuthority signs registry editions, as the registry authority does.
type testAuthority struct {
	signer  *protocol.Signer
	pubFile string // its public key, a platform's trust anchor
	seq     uint64
}

func newAuthority(t *testing.T) *testAuthority {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	s, err := protocol.NewSigner(priv)
	require.NoError(t, err)
	pub, err := keyfile.MarshalPublic(s.Public())
	require.NoError(t, err)
	return &testAuthority{signer: s, pubFile: writeTemp(t, "authority.pub", pub)}
}

// sign signs the next edition, listing carriers.
func (a *testAuthority) sign(t *testing.T, carriers ...protocol.CarrierEntry) []byte {
	t.Helper()
	a.seq++
	return signRegistry(t, a.signer, a.seq, carriers...)
}

// signRegistry signs edition seq with s, valid from an hour ago for a day.
func signRegistry(t *testing.T, s *protocol.Signer, seq uint64, carriers ...protocol.CarrierEntry) []byte {
	t.Helper()
	now := time.Now()
	carriers = slices.Clone(carriers)
	slices.SortFunc(carriers, func(x, y protocol.CarrierEntry) int { return strings.Compare(x.Code, y.Code) })
	b, err := protocol.SignRegistry(s, &protocol.Registry{
		Seq: seq, Issued: now.UnixMilli(), NotBefore: now.Add(-time.Hour).UnixMilli(), NotAfter: now.Add(24 * time.Hour).UnixMilli(),
		Carriers: carriers,
	})
	require.NoError(t, err)
	return b
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path
}

// testCarrier is a carrier node on loopback.
type testCarrier struct {
	code string
	repo *repo.Repo
	node *node.Node
}

// launchCarrier creates a carrier repo for code with schemes (none: the
// default scheme) and starts its node. With an authority, the repo trusts
// it, so that the node routes and exchanges registries once one is
// installed; without, the node does neither.
func launchCarrier(t *testing.T, a *testAuthority, code string, schemes ...string) *testCarrier {
	t.Helper()
	o := repo.InitOptions{Carrier: code, Schemes: schemes, Listen: []string{"/ip4/127.0.0.1/tcp/0"}}
	if a != nil {
		o.Trust = []string{a.pubFile}
	}
	r, err := repo.Init(t.TempDir(), o)
	require.NoError(t, err)
	c := &testCarrier{code: code, repo: r}
	c.start(t)
	t.Cleanup(func() { _ = c.node.Close() })
	return c
}

// start starts the node on a fresh loopback port.
func (c *testCarrier) start(t *testing.T) {
	t.Helper()
	n, err := node.Start(c.repo, node.Options{AdminAddr: "127.0.0.1:0", Logger: quiet(), Router: &testRouter})
	require.NoError(t, err)
	c.node = n
}

// restart stops the node and starts it again from the same repo (same
// peer ID, keys and store) on a new port.
func (c *testCarrier) restart(t *testing.T) {
	t.Helper()
	require.NoError(t, c.node.Close())
	c.start(t)
}

func (c *testCarrier) id() peer.ID { return c.node.Host.ID() }

// keyID is the hex id of the carrier key, as ParcelView.KeyID shows it.
func (c *testCarrier) keyID() string {
	return hex.EncodeToString(protocol.KeyID(c.repo.CarrierKey.Public().(ed25519.PublicKey)))
}

// entry is c's registry entry: its carrier key, valid from a day ago for
// two days, its node at its current addresses, and its schemes.
func (c *testCarrier) entry(t *testing.T) protocol.CarrierEntry {
	t.Helper()
	schemes, err := c.repo.Config.Schemes()
	require.NoError(t, err)
	now := time.Now()
	return protocol.CarrierEntry{
		Code: c.code, Name: c.code + " test carrier", Country: "ZZ",
		Keys:    []protocol.CarrierKey{{Key: c.repo.CarrierKey.Public().(ed25519.PublicKey), NotBefore: now.Add(-24 * time.Hour).UnixMilli(), NotAfter: now.Add(24 * time.Hour).UnixMilli()}},
		Nodes:   []protocol.NodeEntry{c.nodeEntry()},
		Schemes: schemes,
	}
}

// nodeEntry lists c's node at the addresses it listens on now.
func (c *testCarrier) nodeEntry() protocol.NodeEntry {
	e := protocol.NodeEntry{Peer: c.id().String()}
	for _, a := range c.node.Host.Addrs() {
		e.Addrs = append(e.Addrs, a.String())
	}
	return e
}

// ingest records events scans of number, an hour apart and ending an
// hour ago; the head is signed now.
func (c *testCarrier) ingest(t *testing.T, number string, events int) {
	t.Helper()
	statuses := []string{"picked_up", "departed_facility", "in_transit", "arrived_at_facility", "out_for_delivery"}
	first := time.Now().Add(-time.Duration(events) * time.Hour).UTC()
	in := make([]ingest.InputEvent, events)
	for i := range in {
		in[i] = ingest.InputEvent{
			ID:       fmt.Sprintf("%s-%d", number, i),
			Number:   number,
			Time:     first.Add(time.Duration(i) * time.Hour).Format(time.RFC3339),
			Status:   statuses[i%len(statuses)],
			Location: protocol.Location{Country: "CN", City: "Shenzhen"},
		}
	}
	res, err := c.node.Ingester.Ingest(context.Background(), in)
	require.NoError(t, err)
	for i, r := range res {
		require.Equal(t, ingest.StatusAccepted, r.Status, "%s event %d: %s", number, i, r.Error)
	}
}

// testPlatform is a platform node that knows only its trust anchor and the
// registry it was created with, and a client on its host.
type testPlatform struct {
	node  *node.Node
	cl    *client.Client
	trust *discovery.Trust
}

// launchPlatform creates a platform repo trusting a with registry and
// starts its node. opts tune the client (nil: testClient).
func launchPlatform(t *testing.T, a *testAuthority, registry []byte, opts *client.Options) *testPlatform {
	t.Helper()
	r, err := repo.Init(t.TempDir(), repo.InitOptions{
		Platform: "test platform", Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		Trust: []string{a.pubFile}, Registry: writeTemp(t, "registry.cose", registry),
	})
	require.NoError(t, err)
	n, err := node.Start(r, node.Options{Logger: quiet(), Router: &testRouter})
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.Close() })
	require.NotNil(t, n.Trust, "a platform with an anchor has trust")
	require.NotNil(t, n.Router(), "a platform with an anchor routes")
	o := testClient
	if opts != nil {
		o = *opts
	}
	cl, err := client.New(n.Host, &o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	return &testPlatform{node: n, cl: cl, trust: n.Trust}
}

// track looks numbers up the way `opentrack track --repo` does.
func (p *testPlatform) track(t *testing.T, numbers ...string) []client.ParcelView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	views, err := p.cl.TrackNumbers(ctx, p.trust, p.node.Router(), numbers, nil)
	require.NoError(t, err)
	return views
}

// trackPeer asks node c alone, the way `opentrack track --peer` does,
// verifying against trust (nil: the keys the node presents).
func (p *testPlatform) trackPeer(t *testing.T, c *testCarrier, trust client.Trust, numbers ...string) []client.ParcelView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(t, p.node.Host.Connect(ctx, c.node.AddrInfo()))
	views, err := p.cl.TrackPeer(ctx, c.id(), trust, numbers, nil)
	require.NoError(t, err)
	return views
}

// requireRegistryVerified checks that v is a parcel of c verified against the
// registry with events events.
func requireRegistryVerified(t *testing.T, v client.ParcelView, c *testCarrier, number string, events int) {
	t.Helper()
	require.Empty(t, v.Error, "%s: %s", v.Number, v.Message)
	require.True(t, v.Verified, v.Number)
	require.Equal(t, number, v.Number)
	require.Equal(t, c.code, v.Carrier)
	require.Equal(t, c.keyID(), v.KeyID)
	require.Equal(t, client.KeySourceRegistry, v.KeySource)
	require.Len(t, v.Events, events)
}

// requireRejected checks that v is number's record from carrier, refused
// with the protocol error code, and that the message gives the reason.
func requireRejected(t *testing.T, v client.ParcelView, number, carrier, code, reason string) {
	t.Helper()
	require.Equal(t, number, v.Number)
	require.Equal(t, carrier, v.Carrier)
	require.False(t, v.Verified)
	require.False(t, v.Found)
	require.Empty(t, v.Events)
	require.Equal(t, code, v.Error, v.Message)
	require.Contains(t, v.Message, reason)
}

// TestIntegrationRegistryTracking runs three carriers (a UPU S10 postal
// operator, a carrier with check-digit numbers and one with the default
// scheme) and two platforms that know only their trust anchor and the
// registry. Both platforms track numbers of all three carriers; then one
// carrier restarts on a new port and both find it again through the DHT.
func TestIntegrationRegistryTracking(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := newAuthority(t)
	post := launchCarrier(t, a, "GBPOST", "s10:GB")
	waybill := launchCarrier(t, a, "DX", `\d{12}:mod10`)
	sf := launchCarrier(t, a, "SF")
	carriers := []*testCarrier{post, waybill, sf}

	reg := a.sign(t, post.entry(t), waybill.entry(t), sf.entry(t))
	for _, c := range carriers {
		ok, err := c.node.Trust.Install(reg)
		require.NoError(t, err)
		require.True(t, ok)
	}
	platforms := []*testPlatform{launchPlatform(t, a, reg, nil), launchPlatform(t, a, reg, nil)}

	postNum := numbertest.S10("RR", 12345678, "GB")
	waybillNum, err := numbertest.Complete(protocol.CheckMod10, "40063813339")
	require.NoError(t, err)
	sfNum := "SF1234567890"
	post.ingest(t, postNum, 3)
	waybill.ingest(t, waybillNum, 2)
	sf.ingest(t, sfNum, 4)

	badCheck := postNum[:10] + string('0'+(postNum[10]-'0'+1)%10) + "GB"
	unknown := numbertest.S10("RR", 99999999, "GB")
	for i, p := range platforms {
		views := p.track(t, strings.ToLower(postNum), waybillNum, sfNum, unknown, badCheck, "ZZ12")
		require.Len(t, views, 6, "platform %d", i)
		requireRegistryVerified(t, views[0], post, postNum, 3)
		requireRegistryVerified(t, views[1], waybill, waybillNum, 2)
		requireRegistryVerified(t, views[2], sf, sfNum, 4)
		require.Equal(t, protocol.CodeNotFound, views[3].Error)
		require.Equal(t, post.code, views[3].Carrier)
		require.Equal(t, protocol.ErrCheckDigit.Code, views[4].Error)
		require.Equal(t, protocol.CodeInvalidNumber, views[5].Error)
	}

	// SF moves: same repo, so same peer ID and keys, but a new port that
	// the registry does not list.
	oldAddrs := sf.node.Addrs()
	sf.restart(t)
	require.NotEqual(t, oldAddrs, sf.node.Addrs())
	// SF's router dials the registry's other nodes at start, which is how
	// they, and through their DHT everyone else, learn the new address.
	require.Eventually(t, func() bool {
		return len(post.node.Host.Network().ConnsToPeer(sf.id())) > 0 && len(waybill.node.Host.Network().ConnsToPeer(sf.id())) > 0
	}, 10*time.Second, 20*time.Millisecond, "SF did not rejoin the other registry nodes")
	for i, p := range platforms {
		// The registry's address refuses now, so the router has to find
		// SF through the DHT. Under load the platform's own bootstrap may
		// already have found it; forget that, so this lookup has only the
		// stale registry address and the DHT to go on.
		require.Eventually(t, func() bool {
			for _, c := range p.node.Host.Network().ConnsToPeer(sf.id()) {
				_ = c.Close()
			}
			p.node.Host.Peerstore().ClearAddrs(sf.id())
			return len(p.node.Host.Network().ConnsToPeer(sf.id())) == 0
		}, 5*time.Second, 10*time.Millisecond, "platform %d could not drop its connection to SF", i)
		var views []client.ParcelView
		require.Eventually(t, func() bool {
			views = p.track(t, sfNum)
			return len(views) == 1 && views[0].Verified
		}, 10*time.Second, 100*time.Millisecond, "platform %d did not find SF again: %+v", i, views)
		requireRegistryVerified(t, views[0], sf, sfNum, 4)
		conns := p.node.Host.Network().ConnsToPeer(sf.id())
		require.NotEmpty(t, conns)
		require.Contains(t, sf.node.Addrs(), conns[0].RemoteMultiaddr().String()+"/p2p/"+sf.id().String(), "platform %d reached SF at its new address", i)
	}
}

// TestTrackNumbersAmbiguous shows what a number that two carriers' schemes
// match (SF and SF1 default schemes overlap, spec 10.5) resolves to: the
// parcels the carriers actually hold, each under its carrier.
func TestTrackNumbersAmbiguous(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := newAuthority(t)
	sf := launchCarrier(t, nil, "SF")
	sf1 := launchCarrier(t, nil, "SF1")
	p := launchPlatform(t, a, a.sign(t, sf.entry(t), sf1.entry(t)), nil)

	both, onlySF1, neither := "SF10000000001", "SF10000000002", "SF10000000003"
	sf.ingest(t, both, 2)
	sf1.ingest(t, both, 3)
	sf1.ingest(t, onlySF1, 1)

	views := p.track(t, both, onlySF1, neither)
	require.Len(t, views, 4)
	requireRegistryVerified(t, views[0], sf, both, 2)
	requireRegistryVerified(t, views[1], sf1, both, 3)
	requireRegistryVerified(t, views[2], sf1, onlySF1, 1)
	require.Equal(t, neither, views[3].Number)
	require.Equal(t, protocol.CodeNotFound, views[3].Error)
	require.Empty(t, views[3].Carrier, "not found at any of several carriers names none")
	require.Contains(t, views[3].Message, "SF, SF1")
}

// TestTrackNumbersFailover lists a dead node next to a live one for a
// carrier: when the platform starts at the dead one (it starts at a
// random node), it goes on to the carrier's next registry node.
func TestTrackNumbersFailover(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := newAuthority(t)
	dead := launchCarrier(t, nil, "SF")
	sf := launchCarrier(t, nil, "SF")
	e := sf.entry(t)
	e.Nodes = []protocol.NodeEntry{dead.nodeEntry(), sf.nodeEntry()}
	require.NoError(t, dead.node.Close())
	p := launchPlatform(t, a, a.sign(t, e), nil)

	sf.ingest(t, "SF0000000001", 2)
	views := p.track(t, "SF0000000001")
	require.Len(t, views, 1)
	requireRegistryVerified(t, views[0], sf, "SF0000000001", 2)
}
