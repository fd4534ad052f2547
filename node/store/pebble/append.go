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
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// Append implements store.Store. The whole batch is one pebble batch,
// committed with fsync.
func (s *Store) Append(ctx context.Context, b *store.Batch) (*store.AppendResult, error) {
	return s.append(ctx, b, pebbledb.Sync)
}

// append is Append with the write options wo; tests append without
// fsync. Its steps run under writeMu: read the heads, stage the writes of
// every update and then of every parcel, commit them in one batch, and
// only then adopt the counters and publish the feed tail.
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
	numbers := b.Numbers()
	heads, err := s.readHeads(numbers)
	if err != nil {
		return nil, err
	}
	wb := prefixBatch{hint: eventCount(b)}
	order, err := stageUpdates(&wb, &ctr, b, heads, res.ParcelIDs)
	if err != nil {
		return nil, err
	}
	if err := s.stageParcels(&wb, order); err != nil {
		return nil, err
	}
	if err := s.commit(&wb, ctr, numbers, wo); err != nil {
		return nil, err
	}
	s.ctr = ctr
	s.signal.Publish(ctr.feedTail)
	res.FeedTail = ctr.feedTail
	return res, nil
}

// eventCount returns how many events b appends.
func eventCount(b *store.Batch) int {
	events := 0
	for i := range b.Updates {
		events += len(b.Updates[i].Events)
	}
	return events
}

// readHeads returns the records of every number a batch touches: those
// a Parcels call read and no commit has changed since, and the rest read
// in one pass.
func (s *Store) readHeads(numbers []string) (map[string]*store.Parcel, error) {
	heads, missing := s.recent.take(numbers)
	read, err := s.newestMany(missing)
	if err != nil {
		return nil, err
	}
	maps.Copy(heads, read)
	return heads, nil
}

// stageUpdates replays b over heads and stages the writes of each update
// in wb: a new parcel's id key (and the record of the parcel it
// replaces), the events and their ids, and one feed entry. It advances
// ctr, and sets ids[i] to the parcel of update i. It returns the parcels
// touched, as store.Batch.Apply does.
func stageUpdates(wb *prefixBatch, ctr *counters, b *store.Batch, heads map[string]*store.Parcel, ids []uint64) ([]*store.Applied, error) {
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
		ids[i] = a.ID
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	return order, nil
}

// stageParcels stages in wb the record under the number key of each
// parcel of order that is its number's newest, and the details of each
// that the batch gave some, laid over the stored ones.
func (s *Store) stageParcels(wb *prefixBatch, order []*store.Applied) error {
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
				return err
			}
			if stored != nil {
				maps.Copy(stored, d)
				d = stored
			}
		}
		v, err := protocol.Marshal(d)
		if err != nil {
			return fmt.Errorf("pebble: details of parcel %d: %w", a.ID, err)
		}
		wb.set(idKey(prefixDetails, a.ID), v)
	}
	return nil
}

// commit writes wb and the counters ctr in one pebble batch with wo. It
// tells recent that numbers changed whether or not the commit succeeded:
// a failed commit may still have written.
func (s *Store) commit(wb *prefixBatch, ctr counters, numbers []string, wo *pebbledb.WriteOptions) error {
	enc := ctr.encode()
	pb := s.db.NewBatchWithSize(batchrepr.HeaderLen + wb.size + len(keyCounters) + len(enc) + batchEntryOverhead)
	defer pb.Close()
	wb.writeTo(pb)
	_ = pb.Set(keyCounters, enc, nil)
	err := pb.Commit(wo)
	s.recent.committed(numbers)
	if err != nil {
		return fmt.Errorf("pebble: commit: %w", err)
	}
	return nil
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
