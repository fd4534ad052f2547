package repo

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store/seal"
)

// TestInitKeyring: a carrier repo gets its own details keyring, mode
// 0600; a replica the copy of its source's; a platform none.
func TestInitKeyring(t *testing.T) {
	src := filepath.Join(t.TempDir(), "sf")
	_, err := Init(src, InitOptions{Carrier: "SF", Store: "postgres://db.invalid/opentrack"})
	require.NoError(t, err)
	path := filepath.Join(src, seal.KeyringFile)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	_, err = seal.LoadKeyring(path)
	require.NoError(t, err, "init writes a keyring that loads")

	replica := filepath.Join(t.TempDir(), "sf2")
	_, err = Init(replica, InitOptions{ReplicaOf: src})
	require.NoError(t, err)
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join(replica, seal.KeyringFile))
	require.NoError(t, err)
	require.Equal(t, want, got, "a replica shares its source's keyring")

	other := filepath.Join(t.TempDir(), "sf3")
	_, err = Init(other, InitOptions{Carrier: "SF"})
	require.NoError(t, err)
	mine, err := os.ReadFile(filepath.Join(other, seal.KeyringFile))
	require.NoError(t, err)
	require.NotEqual(t, want, mine, "two carrier repos share a keyring")

	plat := t.TempDir()
	_, err = Init(plat, InitOptions{Platform: "shop"})
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(plat, seal.KeyringFile))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestDetailsRetention: the default (also for a config without
// [retention]), keep, and values refused.
func TestDetailsRetention(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sf")
	r, err := Init(dir, InitOptions{Carrier: "SF"})
	require.NoError(t, err)
	d, err := r.Config.DetailsRetention()
	require.NoError(t, err)
	require.Equal(t, 90*24*time.Hour, d, "a new repo's retention")
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"", 90 * 24 * time.Hour, false},
		{"0s", 0, false},
		{"720h", 720 * time.Hour, false},
		{"-1h", 0, true},
		{"ninety days", 0, true},
		{"1000000h", 0, true},
	} {
		c := *r.Config
		c.Retention.Details = tc.in
		d, err := c.DetailsRetention()
		if tc.bad {
			require.Error(t, err, tc.in)
			require.ErrorContains(t, c.Validate(), "retention.details", tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, d, tc.in)
	}
}
