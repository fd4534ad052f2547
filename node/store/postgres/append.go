package postgres

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

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
// feed tail. Their order matters: the heads are locked before they are
// read, a parcel's row is copied before the statements that refer to it,
// and the feed positions are taken last.
func (s *Store) append(ctx context.Context, tx pgx.Tx, b *store.Batch, res *store.AppendResult) (uint64, error) {
	numbers := b.Numbers()
	slices.Sort(numbers) // lock order, so that two batches cannot deadlock
	heads, err := lockHeads(ctx, tx, numbers)
	if err != nil {
		return 0, err
	}
	var ids []int64
	nNew := countNew(b.Updates)
	if nNew > 0 {
		if ids, err = s.newIDs(ctx, tx, nNew); err != nil {
			return 0, err
		}
	}
	order, ur, err := applyUpdates(b, heads, ids, res.ParcelIDs)
	if err != nil {
		return 0, err
	}
	if err := s.mergeDetails(ctx, tx, order); err != nil {
		return 0, err
	}

	if err := copyRows(ctx, tx, "ot_events", []string{"parcel_id", "seq", "body"}, ur.events); err != nil {
		return 0, err
	}
	if err := putEventIDs(ctx, tx, ur.eventIDs); err != nil {
		return 0, err
	}
	pr, err := collectParcelRows(order, heads)
	if err != nil {
		return 0, err
	}
	var q pgx.Batch
	pr.queue(&q)
	if err := copyRows(ctx, tx, "ot_parcels", []string{"id", "number", "genesis", "seq", "head", "signed_head", "audience", "created"}, pr.newParcels); err != nil {
		return 0, err
	}
	tail, err := writeFeed(ctx, tx, &q, ur.feed, nNew, ur.nEvents)
	if err != nil {
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

// lockHeads locks the number rows of numbers and returns the newest
// parcel of each that has one. The heads are read by a second statement,
// after the locks are held: in READ COMMITTED a statement that waited
// for a row lock sees the locked row's newest version but the other rows
// of its join as they were when it started, which would be a stale head.
func lockHeads(ctx context.Context, tx pgx.Tx, numbers []string) (map[string]*store.Parcel, error) {
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
		return nil, wrap("lock parcels", err)
	}
	return heads, nil
}

// updateRows are the rows of a batch's updates: their events, the event
// id index and one feed entry each.
type updateRows struct {
	events   [][]any
	eventIDs map[string]eventRef
	feed     []store.FeedEntry
	nEvents  int
}

// applyUpdates replays b over heads, giving new parcels the ids of ids
// in turn, and collects the rows of its updates. It sets parcelIDs[i] to
// the parcel of update i, and returns the parcels touched, as
// store.Batch.Apply does.
func applyUpdates(b *store.Batch, heads map[string]*store.Parcel, ids []int64, parcelIDs []uint64) ([]*store.Applied, *updateRows, error) {
	ur := &updateRows{eventIDs: map[string]eventRef{}}
	newID := func() uint64 { id := ids[0]; ids = ids[1:]; return uint64(id) }
	order, err := b.Apply(heads, newID, time.Now().UnixMilli(), func(i int, a *store.Applied) error {
		u := &b.Updates[i]
		for _, e := range u.Events {
			ur.events = append(ur.events, []any{int64(a.ID), int64(e.Seq), e.Bytes})
			if e.ID != "" {
				ur.eventIDs[e.ID] = eventRef{int64(a.ID), int64(e.Seq), e.CID.Bytes()}
			}
		}
		ur.nEvents += len(u.Events)
		ur.feed = append(ur.feed, store.FeedEntry{ParcelID: a.ID, Number: a.Number, FromSeq: u.Events[0].Seq, ToSeq: a.Seq})
		parcelIDs[i] = a.ID
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: %w", err)
	}
	return order, ur, nil
}

// parcelRows are the writes of a batch's parcels, set-based, one
// statement each however many parcels: a statement a row costs the
// server a round of parse, plan and execute each, which made continued
// parcels several times slower to ingest.
type parcelRows struct {
	newParcels [][]any // COPY rows of ot_parcels
	upd        struct {
		ids, seqs     []int64
		heads, signed [][]byte
		audiences     [][]byte
	}
	nums struct {
		insert, update       []string
		insertIDs, updateIDs []int64
	}
	dets struct {
		ids    []int64
		bodies [][]byte
	}
}

// collectParcelRows returns the writes of the parcels of order: new
// ones, the heads of continued ones, the number rows that must point to
// a new parcel and the details. heads are the parcels found stored.
func collectParcelRows(order []*store.Applied, heads map[string]*store.Parcel) (*parcelRows, error) {
	pr := &parcelRows{}
	upd, nums, dets := &pr.upd, &pr.nums, &pr.dets
	for _, a := range order {
		aud, err := encodeAudience(a.Audience)
		if err != nil {
			return nil, fmt.Errorf("postgres: audience of parcel %d: %w", a.ID, err)
		}
		if a.New {
			pr.newParcels = append(pr.newParcels, []any{int64(a.ID), a.Number, a.Genesis.Bytes(), int64(a.Seq), a.Head.Bytes(), a.SignedHead, aud, a.Created})
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
				return nil, fmt.Errorf("postgres: details of parcel %d: %w", a.ID, err)
			}
			dets.ids, dets.bodies = append(dets.ids, int64(a.ID)), append(dets.bodies, d)
		}
	}
	return pr, nil
}

// queue adds to q the statements of pr that are not a COPY.
func (pr *parcelRows) queue(q *pgx.Batch) {
	upd, nums, dets := &pr.upd, &pr.nums, &pr.dets
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
}

// writeFeed takes the feed positions of feed, with the counters' update
// queued last in q, sends q and copies the feed rows; it returns the new
// tail. The ot_meta row stays locked from here to the commit, and every
// other append waits for it: so it comes last.
func writeFeed(ctx context.Context, tx pgx.Tx, q *pgx.Batch, feed []store.FeedEntry, nNew, nEvents int) (int64, error) {
	var tail int64
	q.Queue(`UPDATE ot_meta SET feed_tail = feed_tail + $1, parcels = parcels + $2, events = events + $3
		WHERE singleton = 1 RETURNING feed_tail`, len(feed), nNew, nEvents).QueryRow(func(row pgx.Row) error {
		return row.Scan(&tail)
	})
	if err := tx.SendBatch(ctx, q).Close(); err != nil {
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
	return tail, nil
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
