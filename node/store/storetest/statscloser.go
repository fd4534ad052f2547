package storetest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
)

// RunStatsCloser runs the suite of the store.StatsCloser role: sizes,
// and every method failing with store.ErrClosed after Close. open must
// return a new, empty store each time it is called.
func RunStatsCloser(t *testing.T, open func(t *testing.T) store.Store) {
	run(t, open, []test{
		{"Stats", testStats},
		{"Close", testClose},
	})
}

func testStats(t *testing.T, s store.Store) {
	ctx := t.Context()
	st, err := s.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Parcels)
	require.Zero(t, st.Events)
	p := create(t, s, Number(1), 3)
	create(t, s, Number(2), 2)
	grow(t, s, p, 4)
	create(t, s, Number(1), 1) // a recycled number is another parcel
	st, err = s.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(3), st.Parcels)
	require.Equal(t, uint64(10), st.Events)
}

func testClose(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := create(t, s, Number(1), 1)
	id := s.ID()
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Close(), store.ErrClosed)
	require.Equal(t, id, s.ID())

	u, _ := p.chain.Update(t, p.id, 1)
	calls := map[string]func() error{
		"Append": func() error {
			_, err := s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{u}})
			return err
		},
		"Parcel":         func() error { _, err := s.Parcel(ctx, Number(1)); return err },
		"ParcelByID":     func() error { _, err := s.ParcelByID(ctx, p.id); return err },
		"Events":         func() error { _, err := s.Events(ctx, p.id, 0, 0); return err },
		"LookupEventIDs": func() error { _, err := s.LookupEventIDs(ctx, []string{"x"}); return err },
		"Feed":           func() error { _, err := s.Feed(ctx, 0, 0); return err },
		"FeedTail":       func() error { _, err := s.FeedTail(ctx); return err },
		"WaitFeed":       func() error { return s.WaitFeed(ctx, 1) },
		"Details":        func() error { _, err := s.Details(ctx, p.id); return err },
		"PutGrant":       func() error { return s.PutGrant(ctx, testGrant("11111111111111111111111111111111", baseTime)) },
		"Grant":          func() error { _, err := s.Grant(ctx, "11111111111111111111111111111111"); return err },
		"RevokeGrant":    func() error { return s.RevokeGrant(ctx, "11111111111111111111111111111111", 1) },
		"Grants":         func() error { _, err := s.Grants(ctx); return err },
		"AppendAudit":    func() error { return s.AppendAudit(ctx, []store.AuditEntry{{Time: 1}}) },
		"Audit":          func() error { _, err := s.Audit(ctx, store.AuditQuery{}); return err },
		"Stats":          func() error { _, err := s.Stats(ctx); return err },
	}
	for name, call := range calls {
		require.ErrorIs(t, call(), store.ErrClosed, name)
	}
}
