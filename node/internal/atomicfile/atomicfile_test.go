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

// requireFile fails unless path holds data with mode perm.
func requireFile(t *testing.T, path, data string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, data, string(b))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, perm, fi.Mode().Perm())
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	// 0640 is not what the umask leaves of CreateTemp's 0600 or of 0666.
	require.NoError(t, Write(path, []byte("one\n"), 0o640))
	requireFile(t, path, "one\n", 0o640)
	require.NoError(t, Write(path, []byte("two"), 0o644))
	requireFile(t, path, "two", 0o644)
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
	requireFile(t, path, "old contents", 0o600)
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

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	require.NoError(t, Create(path, []byte("secret"), 0o640))
	requireFile(t, path, "secret", 0o640)
	err := Create(path, []byte("other"), 0o600)
	require.ErrorIs(t, err, os.ErrExist, "a second Create of the same file")
	require.True(t, strings.HasPrefix(err.Error(), "atomicfile: "), err.Error())
	requireFile(t, path, "secret", 0o640)
	requireOnly(t, dir, "key")
}
