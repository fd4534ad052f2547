package pebble

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
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

// Append implements store.Store. The whole batch is one pebble batch,
// committed with fsync.
func (s *Store) Append(ctx context.Context, b *store.Batch) (*store.AppendResult, error) {
	return s.append(ctx, b, pebbledb.Sync)
}

func (s *Store) append(ctx context.Context, b *store.Batch, wo *pebbledb.WriteOptions) (*store.AppendResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	if err := s.enter("append"); err != nil {
		return nil, err
	}
	defer s.leave()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()

	ctr := s.ctr
	res := &store.AppendResult{ParcelIDs: make([]uint64, len(b.Updates))}
	if len(b.Updates) == 0 {
		res.FeedTail = ctr.feedTail
		return res, nil
	}
	events := 0
	for i := range b.Updates {
		events += len(b.Updates[i].Events)
	}
	// The records of every number the batch touches: those a Parcels call
	// read and no commit has changed since, and the rest read in one pass.
	numbers := b.Numbers()
	heads, missing := s.recent.take(numbers)
	read, err := s.newestMany(missing)
	if err != nil {
		return nil, err
	}
	maps.Copy(heads, read)
	wb := prefixBatch{hint: events}
	now := time.Now().UnixMilli()
	newID := func() uint64 { ctr.lastParcel++; return ctr.lastParcel }
	order, err := b.Apply(heads, newID, now, func(i int, a *store.Applied) error {
		u := &b.Updates[i]
		if u.New {
			if a.Replaced != nil {
				// Recycled number: the old record moves to its id key.
				wb.set(idKey(prefixID, a.Replaced.ID), encodeParcel([]byte{idValueRecord}, a.Replaced))
			}
			wb.set(idKey(prefixID, a.ID), append([]byte{idValueNumber}, u.Number...))
		}
		for _, e := range u.Events {
			wb.set(eventKey(new([13]byte), a.ID, e.Seq), e.Bytes)
			if e.ID != "" {
				wb.set(eventIDKey(e.ID), encodeEventRef(a.ID, e.Seq))
			}
		}
		ctr.events += uint64(len(u.Events))
		ctr.feedTail++
		entry := store.FeedEntry{ParcelID: a.ID, Number: a.Number, FromSeq: u.Events[0].Seq, ToSeq: a.Seq}
		wb.set(idKey(prefixFeed, ctr.feedTail), encodeFeed(&entry))
		res.ParcelIDs[i] = a.ID
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	for _, a := range order {
		if a.Newest {
			wb.set(numberKey(a.Number), encodeParcel(nil, a.Parcel))
		}
		if a.Details == nil {
			continue
		}
		d := a.Details
		if !a.New {
			stored, err := s.details(a.ID)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
			if stored != nil {
				maps.Copy(stored, d)
				d = stored
			}
		}
		v, err := protocol.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("pebble: details of parcel %d: %w", a.ID, err)
		}
		wb.set(idKey(prefixDetails, a.ID), v)
	}
	counters := ctr.encode()
	pb := s.db.NewBatchWithSize(batchrepr.HeaderLen + wb.size + len(keyCounters) + len(counters) + batchEntryOverhead)
	defer pb.Close()
	wb.writeTo(pb)
	_ = pb.Set(keyCounters, counters, nil)
	err = pb.Commit(wo)
	s.recent.committed(numbers)
	if err != nil {
		return nil, fmt.Errorf("pebble: commit: %w", err)
	}
	s.ctr = ctr
	s.signal.Publish(ctr.feedTail)
	res.FeedTail = ctr.feedTail
	return res, nil
}

// prefixBatch collects the writes of an append to give them to pebble in
// key order. Pebble inserts a batch into its memtable's skiplist one key
// after another: keys that follow each other there (a parcel's new
// events, consecutive feed positions, the keys of new parcels) reuse the
// previous key's place, and searches for nearby keys share the nodes they
// visit, so they stay in the CPU's caches. In the order updates come,
// every write searched a 64 MiB skiplist from the top and missed the
// caches at every level. The keys arrive grouped by prefix, and each group
// is sorted on its own, which costs less than sorting them all.
type prefixBatch struct {
	groups ['z' - 'a' + 1][]keyValue // by prefix; prefixes are lower-case letters
	hint   int                       // writes a group is likely to get
	size   int                       // bytes of the pebble batch, at most
}

// keyValue is a write; seq keeps a batch's writes of one key in order.
type keyValue struct {
	key, value []byte
	seq        int
}

// batchEntryOverhead bounds what a pebble batch adds to a write's key and
// value: a kind byte and two uvarint lengths. A batch sized right from the
// start is allocated once and, under pebble's 1 MiB limit, reused from
// its pool; grown by doubling, an append's batch went through three
// allocations, the last too large to keep.
const batchEntryOverhead = 1 + 2*binary.MaxVarintLen32

func (b *prefixBatch) set(key, value []byte) {
	g := &b.groups[key[0]-'a']
	if *g == nil {
		*g = make([]keyValue, 0, b.hint)
	}
	*g = append(*g, keyValue{key, value, len(*g)})
	b.size += len(key) + len(value) + batchEntryOverhead
}

func (b *prefixBatch) writeTo(pb *pebbledb.Batch) {
	for _, g := range b.groups {
		slices.SortFunc(g, func(x, y keyValue) int { return cmp.Or(bytes.Compare(x.key, y.key), x.seq-y.seq) })
		for _, kv := range g {
			_ = pb.Set(kv.key, kv.value, nil)
		}
	}
}

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
