package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrDiskFull means the store's filesystem has less free space than the
// reserve, or the store was opened read-only on such a disk: writes are
// refused before the disk fills, because an embedded store that meets
// ENOSPC mid-commit cannot go on (pebble exits the process).
var ErrDiskFull = errors.New("store: free disk space below the reserve")

// DefaultReserveBytes is the free space a store's filesystem keeps for
// compactions, the WAL and a clean restart: 256 MiB.
const DefaultReserveBytes = 256 << 20

// FreeBytes returns the bytes an unprivileged writer may still use on the
// filesystem holding path.
func FreeBytes(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("store: free space of %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Space guards a store directory's free space. Check is called before
// every write batch, so while space is plentiful it reuses a statfs
// answer for a short while; writes resume by themselves once space is
// freed.
type Space struct {
	dir      string
	reserve  uint64
	readOnly bool // opened read-only: no write succeeds until a restart
	free     func(string) (uint64, error)
	ttl      time.Duration // how long a free-space reading is reused

	mu     sync.Mutex
	at     time.Time
	last   uint64
	lastOK error
	now    func() time.Time
	bytes  atomic.Uint64 // the newest reading, for metrics
}

// NewSpace guards dir with reserve bytes (0 means DefaultReserveBytes).
// free measures a directory's free bytes; nil means FreeBytes (tests pass
// their own).
func NewSpace(dir string, reserve uint64, free func(string) (uint64, error)) *Space {
	if reserve == 0 {
		reserve = DefaultReserveBytes
	}
	if free == nil {
		free = FreeBytes
	}
	return &Space{dir: dir, reserve: reserve, free: free, ttl: 100 * time.Millisecond, now: time.Now}
}

// Dir is the guarded directory.
func (s *Space) Dir() string { return s.dir }

// Reserve is the free space kept, in bytes.
func (s *Space) Reserve() uint64 { return s.reserve }

// SetReadOnly records that the store was opened read-only because the
// disk was full at start: Check then always fails, saying so.
func (s *Space) SetReadOnly() { s.readOnly = true }

// ReadOnly reports whether SetReadOnly was called.
func (s *Space) ReadOnly() bool { return s.readOnly }

// FreeNow is the newest free-space reading in bytes (0 before the first).
func (s *Space) FreeNow() uint64 { return s.bytes.Load() }

// Check returns nil when a write may go ahead, or an error wrapping
// ErrDiskFull that says how much is free and what the reserve is.
func (s *Space) Check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	// A reading far above the reserve is reused for ttl; near it, every
	// batch measures, so that refusal and resumption are at once.
	if s.at.IsZero() || now.Sub(s.at) >= s.ttl || s.last < 2*s.reserve {
		free, err := s.free(s.dir)
		s.at = now
		if err != nil {
			// Not knowing is not full: refusing every write on a statfs
			// error would turn a monitoring failure into an outage.
			free = s.reserve
		}
		s.last = free
		s.bytes.Store(free)
		s.lastOK = nil
		if free < s.reserve {
			s.lastOK = fmt.Errorf("%w: %d bytes free in %s, reserve %d", ErrDiskFull, free, s.dir, s.reserve)
		}
	}
	if s.readOnly {
		return fmt.Errorf("%w: the store was opened read-only on a full disk (%d bytes free in %s, reserve %d); free space and restart the node", ErrDiskFull, s.last, s.dir, s.reserve)
	}
	return s.lastOK
}
