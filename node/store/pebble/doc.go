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
// The figures behind these choices (ingest, lookups by cache and
// compression, disk per event) and what was tried and dropped are in
// bench/pebble.md, with the benchmarks they come from.
package pebble
