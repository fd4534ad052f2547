package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// The store.Access role: details, one row per parcel that has some, and
// grants and the audit log, few rows next to events, written by the
// carrier's grant commands and by every disclosure of details.

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

// PutGrant implements store.Store: an upsert by grant id.
func (s *Store) PutGrant(ctx context.Context, g *store.GrantRecord) error {
	if err := s.enter("put grant"); err != nil {
		return err
	}
	defer s.leave()
	body, err := protocol.Marshal(g.Grant)
	if err != nil {
		return fmt.Errorf("postgres: grant %s: %w", g.Grant.ID, err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO ot_grants (id, issued, body, signed, revoked) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET issued = excluded.issued, body = excluded.body, signed = excluded.signed, revoked = excluded.revoked`,
		g.Grant.ID, g.Grant.Issued, body, g.Signed, g.Revoked)
	return wrap("put grant "+g.Grant.ID, err)
}

const grantColumns = `body, signed, revoked`

func scanGrant(row pgx.Row) (*store.GrantRecord, error) {
	var body []byte
	var g store.GrantRecord
	if err := row.Scan(&body, &g.Signed, &g.Revoked); err != nil {
		return nil, err
	}
	if err := protocol.Unmarshal(body, &g.Grant); err != nil {
		return nil, fmt.Errorf("%w: grant: %v", ErrCorrupt, err)
	}
	return &g, nil
}

// Grant implements store.Store.
func (s *Store) Grant(ctx context.Context, id string) (*store.GrantRecord, error) {
	if err := s.enter("grant"); err != nil {
		return nil, err
	}
	defer s.leave()
	g, err := scanGrant(s.pool.QueryRow(ctx, `SELECT `+grantColumns+` FROM ot_grants WHERE id = $1`, id))
	if err != nil {
		return nil, wrap("grant "+id, err)
	}
	return g, nil
}

// RevokeGrant implements store.Store.
func (s *Store) RevokeGrant(ctx context.Context, id string, at int64) error {
	if err := s.enter("revoke grant"); err != nil {
		return err
	}
	defer s.leave()
	tag, err := s.pool.Exec(ctx, `UPDATE ot_grants SET revoked = $2 WHERE id = $1`, id, at)
	if err != nil {
		return wrap("revoke grant "+id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: revoke grant %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// Grants implements store.Store: earliest issued first, ties by id, the
// order of the ot_grants_issued index.
func (s *Store) Grants(ctx context.Context) ([]*store.GrantRecord, error) {
	if err := s.enter("grants"); err != nil {
		return nil, err
	}
	defer s.leave()
	rows, err := s.pool.Query(ctx, `SELECT `+grantColumns+` FROM ot_grants ORDER BY issued, id`)
	if err != nil {
		return nil, wrap("grants", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.GrantRecord, error) { return scanGrant(row) })
	if err != nil {
		return nil, wrap("grants", err)
	}
	return out, nil
}

// AppendAudit implements store.Store: one transaction, seqs from a
// sequence in entry order.
func (s *Store) AppendAudit(ctx context.Context, entries []store.AuditEntry) error {
	if err := s.enter("append audit"); err != nil {
		return err
	}
	defer s.leave()
	if len(entries) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, e := range entries {
			fields := e.Fields
			if fields == nil {
				fields = []string{}
			}
			b.Queue(`INSERT INTO ot_audit (seq, time, peer, grant_id, number, fields, allowed, reason)
				VALUES (nextval('ot_audit_seqs'), $1, $2, $3, $4, $5, $6, $7)`,
				e.Time, e.Peer, e.GrantID, e.Number, fields, e.Allowed, e.Reason)
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	return wrap("append audit", err)
}

// Audit implements store.Store. A peer filter uses ot_audit_peer; the
// others scan in seq order, as queries are rare and made by the carrier.
func (s *Store) Audit(ctx context.Context, q store.AuditQuery) ([]store.AuditEntry, error) {
	if err := s.enter("audit"); err != nil {
		return nil, err
	}
	defer s.leave()
	limit := int64(q.Limit)
	if limit <= 0 {
		limit = 1<<63 - 1
	}
	sql := `SELECT seq, time, peer, grant_id, number, fields, allowed, reason FROM ot_audit WHERE time >= $1`
	args := []any{q.Since, limit}
	if q.Peer != "" {
		sql += ` AND peer = $3`
		args = append(args, q.Peer)
	}
	rows, err := s.pool.Query(ctx, sql+` ORDER BY seq LIMIT $2`, args...)
	if err != nil {
		return nil, wrap("audit", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AuditEntry, error) {
		var e store.AuditEntry
		var seq int64
		err := row.Scan(&seq, &e.Time, &e.Peer, &e.GrantID, &e.Number, &e.Fields, &e.Allowed, &e.Reason)
		e.Seq = uint64(seq)
		if len(e.Fields) == 0 {
			e.Fields = nil
		}
		return e, err
	})
	if err != nil {
		return nil, wrap("audit", err)
	}
	return out, nil
}
