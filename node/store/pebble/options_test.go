package pebble

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store/storetest"
)

// TestCacheHoldsBlocks guards the cache sizing: pebble reserves its
// memtables in the block cache, and 64 MiB of them once left a 64 MiB
// cache no room, so that every read went to the file system.
func TestCacheHoldsBlocks(t *testing.T) {
	s, err := Open(t.TempDir(), &Options{CacheSize: 1 << 20, MemTableSize: 4 << 20})
	require.NoError(t, err)
	defer s.Close()
	// Pebble starts with a small memtable and doubles the next one, up to
	// MemTableSize, each time one fills up.
	filler := make([]byte, 64<<10)
	for i := range 256 {
		require.NoError(t, s.db.Set([]byte(fmt.Sprintf("~filler%04d", i)), filler, nil))
	}
	u, _ := storetest.NewChain(storetest.Number(1)).Update(t, 0, 3)
	_, err = appendOne(t, s, u)
	require.NoError(t, err)
	require.NoError(t, s.db.Flush())
	for range 3 {
		_, err := s.Parcel(t.Context(), storetest.Number(1))
		require.NoError(t, err)
	}
	m := s.Metrics()
	require.Equal(t, uint64(4<<20), m.MemTable.Size/uint64(m.MemTable.Count), "memtables at MemTableSize")
	require.Positive(t, m.BlockCache.Size, "blocks in the cache")
	require.Positive(t, m.BlockCache.Hits, "reads served from the cache")
}
