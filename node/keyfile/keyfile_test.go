package keyfile_test

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/keyfile"
)

// The key of seed 01 02 … 20 as openssl writes it (openssl pkey and
// openssl pkey -pubout): the on-disk format is a contract.
const (
	goldenPrivate = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g
-----END PRIVATE KEY-----
`
	goldenPublic = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=
-----END PUBLIC KEY-----
`
	// A P-256 key pair from openssl genpkey, for the wrong algorithm.
	ecPrivate = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVSYfN7091n0I/cmG
4+QgDlyhV70nffWsegvn/IV3rtqhRANCAAQu+s+lA+0HWnYgw/oBzan/4Lxv7GBy
s+sEYlTTGvFwqEVgMERpBLY6rv1Duznqr6k+Q5oVA0euFvOlegyPP/qE
-----END PRIVATE KEY-----
`
	ecPublic = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELvrPpQPtB1p2IMP6Ac2p/+C8b+xg
crPrBGJU0xrxcKhFYDBEaQS2Oq79Q7s56q+pPkOaFQNHrhbzpXoMjz/6hA==
-----END PUBLIC KEY-----
`
)

func goldenKey() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	return ed25519.NewKeyFromSeed(seed)
}

func TestMarshalGolden(t *testing.T) {
	key := goldenKey()
	priv, err := keyfile.MarshalPrivate(key)
	require.NoError(t, err)
	require.Equal(t, goldenPrivate, string(priv))
	pub, err := keyfile.MarshalPublic(key.Public().(ed25519.PublicKey))
	require.NoError(t, err)
	require.Equal(t, goldenPublic, string(pub))
}

func TestRoundTrip(t *testing.T) {
	key := goldenKey()
	priv, err := keyfile.ParsePrivate([]byte(goldenPrivate))
	require.NoError(t, err)
	require.True(t, key.Equal(priv))
	pub, err := keyfile.ParsePublic([]byte(goldenPublic))
	require.NoError(t, err)
	require.True(t, key.Public().(ed25519.PublicKey).Equal(pub))
	// Text around the block, as an editor or openssl -text leaves it.
	pub, err = keyfile.ParsePublic([]byte("authority key\n" + goldenPublic + "trailer\n"))
	require.NoError(t, err)
	require.True(t, key.Public().(ed25519.PublicKey).Equal(pub))
}

func TestParseErrors(t *testing.T) {
	corrupt := strings.Replace(goldenPublic, "MCow", "MCox", 1)
	cases := []struct {
		name    string
		private bool
		in      string
		want    error // nil: any error with the package prefix
	}{
		{"public as private", true, goldenPublic, keyfile.ErrNotPEM},
		{"private as public", false, goldenPrivate, keyfile.ErrNotPEM},
		{"garbage private", true, "not a key at all", keyfile.ErrNotPEM},
		{"garbage public", false, "\x00\x01\x02", keyfile.ErrNotPEM},
		{"empty", false, "", keyfile.ErrNotPEM},
		{"EC private", true, ecPrivate, keyfile.ErrNotEd25519},
		{"EC public", false, ecPublic, keyfile.ErrNotEd25519},
		{"corrupt DER", false, corrupt, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.private {
				_, err = keyfile.ParsePrivate([]byte(tc.in))
			} else {
				_, err = keyfile.ParsePublic([]byte(tc.in))
			}
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), "keyfile: "), err.Error())
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	privPath, pubPath := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	require.NoError(t, os.WriteFile(privPath, []byte(goldenPrivate), 0o600))
	require.NoError(t, os.WriteFile(pubPath, []byte(goldenPublic), 0o644))
	priv, err := keyfile.ReadPrivate(privPath)
	require.NoError(t, err)
	require.True(t, goldenKey().Equal(priv))
	pub, err := keyfile.ReadPublic(pubPath)
	require.NoError(t, err)
	require.True(t, goldenKey().Public().(ed25519.PublicKey).Equal(pub))

	_, err = keyfile.ReadPublic(privPath)
	require.ErrorIs(t, err, keyfile.ErrNotPEM)
	require.Contains(t, err.Error(), privPath, "a parse error names the file")
	_, err = keyfile.ReadPrivate(filepath.Join(dir, "missing.key"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.True(t, strings.HasPrefix(err.Error(), "keyfile: "), err.Error())
}
