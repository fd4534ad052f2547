package pebble

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/storetest"
)

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), &Options{CacheSize: 8 << 20, MemTableSize: 4 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func appendOne(t *testing.T, s *Store, u store.ParcelUpdate) (uint64, error) {
	t.Helper()
	res, err := s.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	if err != nil {
		return 0, err
	}
	return res.ParcelIDs[0], nil
}

// TestParcelsThenAppend is ingest's path: the heads Parcels read serve the
// guards of the append that follows, and the parcels they return are the
// caller's own.
func TestParcelsThenAppend(t *testing.T) {
	s := openTest(t)
	u, c := storetest.NewChain(storetest.Number(1)).Update(t, 0, 1)
	id, err := appendOne(t, s, u)
	require.NoError(t, err)

	got, err := s.Parcels(t.Context(), []string{storetest.Number(1), storetest.Number(2)})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, id, got[0].ID)
	require.Nil(t, got[1])

	u1, c := c.Update(t, id, 1)
	u2, _ := storetest.NewChain(storetest.Number(2)).Update(t, 0, 1)
	_, err = s.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u1, u2}})
	require.NoError(t, err)
	require.Empty(t, s.recent.heads, "the append took the records it used")
	require.Equal(t, uint64(0), got[0].Seq, "the caller's record did not change")

	p, err := s.Parcel(t.Context(), storetest.Number(1))
	require.NoError(t, err)
	require.Equal(t, uint64(1), p.Seq)
	require.Equal(t, c.Head, p.Head)
}

// TestRecentHeadsStale keeps a record that an append changed after it was
// read, as a Parcels call racing that append would: the next append must
// not trust it, however long ago the change was.
func TestRecentHeadsStale(t *testing.T) {
	for _, commitsAfter := range []int{0, recentCommits} {
		s := openTest(t)
		n := storetest.Number(1)
		u, c := storetest.NewChain(n).Update(t, 0, 1)
		id, err := appendOne(t, s, u)
		require.NoError(t, err)

		gen := s.recent.generation()
		stale, err := s.Parcel(t.Context(), n)
		require.NoError(t, err)
		next, _ := c.Update(t, id, 1)
		_, err = appendOne(t, s, next)
		require.NoError(t, err)
		for i := range commitsAfter {
			other, _ := storetest.NewChain(storetest.Number(100+i)).Update(t, 0, 1)
			_, err = appendOne(t, s, other)
			require.NoError(t, err)
		}
		s.recent.put([]string{n}, []*store.Parcel{stale}, gen)

		// A writer still at seq 0 must be refused: the record says seq 0,
		// the store has seq 1.
		again, _ := c.Update(t, id, 1)
		_, err = appendOne(t, s, again)
		require.ErrorIs(t, err, store.ErrConflict, "%d commits after the change", commitsAfter)
	}
}

// TestRecentHeadsNew keeps "no parcel" for a number that a racing append
// then creates: a second New update must recycle the number, not overwrite
// the parcel as if it were the first.
func TestRecentHeadsNew(t *testing.T) {
	s := openTest(t)
	n := storetest.Number(1)
	gen := s.recent.generation()
	u, _ := storetest.NewChain(n).Update(t, 0, 1)
	first, err := appendOne(t, s, u)
	require.NoError(t, err)
	s.recent.put([]string{n}, []*store.Parcel{nil}, gen)

	second, err := appendOne(t, s, u)
	require.NoError(t, err)
	old, err := s.ParcelByID(t.Context(), first)
	require.NoError(t, err, "the first parcel moved to its id key")
	require.Equal(t, n, old.Number)
	p, err := s.Parcel(t.Context(), n)
	require.NoError(t, err)
	require.Equal(t, second, p.ID)
}
