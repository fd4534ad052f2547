package pebble

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The store holds recipient details, so it is the owner's alone, wherever
// store.path puts it: the directory 0700, every file 0600.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// privateFS is pebble's file system with every file it creates made 0600
// and every directory 0700; pebble itself creates them 0666 and 0755
// before the umask.
type privateFS struct{ vfs.FS }

func (p privateFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return private(p.FS.Create(name, c))(name)
}

func (p privateFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return private(p.FS.ReuseForWrite(oldname, newname, c))(newname)
}

func (p privateFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return private(p.FS.OpenReadWrite(name, c, opts...))(name)
}

func (p privateFS) MkdirAll(dir string, _ os.FileMode) error {
	return p.FS.MkdirAll(dir, dirMode)
}

func (p privateFS) Lock(name string) (io.Closer, error) {
	l, err := p.FS.Lock(name)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(name, fileMode); err != nil {
		l.Close()
		return nil, fmt.Errorf("pebble: make %s private: %w", name, err)
	}
	return l, nil
}

// Unwrap lets pebble see the OS file system beneath.
func (p privateFS) Unwrap() vfs.FS { return p.FS }

// private chmods a file just created to fileMode, closing it on failure.
func private(f vfs.File, err error) func(name string) (vfs.File, error) {
	return func(name string) (vfs.File, error) {
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(name, fileMode); err != nil {
			f.Close()
			return nil, fmt.Errorf("pebble: make %s private: %w", name, err)
		}
		return f, nil
	}
}

// makePrivate creates dir 0700, or narrows an existing store, made before
// stores were private, to 0700 and 0600 throughout.
func makePrivate(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("pebble: create %s: %w", dir, err)
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(fileMode)
		if d.IsDir() {
			mode = dirMode
		}
		if err := os.Chmod(path, mode); err != nil {
			return fmt.Errorf("pebble: make %s private: %w", path, err)
		}
		return nil
	})
}
