package discovery_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/protocol"
)

// t0 is the test clock: every registry and key window is relative to it.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const hour = int64(time.Hour / time.Millisecond)

// fixture is an authority, a rogue that is no anchor, and carrier keys.
type fixture struct {
	auth, rogue *protocol.Signer
	sf1, sf2    ed25519.PublicKey // SF's two overlapping keys
	rm          ed25519.PublicKey
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{auth: newSigner(t), rogue: newSigner(t), sf1: newKey(t), sf2: newKey(t), rm: newKey(t)}
}

func newSigner(t *testing.T) *protocol.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	s, err := protocol.NewSigner(priv)
	require.NoError(t, err)
	return s
}

func newKey(t *testing.T) ed25519.PublicKey { return newSigner(t).Public() }

func scheme(t *testing.T, s string) protocol.Scheme {
	t.Helper()
	sc, err := protocol.ParseScheme(s)
	require.NoError(t, err)
	return sc
}

// registry is edition seq, valid for a day around t0, with carriers whose
// schemes cover every kind of resolution: S10 by country and by product,
// patterns with and without check digits, and two overlapping defaults.
func (f *fixture) registry(t *testing.T, seq uint64) *protocol.Registry {
	t.Helper()
	now := t0.UnixMilli()
	key := func(pub ed25519.PublicKey, from, to int64) protocol.CarrierKey {
		return protocol.CarrierKey{Key: pub, NotBefore: now + from*hour, NotAfter: now + to*hour}
	}
	carrier := func(code string, keys []protocol.CarrierKey, schemes ...string) protocol.CarrierEntry {
		c := protocol.CarrierEntry{Code: code, Name: code, Country: "GB", Keys: keys, Nodes: []protocol.NodeEntry{}, Schemes: []protocol.Scheme{}}
		for _, s := range schemes {
			c.Schemes = append(c.Schemes, scheme(t, s))
		}
		return c
	}
	return &protocol.Registry{Seq: seq, Issued: now, NotBefore: now - 24*hour, NotAfter: now + 24*hour, Carriers: []protocol.CarrierEntry{
		carrier("GS", []protocol.CarrierKey{key(newKey(t), -1, 1)}, `\d{12}:mod10`),
		carrier("LP", []protocol.CarrierKey{key(newKey(t), -1, 1)}, "s10:FR"),
		carrier("PF", []protocol.CarrierKey{key(newKey(t), -1, 1)}, "s10:GB:CP,CX"),
		carrier("RM", []protocol.CarrierKey{key(f.rm, -1, 1)}, "s10:GB:R"),
		// SF rotates: sf1 ends in an hour, sf2 started an hour ago.
		carrier("SF", []protocol.CarrierKey{key(f.sf1, -48, 1), key(f.sf2, -1, 48)}, `SF\d{10,20}`),
		carrier("SF1", []protocol.CarrierKey{key(newKey(t), -1, 1)}, `SF1\d{10,20}`),
		carrier("UPS", []protocol.CarrierKey{key(newKey(t), -1, 1)}, `1Z[A-Z0-9]{16}`),
	}}
}

func (f *fixture) sign(t *testing.T, s *protocol.Signer, r *protocol.Registry) []byte {
	t.Helper()
	b, err := protocol.SignRegistry(s, r)
	require.NoError(t, err)
	return b
}

func (f *fixture) trust(t *testing.T, path string, at time.Time) *discovery.Trust {
	t.Helper()
	tr, err := discovery.NewTrust([]ed25519.PublicKey{f.auth.Public()}, path, func() time.Time { return at })
	require.NoError(t, err)
	return tr
}

func TestNewTrustNeedsAnchors(t *testing.T) {
	_, err := discovery.NewTrust(nil, "", nil)
	require.ErrorIs(t, err, discovery.ErrNoAnchors)
}

func TestInstall(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name   string
		at     time.Time // the verifier's clock
		signed func(t *testing.T) []byte
		want   error
	}{
		{"valid", t0, func(t *testing.T) []byte { return f.sign(t, f.auth, f.registry(t, 1)) }, nil},
		{"not an anchor", t0, func(t *testing.T) []byte { return f.sign(t, f.rogue, f.registry(t, 1)) }, protocol.ErrUntrustedIssuer},
		{"expired", t0.Add(25 * time.Hour), func(t *testing.T) []byte { return f.sign(t, f.auth, f.registry(t, 1)) }, protocol.ErrExpired},
		{"not yet valid", t0.Add(-25 * time.Hour), func(t *testing.T) []byte { return f.sign(t, f.auth, f.registry(t, 1)) }, protocol.ErrExpired},
		{"bad signature", t0, func(t *testing.T) []byte {
			b := f.sign(t, f.auth, f.registry(t, 1))
			b[len(b)-1] ^= 1 // the signature is the last item of the COSE_Sign1
			return b
		}, protocol.ErrBadSignature},
		{"invalid record", t0, func(t *testing.T) []byte {
			// The authority signed it, but a key bound to two carriers would
			// verify the records of both.
			r := f.registry(t, 1)
			r.Carriers[1].Keys = append(r.Carriers[1].Keys, r.Carriers[0].Keys[0])
			payload, err := protocol.Marshal(r)
			require.NoError(t, err)
			b, err := f.auth.Sign(protocol.ContentRegistry, payload)
			require.NoError(t, err)
			return b
		}, protocol.ErrInvalid},
		{"not a registry", t0, func(t *testing.T) []byte { return []byte("registry") }, protocol.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := f.trust(t, "", tc.at)
			ok, err := tr.Install(tc.signed(t))
			if tc.want == nil {
				require.NoError(t, err)
				require.True(t, ok)
				require.EqualValues(t, 1, tr.Seq())
				require.NotNil(t, tr.Registry())
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.False(t, ok)
			require.Zero(t, tr.Seq())
			require.Nil(t, tr.Registry())
			require.Nil(t, tr.Signed())
		})
	}
}

func TestInstallKeepsNewest(t *testing.T) {
	f := newFixture(t)
	tr := f.trust(t, "", t0)
	two := f.sign(t, f.auth, f.registry(t, 2))
	ok, err := tr.Install(two)
	require.NoError(t, err)
	require.True(t, ok)
	for _, seq := range []uint64{1, 2} {
		ok, err := tr.Install(f.sign(t, f.auth, f.registry(t, seq)))
		require.ErrorIs(t, err, protocol.ErrStaleRegistry, "seq %d", seq)
		require.False(t, ok)
		require.EqualValues(t, 2, tr.Seq(), "the held edition stays")
		require.Equal(t, two, tr.Signed())
	}
	ok, err = tr.Install(f.sign(t, f.auth, f.registry(t, 3)))
	require.NoError(t, err)
	require.True(t, ok)
	require.EqualValues(t, 3, tr.Seq())
}

func TestPersistence(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "registry.cose")
	tr := f.trust(t, path, t0)
	require.Zero(t, tr.Seq(), "no file yet")
	two := f.sign(t, f.auth, f.registry(t, 2))
	_, err := tr.Install(two)
	require.NoError(t, err)
	onDisk, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, two, onDisk)

	// A restart must never take the node back to an older edition.
	again := f.trust(t, path, t0)
	require.EqualValues(t, 2, again.Seq())
	require.Equal(t, two, again.Signed())
	_, err = again.Install(f.sign(t, f.auth, f.registry(t, 1)))
	require.ErrorIs(t, err, protocol.ErrStaleRegistry)

	// A stale or rejected edition does not touch the file.
	_, err = again.Install(f.sign(t, f.rogue, f.registry(t, 9)))
	require.ErrorIs(t, err, protocol.ErrUntrustedIssuer)
	onDisk, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, two, onDisk)

	require.NoError(t, os.WriteFile(path, []byte("junk"), 0o600))
	_, err = discovery.NewTrust([]ed25519.PublicKey{f.auth.Public()}, path, func() time.Time { return t0 })
	require.ErrorIs(t, err, protocol.ErrMalformed)
}

func TestResolve(t *testing.T) {
	f := newFixture(t)
	tr := f.trust(t, "", t0)
	_, err := tr.Resolve("RB123456785GB")
	require.ErrorIs(t, err, discovery.ErrNoRegistry)
	_, err = tr.Install(f.sign(t, f.auth, f.registry(t, 1)))
	require.NoError(t, err)

	cases := []struct {
		name, number string
		want         []string // carrier codes, in registry order
		err          error
	}{
		{"s10 by country", "RB123456785FR", []string{"LP"}, nil},
		{"s10 by product letter", "RB123456785GB", []string{"RM"}, nil},
		{"s10 by product pair", "CP123456785GB", []string{"PF"}, nil},
		{"s10 product of no one", "CQ123456785GB", nil, protocol.ErrInvalidNumber},
		{"s10 country of no one", "RB123456785DE", nil, protocol.ErrInvalidNumber},
		{"s10 check digit", "RB123456786GB", nil, protocol.ErrCheckDigit},
		{"pattern", "SF1234567890", []string{"SF"}, nil},
		{"pattern with letters", "1Z999AA10123456784", []string{"UPS"}, nil},
		{"pattern with check digit", "036000291452", []string{"GS"}, nil},
		{"pattern check digit", "036000291453", nil, protocol.ErrCheckDigit},
		{"ambiguous", "SF11234567890", []string{"SF", "SF1"}, nil},
		{"no match", "ZZ1234567890", nil, protocol.ErrInvalidNumber},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tr.Resolve(tc.number)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				require.Empty(t, got)
				return
			}
			require.NoError(t, err)
			var codes []string
			for _, c := range got {
				codes = append(codes, c.Code)
			}
			require.Equal(t, tc.want, codes)
		})
	}
}

func TestCarrierKey(t *testing.T) {
	f := newFixture(t)
	tr := f.trust(t, "", t0)
	_, err := tr.CarrierKey("SF", protocol.KeyID(f.sf1), t0.UnixMilli())
	require.ErrorIs(t, err, protocol.ErrUnknownKey, "no registry yet")
	require.ErrorIs(t, err, discovery.ErrNoRegistry)
	_, err = tr.Install(f.sign(t, f.auth, f.registry(t, 1)))
	require.NoError(t, err)

	at := func(h time.Duration) int64 { return t0.Add(h).UnixMilli() }
	cases := []struct {
		name    string
		carrier string
		key     ed25519.PublicKey
		at      int64
		err     error
	}{
		{"old key in the overlap", "SF", f.sf1, at(0), nil},
		{"new key in the overlap", "SF", f.sf2, at(0), nil},
		{"window bounds are inclusive", "SF", f.sf1, at(time.Hour), nil},
		{"old key after its window", "SF", f.sf1, at(time.Hour) + 1, protocol.ErrKeyExpired},
		{"new key before its window", "SF", f.sf2, at(-time.Hour) - 1, protocol.ErrKeyNotYetValid},
		{"another carrier's key", "SF", f.rm, at(0), protocol.ErrWrongCarrier},
		{"unregistered key", "SF", newKey(t), at(0), protocol.ErrUnknownKey},
		{"unregistered carrier", "DHL", f.sf1, at(0), protocol.ErrUnknownKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := tr.CarrierKey(tc.carrier, protocol.KeyID(tc.key), tc.at)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				require.Nil(t, pub)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.key, pub)
		})
	}
}

func TestChanged(t *testing.T) {
	f := newFixture(t)
	tr := f.trust(t, "", t0)
	ch := tr.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any install")
	default:
	}
	_, err := tr.Install(f.sign(t, f.auth, f.registry(t, 2)))
	require.NoError(t, err)
	<-ch // closed by the install
	next := tr.Changed()
	require.NotEqual(t, ch, next)
	_, err = tr.Install(f.sign(t, f.auth, f.registry(t, 1)))
	require.ErrorIs(t, err, protocol.ErrStaleRegistry)
	select {
	case <-next:
		t.Fatal("a stale edition closed Changed")
	default:
	}
}

// TestConcurrentUse runs lookups while editions are installed, for the
// race detector.
func TestConcurrentUse(t *testing.T) {
	f := newFixture(t)
	tr := f.trust(t, "", t0)
	editions := make([][]byte, 20)
	for i := range editions {
		editions[i] = f.sign(t, f.auth, f.registry(t, uint64(i+1)))
	}
	_, err := tr.Install(editions[0])
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				if _, err := tr.Resolve("SF1234567890"); err != nil {
					t.Error(err)
					return
				}
				if _, err := tr.CarrierKey("RM", protocol.KeyID(f.rm), t0.UnixMilli()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for _, e := range editions[1:] {
		_, err := tr.Install(e)
		require.NoError(t, err)
	}
	wg.Wait()
	require.EqualValues(t, len(editions), tr.Seq())
}

// A carrier that lists no schemes is resolved by the default scheme
// (spec §10.5), and a stored edition that has since expired still loads.
func TestTrustDefaultSchemeAndExpiredReload(t *testing.T) {
	auth := newSigner(t)
	start := time.Now().Add(-2 * time.Hour)
	reg := &protocol.Registry{Seq: 1, Issued: start.UnixMilli(), NotBefore: start.UnixMilli(), NotAfter: time.Now().Add(time.Hour).UnixMilli(),
		Carriers: []protocol.CarrierEntry{{Code: "ZX", Name: "ZX", Country: "GB",
			Keys:  []protocol.CarrierKey{{Key: newKey(t), NotBefore: start.UnixMilli(), NotAfter: time.Now().Add(time.Hour).UnixMilli()}},
			Nodes: []protocol.NodeEntry{}, Schemes: []protocol.Scheme{}}}}
	signed, err := protocol.SignRegistry(auth, reg)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "registry.cose")
	tr, err := discovery.NewTrust([]ed25519.PublicKey{auth.Public()}, path, nil)
	require.NoError(t, err)
	_, err = tr.Install(signed)
	require.NoError(t, err)
	got, err := tr.Resolve("ZX1234567890")
	require.NoError(t, err)
	require.Equal(t, "ZX", got[0].Code)

	// Two hours later the edition has expired: it reloads, but a peer
	// could not hand it over anew.
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	reloaded, err := discovery.NewTrust([]ed25519.PublicKey{auth.Public()}, path, later)
	require.NoError(t, err)
	require.Equal(t, uint64(1), reloaded.Seq())
	fresh, err := discovery.NewTrust([]ed25519.PublicKey{auth.Public()}, "", later)
	require.NoError(t, err)
	_, err = fresh.Install(signed)
	require.ErrorIs(t, err, protocol.ErrExpired)
}
