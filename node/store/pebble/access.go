package pebble

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// Details implements store.Store.
func (s *Store) Details(_ context.Context, parcelID uint64) (protocol.Details, error) {
	if err := s.enter("details"); err != nil {
		return nil, err
	}
	defer s.leave()
	return s.details(parcelID)
}

func (s *Store) details(parcelID uint64) (protocol.Details, error) {
	v, err := s.get(idKey(prefixDetails, parcelID))
	if err != nil {
		return nil, fmt.Errorf("pebble: details of parcel %d: %w", parcelID, err)
	}
	var d protocol.Details
	if err := protocol.Unmarshal(v, &d); err != nil {
		return nil, fmt.Errorf("%w: details of parcel %d: %v", ErrCorrupt, parcelID, err)
	}
	return d, nil
}

// grantRecord is a GrantRecord on disk, CBOR with short keys.
type grantRecord struct {
	Grant   protocol.Grant `cbor:"g"`
	Signed  []byte         `cbor:"s"`
	Revoked int64          `cbor:"r,omitempty"`
}

// PutGrant implements store.Store.
func (s *Store) PutGrant(_ context.Context, g *store.GrantRecord) error {
	if err := s.enter("put grant"); err != nil {
		return err
	}
	defer s.leave()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.putGrant(g)
}

// putGrant writes g; the caller holds writeMu.
func (s *Store) putGrant(g *store.GrantRecord) error {
	v, err := protocol.Marshal(grantRecord{Grant: g.Grant, Signed: g.Signed, Revoked: g.Revoked})
	if err != nil {
		return fmt.Errorf("pebble: grant %s: %w", g.Grant.ID, err)
	}
	if err := s.db.Set(grantKey(g.Grant.ID), v, pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: grant %s: %w", g.Grant.ID, err)
	}
	return nil
}

func grantKey(id string) []byte { return append([]byte{prefixGrant}, id...) }

func decodeGrant(v []byte) (*store.GrantRecord, error) {
	var r grantRecord
	if err := protocol.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("%w: grant: %v", ErrCorrupt, err)
	}
	return &store.GrantRecord{Grant: r.Grant, Signed: r.Signed, Revoked: r.Revoked}, nil
}

// Grant implements store.Store.
func (s *Store) Grant(_ context.Context, id string) (*store.GrantRecord, error) {
	if err := s.enter("grant"); err != nil {
		return nil, err
	}
	defer s.leave()
	return s.grant(id)
}

func (s *Store) grant(id string) (*store.GrantRecord, error) {
	v, err := s.get(grantKey(id))
	if err != nil {
		return nil, fmt.Errorf("pebble: grant %s: %w", id, err)
	}
	return decodeGrant(v)
}

// RevokeGrant implements store.Store.
func (s *Store) RevokeGrant(_ context.Context, id string, at int64) error {
	if err := s.enter("revoke grant"); err != nil {
		return err
	}
	defer s.leave()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	g, err := s.grant(id)
	if err != nil {
		return err
	}
	g.Revoked = at
	return s.putGrant(g)
}

// Grants implements store.Store: earliest issued first, ties by id, the
// order every backend uses. Grants are few, so they are sorted in memory.
func (s *Store) Grants(ctx context.Context) ([]*store.GrantRecord, error) {
	if err := s.enter("grants"); err != nil {
		return nil, err
	}
	defer s.leave()
	var out []*store.GrantRecord
	err := s.scan(ctx, prefixGrant, func(_, v []byte) (bool, error) {
		g, err := decodeGrant(v)
		if err != nil {
			return false, err
		}
		out = append(out, g)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *store.GrantRecord) int {
		return cmp.Or(cmp.Compare(a.Grant.Issued, b.Grant.Issued), cmp.Compare(a.Grant.ID, b.Grant.ID))
	})
	return out, nil
}

// auditRecord is an AuditEntry on disk without its Seq (the key), CBOR
// with short keys.
type auditRecord struct {
	Time    int64    `cbor:"t"`
	Peer    string   `cbor:"p,omitempty"`
	GrantID string   `cbor:"g,omitempty"`
	Number  string   `cbor:"n,omitempty"`
	Fields  []string `cbor:"f,omitempty"`
	Allowed bool     `cbor:"a,omitempty"`
	Reason  string   `cbor:"r,omitempty"`
}

// AppendAudit implements store.Store.
func (s *Store) AppendAudit(_ context.Context, entries []store.AuditEntry) error {
	if err := s.enter("append audit"); err != nil {
		return err
	}
	defer s.leave()
	if len(entries) == 0 {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	ctr := s.ctr
	wb := s.db.NewBatch()
	defer wb.Close()
	for _, e := range entries {
		v, err := protocol.Marshal(auditRecord{
			Time: e.Time, Peer: e.Peer, GrantID: e.GrantID, Number: e.Number,
			Fields: e.Fields, Allowed: e.Allowed, Reason: e.Reason,
		})
		if err != nil {
			return fmt.Errorf("pebble: audit entry: %w", err)
		}
		ctr.auditSeq++
		_ = wb.Set(idKey(prefixAudit, ctr.auditSeq), v, nil)
	}
	_ = wb.Set(keyCounters, ctr.encode(), nil)
	if err := wb.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: audit: %w", err)
	}
	s.ctr = ctr
	return nil
}

// Audit implements store.Store. It scans the log in seq order: queries
// are rare and made by the carrier, so no time or peer index is kept.
func (s *Store) Audit(ctx context.Context, q store.AuditQuery) ([]store.AuditEntry, error) {
	if err := s.enter("audit"); err != nil {
		return nil, err
	}
	defer s.leave()
	var out []store.AuditEntry
	err := s.scan(ctx, prefixAudit, func(k, v []byte) (bool, error) {
		var r auditRecord
		if err := protocol.Unmarshal(v, &r); err != nil {
			return false, fmt.Errorf("%w: audit entry: %v", ErrCorrupt, err)
		}
		if r.Time >= q.Since && (q.Peer == "" || r.Peer == q.Peer) {
			out = append(out, store.AuditEntry{
				Seq: binary.BigEndian.Uint64(k[1:]), Time: r.Time, Peer: r.Peer, GrantID: r.GrantID,
				Number: r.Number, Fields: r.Fields, Allowed: r.Allowed, Reason: r.Reason,
			})
		}
		return q.Limit <= 0 || len(out) < q.Limit, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DetailsOf implements store.DetailsScanner with one iterator.
func (s *Store) DetailsOf(_ context.Context, ids []uint64) (map[uint64]protocol.Details, error) {
	if err := s.enter("details"); err != nil {
		return nil, err
	}
	defer s.leave()
	keys := make([][]byte, len(ids))
	for i, id := range ids {
		keys[i] = idKey(prefixDetails, id)
	}
	out := make(map[uint64]protocol.Details, len(ids))
	err := s.getMany(keys, true, func(i int, v []byte) error {
		var d protocol.Details
		if err := protocol.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("%w: details of parcel %d: %v", ErrCorrupt, ids[i], err)
		}
		out[ids[i]] = d
		return nil
	})
	return out, err
}

// EachDetails implements store.DetailsScanner.
func (s *Store) EachDetails(ctx context.Context, fn func(parcelID uint64, d protocol.Details) (bool, error)) error {
	if err := s.enter("details"); err != nil {
		return err
	}
	defer s.leave()
	return s.scan(ctx, prefixDetails, func(k, v []byte) (bool, error) {
		id := binary.BigEndian.Uint64(k[1:])
		var d protocol.Details
		if err := protocol.Unmarshal(v, &d); err != nil {
			return false, fmt.Errorf("%w: details of parcel %d: %v", ErrCorrupt, id, err)
		}
		return fn(id, d)
	})
}
