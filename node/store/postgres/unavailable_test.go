package postgres_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/postgres"
	"github.com/opentrack/opentrack/node/store/postgres/pgtest"
	"github.com/opentrack/opentrack/node/store/storetest"
)

// TestDatabaseDies: when the database goes away under a running store,
// every call fails with ErrUnavailable (never a panic, never a hang past
// its context), and nothing half-written shows once it is back.
func TestDatabaseDies(t *testing.T) {
	direct := pgtest.URL(t)
	u, err := url.Parse(direct)
	require.NoError(t, err)
	p := pgtest.StartProxy(t, "127.0.0.1:0", u.Host)
	u.Host = p.Addr()
	ctx := t.Context()
	s, err := postgres.Open(ctx, &postgres.Options{URL: u.String(), ConnectTimeout: time.Second, PollInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	defer s.Close()
	up, c := storetest.NewChain(storetest.Number(1)).Update(t, 0, 1)
	res, err := s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{up}})
	require.NoError(t, err)

	p.Cut()
	next, _ := c.Update(t, res.ParcelIDs[0], 1)
	_, err = s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{next}})
	require.ErrorIs(t, err, postgres.ErrUnavailable)
	_, err = s.Parcel(ctx, storetest.Number(1))
	require.ErrorIs(t, err, postgres.ErrUnavailable)
	_, err = s.FeedTail(ctx)
	require.ErrorIs(t, err, postgres.ErrUnavailable)
	require.NoError(t, s.Close(), "a store closes while its database is away")

	back := open(t, direct)
	defer back.Close()
	got, err := back.Parcel(ctx, storetest.Number(1))
	require.NoError(t, err)
	require.Equal(t, uint64(0), got.Seq, "the failed append left nothing")
}
