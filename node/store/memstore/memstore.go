// Package memstore is an in-memory store.Store for tests: maps behind one
// lock, nothing durable. It passes the storetest suite, so tests of the
// node can run against it where a disk store would only add time.
package memstore

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// Store is an in-memory store.Store. The zero value is not usable; call New.
type Store struct {
	id string

	mu       sync.RWMutex
	closed   bool
	parcels  []*store.Parcel // by id-1; ids are assigned in order from 1
	numbers  map[string]uint64
	events   map[uint64][]store.Event // by parcel id, index = seq
	details  map[uint64]protocol.Details
	eventIDs map[string]store.EventRef
	feed     []store.FeedEntry // index = pos-1
	nEvents  uint64
	grants   map[string]*store.GrantRecord
	audit    []store.AuditEntry // index = seq-1
	signal   *store.FeedSignal
}

var (
	_ store.Store          = (*Store)(nil)
	_ store.DetailsScanner = (*Store)(nil)
)

// New returns an empty store.
func New() *Store {
	return &Store{
		id:       store.NewID(),
		numbers:  map[string]uint64{},
		events:   map[uint64][]store.Event{},
		details:  map[uint64]protocol.Details{},
		eventIDs: map[string]store.EventRef{},
		grants:   map[string]*store.GrantRecord{},
		signal:   store.NewFeedSignal(0),
	}
}

func errClosed(op string) error { return fmt.Errorf("memstore: %s: %w", op, store.ErrClosed) }

// Append implements store.Store. It checks every guard before it changes
// anything, so a failed batch leaves no trace.
func (s *Store) Append(ctx context.Context, b *store.Batch) (*store.AppendResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("memstore: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed("append")
	}
	if err := s.checkGuards(b); err != nil {
		return nil, err
	}
	res := &store.AppendResult{ParcelIDs: make([]uint64, len(b.Updates))}
	now := time.Now().UnixMilli()
	for i := range b.Updates {
		u := &b.Updates[i]
		var p *store.Parcel
		if u.New {
			p = &store.Parcel{ID: uint64(len(s.parcels)) + 1, Number: u.Number, Genesis: u.Events[0].CID, Created: now}
			s.parcels = append(s.parcels, p)
			s.numbers[u.Number] = p.ID
		} else {
			p = s.parcels[u.ParcelID-1]
		}
		for _, e := range u.Events {
			s.events[p.ID] = append(s.events[p.ID], store.Event{Seq: e.Seq, Bytes: slices.Clone(e.Bytes)})
			if e.ID != "" {
				s.eventIDs[e.ID] = store.EventRef{ParcelID: p.ID, Number: p.Number, Seq: e.Seq, CID: e.CID}
			}
		}
		last := u.Events[len(u.Events)-1]
		p.Seq, p.Head, p.SignedHead = last.Seq, last.CID, slices.Clone(u.SignedHead)
		p.Audience = store.MergeAudience(p.Audience, u.Audience)
		if len(u.Details) > 0 {
			d := s.details[p.ID]
			if d == nil {
				d = protocol.Details{}
				s.details[p.ID] = d
			}
			maps.Copy(d, u.Details)
		}
		s.nEvents += uint64(len(u.Events))
		s.feed = append(s.feed, store.FeedEntry{
			Pos: uint64(len(s.feed)) + 1, ParcelID: p.ID, Number: p.Number,
			FromSeq: u.Events[0].Seq, ToSeq: last.Seq,
		})
		res.ParcelIDs[i] = p.ID
	}
	res.FeedTail = uint64(len(s.feed))
	if len(b.Updates) > 0 {
		s.signal.Publish(res.FeedTail)
	}
	return res, nil
}

// checkGuards replays the batch's effect on heads without writing, so that
// later updates see earlier ones of the same batch.
func (s *Store) checkGuards(b *store.Batch) error {
	type head struct{ id, seq uint64 }
	heads := map[string]head{}
	nextID := uint64(len(s.parcels)) + 1
	for i := range b.Updates {
		u := &b.Updates[i]
		last := u.Events[len(u.Events)-1].Seq
		h, ok := heads[u.Number]
		if !ok {
			if id, found := s.numbers[u.Number]; found {
				h, ok = head{id, s.parcels[id-1].Seq}, true
			}
		}
		if u.New {
			if u.IfAbsent && ok {
				return fmt.Errorf("memstore: update %d (%s): number taken: %w", i, u.Number, store.ErrConflict)
			}
			heads[u.Number] = head{nextID, last}
			nextID++
			continue
		}
		if !ok || h.id != u.ParcelID || h.seq != u.PrevSeq {
			return fmt.Errorf("memstore: update %d (%s): %w", i, u.Number, store.ErrConflict)
		}
		heads[u.Number] = head{h.id, last}
	}
	return nil
}

// Parcel implements store.Store.
func (s *Store) Parcel(_ context.Context, number string) (*store.Parcel, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed("parcel")
	}
	id, ok := s.numbers[number]
	if !ok {
		return nil, fmt.Errorf("memstore: parcel %s: %w", number, store.ErrNotFound)
	}
	return copyParcel(s.parcels[id-1]), nil
}

// ParcelByID implements store.Store.
func (s *Store) ParcelByID(_ context.Context, id uint64) (*store.Parcel, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed("parcel by id")
	}
	if id == 0 || id > uint64(len(s.parcels)) {
		return nil, fmt.Errorf("memstore: parcel %d: %w", id, store.ErrNotFound)
	}
	return copyParcel(s.parcels[id-1]), nil
}

func copyParcel(p *store.Parcel) *store.Parcel {
	c := *p
	c.SignedHead = slices.Clone(p.SignedHead)
	c.Audience = slices.Clone(p.Audience)
	return &c
}

// Events implements store.Store.
func (s *Store) Events(_ context.Context, parcelID uint64, from uint64, limit int) ([]store.Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed("events")
	}
	evs, ok := s.events[parcelID]
	if !ok {
		return nil, fmt.Errorf("memstore: events of parcel %d: %w", parcelID, store.ErrNotFound)
	}
	if from >= uint64(len(evs)) {
		return nil, nil
	}
	evs = evs[from:]
	if limit > 0 && limit < len(evs) {
		evs = evs[:limit]
	}
	out := make([]store.Event, len(evs))
	for i, e := range evs {
		out[i] = store.Event{Seq: e.Seq, Bytes: slices.Clone(e.Bytes)}
	}
	return out, nil
}

// LookupEventIDs implements store.Store.
func (s *Store) LookupEventIDs(_ context.Context, ids []string) (map[string]store.EventRef, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed("lookup event ids")
	}
	out := make(map[string]store.EventRef, len(ids))
	for _, id := range ids {
		if ref, ok := s.eventIDs[id]; ok && id != "" {
			out[id] = ref
		}
	}
	return out, nil
}

// Feed implements store.Store.
func (s *Store) Feed(_ context.Context, after uint64, limit int) ([]store.FeedEntry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed("feed")
	}
	if after > uint64(len(s.feed)) {
		return nil, fmt.Errorf("memstore: feed after %d (tail %d): %w", after, len(s.feed), store.ErrUnknownCursor)
	}
	entries := s.feed[after:]
	if limit > 0 && limit < len(entries) {
		entries = entries[:limit]
	}
	return slices.Clone(entries), nil
}

// FeedTail implements store.Store.
func (s *Store) FeedTail(context.Context) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, errClosed("feed tail")
	}
	return uint64(len(s.feed)), nil
}

// WaitFeed implements store.Store.
func (s *Store) WaitFeed(ctx context.Context, after uint64) error {
	if err := s.signal.Wait(ctx, after); err != nil {
		return fmt.Errorf("memstore: %w", err)
	}
	return nil
}

// ID implements store.Store.
func (s *Store) ID() string { return s.id }

// Details implements store.Store.
func (s *Store) Details(_ context.Context, parcelID uint64) (protocol.Details, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed("details")
	}
	d, ok := s.details[parcelID]
	if !ok {
		return nil, fmt.Errorf("memstore: details of parcel %d: %w", parcelID, store.ErrNotFound)
	}
	return maps.Clone(d), nil
}

// PutGrant implements store.Store.
func (s *Store) PutGrant(_ context.Context, g *store.GrantRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed("put grant")
	}
	s.grants[g.Grant.ID] = copyGrant(g)
	return nil
}

// Grant implements store.Store.
func (s *Store) Grant(_ context.Context, id string) (*store.GrantRecord, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed("grant")
	}
	g, ok := s.grants[id]
	if !ok {
		return nil, fmt.Errorf("memstore: grant %s: %w", id, store.ErrNotFound)
	}
	return copyGrant(g), nil
}

// RevokeGrant implements store.Store.
func (s *Store) RevokeGrant(_ context.Context, id string, at int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed("revoke grant")
	}
	g, ok := s.grants[id]
	if !ok {
		return fmt.Errorf("memstore: revoke grant %s: %w", id, store.ErrNotFound)
	}
	g.Revoked = at
	return nil
}

// Grants implements store.Store. Oldest means earliest issued, ties
// broken by id, the order every backend uses.
func (s *Store) Grants(context.Context) ([]*store.GrantRecord, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed("grants")
	}
	out := make([]*store.GrantRecord, 0, len(s.grants))
	for _, g := range s.grants {
		out = append(out, copyGrant(g))
	}
	slices.SortFunc(out, func(a, b *store.GrantRecord) int {
		return cmp.Or(cmp.Compare(a.Grant.Issued, b.Grant.Issued), cmp.Compare(a.Grant.ID, b.Grant.ID))
	})
	return out, nil
}

func copyGrant(g *store.GrantRecord) *store.GrantRecord {
	c := *g
	c.Grant.Numbers = slices.Clone(g.Grant.Numbers)
	c.Grant.Fields = slices.Clone(g.Grant.Fields)
	c.Signed = slices.Clone(g.Signed)
	return &c
}

// AppendAudit implements store.Store.
func (s *Store) AppendAudit(_ context.Context, entries []store.AuditEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed("append audit")
	}
	for _, e := range entries {
		e.Seq = uint64(len(s.audit)) + 1
		e.Fields = slices.Clone(e.Fields)
		s.audit = append(s.audit, e)
	}
	return nil
}

// Audit implements store.Store.
func (s *Store) Audit(_ context.Context, q store.AuditQuery) ([]store.AuditEntry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed("audit")
	}
	var out []store.AuditEntry
	for _, e := range s.audit {
		if q.Limit > 0 && len(out) == q.Limit {
			break
		}
		if e.Time >= q.Since && (q.Peer == "" || e.Peer == q.Peer) {
			e.Fields = slices.Clone(e.Fields)
			out = append(out, e)
		}
	}
	return out, nil
}

// Stats implements store.Store. DiskBytes is always 0.
func (s *Store) Stats(context.Context) (store.Stats, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.Stats{}, errClosed("stats")
	}
	return store.Stats{Parcels: uint64(len(s.parcels)), Events: s.nEvents}, nil
}

// Close implements store.Store: it drops nothing, but later calls fail and
// waiters wake with store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed("close")
	}
	s.closed = true
	s.signal.Close()
	return nil
}

// DetailsOf implements store.DetailsScanner.
func (s *Store) DetailsOf(_ context.Context, ids []uint64) (map[uint64]protocol.Details, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed("details")
	}
	out := make(map[uint64]protocol.Details, len(ids))
	for _, id := range ids {
		if d, ok := s.details[id]; ok {
			out[id] = maps.Clone(d)
		}
	}
	return out, nil
}

// EachDetails implements store.DetailsScanner.
func (s *Store) EachDetails(_ context.Context, fn func(parcelID uint64, d protocol.Details) (bool, error)) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return errClosed("details")
	}
	ids := slices.Sorted(maps.Keys(s.details))
	all := make([]protocol.Details, len(ids))
	for i, id := range ids {
		all[i] = maps.Clone(s.details[id])
	}
	s.mu.RUnlock()
	for i, id := range ids {
		if more, err := fn(id, all[i]); err != nil || !more {
			return err
		}
	}
	return nil
}
