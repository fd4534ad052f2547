package postgres_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store/postgres"
	"github.com/opentrack/opentrack/node/store/postgres/pgtest"
)

func TestMigrate(t *testing.T) {
	url := pgtest.URL(t)
	ctx := t.Context()

	// A fresh database with migrations off is refused, not half-used.
	_, err := postgres.Open(ctx, &postgres.Options{URL: url, SkipMigrate: true})
	require.ErrorIs(t, err, postgres.ErrSchemaTooOld)

	from, to, err := postgres.Migrate(ctx, &postgres.Options{URL: url})
	require.NoError(t, err)
	require.Equal(t, 0, from)
	require.Equal(t, postgres.SchemaVersion, to)
	from, to, err = postgres.Migrate(ctx, &postgres.Options{URL: url})
	require.NoError(t, err)
	require.Equal(t, postgres.SchemaVersion, from)
	require.Equal(t, postgres.SchemaVersion, to)
	s, err := postgres.Open(ctx, &postgres.Options{URL: url, SkipMigrate: true})
	require.NoError(t, err)
	require.NoError(t, s.Close())

	// A schema from a newer build: refuse to start, and to migrate.
	_, err = connect(t, url).Exec(ctx, `INSERT INTO ot_schema (version, applied) VALUES ($1, 0)`, postgres.SchemaVersion+1)
	require.NoError(t, err)
	_, err = postgres.Open(ctx, &postgres.Options{URL: url})
	require.ErrorIs(t, err, postgres.ErrSchemaTooNew)
	_, err = postgres.Open(ctx, &postgres.Options{URL: url, SkipMigrate: true})
	require.ErrorIs(t, err, postgres.ErrSchemaTooNew)
	_, _, err = postgres.Migrate(ctx, &postgres.Options{URL: url})
	require.ErrorIs(t, err, postgres.ErrSchemaTooNew)
}

// TestMigrateRace starts several replicas at once on a new database: one
// migrates, the others wait their turn, and all share one store id.
func TestMigrateRace(t *testing.T) {
	url := pgtest.URL(t)
	const n = 4
	stores := make([]*postgres.Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = postgres.Open(t.Context(), &postgres.Options{URL: url}) })
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, stores[0].ID(), stores[i].ID())
	}
	for _, s := range stores {
		require.NoError(t, s.Close())
	}
}

// TestUnavailable: a database that does not answer is a clear error, and
// the password never shows in it.
func TestUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = postgres.Open(ctx, &postgres.Options{URL: "postgres://ot:s3cret-pw@" + addr + "/db", ConnectTimeout: time.Second})
	require.ErrorIs(t, err, postgres.ErrUnavailable)
	require.NotContains(t, err.Error(), "s3cret-pw")
	_, err = postgres.Open(ctx, &postgres.Options{URL: "postgres://ot:s3cret-pw@" + addr + "/db?connect_timeout=nonsense"})
	require.ErrorIs(t, err, postgres.ErrOptions)
	require.NotContains(t, err.Error(), "s3cret-pw")
}

func TestOptions(t *testing.T) {
	o := postgres.Options{MaxConns: 1, ConnectTimeout: -1, PollInterval: time.Millisecond}
	err := o.Validate()
	require.ErrorIs(t, err, postgres.ErrOptions)
	for _, want := range []string{"URL", "MaxConns", "ConnectTimeout", "PollInterval"} {
		require.Contains(t, err.Error(), want)
	}
	o = postgres.Options{URL: "postgres://x"}
	o.EnsureDefaults()
	require.NoError(t, o.Validate())
	require.Equal(t, int32(8), o.MaxConns)
	require.Equal(t, time.Second, o.PollInterval)
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://ot:pw@db:5432/x?sslmode=disable": "postgres://ot:xxxxx@db:5432/x?sslmode=disable",
		"postgres://db/x?password=pw&user=ot":        "postgres://db/x?password=xxxxx&user=ot",
		"host=db user=ot password=pw dbname=x":       "host=db user=ot password=xxxxx dbname=x",
		"postgres://ot@db/x":                         "postgres://ot@db/x",
	} {
		got := postgres.Redact(in)
		require.Equal(t, want, got)
		require.False(t, strings.Contains(got, "pw"))
	}
}
