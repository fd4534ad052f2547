package pebble

import (
	"context"
	"fmt"
)

// Compact flushes the memtable and compacts the whole key space into the
// bottom level: the state a long-running store converges to, and what
// disk use per event is measured on. It can take minutes on a large store
// and competes with ingest for I/O; run it off-peak or on a stopped node.
func (s *Store) Compact(ctx context.Context) error {
	if err := s.db.Flush(); err != nil {
		return fmt.Errorf("pebble: flush: %w", err)
	}
	if err := s.db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
		return fmt.Errorf("pebble: compact: %w", err)
	}
	return nil
}
