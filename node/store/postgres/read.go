package postgres

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/jackc/pgx/v5"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

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
