// Package pebble is the carrier node's default store: store.Store on the
// embedded Pebble LSM (github.com/cockroachdb/pebble/v2), tuned as
// CockroachDB tunes it (see Options). Every Append is one Pebble batch
// committed with fsync; appends are serialized by a mutex so that guard
// checks and the commit are atomic with respect to each other.
//
// # Key layout
//
// Keys start with a one-byte prefix. Integers in keys are big-endian so
// that they sort numerically; integers in values are uvarints.
//
//	key                                  value
//	m "id"                               store id, 16 hex chars, written at creation
//	m "v"                                layout version (uvarint), checked at open
//	m "c"                                counters: last parcel id, feed tail, events, audit seq
//	n number                             record of the newest parcel with this number
//	i parcelID(8)                        0x00 number (record is under n), or
//	                                     0x01 record (an older parcel whose number was recycled)
//	e parcelID(8) seq(4)                 event block (canonical DAG-CBOR)
//	x SHA-256(carrier event id)[:16]     parcelID, seq
//	f pos(8)                             feed entry: parcelID, fromSeq, toSeq-fromSeq, number
//	d parcelID(8)                        details (canonical CBOR map)
//	g grant id                           grant record (CBOR, short keys)
//	a seq(8)                             audit entry (CBOR, short keys)
//
// The layout follows the hot paths:
//   - a lookup by number is one get (n), and the parcel's history one
//     contiguous range scan (e), whose keys do not repeat the number;
//   - the feed is one range scan of small entries (f) that point at
//     parcels, never copies of signed heads or events;
//   - ingest's idempotency check is one seek per event id (x), on a
//     fixed-size hashed key, all of a batch's in key order through one
//     iterator, answered by bloom filters for the ids never stored;
//   - details (d) are apart from events, so no read of the public view can
//     touch them.
//
// A parcel record is laid out by hand (version, id, seq, created, genesis
// and head CIDs, signed head, audience, number): it is rewritten on every
// append to its parcel, so its size matters more than its flexibility.
//
// # Measurements
//
// Medians of 6 runs from bench/micro.txt (`make bench-micro`, default
// Options, the 2-core development machine, shared with other work, so
// runs vary by up to a fifth; TestDocFigures checks these lines against
// that file):
//
//	durable ingest, one fsynced batch of 1000 events per Append:
//	  Append/new_125x8     125 new parcels × 8 events        249k events/s, p99 8.8 ms
//	  Append/new_1000x1    1000 new parcels × 1 event        145k events/s, p99 14.1 ms
//	  Append/next_1000x1   1000 existing parcels × 1 event   110k events/s, p99 18.4 ms
//	lookups, Parcel then Events, 125k parcels × 8 events (1M events,
//	working set ~300 MB), 2 goroutines, CPU per lookup:
//	  ParcelLookup/compression=zstd/cache=64MiB     22.0 µs  (89k lookups/s)
//	  ParcelLookup/compression=zstd/cache=256MiB    19.4 µs  (101k lookups/s)
//	  ParcelLookup/compression=minlz/cache=64MiB    17.3 µs  (113k lookups/s)
//	  ParcelLookup/compression=minlz/cache=256MiB   18.3 µs  (105k lookups/s)
//	disk after a full compaction, 200k events of 192 bytes, written one
//	event per parcel per batch, bytes/event:
//	  DiskSize/zstd 114.8, DiskSize/minlz 129.1, DiskSize/snappy 132.7, DiskSize/none 295.0
//
// Before the cache was sized beyond pebble's memtable reservations, an
// earlier run gave 243k, 95k and 111k events/s and 71k lookups/s with the
// 64 MiB cache. The lookups now differ little by cache size: on a store
// just opened the memtables are small, and blocks use the room kept for
// them (256 MiB in all). At 1M events the working set outgrows even that,
// and a miss costs a pread and the decompression of a 16 KiB block.
// MinLZ's faster decompression saved under 3% of such a lookup in 10
// runs on a quiet machine (14.5 against 14.9 µs; the medians above, from
// a shared machine, spread wider), for 12% more disk, so zstd stays; 8 KiB
// and 4 KiB data blocks cost more CPU per lookup than 16 KiB. L6 bloom filters add 4 bytes an event.
//
// The appends to existing parcels, steady ingest, are bound by the read
// of each parcel's record (the guard, and the record is rewritten) and by
// memtable inserts; new parcels in whole histories are bound by the fsync.
// Ingest reads the records before the append, with Parcels, and the store
// keeps them for the append (see recentHeads), so that it reads them once.
//
// What was tried: CockroachDB's 32 KiB blocks gave 29k–47k lookups/s with
// the 64 MiB cache, since every miss decompresses a whole block; 16 KiB
// gave 59k–60k at 109 bytes/event and 4 KiB 57k at 137, so 16 KiB it is.
// MinLZ instead of zstd gained about 7% on those lookups for 13% more
// disk. zstd on index blocks (pebble's plain ZSTD profile) made ingest of
// new parcels 54k events/s against 124k with MinLZ index blocks, at the
// same size. 32 KiB index blocks instead of 256 KiB changed nothing
// measurable. Without L6 bloom filters, which the store once left out,
// every lookup of a new event id ended in an L6 data block.
package pebble
