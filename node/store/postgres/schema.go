package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opentrack/opentrack/node/store"
)

// Schema errors.
var (
	// ErrSchemaTooNew means the database was migrated by a newer build:
	// this one would misread it, so it refuses to start.
	ErrSchemaTooNew = errors.New("postgres: database schema is newer than this build")
	// ErrSchemaTooOld means the database needs migrations that Open was
	// told not to apply (Options.SkipMigrate).
	ErrSchemaTooOld = errors.New("postgres: database schema is older than this build (run opentrack migrate)")
)

// migrations are the schema versions, in order: migrations[i] takes the
// schema from version i to i+1. Released ones never change; a change is
// a new entry. doc.go explains the tables and why each index exists.
// Every statement stays within what CockroachDB and YugabyteDB accept.
var migrations = [][]string{
	{
		`CREATE TABLE ot_meta (
			singleton INT PRIMARY KEY CHECK (singleton = 1),
			store_id  TEXT NOT NULL,
			feed_tail BIGINT NOT NULL,
			parcels   BIGINT NOT NULL,
			events    BIGINT NOT NULL
		)`,
		`CREATE TABLE ot_parcels (
			id          BIGINT PRIMARY KEY,
			number      TEXT NOT NULL,
			genesis     BYTEA NOT NULL,
			seq         BIGINT NOT NULL,
			head        BYTEA NOT NULL,
			signed_head BYTEA NOT NULL,
			audience    BYTEA NOT NULL,
			created     BIGINT NOT NULL
		)`,
		`CREATE TABLE ot_numbers (
			number    TEXT PRIMARY KEY,
			parcel_id BIGINT NOT NULL
		)`,
		`CREATE TABLE ot_events (
			parcel_id BIGINT NOT NULL,
			seq       BIGINT NOT NULL,
			body      BYTEA NOT NULL,
			PRIMARY KEY (parcel_id, seq)
		)`,
		`CREATE TABLE ot_event_ids (
			id        TEXT PRIMARY KEY,
			parcel_id BIGINT NOT NULL,
			seq       BIGINT NOT NULL,
			cid       BYTEA NOT NULL
		)`,
		`CREATE TABLE ot_feed (
			pos       BIGINT PRIMARY KEY,
			parcel_id BIGINT NOT NULL,
			number    TEXT NOT NULL,
			from_seq  BIGINT NOT NULL,
			to_seq    BIGINT NOT NULL
		)`,
		`CREATE TABLE ot_details (
			parcel_id BIGINT PRIMARY KEY,
			body      BYTEA NOT NULL
		)`,
		`CREATE TABLE ot_grants (
			id      TEXT PRIMARY KEY,
			issued  BIGINT NOT NULL,
			body    BYTEA NOT NULL,
			signed  BYTEA NOT NULL,
			revoked BIGINT NOT NULL
		)`,
		`CREATE INDEX ot_grants_issued ON ot_grants (issued, id)`,
		`CREATE TABLE ot_audit (
			seq      BIGINT PRIMARY KEY,
			time     BIGINT NOT NULL,
			peer     TEXT NOT NULL,
			grant_id TEXT NOT NULL,
			number   TEXT NOT NULL,
			fields   TEXT[] NOT NULL,
			allowed  BOOLEAN NOT NULL,
			reason   TEXT NOT NULL
		)`,
		`CREATE INDEX ot_audit_peer ON ot_audit (peer, seq)`,
		`CREATE SEQUENCE ot_parcel_ids`,
		`CREATE SEQUENCE ot_audit_seqs`,
	},
}

// SchemaVersion is the schema version this build reads and writes.
var SchemaVersion = len(migrations)

// Migrate applies the migrations the database at opts.URL lacks, and
// creates the store's id on a new database. It returns the schema
// version before and after. It is what `opentrack migrate` runs; Open
// runs it too unless opts.SkipMigrate.
func Migrate(ctx context.Context, opts *Options) (from, to int, err error) {
	o, err := prepare(opts)
	if err != nil {
		return 0, 0, err
	}
	pool, err := connect(ctx, o)
	if err != nil {
		return 0, 0, err
	}
	defer pool.Close()
	return migrate(ctx, pool)
}

// migrate brings the schema up to SchemaVersion. Replicas that start
// together may race to migrate: each migration is one transaction that
// records its version, so one of them wins and the others fail on a
// duplicate. They then read the version again and carry on from it.
func migrate(ctx context.Context, pool *pgxpool.Pool) (from, to int, err error) {
	from = -1
	for attempt := 0; ; attempt++ {
		v, err := migrateOnce(ctx, pool, &from)
		if err == nil || errors.Is(err, ErrSchemaTooNew) || attempt >= 3 || ctx.Err() != nil {
			return max(from, 0), v, err
		}
		select {
		case <-ctx.Done():
			return max(from, 0), v, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		}
	}
}

func migrateOnce(ctx context.Context, pool *pgxpool.Pool, from *int) (int, error) {
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS ot_schema (version INT PRIMARY KEY, applied BIGINT NOT NULL)`); err != nil {
		return 0, wrap("create schema table", err)
	}
	v, err := schemaVersion(ctx, pool)
	if err != nil {
		return 0, err
	}
	if *from < 0 {
		*from = v
	}
	if v > SchemaVersion {
		return v, fmt.Errorf("%w: version %d, this build knows %d", ErrSchemaTooNew, v, SchemaVersion)
	}
	for ; v < SchemaVersion; v++ {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for _, stmt := range migrations[v] {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, `INSERT INTO ot_schema (version, applied) VALUES ($1, $2)`, v+1, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return v, wrap(fmt.Sprintf("migrate to version %d", v+1), err)
		}
	}
	_, err = pool.Exec(ctx, `INSERT INTO ot_meta (singleton, store_id, feed_tail, parcels, events)
		VALUES (1, $1, 0, 0, 0) ON CONFLICT (singleton) DO NOTHING`, store.NewID())
	if err != nil {
		return v, wrap("create store id", err)
	}
	return v, nil
}

// schemaVersion returns the newest version recorded, 0 for none.
func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v int
	if err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM ot_schema`).Scan(&v); err != nil {
		return 0, wrap("read schema version", err)
	}
	return v, nil
}

// querier is what a pool, a connection and a transaction share.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}
