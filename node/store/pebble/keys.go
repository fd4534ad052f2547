package pebble

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/opentrack/opentrack/node/store"
)

// Key prefixes; doc.go has the table of what lives under each.
const (
	prefixMeta     = 'm'
	prefixNumber   = 'n'
	prefixID       = 'i'
	prefixEvent    = 'e'
	prefixEventID  = 'x'
	prefixFeed     = 'f'
	prefixDetails  = 'd'
	prefixGrant    = 'g'
	prefixAudit    = 'a'
	eventIDHashLen = 16
)

// Meta keys.
var (
	keyStoreID  = []byte{prefixMeta, 'i', 'd'}
	keyVersion  = []byte{prefixMeta, 'v'}
	keyCounters = []byte{prefixMeta, 'c'}
)

// formatVersion is the layout version written at creation. Open refuses a
// store of another version rather than misread it.
const formatVersion = 1

// ErrCorrupt means a stored record does not decode: the store was written
// by something else or damaged.
var ErrCorrupt = errors.New("pebble: corrupt record")

func numberKey(number string) []byte {
	return append([]byte{prefixNumber}, number...)
}

// idKey is the key of prefix p and a big-endian id, so that ids sort in
// numeric order and one parcel's keys are contiguous.
func idKey(p byte, id uint64) []byte {
	k := make([]byte, 9)
	k[0] = p
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

// eventKey is e + parcel id BE8 + seq BE4: a parcel's history is one range.
func eventKey(buf *[13]byte, parcelID, seq uint64) []byte {
	buf[0] = prefixEvent
	binary.BigEndian.PutUint64(buf[1:9], parcelID)
	binary.BigEndian.PutUint32(buf[9:], uint32(seq))
	return buf[:]
}

// eventIDKey hashes the carrier's event id: ids are the carrier's strings
// of any length, and 16 bytes of SHA-256 collide with odds of 1 in 2^64
// only after 2^32 ids.
func eventIDKey(id string) []byte {
	sum := sha256.Sum256([]byte(id))
	return append([]byte{prefixEventID}, sum[:eventIDHashLen]...)
}

// counters are the numbers a store assigns. They live in one meta record,
// rewritten by every write batch that changes them, so they commit
// atomically with what they count.
type counters struct {
	lastParcel uint64 // also the parcel count: ids are 1..lastParcel
	feedTail   uint64
	events     uint64
	auditSeq   uint64
}

func (c *counters) encode() []byte {
	b := make([]byte, 0, 4*binary.MaxVarintLen64)
	for _, v := range []uint64{c.lastParcel, c.feedTail, c.events, c.auditSeq} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

func decodeCounters(b []byte) (counters, error) {
	r := reader{b: b}
	c := counters{lastParcel: r.uvarint(), feedTail: r.uvarint(), events: r.uvarint(), auditSeq: r.uvarint()}
	return c, r.done("counters")
}

// Parcel records. The record of a number's newest parcel lives under its
// number key, so a lookup by number is one get; the id key then holds only
// the number. When a New parcel recycles the number, the old record moves
// to its id key, where it stays: only the newest parcel can be appended to.
// The first byte tells the two id-key values apart.
const (
	idValueNumber = 0 // the rest is the number; the record is under the number key
	idValueRecord = 1 // the rest is the record of an older parcel
	recordVersion = 1
)

// encodeParcel lays a parcel out by hand: a version byte, uvarints for the
// integers, length-prefixed CIDs, signed head, audience and number. For a
// parcel with one audience peer that is 378 bytes against 410 as CBOR with
// one-letter keys; the signed head is 225 of them.
func encodeParcel(prefix []byte, p *store.Parcel) []byte {
	n := len(prefix) + 1 + 4*binary.MaxVarintLen64 + 2*(len(p.Genesis.Bytes())+binary.MaxVarintLen64) +
		len(p.SignedHead) + len(p.Number) + 3*binary.MaxVarintLen64
	for _, a := range p.Audience {
		n += len(a) + binary.MaxVarintLen64
	}
	b := append(make([]byte, 0, n), prefix...)
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, p.ID)
	b = binary.AppendUvarint(b, p.Seq)
	b = binary.AppendVarint(b, p.Created)
	b = appendBytes(b, p.Genesis.Bytes())
	b = appendBytes(b, p.Head.Bytes())
	b = appendBytes(b, p.SignedHead)
	b = binary.AppendUvarint(b, uint64(len(p.Audience)))
	for _, a := range p.Audience {
		b = appendBytes(b, []byte(a))
	}
	return append(b, p.Number...)
}

func decodeParcel(b []byte) (*store.Parcel, error) {
	r := reader{b: b}
	if v := r.byte(); v != recordVersion && r.err == nil {
		return nil, fmt.Errorf("%w: parcel record version %d", ErrCorrupt, v)
	}
	p := &store.Parcel{ID: r.uvarint(), Seq: r.uvarint(), Created: r.varint()}
	p.Genesis = r.cid()
	p.Head = r.cid()
	p.SignedHead = r.bytes()
	if n := r.uvarint(); n > 0 && r.err == nil {
		if n > uint64(len(r.b)) {
			return nil, fmt.Errorf("%w: parcel audience of %d", ErrCorrupt, n)
		}
		p.Audience = make([]string, n)
		for i := range p.Audience {
			p.Audience[i] = string(r.bytes())
		}
	}
	p.Number = string(r.rest())
	return p, r.done("parcel")
}

// encodeFeed stores a feed entry without its position (the key) and with
// ToSeq as a delta, so a typical entry is a dozen bytes plus the number.
func encodeFeed(e *store.FeedEntry) []byte {
	b := make([]byte, 0, 3*binary.MaxVarintLen64+len(e.Number))
	b = binary.AppendUvarint(b, e.ParcelID)
	b = binary.AppendUvarint(b, e.FromSeq)
	b = binary.AppendUvarint(b, e.ToSeq-e.FromSeq)
	return append(b, e.Number...)
}

func decodeFeed(pos uint64, b []byte) (store.FeedEntry, error) {
	r := reader{b: b}
	e := store.FeedEntry{Pos: pos, ParcelID: r.uvarint(), FromSeq: r.uvarint()}
	e.ToSeq = e.FromSeq + r.uvarint()
	e.Number = string(r.rest())
	return e, r.done("feed entry")
}

// encodeEventRef is the value of an event id key: where the event is.
func encodeEventRef(parcelID, seq uint64) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64)
	return binary.AppendUvarint(binary.AppendUvarint(b, parcelID), seq)
}

func decodeEventRef(b []byte) (parcelID, seq uint64, err error) {
	r := reader{b: b}
	parcelID, seq = r.uvarint(), r.uvarint()
	return parcelID, seq, r.done("event ref")
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

// reader decodes the hand-laid records. The first error sticks and later
// reads return zero values, so decoders check once at the end.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.fail("byte")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns a copy: values read from pebble are only valid until the
// iterator moves or the getter's closer is closed.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail("bytes")
		return nil
	}
	v := append([]byte(nil), r.b[:n]...)
	r.b = r.b[n:]
	return v
}

func (r *reader) cid() cid.Cid {
	b := r.bytes()
	if r.err != nil || len(b) == 0 {
		return cid.Undef
	}
	c, err := cid.Cast(b)
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return c
}

func (r *reader) rest() []byte {
	v := r.b
	r.b = nil
	return v
}

func (r *reader) done(what string) error {
	if r.err != nil {
		return fmt.Errorf("%s: %w", what, r.err)
	}
	if len(r.b) > 0 {
		return fmt.Errorf("%w: %d bytes after %s", ErrCorrupt, len(r.b), what)
	}
	return nil
}
