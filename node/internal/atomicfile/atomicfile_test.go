package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// requireOnly fails unless dir holds exactly the named entries: a
// temporary file left behind shows up here.
func requireOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	require.ElementsMatch(t, names, got)
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	require.NoError(t, Write(path, []byte("one\n"), 0o640))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "one\n", string(b))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), fi.Mode().Perm(), "perm applies whatever the umask")
	requireOnly(t, dir, "f")
}

func TestWriteReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(path, []byte("old contents"), 0o600))
	require.NoError(t, Write(path, []byte("new"), 0o644))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "new", string(b))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	requireOnly(t, dir, "f")
}

// TestWriteFailsHalfway: a write that fails after part of the data, as a
// full disk or a crash would, never replaces the old file.
func TestWriteFailsHalfway(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(path, []byte("old contents"), 0o600))
	errFull := errors.New("disk full")
	err := write(path, 0o600, func(w io.Writer) error {
		if _, err := w.Write([]byte("new, but on")); err != nil {
			return err
		}
		return errFull
	})
	require.ErrorIs(t, err, errFull)
	require.True(t, strings.HasPrefix(err.Error(), "atomicfile: "), err.Error())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "old contents", string(b))
	requireOnly(t, dir, "f")
}

// TestWriteRenameFails: path is a directory with an entry, which a file
// cannot be renamed over; the temporary file goes.
func TestWriteRenameFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d")
	require.NoError(t, os.MkdirAll(filepath.Join(path, "entry"), 0o700))
	err := Write(path, []byte("data"), 0o600)
	var linkErr *os.LinkError
	require.ErrorAs(t, err, &linkErr, "the rename fails")
	require.True(t, strings.HasPrefix(err.Error(), "atomicfile: "), err.Error())
	requireOnly(t, dir, "d")
	requireOnly(t, path, "entry")
}

// TestWriteUnwritableDir: no temporary file can be made where the parent
// is a regular file (a read-only directory does not stop root).
func TestWriteUnwritableDir(t *testing.T) {
	dir := t.TempDir()
	parent := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(parent, []byte("x"), 0o600))
	err := Write(filepath.Join(parent, "f"), []byte("data"), 0o600)
	require.Error(t, err)
	require.True(t, strings.HasPrefix(err.Error(), "atomicfile: "), err.Error())
	requireOnly(t, dir, "file")
}
