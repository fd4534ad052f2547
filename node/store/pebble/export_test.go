package pebble

import (
	"context"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/opentrack/opentrack/node/store"
)

// AppendNoSync is Append without the fsync, for building benchmark stores
// quickly; the node never skips it.
func (s *Store) AppendNoSync(ctx context.Context, b *store.Batch) (*store.AppendResult, error) {
	return s.append(ctx, b, pebbledb.NoSync)
}

// CompactAll flushes the memtable and compacts the whole key space, the
// state a long-running store converges to.
func (s *Store) CompactAll(ctx context.Context) error {
	if err := s.db.Flush(); err != nil {
		return err
	}
	return s.db.Compact(ctx, []byte{0}, []byte{0xff}, true)
}

// Metrics exposes pebble's metrics to benchmarks.
func (s *Store) Metrics() *pebbledb.Metrics { return s.db.Metrics() }
