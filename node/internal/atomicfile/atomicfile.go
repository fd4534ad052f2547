// Package atomicfile writes the node's files durably. Write replaces a
// file so that a crash leaves either the old contents or the new ones,
// never a torn or empty file; the files rewritten in place (the registry,
// config.toml, node.json, the seal keyring, an authority's draft, a
// watch's cursor) all go through it, so that the order of write, fsync
// and rename is right in one place. Create writes the files that are
// made once, such as keys.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write replaces path with data, with mode perm (the umask does not
// apply). The data goes to a temporary file in the same directory, which
// is synced, closed and renamed over path; the directory is synced last,
// so that the rename itself survives a crash.
func Write(path string, data []byte, perm os.FileMode) error {
	return write(path, perm, contents(data))
}

// write is Write with the contents written by fill, so that a test can
// fail it halfway.
func write(path string, perm os.FileMode, fill func(io.Writer) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	err = finish(tmp, perm, fill)
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("atomicfile: %s: %w", path, err)
	}
	return syncDir(dir)
}

// Create writes data to path, which must not exist yet (the error then
// matches os.ErrExist), with mode perm, and syncs the file and its
// directory. A failed Create removes what it wrote, but a crash can leave
// a short file: callers that create several write the one that marks the
// set complete last.
func Create(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if err := finish(f, perm, contents(data)); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("atomicfile: %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// contents is a fill that writes data.
func contents(data []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}
}

// finish fills f, sets its mode (which the umask may have cut), syncs
// and closes it.
func finish(f *os.File, perm os.FileMode, fill func(io.Writer) error) error {
	err := fill(f)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("atomicfile: sync %s: %w", dir, err)
	}
	return nil
}
