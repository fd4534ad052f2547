package repo

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/protocol"
)

func TestInitOpenCarrier(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sf")
	r, err := Init(dir, InitOptions{Carrier: "SF", Name: "SF Express", Schemes: []string{`SF\d{10,20}`, `\d{12}:mod10`}})
	require.NoError(t, err)
	require.NotNil(t, r.CarrierKey)

	for _, f := range []string{NodeKeyFile, CarrierKeyFile, TokenFile, ConfigFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	got, err := Open(dir)
	require.NoError(t, err)
	require.Equal(t, r.PeerID(), got.PeerID())
	require.Equal(t, r.CarrierKey, got.CarrierKey)
	require.Equal(t, r.AdminToken, got.AdminToken)
	require.Equal(t, r.Config, got.Config)
	schemes, err := got.Config.Schemes()
	require.NoError(t, err)
	require.Len(t, schemes, 2)

	_, err = Init(dir, InitOptions{Carrier: "SF"})
	require.ErrorIs(t, err, ErrExists)
}

func TestInitPlatform(t *testing.T) {
	dir := t.TempDir()
	r, err := Init(dir, InitOptions{Platform: "shop"})
	require.NoError(t, err)
	require.Nil(t, r.CarrierKey)
	_, err = os.Stat(filepath.Join(dir, CarrierKeyFile))
	require.ErrorIs(t, err, os.ErrNotExist)
	got, err := Open(dir)
	require.NoError(t, err)
	_, err = got.Signer()
	require.Error(t, err)
}

func TestInitRejects(t *testing.T) {
	// msg is the whole message when set: one clause per problem, no
	// clause that only follows from another, no code twice.
	cases := []struct {
		name string
		o    InitOptions
		msg  string
	}{
		{"neither", InitOptions{}, "repo: invalid options: give exactly one of a carrier code and a platform name"},
		{"both", InitOptions{Carrier: "SF", Platform: "x"}, ""},
		{"bad code", InitOptions{Carrier: "s-f"}, `repo: invalid options: carrier code "s-f" must be upper-case letters and digits, starting with a letter`},
		{"bad scheme", InitOptions{Carrier: "SF", Schemes: []string{"SF.*"}}, ""},
		{"bad country", InitOptions{Carrier: "SF", Country: "China"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Init(t.TempDir(), tc.o)
			require.ErrorIs(t, err, ErrBadOptions)
			if tc.msg != "" {
				require.Equal(t, tc.msg, err.Error())
			}
		})
	}
}

func TestConfigUnknownKey(t *testing.T) {
	dir := t.TempDir()
	_, err := Init(dir, InitOptions{Carrier: "SF"})
	require.NoError(t, err)
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, append(b, []byte("\n[store2]\nx = 1\n")...), 0o600))
	_, err = Open(dir)
	require.ErrorIs(t, err, ErrBadOptions)
	require.Contains(t, err.Error(), "store2")
}

func TestNodeInfo(t *testing.T) {
	dir := t.TempDir()
	r, err := Init(dir, InitOptions{Platform: "p"})
	require.NoError(t, err)
	info := &NodeInfo{PeerID: r.PeerID().String(), Addrs: []string{"/ip4/127.0.0.1/tcp/1/p2p/" + r.PeerID().String()}, AdminURL: "http://127.0.0.1:1"}
	require.NoError(t, r.WriteNodeInfo(info))
	got, err := ReadNodeInfo(dir)
	require.NoError(t, err)
	require.Equal(t, info, got)
	require.NoError(t, r.RemoveNodeInfo())
	_, err = ReadNodeInfo(dir)
	require.ErrorIs(t, err, ErrNotRunning)
}

func TestDefaultDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv(EnvRepo, "")
	require.Equal(t, filepath.Join(home, ".opentrack"), DefaultDir())
	t.Setenv(EnvRepo, "/srv/sf")
	require.Equal(t, "/srv/sf", DefaultDir(), "OPENTRACK_REPO comes before the home directory")
}

// TestAddAnchorInstallRegistry: a repo made before its registry trusts an
// authority afterwards, and then installs an edition as the node would:
// a newer one is kept, the same one is stale, a foreign one is refused.
func TestAddAnchorInstallRegistry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shop")
	r, err := Init(dir, InitOptions{Platform: "shop"})
	require.NoError(t, err)
	authPub, authKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	_, rogueKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	edition := func(key ed25519.PrivateKey, seq uint64) []byte {
		s, err := protocol.NewSigner(key)
		require.NoError(t, err)
		now := time.Now()
		b, err := protocol.SignRegistry(s, &protocol.Registry{Seq: seq, Issued: now.UnixMilli(),
			NotBefore: now.Add(-time.Minute).UnixMilli(), NotAfter: now.Add(time.Hour).UnixMilli(), Carriers: []protocol.CarrierEntry{}})
		require.NoError(t, err)
		return b
	}

	_, _, err = r.InstallRegistry(edition(authKey, 1))
	require.ErrorIs(t, err, ErrNoAnchors)

	path, added, err := r.AddAnchor(authPub)
	require.NoError(t, err)
	require.True(t, added)
	_, added, err = r.AddAnchor(authPub)
	require.NoError(t, err)
	require.False(t, added, "the same key twice is one anchor")
	again, err := Open(dir)
	require.NoError(t, err)
	require.Equal(t, []string{path}, again.Config.Trust.Anchors, "config.toml lists the anchor")

	from, to, err := again.InstallRegistry(edition(authKey, 1))
	require.NoError(t, err)
	require.Equal(t, [2]uint64{0, 1}, [2]uint64{from, to})
	_, _, err = again.InstallRegistry(edition(authKey, 1))
	require.ErrorIs(t, err, protocol.ErrStaleRegistry)
	_, _, err = again.InstallRegistry(edition(rogueKey, 2))
	require.ErrorIs(t, err, protocol.ErrUntrustedIssuer)
	tr, err := again.Trust()
	require.NoError(t, err)
	require.Equal(t, uint64(1), tr.Seq(), "the held edition survives a reopen")
}
