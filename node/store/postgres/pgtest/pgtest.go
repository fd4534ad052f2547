// Package pgtest gives tests a PostgreSQL database of their own. Tests
// find the server through the OPENTRACK_TEST_POSTGRES environment
// variable, a connection URL; without it they are skipped. `make test`
// starts a throwaway cluster and sets it (scripts/testpg.sh).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Env is the environment variable that holds the test server's URL.
const Env = "OPENTRACK_TEST_POSTGRES"

// URL returns a connection URL to a new, empty schema on the test server,
// which is dropped when the test ends. It skips the test when Env is not
// set.
func URL(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(Env)
	if base == "" {
		tb.Skipf("pgtest: %s is not set; run `make test`, or scripts/testpg.sh run go test ./..., to test against PostgreSQL", Env)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return Schema(tb, "t_"+hex.EncodeToString(b[:]))
}

// Schema returns a connection URL to the named schema on the test server,
// creating it if it does not exist, and drops it when the test ends. Two
// calls with one name share the schema, as two replicas share a database.
func Schema(tb testing.TB, name string) string {
	tb.Helper()
	base := os.Getenv(Env)
	if base == "" {
		tb.Skipf("pgtest: %s is not set", Env)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatalf("pgtest: connect to %s: %v", Env, err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+ident); err != nil {
		tb.Fatalf("pgtest: create schema: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			tb.Errorf("pgtest: connect: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+ident+` CASCADE`); err != nil {
			tb.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("pgtest: %s is not a URL: %v", Env, err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}
