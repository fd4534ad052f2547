package pebble_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/node/store/storetest"
)

// testOptions keeps memtables and the cache small: the suite opens many
// stores at once and the defaults are sized for a node.
var testOptions = pebble.Options{CacheSize: 8 << 20, MemTableSize: 4 << 20}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := pebble.Open(t.TempDir(), &testOptions)
		require.NoError(t, err)
		return s
	})
}

func TestDurable(t *testing.T) {
	storetest.RunDurable(t, func(t *testing.T, dir string) store.Store {
		s, err := pebble.Open(dir, &testOptions)
		require.NoError(t, err)
		return s
	})
}

func TestOptions(t *testing.T) {
	var o pebble.Options
	o.EnsureDefaults()
	require.NoError(t, o.Validate())
	require.Equal(t, int64(64<<20), o.CacheSize)
	require.Equal(t, 4, o.MemTableStopWritesThreshold)
	require.Equal(t, 1000, o.L0StopWritesThreshold)

	bad := pebble.Options{
		CacheSize: -1, MemTableSize: 1, L0CompactionThreshold: 10, L0StopWritesThreshold: 5,
		Compression: "lz4", MaxConcurrentCompactions: -1,
	}
	bad.EnsureDefaults()
	err := bad.Validate()
	require.ErrorIs(t, err, pebble.ErrOptions)
	for _, want := range []string{"CacheSize", "MemTableSize", "L0StopWritesThreshold", "Compression", "MaxConcurrentCompactions"} {
		require.ErrorContains(t, err, want)
	}
	_, err = pebble.Open(t.TempDir(), &bad)
	require.ErrorIs(t, err, pebble.ErrOptions)
}
