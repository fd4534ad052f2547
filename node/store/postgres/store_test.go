package postgres_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/postgres"
	"github.com/opentrack/opentrack/node/store/postgres/pgtest"
	"github.com/opentrack/opentrack/node/store/storetest"
)

// open opens a store on url with a short poll, so that tests which rely
// on the poll fallback are quick.
func open(t *testing.T, url string) *postgres.Store {
	t.Helper()
	return openWith(t, url, false)
}

func openWith(t *testing.T, url string, noNotify bool) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), &postgres.Options{URL: url, PollInterval: 100 * time.Millisecond, DisableNotify: noNotify})
	require.NoError(t, err)
	return s
}

func TestConformance(t *testing.T) {
	pgtest.URL(t) // skips early without a server
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, pgtest.URL(t)) })
}

func TestDurable(t *testing.T) {
	pgtest.URL(t)
	// A directory stands for a database: the same directory, the same
	// schema.
	storetest.RunDurable(t, func(t *testing.T, dir string) store.Store {
		h := sha256.Sum256([]byte(dir))
		return open(t, pgtest.Schema(t, "d_"+hex.EncodeToString(h[:8])))
	})
}
