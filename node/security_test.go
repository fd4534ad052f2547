package node_test

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// The attacks of issue 4, each against real loopback nodes and a platform
// that knows only its trust anchor and the registry. Every test asserts
// the protocol error code the platform reports.

// *discovery.Trust is what platforms hand to the client.
var _ client.Trust = (*discovery.Trust)(nil)

// TestSecurityUnregisteredNodeClaimingCarrier: a node that is not in the
// registry says it is carrier SF and serves SF records signed with its
// own key. The platform rejects them with unknown_key, naming SF.
func TestSecurityUnregisteredNodeClaimingCarrier(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := newAuthority(t)
	sf := launchCarrier(t, nil, "SF")
	rogue := launchCarrier(t, nil, "SF") // its own node key and carrier key
	const number = "SF0000000001"
	sf.ingest(t, number, 2)
	rogue.ingest(t, number, 3)
	p := launchPlatform(t, a, a.sign(t, sf.entry(t)), nil)

	t.Run("asked directly", func(t *testing.T) {
		// track --peer with a registry: the node's own word about its
		// keys does not count.
		views := p.trackPeer(t, rogue, p.trust, number)
		require.Len(t, views, 1)
		requireRejected(t, views[0], number, "SF", "unknown_key", "is not registered for SF")

		// Without the registry the same records pass, so it is the
		// registry that tells the impersonator from SF.
		views = p.trackPeer(t, rogue, nil, number)
		require.True(t, views[0].Verified, views[0].Message)
		require.Equal(t, client.KeySourceNode, views[0].KeySource)
	})

	t.Run("listed in place of SF's node", func(t *testing.T) {
		// Even a registry that lists the rogue's node for SF (a stale or
		// hijacked node entry) does not make its key SF's.
		e := sf.entry(t)
		e.Nodes = []protocol.NodeEntry{rogue.nodeEntry()}
		hijacked := launchPlatform(t, a, a.sign(t, e), nil)
		views := hijacked.track(t, number)
		require.Len(t, views, 1)
		requireRejected(t, views[0], number, "SF", "unknown_key", "is not registered for SF")
	})

	t.Run("the real SF", func(t *testing.T) {
		views := p.track(t, number)
		require.Len(t, views, 1)
		requireRegistryVerified(t, views[0], sf, number, 2)
	})
}

// TestSecurityNodeOfOneCarrierServingAnother: a registered node of carrier
// AA serves records of carrier BB. Whether it signs BB heads with AA's key
// or answers for a BB number with an AA head, the platform rejects the
// records with wrong_carrier.
func TestSecurityNodeOfOneCarrierServingAnother(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := newAuthority(t)
	bb := launchCarrier(t, nil, "BB")
	// AA's node set up to sign BB heads: its carrier key is registered
	// to AA, but it records events under BB's code.
	aaAsBB := launchCarrier(t, nil, "BB")
	// AA's node whose schemes also take BB's numbers: it signs them as
	// AA's parcels.
	aaWide := launchCarrier(t, nil, "AA", `AA\d{10,20}`, `BB\d{10,20}`)
	const signedAsBB, signedAsAA = "BB0000000001", "BB0000000002"
	aaAsBB.ingest(t, signedAsBB, 2)
	aaWide.ingest(t, signedAsAA, 2)

	// aa is AA's entry with node's key and node, and AA's scheme only.
	aa := func(node *testCarrier) protocol.CarrierEntry {
		e := node.entry(t)
		e.Code, e.Schemes = "AA", []protocol.Scheme{protocol.DefaultScheme("AA")}
		return e
	}
	// bbVia is BB's entry with node as its only node, as if BB hosted on
	// it. (Listed next to BB's own node it would be asked only sometimes:
	// platforms start at a random node of a carrier.)
	bbVia := func(node *testCarrier) protocol.CarrierEntry {
		e := bb.entry(t)
		e.Nodes = []protocol.NodeEntry{node.nodeEntry()}
		return e
	}

	t.Run("BB head signed with AA's key, asked directly", func(t *testing.T) {
		p := launchPlatform(t, a, a.sign(t, aa(aaAsBB), bb.entry(t)), nil)
		views := p.trackPeer(t, aaAsBB, p.trust, signedAsBB)
		require.Len(t, views, 1)
		requireRejected(t, views[0], signedAsBB, "BB", "wrong_carrier", "belongs to AA, not BB")
	})

	t.Run("BB head signed with AA's key, from a node BB lists", func(t *testing.T) {
		p := launchPlatform(t, a, a.sign(t, aa(aaAsBB), bbVia(aaAsBB)), nil)
		views := p.track(t, signedAsBB)
		require.Len(t, views, 1)
		requireRejected(t, views[0], signedAsBB, "BB", "wrong_carrier", "belongs to AA, not BB")
	})

	t.Run("AA head for a BB number, from a node BB lists", func(t *testing.T) {
		p := launchPlatform(t, a, a.sign(t, aa(aaWide), bbVia(aaWide)), nil)
		views := p.track(t, signedAsAA)
		require.Len(t, views, 1)
		requireRejected(t, views[0], signedAsAA, "BB", "wrong_carrier", "signed head is AA's, asked BB")
	})
}

// TestSecurityRegistryNotSignedByAnchor: a registry signed by a key that
// is not a trust anchor is refused with untrusted_issuer by Trust.Install,
// by repo.Init, and by a running platform, which keeps its registry.
func TestSecurityRegistryNotSignedByAnchor(t *testing.T) {
	servicetest.CheckLeaks(t)
	a, impostor := newAuthority(t), newAuthority(t)
	sf := launchCarrier(t, nil, "SF")
	forged := signRegistry(t, impostor.signer, 100, sf.entry(t))

	t.Run("Trust.Install", func(t *testing.T) {
		trust, err := discovery.NewTrust([]ed25519.PublicKey{a.signer.Public()}, "", nil)
		require.NoError(t, err)
		ok, err := trust.Install(forged)
		require.False(t, ok)
		require.Equal(t, "untrusted_issuer", protocol.CodeOf(err), "%v", err)
		require.ErrorIs(t, err, protocol.ErrUntrustedIssuer)
		require.Zero(t, trust.Seq())
		require.Nil(t, trust.Registry())
	})

	t.Run("repo.Init", func(t *testing.T) {
		dir := t.TempDir()
		_, err := repo.Init(dir, repo.InitOptions{Platform: "p", Trust: []string{a.pubFile}, Registry: writeTemp(t, "forged.cose", forged)})
		require.ErrorIs(t, err, repo.ErrBadOptions)
		require.Equal(t, "untrusted_issuer", protocol.CodeOf(err), "%v", err)
		require.Contains(t, err.Error(), "not signed by a trust anchor")
		_, statErr := os.Stat(filepath.Join(dir, repo.ConfigFile))
		require.ErrorIs(t, statErr, os.ErrNotExist, "a refused registry leaves no repo behind")
	})

	t.Run("running platform", func(t *testing.T) {
		p := launchPlatform(t, a, a.sign(t, sf.entry(t)), nil)
		ok, err := p.trust.Install(forged)
		require.False(t, ok)
		require.Equal(t, "untrusted_issuer", protocol.CodeOf(err), "%v", err)
		require.EqualValues(t, 1, p.trust.Seq(), "a higher seq from a non-anchor changes nothing")
	})
}

// TestSecurityOlderRegistryIgnored: once a platform holds edition 2, an
// older (or the same) edition is ignored with stale_registry, on disk too,
// so a key that only the older edition bound stays revoked.
func TestSecurityOlderRegistryIgnored(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := newAuthority(t)
	sf := launchCarrier(t, nil, "SF")
	retired := launchCarrier(t, nil, "SF") // SF's key and node in edition 1
	const number = "SF0000000001"
	retired.ingest(t, number, 2)

	e1 := retired.entry(t)
	seq1 := a.sign(t, e1)
	seq2 := a.sign(t, sf.entry(t)) // the key rotated, the old one removed
	p := launchPlatform(t, a, seq2, nil)

	for name, offered := range map[string][]byte{"older": seq1, "same": seq2} {
		ok, err := p.trust.Install(offered)
		require.False(t, ok, name)
		require.Equal(t, "stale_registry", protocol.CodeOf(err), "%s: %v", name, err)
		require.EqualValues(t, 2, p.trust.Seq(), name)
	}
	// What the node keeps on disk did not go back either.
	reopened, err := p.node.Repo.Trust()
	require.NoError(t, err)
	require.EqualValues(t, 2, reopened.Seq())

	views := p.trackPeer(t, retired, p.trust, number)
	require.Len(t, views, 1)
	requireRejected(t, views[0], number, "SF", "unknown_key", "is not registered for SF")
}

// TestSecurityKeyUsedAfterValidity: a head signed after its key's window
// is rejected with key_expired, one signed before it with
// key_not_yet_valid, and the reason gives the window in RFC 3339.
func TestSecurityKeyUsedAfterValidity(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := newAuthority(t)
	sf := launchCarrier(t, nil, "SF")
	const number = "SF0000000001"
	sf.ingest(t, number, 2) // the head is signed now
	now := time.Now()

	for _, tc := range []struct {
		name     string
		from, to time.Time
		code     string
	}{
		{"window ended before the head", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), "key_expired"},
		{"window not begun at the head", now.Add(time.Hour), now.Add(48 * time.Hour), "key_not_yet_valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := sf.entry(t)
			e.Keys[0].NotBefore, e.Keys[0].NotAfter = tc.from.UnixMilli(), tc.to.UnixMilli()
			p := launchPlatform(t, a, a.sign(t, e), nil)
			views := p.track(t, number)
			require.Len(t, views, 1)
			requireRejected(t, views[0], number, "SF", tc.code, "is valid from "+protocol.FormatTime(tc.from.UnixMilli()))
		})
	}
}

// TestSecurityEventTamperedInTransit: one bit of one event flipped between
// the carrier and the platform (client.Options.TamperResponse) breaks the
// chain: broken_chain when a later event links to it, head_mismatch when
// it is the event the signed head names.
func TestSecurityEventTamperedInTransit(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := newAuthority(t)
	sf := launchCarrier(t, nil, "SF")
	const first, last, untouched = "SF0000000001", "SF0000000002", "SF0000000003"
	for _, n := range []string{first, last, untouched} {
		sf.ingest(t, n, 3)
	}
	flip := map[string]int{first: 0, last: 2} // number -> event to alter
	var altered atomic.Int32
	opts := testClient
	opts.TamperResponse = func(_ peer.ID, resp *protocol.TrackResponse) {
		for i := range resp.Results {
			res := &resp.Results[i]
			at, ok := flip[res.Number]
			if !ok || at >= len(res.Events) {
				continue
			}
			ev := bytes.Clone(res.Events[at])
			j := bytes.Index(ev, []byte("Shenzhen"))
			if j < 0 {
				continue // counted below as not altered
			}
			ev[j] ^= 0x20 // "Shenzhen" becomes "shenzhen": still a valid event
			res.Events[at] = ev
			altered.Add(1)
		}
	}
	p := launchPlatform(t, a, a.sign(t, sf.entry(t)), &opts)

	views := p.track(t, first, last, untouched)
	require.EqualValues(t, 2, altered.Load(), "the hook altered both events")
	require.Len(t, views, 3)
	requireRejected(t, views[0], first, "SF", "broken_chain", "links prev")
	requireRejected(t, views[1], last, "SF", "head_mismatch", "last event is")
	requireRegistryVerified(t, views[2], sf, untouched, 3)
}
