package postgres

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
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

// parcelColumns are the columns scanParcel reads, in order.
const parcelColumns = `p.id, p.number, p.genesis, p.seq, p.head, p.signed_head, p.audience, p.created`

func scanParcel(row pgx.Row) (*store.Parcel, error) {
	var p store.Parcel
	var id, seq int64
	var genesis, head []byte
	var audience []byte
	if err := row.Scan(&id, &p.Number, &genesis, &seq, &head, &p.SignedHead, &audience, &p.Created); err != nil {
		return nil, err
	}
	p.ID, p.Seq = uint64(id), uint64(seq)
	var err error
	if p.Genesis, err = cid.Cast(genesis); err != nil {
		return nil, fmt.Errorf("%w: parcel %d genesis: %v", ErrCorrupt, id, err)
	}
	if p.Head, err = cid.Cast(head); err != nil {
		return nil, fmt.Errorf("%w: parcel %d head: %v", ErrCorrupt, id, err)
	}
	if len(audience) > 0 {
		if err := protocol.Unmarshal(audience, &p.Audience); err != nil {
			return nil, fmt.Errorf("%w: parcel %d audience: %v", ErrCorrupt, id, err)
		}
	}
	return &p, nil
}

// encodeAudience is the audience column: CBOR, empty for none. Not a
// TEXT[]: an array of arrays does not unnest into rows, and the audience
// goes into one UPDATE for all parcels of a batch.
func encodeAudience(audience []string) ([]byte, error) {
	if len(audience) == 0 {
		return []byte{}, nil
	}
	return protocol.Marshal(audience)
}

// Append implements store.Store: one transaction. It locks the number
// rows of the batch's parcels (SELECT ... FOR UPDATE), so that guards are
// checked against heads no other writer can move until commit, writes
// events with COPY and the rest in one pipelined batch, and takes the
// feed positions last, under the lock of the single ot_meta row; doc.go
// explains why that makes the feed safe to follow.
func (s *Store) Append(ctx context.Context, b *store.Batch) (*store.AppendResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := s.enter("append"); err != nil {
		return nil, err
	}
	defer s.leave()
	res := &store.AppendResult{ParcelIDs: make([]uint64, len(b.Updates))}
	if len(b.Updates) == 0 {
		tail, err := s.feedTail(ctx)
		res.FeedTail = tail
		return res, err
	}
	var tail uint64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		tail, err = s.append(ctx, tx, b, res)
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrInvalid) || errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		return nil, wrap("append", err)
	}
	s.signal.Advance(tail)
	res.FeedTail = tail
	return res, nil
}

// append runs the statements of one Append in tx and returns the new
// feed tail.
func (s *Store) append(ctx context.Context, tx pgx.Tx, b *store.Batch, res *store.AppendResult) (uint64, error) {
	numbers := b.Numbers()
	slices.Sort(numbers) // lock order, so that two batches cannot deadlock
	// The heads are read by a second statement, after the locks are
	// held: in READ COMMITTED a statement that waited for a row lock sees
	// the locked row's newest version but the other rows of its join as
	// they were when it started, which would be a stale head.
	var lock pgx.Batch
	lock.Queue(`SELECT number FROM ot_numbers WHERE number = ANY($1) ORDER BY number FOR UPDATE`, numbers)
	heads := make(map[string]*store.Parcel, len(numbers))
	lock.Queue(`SELECT `+parcelColumns+` FROM ot_numbers n JOIN ot_parcels p ON p.id = n.parcel_id
		WHERE n.number = ANY($1)`, numbers).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			p, err := scanParcel(rows)
			if err != nil {
				return err
			}
			heads[p.Number] = p
		}
		return rows.Err()
	})
	if err := tx.SendBatch(ctx, &lock).Close(); err != nil {
		return 0, wrap("lock parcels", err)
	}
	var ids []int64
	nNew := countNew(b.Updates)
	if nNew > 0 {
		var err error
		if ids, err = s.newIDs(ctx, tx, nNew); err != nil {
			return 0, err
		}
	}
	var events [][]any
	eventIDs := map[string]eventRef{}
	var feed []store.FeedEntry
	nEvents := 0
	newID := func() uint64 { id := ids[0]; ids = ids[1:]; return uint64(id) }
	order, err := b.Apply(heads, newID, time.Now().UnixMilli(), func(i int, a *store.Applied) error {
		u := &b.Updates[i]
		for _, e := range u.Events {
			events = append(events, []any{int64(a.ID), int64(e.Seq), e.Bytes})
			if e.ID != "" {
				eventIDs[e.ID] = eventRef{int64(a.ID), int64(e.Seq), e.CID.Bytes()}
			}
		}
		nEvents += len(u.Events)
		feed = append(feed, store.FeedEntry{ParcelID: a.ID, Number: a.Number, FromSeq: u.Events[0].Seq, ToSeq: a.Seq})
		res.ParcelIDs[i] = a.ID
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: %w", err)
	}
	if err := s.mergeDetails(ctx, tx, order); err != nil {
		return 0, err
	}

	if err := copyRows(ctx, tx, "ot_events", []string{"parcel_id", "seq", "body"}, events); err != nil {
		return 0, err
	}
	if err := putEventIDs(ctx, tx, eventIDs); err != nil {
		return 0, err
	}
	// Set-based writes, one statement each however many parcels: a
	// statement a row costs the server a round of parse, plan and execute
	// each, which made continued parcels several times slower to ingest.
	var newParcels [][]any
	var upd struct {
		ids, seqs     []int64
		heads, signed [][]byte
		audiences     [][]byte
	}
	var nums struct {
		insert, update       []string
		insertIDs, updateIDs []int64
	}
	var dets struct {
		ids    []int64
		bodies [][]byte
	}
	for _, a := range order {
		aud, err := encodeAudience(a.Audience)
		if err != nil {
			return 0, fmt.Errorf("postgres: audience of parcel %d: %w", a.ID, err)
		}
		if a.New {
			newParcels = append(newParcels, []any{int64(a.ID), a.Number, a.Genesis.Bytes(), int64(a.Seq), a.Head.Bytes(), a.SignedHead, aud, a.Created})
		} else {
			upd.ids, upd.seqs = append(upd.ids, int64(a.ID)), append(upd.seqs, int64(a.Seq))
			upd.heads, upd.signed, upd.audiences = append(upd.heads, a.Head.Bytes()), append(upd.signed, a.SignedHead), append(upd.audiences, aud)
		}
		_, taken := heads[a.Number] // the number has a row in ot_numbers (Apply never adds one)
		switch {
		case !a.New || !a.Newest:
		case taken:
			nums.update, nums.updateIDs = append(nums.update, a.Number), append(nums.updateIDs, int64(a.ID))
		default:
			nums.insert, nums.insertIDs = append(nums.insert, a.Number), append(nums.insertIDs, int64(a.ID))
		}
		if a.Details != nil {
			d, err := protocol.Marshal(a.Details)
			if err != nil {
				return 0, fmt.Errorf("postgres: details of parcel %d: %w", a.ID, err)
			}
			dets.ids, dets.bodies = append(dets.ids, int64(a.ID)), append(dets.bodies, d)
		}
	}
	var q pgx.Batch
	if len(upd.ids) > 0 {
		q.Queue(`UPDATE ot_parcels AS p SET seq = u.seq, head = u.head, signed_head = u.signed, audience = u.audience
			FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BYTEA[], $4::BYTEA[], $5::BYTEA[]) AS u (id, seq, head, signed, audience)
			WHERE p.id = u.id`, upd.ids, upd.seqs, upd.heads, upd.signed, upd.audiences)
	}
	if len(nums.update) > 0 {
		q.Queue(`UPDATE ot_numbers AS n SET parcel_id = u.id FROM unnest($1::TEXT[], $2::BIGINT[]) AS u (number, id)
			WHERE n.number = u.number`, nums.update, nums.updateIDs)
	}
	if len(nums.insert) > 0 {
		// A number another writer starts meanwhile makes this insert wait
		// for it and then fail on the key: a conflict.
		q.Queue(`INSERT INTO ot_numbers (number, parcel_id) SELECT * FROM unnest($1::TEXT[], $2::BIGINT[])`, nums.insert, nums.insertIDs)
	}
	if len(dets.ids) > 0 {
		q.Queue(`INSERT INTO ot_details (parcel_id, body) SELECT * FROM unnest($1::BIGINT[], $2::BYTEA[])
			ON CONFLICT (parcel_id) DO UPDATE SET body = excluded.body`, dets.ids, dets.bodies)
	}
	if err := copyRows(ctx, tx, "ot_parcels", []string{"id", "number", "genesis", "seq", "head", "signed_head", "audience", "created"}, newParcels); err != nil {
		return 0, err
	}
	// The feed positions come last: the ot_meta row stays locked from
	// here to the commit, and every other append waits for it.
	var tail int64
	q.Queue(`UPDATE ot_meta SET feed_tail = feed_tail + $1, parcels = parcels + $2, events = events + $3
		WHERE singleton = 1 RETURNING feed_tail`, len(feed), nNew, nEvents).QueryRow(func(row pgx.Row) error {
		return row.Scan(&tail)
	})
	if err := tx.SendBatch(ctx, &q).Close(); err != nil {
		return 0, wrap("write parcels", err)
	}
	first := tail - int64(len(feed))
	feedRows := make([][]any, len(feed))
	for i, e := range feed {
		feedRows[i] = []any{first + int64(i) + 1, int64(e.ParcelID), e.Number, int64(e.FromSeq), int64(e.ToSeq)}
	}
	if err := copyRows(ctx, tx, "ot_feed", []string{"pos", "parcel_id", "number", "from_seq", "to_seq"}, feedRows); err != nil {
		return 0, err
	}
	if !s.opts.DisableNotify {
		// Delivered at commit, and only if the transaction commits.
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel(), strconv.FormatInt(tail, 10)); err != nil {
			return 0, wrap("notify", err)
		}
	}
	return uint64(tail), nil
}

// eventRef is where an event id points.
type eventRef struct {
	parcelID, seq int64
	cid           []byte
}

// putEventIDs writes the event id index. An id stored before points to
// the new event afterwards, as in every backend (a recycled number's
// carrier may reuse its event ids); ingest has already answered repeats
// as duplicates. Not COPY: it cannot replace a row.
func putEventIDs(ctx context.Context, tx pgx.Tx, refs map[string]eventRef) error {
	if len(refs) == 0 {
		return nil
	}
	ids := make([]string, 0, len(refs))
	parcels := make([]int64, 0, len(refs))
	seqs := make([]int64, 0, len(refs))
	cids := make([][]byte, 0, len(refs))
	for id, r := range refs {
		ids, parcels, seqs, cids = append(ids, id), append(parcels, r.parcelID), append(seqs, r.seq), append(cids, r.cid)
	}
	_, err := tx.Exec(ctx, `INSERT INTO ot_event_ids (id, parcel_id, seq, cid)
		SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BYTEA[])
		ON CONFLICT (id) DO UPDATE SET parcel_id = excluded.parcel_id, seq = excluded.seq, cid = excluded.cid`,
		ids, parcels, seqs, cids)
	return wrap("write event ids", err)
}

// newIDs takes n parcel ids from the sequence.
func (s *Store) newIDs(ctx context.Context, tx pgx.Tx, n int) ([]int64, error) {
	rows, err := tx.Query(ctx, `SELECT nextval('ot_parcel_ids') FROM generate_series(1, $1)`, n)
	if err != nil {
		return nil, wrap("parcel ids", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, wrap("parcel ids", err)
	}
	return ids, nil
}

// mergeDetails lays the details a batch sets over the stored ones of
// the parcels it continues.
func (s *Store) mergeDetails(ctx context.Context, tx pgx.Tx, order []*store.Applied) error {
	var ids []int64
	byID := map[int64]*store.Applied{}
	for _, a := range order {
		if a.Details != nil && !a.New {
			ids = append(ids, int64(a.ID))
			byID[int64(a.ID)] = a
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `SELECT parcel_id, body FROM ot_details WHERE parcel_id = ANY($1)`, ids)
	if err != nil {
		return wrap("read details", err)
	}
	return eachDetailsRow(rows, func(id uint64, stored protocol.Details) (bool, error) {
		a := byID[int64(id)]
		maps.Copy(stored, a.Details)
		a.Details = stored
		return true, nil
	})
}

// copyRows writes rows into table with COPY, the fastest way in.
func copyRows(ctx context.Context, tx pgx.Tx, table string, columns []string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{table}, columns, pgx.CopyFromRows(rows)); err != nil {
		return wrap("copy into "+table, err)
	}
	return nil
}

func countNew(updates []store.ParcelUpdate) int {
	n := 0
	for i := range updates {
		if updates[i].New {
			n++
		}
	}
	return n
}

// channel is the NOTIFY channel of this store's feed. It carries the
// store id, so that stores in other schemas of one database do not wake
// each other.
func (s *Store) channel() string { return "opentrack_feed_" + s.id }

// Parcel implements store.Store.
func (s *Store) Parcel(ctx context.Context, number string) (*store.Parcel, error) {
	if err := s.enter("parcel"); err != nil {
		return nil, err
	}
	defer s.leave()
	p, err := scanParcel(s.pool.QueryRow(ctx, `SELECT `+parcelColumns+` FROM ot_numbers n JOIN ot_parcels p ON p.id = n.parcel_id
		WHERE n.number = $1`, number))
	if err != nil {
		return nil, wrap("parcel "+number, err)
	}
	return p, nil
}

// Parcels returns the newest parcel of each number, nil where a number
// has none, in one query. Ingest reads the heads of a batch with it.
func (s *Store) Parcels(ctx context.Context, numbers []string) ([]*store.Parcel, error) {
	if err := s.enter("parcels"); err != nil {
		return nil, err
	}
	defer s.leave()
	rows, err := s.pool.Query(ctx, `SELECT `+parcelColumns+` FROM ot_numbers n JOIN ot_parcels p ON p.id = n.parcel_id
		WHERE n.number = ANY($1)`, numbers)
	if err != nil {
		return nil, wrap("parcels", err)
	}
	defer rows.Close()
	byNumber := make(map[string]*store.Parcel, len(numbers))
	for rows.Next() {
		p, err := scanParcel(rows)
		if err != nil {
			return nil, wrap("parcels", err)
		}
		byNumber[p.Number] = p
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("parcels", err)
	}
	out := make([]*store.Parcel, len(numbers))
	for i, n := range numbers {
		out[i] = byNumber[n]
	}
	return out, nil
}

// ParcelByID implements store.Store.
func (s *Store) ParcelByID(ctx context.Context, id uint64) (*store.Parcel, error) {
	if err := s.enter("parcel by id"); err != nil {
		return nil, err
	}
	defer s.leave()
	p, err := scanParcel(s.pool.QueryRow(ctx, `SELECT `+parcelColumns+` FROM ot_parcels p WHERE p.id = $1`, int64(id)))
	if err != nil {
		return nil, wrap(fmt.Sprintf("parcel %d", id), err)
	}
	return p, nil
}

// Events implements store.Store: a range of the primary key.
func (s *Store) Events(ctx context.Context, parcelID uint64, from uint64, limit int) ([]store.Event, error) {
	if err := s.enter("events"); err != nil {
		return nil, err
	}
	defer s.leave()
	op := fmt.Sprintf("events of parcel %d", parcelID)
	var out []store.Event
	if from <= store.MaxSeq {
		lim := int64(limit)
		if limit <= 0 {
			lim = store.MaxSeq + 1
		}
		rows, err := s.pool.Query(ctx, `SELECT seq, body FROM ot_events WHERE parcel_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3`,
			int64(parcelID), int64(from), lim)
		if err != nil {
			return nil, wrap(op, err)
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Event, error) {
			var seq int64
			var e store.Event
			err := row.Scan(&seq, &e.Bytes)
			e.Seq = uint64(seq)
			return e, err
		})
		if err != nil {
			return nil, wrap(op, err)
		}
	}
	if len(out) == 0 {
		// An empty range is fine for a known parcel past its head.
		var one int
		if err := s.pool.QueryRow(ctx, `SELECT 1 FROM ot_parcels WHERE id = $1`, int64(parcelID)).Scan(&one); err != nil {
			return nil, wrap(op, err)
		}
		return nil, nil
	}
	return out, nil
}

// LookupEventIDs implements store.Store: one query on the event id key.
func (s *Store) LookupEventIDs(ctx context.Context, ids []string) (map[string]store.EventRef, error) {
	if err := s.enter("lookup event ids"); err != nil {
		return nil, err
	}
	defer s.leave()
	out := make(map[string]store.EventRef)
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT i.id, i.parcel_id, p.number, i.seq, i.cid FROM ot_event_ids i
		JOIN ot_parcels p ON p.id = i.parcel_id WHERE i.id = ANY($1)`, ids)
	if err != nil {
		return nil, wrap("lookup event ids", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var parcelID, seq int64
		var ref store.EventRef
		var c []byte
		if err := rows.Scan(&id, &parcelID, &ref.Number, &seq, &c); err != nil {
			return nil, wrap("lookup event ids", err)
		}
		ref.ParcelID, ref.Seq = uint64(parcelID), uint64(seq)
		if ref.CID, err = cid.Cast(c); err != nil {
			return nil, fmt.Errorf("%w: event %s cid: %v", ErrCorrupt, id, err)
		}
		out[id] = ref
	}
	return out, wrap("lookup event ids", rows.Err())
}

// Feed implements store.Store. Positions are taken under a row lock and
// committed in order, so every position up to the committed tail is
// readable and none below it can appear later; see doc.go.
func (s *Store) Feed(ctx context.Context, after uint64, limit int) ([]store.FeedEntry, error) {
	if err := s.enter("feed"); err != nil {
		return nil, err
	}
	defer s.leave()
	// Every watch subscription reads the feed after each wake-up, so the
	// common case is one query. It needs no upper bound: the committed
	// positions are always 1..tail, so whatever rows it sees above the
	// cursor are consecutive, other replicas' included. The database's
	// tail is asked for only when the cursor is beyond what this store
	// has heard of (another replica's, or one never issued).
	if after > s.signal.Tail() {
		tail, err := s.feedTail(ctx)
		if err != nil {
			return nil, err
		}
		if after > tail {
			return nil, fmt.Errorf("postgres: feed after %d (tail %d): %w", after, tail, store.ErrUnknownCursor)
		}
	}
	lim := int64(limit)
	if limit <= 0 {
		lim = 1<<63 - 1
	}
	rows, err := s.pool.Query(ctx, `SELECT pos, parcel_id, number, from_seq, to_seq FROM ot_feed
		WHERE pos > $1 ORDER BY pos LIMIT $2`, int64(after), lim)
	if err != nil {
		return nil, wrap("feed", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.FeedEntry, error) {
		var pos, parcelID, from, to int64
		var e store.FeedEntry
		err := row.Scan(&pos, &parcelID, &e.Number, &from, &to)
		e.Pos, e.ParcelID, e.FromSeq, e.ToSeq = uint64(pos), uint64(parcelID), uint64(from), uint64(to)
		return e, err
	})
	if err != nil {
		return nil, wrap("feed", err)
	}
	if len(out) > 0 {
		s.signal.Advance(out[len(out)-1].Pos)
	}
	return out, nil
}

// feedTail reads the committed feed tail and tells the signal about it.
func (s *Store) feedTail(ctx context.Context) (uint64, error) {
	var tail int64
	if err := s.pool.QueryRow(ctx, `SELECT feed_tail FROM ot_meta WHERE singleton = 1`).Scan(&tail); err != nil {
		return 0, wrap("feed tail", err)
	}
	s.signal.Advance(uint64(tail))
	return uint64(tail), nil
}

// FeedTail implements store.Store: the database's tail, which takes in
// other replicas' appends.
func (s *Store) FeedTail(ctx context.Context) (uint64, error) {
	if err := s.enter("feed tail"); err != nil {
		return 0, err
	}
	defer s.leave()
	return s.feedTail(ctx)
}

// WaitFeed implements store.Store. It wakes on this store's appends at
// once, on other replicas' within a notification's delivery, or, without
// notifications, within PollInterval.
func (s *Store) WaitFeed(ctx context.Context, after uint64) error {
	if after > s.signal.Tail() {
		// A cursor from another replica may be ahead of what this one
		// has heard of: ask the database before calling it unknown.
		if err := s.enter("wait feed"); err != nil {
			return err
		}
		_, err := s.feedTail(ctx)
		s.leave()
		if err != nil {
			return err
		}
	}
	if err := s.signal.Wait(ctx, after); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// follow keeps the signal up to date with other replicas' appends until
// ctx ends: it listens on the store's channel and, whenever a
// notification does not come within PollInterval or the listening
// connection is lost, reads the tail instead.
func (s *Store) follow(ctx context.Context) {
	defer close(s.followed)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil && !s.opts.DisableNotify {
			conn = s.listen(ctx)
		}
		if conn == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.opts.PollInterval):
			}
			s.poll(ctx)
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, s.opts.PollInterval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err == nil {
			if tail, perr := strconv.ParseUint(n.Payload, 10, 64); perr == nil {
				s.signal.Advance(tail)
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if conn.IsClosed() {
			conn = nil
		}
		s.poll(ctx)
	}
}

// listen opens the connection that LISTENs on the store's channel, or
// returns nil when the database cannot be reached. A notification sent
// before LISTEN took effect is never delivered, so it polls once after.
func (s *Store) listen(ctx context.Context) *pgx.Conn {
	cctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil
	}
	// The channel holds the store id, read from the database: quoted as
	// an identifier, not pasted.
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{s.channel()}.Sanitize()); err != nil {
		_ = conn.Close(context.Background())
		return nil
	}
	s.poll(ctx)
	return conn
}

// poll reads the tail; a failure is left to the next round. It needs no
// enter: Close stops the follower before it closes the pool.
func (s *Store) poll(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, s.opts.PollInterval)
	defer cancel()
	_, _ = s.feedTail(pctx)
}

// ID implements store.Store: the id kept in the database, so that all
// replicas on it share it and a cursor from one is good on another.
func (s *Store) ID() string { return s.id }

// Details implements store.Store.
func (s *Store) Details(ctx context.Context, parcelID uint64) (protocol.Details, error) {
	if err := s.enter("details"); err != nil {
		return nil, err
	}
	defer s.leave()
	var body []byte
	if err := s.pool.QueryRow(ctx, `SELECT body FROM ot_details WHERE parcel_id = $1`, int64(parcelID)).Scan(&body); err != nil {
		return nil, wrap(fmt.Sprintf("details of parcel %d", parcelID), err)
	}
	var d protocol.Details
	if err := protocol.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("%w: details of parcel %d: %v", ErrCorrupt, parcelID, err)
	}
	return d, nil
}

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

// DetailsOf implements store.DetailsScanner: one query.
func (s *Store) DetailsOf(ctx context.Context, ids []uint64) (map[uint64]protocol.Details, error) {
	if err := s.enter("details"); err != nil {
		return nil, err
	}
	defer s.leave()
	out := make(map[uint64]protocol.Details, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]int64, len(ids))
	for i, id := range ids {
		keys[i] = int64(id)
	}
	rows, err := s.pool.Query(ctx, `SELECT parcel_id, body FROM ot_details WHERE parcel_id = ANY($1)`, keys)
	if err != nil {
		return nil, wrap("read details", err)
	}
	return out, eachDetailsRow(rows, func(id uint64, d protocol.Details) (bool, error) {
		out[id] = d
		return true, nil
	})
}

// EachDetails implements store.DetailsScanner.
func (s *Store) EachDetails(ctx context.Context, fn func(parcelID uint64, d protocol.Details) (bool, error)) error {
	if err := s.enter("details"); err != nil {
		return err
	}
	defer s.leave()
	rows, err := s.pool.Query(ctx, `SELECT parcel_id, body FROM ot_details ORDER BY parcel_id`)
	if err != nil {
		return wrap("read details", err)
	}
	return eachDetailsRow(rows, fn)
}

func eachDetailsRow(rows pgx.Rows, fn func(parcelID uint64, d protocol.Details) (bool, error)) error {
	defer rows.Close()
	for rows.Next() {
		var id int64
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			return wrap("read details", err)
		}
		var d protocol.Details
		if err := protocol.Unmarshal(body, &d); err != nil {
			return fmt.Errorf("%w: details of parcel %d: %v", ErrCorrupt, id, err)
		}
		if more, err := fn(uint64(id), d); err != nil || !more {
			return err
		}
	}
	return wrap("read details", rows.Err())
}
