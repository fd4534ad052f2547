package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opentrack/opentrack/node/store"
)

// ErrUnavailable means the database could not be reached or dropped the
// connection: nothing is known to be written, and the caller may retry.
var ErrUnavailable = errors.New("postgres: database unavailable")

// ErrCorrupt means a row this build cannot read.
var ErrCorrupt = errors.New("postgres: corrupt row")

// Store is a store.Store on PostgreSQL, or a database that speaks its
// protocol. Several Stores, in one process or in several node replicas,
// may share one database: they share its parcels, its feed and its id.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	id   string

	// closeMu lets Close wait for calls in flight: every call holds it
	// for reading while it uses pool.
	closeMu sync.RWMutex
	closed  bool

	// signal holds the newest feed tail this store knows of, from its
	// own appends, notifications and polls, and wakes WaitFeed.
	signal *store.FeedSignal
	// stop ends the follower goroutine, which closes followed when done.
	stop     context.CancelFunc
	followed chan struct{}
}

var (
	_ store.Store          = (*Store)(nil)
	_ store.DetailsScanner = (*Store)(nil)
	_ store.HeadsReader    = (*Store)(nil)
)

// Open connects to the database, migrates its schema unless
// opts.SkipMigrate, and starts following its feed.
func Open(ctx context.Context, opts *Options) (*Store, error) {
	o, err := prepare(opts)
	if err != nil {
		return nil, err
	}
	pool, err := connect(ctx, o)
	if err != nil {
		return nil, err
	}
	s := &Store{pool: pool, opts: *o, followed: make(chan struct{})}
	if err := s.init(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	fctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.follow(fctx)
	return s, nil
}

// prepare copies opts with the defaults filled in and validates them.
func prepare(opts *Options) (*Options, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.EnsureDefaults()
	return &o, o.Validate()
}

// connect opens a pool and checks that the database answers.
func connect(ctx context.Context, o *Options) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(o.URL)
	if err != nil {
		// pgx's parse errors may quote the string, password included.
		return nil, fmt.Errorf("%w: URL %s does not parse", ErrOptions, Redact(o.URL))
	}
	cfg.MaxConns = o.MaxConns
	cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, wrap("connect", err)
	}
	pctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s: %w: %w", Redact(o.URL), ErrUnavailable, err)
	}
	return pool, nil
}

// init migrates (or checks the schema version) and reads the store id
// and the feed tail.
func (s *Store) init(ctx context.Context) error {
	if s.opts.SkipMigrate {
		v, err := schemaVersion(ctx, s.pool)
		if isCode(err, "42P01") { // undefined_table: a new database
			v, err = 0, nil
		}
		switch {
		case err != nil:
			return err
		case v > SchemaVersion:
			return fmt.Errorf("%w: version %d, this build knows %d", ErrSchemaTooNew, v, SchemaVersion)
		case v < SchemaVersion:
			return fmt.Errorf("%w: version %d, this build needs %d", ErrSchemaTooOld, v, SchemaVersion)
		}
	} else if _, _, err := migrate(ctx, s.pool); err != nil {
		return err
	}
	var tail int64
	if err := s.pool.QueryRow(ctx, `SELECT store_id, feed_tail FROM ot_meta WHERE singleton = 1`).Scan(&s.id, &tail); err != nil {
		return wrap("read store id", err)
	}
	s.signal = store.NewFeedSignal(uint64(tail))
	return nil
}

// wrap adds the operation to err and classifies it: a lost or refused
// connection is ErrUnavailable, a lost race ErrConflict, and a canceled
// context stays itself.
func wrap(op string, err error) error {
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("postgres: %s: %w", op, err)
	case errors.As(err, &pgErr):
		switch pgErr.Code {
		case "23505", "40001", "40P01": // unique_violation, serialization_failure, deadlock_detected
			return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrConflict, err)
		}
		if pgErr.Code[:2] == "08" || pgErr.Code[:2] == "57" { // connection exception, operator intervention
			return fmt.Errorf("postgres: %s: %w: %w", op, ErrUnavailable, err)
		}
		return fmt.Errorf("postgres: %s: %w", op, err)
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("postgres: %s: %w", op, store.ErrNotFound)
	}
	// Anything else from pgx without a server error is the connection:
	// refused, reset, timed out or closed.
	return fmt.Errorf("postgres: %s: %w: %w", op, ErrUnavailable, err)
}

// isCode reports whether err is a server error with this SQLSTATE.
func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// enter guards a call against Close; leave must follow when it is nil.
func (s *Store) enter(op string) error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return fmt.Errorf("postgres: %s: %w", op, store.ErrClosed)
	}
	return nil
}

func (s *Store) leave() { s.closeMu.RUnlock() }

// Stats implements store.Store. DiskBytes is what PostgreSQL reports for
// the store's tables and indexes, or 0 on databases that do not say.
func (s *Store) Stats(ctx context.Context) (store.Stats, error) {
	if err := s.enter("stats"); err != nil {
		return store.Stats{}, err
	}
	defer s.leave()
	var parcels, events int64
	if err := s.pool.QueryRow(ctx, `SELECT parcels, events FROM ot_meta WHERE singleton = 1`).Scan(&parcels, &events); err != nil {
		return store.Stats{}, wrap("stats", err)
	}
	st := store.Stats{Parcels: uint64(parcels), Events: uint64(events)}
	var disk int64
	err := s.pool.QueryRow(ctx, `SELECT pg_total_relation_size('ot_events') + pg_total_relation_size('ot_parcels')
		+ pg_total_relation_size('ot_numbers') + pg_total_relation_size('ot_event_ids') + pg_total_relation_size('ot_feed')
		+ pg_total_relation_size('ot_details')`).Scan(&disk)
	if err == nil {
		st.DiskBytes = uint64(disk)
	}
	return st, nil
}

// Close implements store.Store. It waits for calls in flight, stops
// following the feed, wakes feed waiters and closes the pool.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return fmt.Errorf("postgres: close: %w", store.ErrClosed)
	}
	s.closed = true
	s.stop()
	<-s.followed
	s.signal.Close()
	s.pool.Close()
	return nil
}
