package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// newestMany returns the records under the number keys of numbers, by
// number; numbers without a parcel are absent.
func (s *Store) newestMany(numbers []string) (map[string]*store.Parcel, error) {
	keys := make([][]byte, len(numbers))
	for i, n := range numbers {
		keys[i] = numberKey(n)
	}
	out := make(map[string]*store.Parcel, len(numbers))
	// Most numbers a batch continues are stored; in L6, where most of a
	// grown store is, the filter would only add to finding them.
	err := s.getMany(keys, false, func(i int, v []byte) error {
		p, err := decodeParcel(v)
		if err != nil {
			return fmt.Errorf("pebble: parcel %s: %w", numbers[i], err)
		}
		out[numbers[i]] = p
		return nil
	})
	return out, err
}

// getMany looks up keys that share their first byte with one iterator, in
// key order, and calls fn with the index of each key found and its value,
// which is valid only during the call. One iterator for all of them, where
// a get each builds its own, reuses the sstable iterators and the blocks
// of the key before; prefix seeks still skip sstables by their filters.
// Pebble reads L6 filters only when asked: absent says most keys are not
// stored, so that the filter saves a seek in L6's index and data blocks.
func (s *Store) getMany(keys [][]byte, absent bool, fn func(i int, v []byte) error) error {
	if len(keys) == 0 {
		return nil
	}
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(keys[a], keys[b]) })
	p := keys[0][0]
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}, UseL6Filters: absent})
	if err != nil {
		return fmt.Errorf("pebble: get: %w", err)
	}
	for _, i := range order {
		if !it.SeekPrefixGE(keys[i]) || !bytes.Equal(it.Key(), keys[i]) {
			continue
		}
		v, err := it.ValueAndErr()
		if err == nil {
			err = fn(i, v)
		}
		if err != nil {
			return errors.Join(err, it.Close())
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("pebble: get: %w", err)
	}
	return nil
}

// newest returns the record under a number key.
func (s *Store) newest(number string) (*store.Parcel, error) {
	v, closer, err := s.db.Get(numberKey(number))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return nil, fmt.Errorf("pebble: parcel %s: %w", number, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("pebble: parcel %s: %w", number, err)
	}
	defer closer.Close()
	return decodeParcel(v)
}

// Parcel implements store.Store: one get.
func (s *Store) Parcel(_ context.Context, number string) (*store.Parcel, error) {
	if err := s.enter("parcel"); err != nil {
		return nil, err
	}
	defer s.leave()
	return s.newest(number)
}

// ParcelByID implements store.Store: the id key, then the number key
// unless the parcel's number was recycled.
func (s *Store) ParcelByID(_ context.Context, id uint64) (*store.Parcel, error) {
	if err := s.enter("parcel by id"); err != nil {
		return nil, err
	}
	defer s.leave()
	// Two tries: an append that recycles the number between the two reads
	// moves the record to the id key, where the second try finds it.
	for range 2 {
		v, err := s.get(idKey(prefixID, id))
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("pebble: parcel %d: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		switch {
		case len(v) > 0 && v[0] == idValueRecord:
			return decodeParcel(v[1:])
		case len(v) == 0 || v[0] != idValueNumber:
			return nil, fmt.Errorf("%w: id key of parcel %d", ErrCorrupt, id)
		}
		p, err := s.newest(string(v[1:]))
		if err != nil || p.ID == id {
			return p, err
		}
	}
	return nil, fmt.Errorf("%w: parcel %d is neither archived nor its number's newest", ErrCorrupt, id)
}

// Events implements store.Store: one range scan over the parcel's keys.
// The blocks share one allocation, each capped so that appending to one
// cannot overwrite the next.
func (s *Store) Events(ctx context.Context, parcelID uint64, from uint64, limit int) ([]store.Event, error) {
	if err := s.enter("events"); err != nil {
		return nil, err
	}
	defer s.leave()
	var lo, hi [13]byte
	var out []store.Event
	if from <= store.MaxSeq {
		it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{
			LowerBound: eventKey(&lo, parcelID, from),
			UpperBound: eventKey(&hi, parcelID+1, 0),
		})
		if err != nil {
			return nil, fmt.Errorf("pebble: events of parcel %d: %w", parcelID, err)
		}
		// Sized for a typical history (8 events of about 200 bytes) so
		// that most lookups allocate each slice once.
		buf := make([]byte, 0, 2048)
		ends := make([]int, 0, 16)
		out = make([]store.Event, 0, 16)
		for ok := it.First(); ok && (limit <= 0 || len(ends) < limit); ok = it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				return nil, errors.Join(fmt.Errorf("pebble: events of parcel %d: %w", parcelID, err), it.Close())
			}
			out = append(out, store.Event{Seq: uint64(binary.BigEndian.Uint32(it.Key()[9:]))})
			buf = append(buf, v...)
			ends = append(ends, len(buf))
		}
		if err := it.Close(); err != nil {
			return nil, fmt.Errorf("pebble: events of parcel %d: %w", parcelID, err)
		}
		start := 0
		for i, end := range ends {
			out[i].Bytes = buf[start:end:end]
			start = end
		}
	}
	if len(out) == 0 {
		// An empty range is fine for a known parcel past its head.
		if _, err := s.get(idKey(prefixID, parcelID)); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("pebble: events of parcel %d: %w", parcelID, err)
			}
			return nil, err
		}
	}
	return out, nil
}

// LookupEventIDs implements store.Store.
func (s *Store) LookupEventIDs(_ context.Context, ids []string) (map[string]store.EventRef, error) {
	if err := s.enter("lookup event ids"); err != nil {
		return nil, err
	}
	defer s.leave()
	out := make(map[string]store.EventRef, len(ids))
	// Most ids are new: one pass finds the few stored ones, and only those
	// cost reads of their events and numbers.
	keys := make([][]byte, 0, len(ids))
	keyIDs := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != "" {
			keys = append(keys, eventIDKey(id))
			keyIDs = append(keyIDs, id)
		}
	}
	type ref struct {
		id            string
		parcelID, seq uint64
	}
	var stored []ref
	err := s.getMany(keys, true, func(i int, v []byte) error { // ids are new but for reposts
		parcelID, seq, err := decodeEventRef(v)
		stored = append(stored, ref{keyIDs[i], parcelID, seq})
		return err
	})
	if err != nil {
		return nil, err
	}
	numbers := map[uint64]string{}
	var ekey [13]byte
	for _, r := range stored {
		id, parcelID, seq := r.id, r.parcelID, r.seq
		ev, err := s.get(eventKey(&ekey, parcelID, seq))
		if err != nil {
			return nil, fmt.Errorf("pebble: event %s at %d/%d: %w", id, parcelID, seq, err)
		}
		number, ok := numbers[parcelID]
		if !ok {
			if number, err = s.number(parcelID); err != nil {
				return nil, err
			}
			numbers[parcelID] = number
		}
		out[id] = store.EventRef{ParcelID: parcelID, Number: number, Seq: seq, CID: protocol.CIDOf(ev)}
	}
	return out, nil
}

// number returns the number of a parcel from its id key.
func (s *Store) number(id uint64) (string, error) {
	v, err := s.get(idKey(prefixID, id))
	if err != nil {
		return "", fmt.Errorf("pebble: parcel %d: %w", id, err)
	}
	switch {
	case len(v) > 0 && v[0] == idValueNumber:
		return string(v[1:]), nil
	case len(v) > 0 && v[0] == idValueRecord:
		p, err := decodeParcel(v[1:])
		if err != nil {
			return "", err
		}
		return p.Number, nil
	}
	return "", fmt.Errorf("%w: id key of parcel %d", ErrCorrupt, id)
}
