package pebble_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store/pebble"
)

// TestStoreIsPrivate creates the store 0700 with every file 0600, also
// under a permissive umask and at a path outside any repo, and narrows a
// store an older build left 0755/0644. Before, it was 0755 and 0644:
// recipient details readable by every local user.
func TestStoreIsPrivate(t *testing.T) {
	old := syscall.Umask(0o002)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "elsewhere", "store")
	fill := func() {
		s, err := pebble.Open(dir, &testOptions)
		require.NoError(t, err)
		servicetest.Load(t, s, []*servicetest.Parcel{servicetest.NewParcel(t, servicetest.Number(1), 3)})
		require.NoError(t, s.Close())
	}
	check := func() {
		t.Helper()
		n := 0
		require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			require.NoError(t, err)
			info, err := d.Info()
			require.NoError(t, err)
			want := os.FileMode(0o600)
			if d.IsDir() {
				want = 0o700
			}
			require.Equal(t, want, info.Mode().Perm(), path)
			n++
			return nil
		}))
		require.Greater(t, n, 3, "the store has files")
	}
	fill()
	check()

	// A store from before: opened again, it is narrowed.
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if d.IsDir() {
			return os.Chmod(path, 0o755)
		}
		return os.Chmod(path, 0o644)
	}))
	fill()
	check()
}
