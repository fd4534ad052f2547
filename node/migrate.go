package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/store/postgres"
)

// ErrNoMigrations means a repo keeps its store in a backend without
// schema migrations (pebble).
var ErrNoMigrations = errors.New("node: the store has no schema migrations")

// Migration is what Migrate did to a PostgreSQL store's schema.
type Migration struct {
	// Store is the database URL with any password redacted.
	Store string `json:"store"`
	// From is the schema version found, To the version left.
	From int `json:"from_version"`
	To   int `json:"version"`
}

// Migrate applies the schema migrations a PostgreSQL store lacks: the
// store r's [store] names when r is not nil, else the one at url. A
// schema newer than this build's is left alone.
func Migrate(ctx context.Context, r *repo.Repo, url string) (*Migration, error) {
	opts := &postgres.Options{URL: url}
	if r != nil {
		if r.Config.Store.Backend != repo.BackendPostgres {
			return nil, fmt.Errorf("%w: %s keeps its store in %s", ErrNoMigrations, r.Dir, r.Config.Store.Backend)
		}
		opts = PostgresOptions(r.Config.Store)
	}
	from, to, err := postgres.Migrate(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Migration{Store: postgres.Redact(opts.URL), From: from, To: to}, nil
}
