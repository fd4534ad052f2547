package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/opentrack/opentrack/node/store"
)

// Store is the embedded store.Store on Pebble. All methods are safe for
// concurrent use. Writes are serialized: one node, one writer, so that a
// guard read and the commit that depends on it cannot interleave with
// another append.
type Store struct {
	db *pebbledb.DB
	id string

	// closeMu lets Close wait for calls in flight: every call holds it
	// for reading while it uses db.
	closeMu sync.RWMutex
	closed  bool

	// writeMu serializes writers and guards ctr, the committed counters.
	writeMu sync.Mutex
	ctr     counters

	// recent keeps the records Parcels read for the appends that follow.
	recent recentHeads

	// signal holds the committed feed tail, which readers use as the end
	// of the feed, and wakes WaitFeed.
	signal *store.FeedSignal
}

var (
	_ store.Store          = (*Store)(nil)
	_ store.DetailsScanner = (*Store)(nil)
	_ store.HeadsReader    = (*Store)(nil)
)

// Open opens the store in dir, creating it if dir holds none. nil opts
// means the defaults.
func Open(dir string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if !o.ReadOnly {
		if err := makePrivate(dir); err != nil {
			return nil, err
		}
	}
	db, err := pebbledb.Open(dir, o.pebbleOptions())
	if err != nil {
		return nil, fmt.Errorf("pebble: open %s: %w", dir, err)
	}
	s := &Store{db: db}
	if err := s.init(); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	s.signal = store.NewFeedSignal(s.ctr.feedTail)
	return s, nil
}

// init reads the meta records, or writes them for a new store.
func (s *Store) init() error {
	id, err := s.get(keyStoreID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.id = store.NewID()
		b := s.db.NewBatch()
		defer b.Close()
		_ = b.Set(keyStoreID, []byte(s.id), nil)
		_ = b.Set(keyVersion, binary.AppendUvarint(nil, formatVersion), nil)
		_ = b.Set(keyCounters, s.ctr.encode(), nil)
		if err := b.Commit(pebbledb.Sync); err != nil {
			return fmt.Errorf("pebble: create: %w", err)
		}
		return nil
	case err != nil:
		return err
	}
	s.id = string(id)
	v, err := s.get(keyVersion)
	if err != nil {
		return fmt.Errorf("pebble: open: layout version: %w", err)
	}
	if ver, n := binary.Uvarint(v); n <= 0 || ver != formatVersion {
		return fmt.Errorf("%w: layout version %x, this build reads %d", ErrCorrupt, v, formatVersion)
	}
	c, err := s.get(keyCounters)
	if err != nil {
		return fmt.Errorf("pebble: open: counters: %w", err)
	}
	s.ctr, err = decodeCounters(c)
	return err
}

// get returns a copy of the value of key, or store.ErrNotFound.
func (s *Store) get(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pebble: get: %w", err)
	}
	out := bytes.Clone(v)
	return out, closer.Close()
}

// enter guards a call against Close; leave must follow when it is nil.
func (s *Store) enter(op string) error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return fmt.Errorf("pebble: %s: %w", op, store.ErrClosed)
	}
	return nil
}

func (s *Store) leave() { s.closeMu.RUnlock() }

// scan calls fn for each key under prefix p in order until fn returns
// false or an error.
func (s *Store) scan(ctx context.Context, p byte, fn func(k, v []byte) (bool, error)) error {
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
	if err != nil {
		return fmt.Errorf("pebble: scan %q: %w", p, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return errors.Join(fmt.Errorf("pebble: scan %q: %w", p, err), it.Close())
		}
		more, err := fn(it.Key(), v)
		if err != nil {
			return errors.Join(err, it.Close())
		}
		if !more {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("pebble: scan %q: %w", p, err)
	}
	return nil
}

// Stats implements store.Store.
func (s *Store) Stats(context.Context) (store.Stats, error) {
	if err := s.enter("stats"); err != nil {
		return store.Stats{}, err
	}
	defer s.leave()
	s.writeMu.Lock()
	c := s.ctr
	s.writeMu.Unlock()
	return store.Stats{Parcels: c.lastParcel, Events: c.events, DiskBytes: s.db.Metrics().DiskSpaceUsage()}, nil
}

// Close implements store.Store. It waits for calls in flight, wakes feed
// waiters and closes the database.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return fmt.Errorf("pebble: close: %w", store.ErrClosed)
	}
	s.closed = true
	s.signal.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("pebble: close: %w", err)
	}
	return nil
}
