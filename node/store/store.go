// Package store is the carrier node's durable storage: parcels and their
// event chains, the change feed that watch subscriptions read, details,
// grants and the audit log. Store is the one interface, composed of the
// roles its consumers take (EventLog, FeedReader, Access, StatsCloser);
// every backend (memstore for tests, pebble by default, postgres for
// scale-out) passes the conformance suite in storetest.
package store

import (
	"context"
	"errors"

	"github.com/ipfs/go-cid"

	"github.com/opentrack/opentrack/protocol"
)

// Errors. Backends wrap them with %w.
var (
	ErrNotFound = errors.New("store: not found")
	// ErrConflict means a ParcelUpdate's guard did not match the stored
	// head: another writer appended first. Nothing of the batch was written.
	ErrConflict = errors.New("store: conflicting concurrent append")
	ErrClosed   = errors.New("store: closed")
	// ErrUnknownCursor means a feed position this store never issued.
	ErrUnknownCursor = errors.New("store: unknown feed position")
	// ErrExpired means a parcel's details passed their retention and were
	// erased (node/store/seal).
	ErrExpired = errors.New("store: details passed retention")
)

// Store is a carrier node's storage: every role below in one value, which
// each backend implements and the node opens. All methods are safe for
// concurrent use. Writes are durable (fsynced) when they return nil.
type Store interface {
	EventLog
	FeedReader
	Access
	StatsCloser
}

// EventLog is the parcels and their event chains: ingest appends to it,
// and track and watch read the parcels and events they answer with.
type EventLog interface {
	// Append commits every update of b atomically and durably, and adds one
	// feed entry per update. If any guard fails it writes nothing and
	// returns ErrConflict.
	Append(ctx context.Context, b *Batch) (*AppendResult, error)

	// Parcel returns the newest parcel with this number.
	Parcel(ctx context.Context, number string) (*Parcel, error)
	// ParcelByID returns a parcel by its store id.
	ParcelByID(ctx context.Context, id uint64) (*Parcel, error)
	// Events returns up to limit event blocks of a parcel with seq ≥ from,
	// in seq order.
	Events(ctx context.Context, parcelID uint64, from uint64, limit int) ([]Event, error)
	// LookupEventIDs maps carrier event ids to the events stored under
	// them; ids never stored are absent from the result.
	LookupEventIDs(ctx context.Context, ids []string) (map[string]EventRef, error)
}

// HeadsReader is an optional EventLog extension: the newest parcel of
// many numbers in one call, nil where a number has none. Ingest reads a
// batch's heads with it where the store has it (pebble, postgres, seal)
// and falls back to Parcel for each number elsewhere.
type HeadsReader interface {
	Parcels(ctx context.Context, numbers []string) ([]*Parcel, error)
}

// FeedReader is the change feed: watch subscriptions read it from a
// cursor and wait on its tail, and the node's health check asks it for
// the tail.
type FeedReader interface {
	// Feed returns up to limit feed entries with position > after.
	Feed(ctx context.Context, after uint64, limit int) ([]FeedEntry, error)
	// FeedTail returns the newest feed position (0 when empty).
	FeedTail(ctx context.Context) (uint64, error)
	// WaitFeed blocks until the feed tail is beyond after or ctx ends.
	WaitFeed(ctx context.Context, after uint64) error
	// ID identifies this store's feed, so cursors from another store are
	// recognised as unknown. Replicas sharing one database share it.
	ID() string
}

// DetailsReader reads the personal data of parcels. It is the part of
// Access that a reader of parcels needs to show them with their details
// (ingest's parcel view, and DetailsFor).
type DetailsReader interface {
	// Details returns the personal data of a parcel (ErrNotFound if none,
	// ErrExpired once erased).
	Details(ctx context.Context, parcelID uint64) (protocol.Details, error)
}

// Access is what stands between peers and the personal data: details,
// the grants that disclose them and the audit log of each disclosure.
// Track and watch check grants and audit against it; the admin grants
// API manages the grants and reads the log.
type Access interface {
	DetailsReader

	// PutGrant records an issued grant.
	PutGrant(ctx context.Context, g *GrantRecord) error
	// Grant returns a grant by id.
	Grant(ctx context.Context, id string) (*GrantRecord, error)
	// RevokeGrant marks a grant revoked at a Unix ms time.
	RevokeGrant(ctx context.Context, id string, at int64) error
	// Grants lists every grant, oldest first.
	Grants(ctx context.Context) ([]*GrantRecord, error)

	// AppendAudit durably appends audit entries; the store assigns Seq.
	AppendAudit(ctx context.Context, entries []AuditEntry) error
	// Audit returns entries matching q, oldest first.
	Audit(ctx context.Context, q AuditQuery) ([]AuditEntry, error)
}

// StatsCloser is the store as a resource the node runs: sizes for its
// metrics and benchmarks, and the close at shutdown.
type StatsCloser interface {
	// Stats reports sizes for metrics and benchmarks.
	Stats(ctx context.Context) (Stats, error)
	// Close flushes and closes the store; later calls fail with ErrClosed.
	Close() error
}

// Parcel is the current state of one parcel: (carrier, number, genesis).
type Parcel struct {
	ID         uint64
	Number     string
	Genesis    cid.Cid
	Seq        uint64  // seq of the head event
	Head       cid.Cid // CID of the head event
	SignedHead []byte  // COSE_Sign1 of the Head statement for Seq
	Audience   []string
	Created    int64 // Unix ms of the first ingest
}

// Event is one stored event block.
type Event struct {
	Seq   uint64
	Bytes []byte
}

// EventRef locates an event stored under a carrier event id.
type EventRef struct {
	ParcelID uint64
	Number   string
	Seq      uint64
	CID      cid.Cid
}

// Batch is what one ingest commit writes.
type Batch struct {
	Updates []ParcelUpdate
}

// ParcelUpdate appends consecutive events to one parcel, or starts a new
// parcel when New is set (its first event has seq 0).
type ParcelUpdate struct {
	Number string
	New    bool
	// ParcelID and PrevSeq guard an append to an existing parcel: the
	// stored parcel must have this id and head seq, or Append fails with
	// ErrConflict. Ignored when New.
	ParcelID uint64
	PrevSeq  uint64
	// IfAbsent, with New, guards the start of a parcel: the number must
	// have no parcel yet, or Append fails with ErrConflict. Ingest sets
	// it, so that two writers (replicas sharing one database) that both
	// found a number unknown cannot both start a parcel for it. A
	// recycled number is started without it.
	IfAbsent bool

	Events     []NewEvent // seqs continue from PrevSeq (or start at 0)
	SignedHead []byte     // the head after Events
	Audience   []string   // peer IDs to add to the parcel's audience
	Details    protocol.Details
}

// NewEvent is an event to append.
type NewEvent struct {
	ID    string // the carrier's event id (idempotency key), may be empty
	Seq   uint64
	CID   cid.Cid
	Bytes []byte
}

// AppendResult reports what Append assigned, one ParcelID per update.
type AppendResult struct {
	ParcelIDs []uint64
	FeedTail  uint64
}

// FeedEntry says that a parcel gained events FromSeq..ToSeq.
type FeedEntry struct {
	Pos      uint64
	ParcelID uint64
	Number   string
	FromSeq  uint64
	ToSeq    uint64
}

// GrantRecord is an issued grant as the carrier keeps it.
type GrantRecord struct {
	Grant   protocol.Grant
	Signed  []byte // the COSE_Sign1 handed to the holder
	Revoked int64  // Unix ms, 0 if not revoked
}

// AuditEntry records one disclosure of details, or one refused attempt.
type AuditEntry struct {
	Seq     uint64
	Time    int64 // Unix ms
	Peer    string
	GrantID string
	Number  string
	Fields  []string
	Allowed bool
	Reason  string // why it was refused, or how it was allowed
}

// AuditQuery filters the audit log. Zero fields match everything.
type AuditQuery struct {
	Since int64 // Unix ms, inclusive
	Peer  string
	Limit int
}

// Stats are store sizes.
type Stats struct {
	Parcels   uint64
	Events    uint64
	DiskBytes uint64
}

// DetailsScanner is what a layer that rewrites details (node/store/seal)
// needs of a backend beyond Store: the details of many parcels in one
// call, which ingest reads once per batch, and a walk over all of them.
type DetailsScanner interface {
	// DetailsOf returns the details of each id that has some; ids without
	// are absent from the result.
	DetailsOf(ctx context.Context, ids []uint64) (map[uint64]protocol.Details, error)
	// EachDetails calls fn with each parcel's details in id order until fn
	// returns false or an error.
	EachDetails(ctx context.Context, fn func(parcelID uint64, d protocol.Details) (bool, error)) error
}

// ParcelDetailer is a store that reads details faster with the parcel
// at hand: node/store/seal binds them to the parcel's number and genesis,
// which Details(id) has to read first.
type ParcelDetailer interface {
	ParcelDetails(ctx context.Context, p *Parcel) (protocol.Details, error)
}

// DetailsFor returns the details of p, a parcel st returned: st's
// ParcelDetails where it has one, else Details(p.ID).
func DetailsFor(ctx context.Context, st DetailsReader, p *Parcel) (protocol.Details, error) {
	if pd, ok := st.(ParcelDetailer); ok {
		return pd.ParcelDetails(ctx, p)
	}
	return st.Details(ctx, p.ID)
}
