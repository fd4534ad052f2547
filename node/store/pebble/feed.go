package pebble

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/opentrack/opentrack/node/store"
)

// Feed implements store.Store.
func (s *Store) Feed(ctx context.Context, after uint64, limit int) ([]store.FeedEntry, error) {
	if err := s.enter("feed"); err != nil {
		return nil, err
	}
	defer s.leave()
	// Positions up to the published tail are committed; reading no
	// further keeps a concurrent append from showing half-way.
	tail := s.signal.Tail()
	if after > tail {
		return nil, fmt.Errorf("pebble: feed after %d (tail %d): %w", after, tail, store.ErrUnknownCursor)
	}
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{
		LowerBound: idKey(prefixFeed, after+1),
		UpperBound: idKey(prefixFeed, tail+1),
	})
	if err != nil {
		return nil, fmt.Errorf("pebble: feed: %w", err)
	}
	var out []store.FeedEntry
	for ok := it.First(); ok && (limit <= 0 || len(out) < limit); ok = it.Next() {
		e, err := decodeFeed(binary.BigEndian.Uint64(it.Key()[1:]), it.Value())
		if err != nil {
			return nil, errors.Join(err, it.Close())
		}
		out = append(out, e)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("pebble: feed: %w", err)
	}
	return out, nil
}

// FeedTail implements store.Store.
func (s *Store) FeedTail(context.Context) (uint64, error) {
	if err := s.enter("feed tail"); err != nil {
		return 0, err
	}
	defer s.leave()
	return s.signal.Tail(), nil
}

// WaitFeed implements store.Store.
func (s *Store) WaitFeed(ctx context.Context, after uint64) error {
	if err := s.signal.Wait(ctx, after); err != nil {
		return fmt.Errorf("pebble: %w", err)
	}
	return nil
}

// ID implements store.Store.
func (s *Store) ID() string { return s.id }
