package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// RunEvents runs the suite of the store.EventLog role: appends, their
// guards and atomicity, and the reads of parcels and events. open must
// return a new, empty store each time it is called.
func RunEvents(t *testing.T, open func(t *testing.T) store.Store) {
	run(t, open, []test{
		{"AppendNewParcel", testAppendNewParcel},
		{"AppendExisting", testAppendExisting},
		{"EmptyBatch", testEmptyBatch},
		{"InvalidBatch", testInvalidBatch},
		{"Conflict", testConflict},
		{"ConflictWritesNothing", testConflictWritesNothing},
		{"UpdatesApplyInOrder", testUpdatesApplyInOrder},
		{"CanceledAppend", testCanceledAppend},
		{"RecycledNumber", testRecycledNumber},
		{"NewIfAbsent", testNewIfAbsent},
		{"NotFound", testNotFound},
		{"Events", testEvents},
		{"LookupEventIDs", testLookupEventIDs},
		{"Audience", testAudience},
		{"ReturnsCopies", testReturnsCopies},
		{"ConcurrentDistinctParcels", testConcurrentDistinct},
		{"ConcurrentSameParcel", testConcurrentSame},
	})
}

func testAppendNewParcel(t *testing.T, s store.Store) {
	ctx := t.Context()
	before := time.Now().UnixMilli()
	u, c := NewChain(Number(1)).Update(t, 0, 3)
	u.Audience = []string{"peerB", "peerA"}
	u.Details = protocol.Details{protocol.FieldRecipientName: "R. Cipient"}
	res := commit(t, s, u)
	after := time.Now().UnixMilli()
	require.NotZero(t, res.ParcelIDs[0])
	require.Equal(t, uint64(1), res.FeedTail)

	p, err := s.Parcel(ctx, Number(1))
	require.NoError(t, err)
	require.Equal(t, res.ParcelIDs[0], p.ID)
	require.Equal(t, Number(1), p.Number)
	require.Equal(t, u.Events[0].CID, p.Genesis)
	require.Equal(t, uint64(2), p.Seq)
	require.Equal(t, c.Head, p.Head)
	require.Equal(t, u.SignedHead, p.SignedHead)
	require.Equal(t, []string{"peerA", "peerB"}, p.Audience)
	require.GreaterOrEqual(t, p.Created, before)
	require.LessOrEqual(t, p.Created, after)

	byID, err := s.ParcelByID(ctx, p.ID)
	require.NoError(t, err)
	require.Equal(t, p, byID)

	requireEvents(t, s, p.ID, u.Events)
}

func testAppendExisting(t *testing.T, s store.Store) {
	ctx := t.Context()
	u1, c := NewChain(Number(1)).Update(t, 0, 2)
	res := commit(t, s, u1)
	id := res.ParcelIDs[0]

	u2, c := c.Update(t, id, 3)
	res = commit(t, s, u2)
	require.Equal(t, []uint64{id}, res.ParcelIDs)
	require.Equal(t, uint64(2), res.FeedTail)

	p, err := s.Parcel(ctx, Number(1))
	require.NoError(t, err)
	require.Equal(t, id, p.ID)
	require.Equal(t, uint64(4), p.Seq)
	require.Equal(t, c.Head, p.Head)
	require.Equal(t, u1.Events[0].CID, p.Genesis)
	require.Equal(t, u2.SignedHead, p.SignedHead)
	requireEvents(t, s, id, append(u1.Events, u2.Events...))
}

func testEmptyBatch(t *testing.T, s store.Store) {
	create(t, s, Number(1), 1)
	res, err := s.Append(t.Context(), &store.Batch{})
	require.NoError(t, err)
	require.Empty(t, res.ParcelIDs)
	require.Equal(t, uint64(1), res.FeedTail)
}

func testInvalidBatch(t *testing.T, s store.Store) {
	p := create(t, s, Number(1), 2)
	snap := snapshot(t, s, p.id)
	good, _ := NewChain(Number(2)).Update(t, 0, 1)
	cases := []struct {
		name string
		mod  func(u *store.ParcelUpdate)
	}{
		{"no number", func(u *store.ParcelUpdate) { u.Number = "" }},
		{"no events", func(u *store.ParcelUpdate) { u.Events = nil }},
		{"new not at seq 0", func(u *store.ParcelUpdate) { u.New = true }},
		{"gap after guard", func(u *store.ParcelUpdate) { u.PrevSeq = 0 }},
		{"gap inside", func(u *store.ParcelUpdate) { u.Events[1].Seq++ }},
		{"no CID", func(u *store.ParcelUpdate) { u.Events[0].CID = cid.Undef }},
		{"no bytes", func(u *store.ParcelUpdate) { u.Events[0].Bytes = nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, _ := p.chain.Update(t, p.id, 2)
			tc.mod(&u)
			_, err := s.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{good, u}})
			require.ErrorIs(t, err, store.ErrInvalid)
			require.Equal(t, snap, snapshot(t, s, p.id))
			_, err = s.Parcel(t.Context(), Number(2))
			require.ErrorIs(t, err, store.ErrNotFound)
		})
	}
}

func testConflict(t *testing.T, s store.Store) {
	p := create(t, s, Number(1), 2)
	other := create(t, s, Number(2), 1)
	cases := []struct {
		name string
		mod  func(u *store.ParcelUpdate)
	}{
		{"stale seq", func(u *store.ParcelUpdate) {
			// A writer that saw seq 0 appends seq 1, which exists.
			evs, _ := Chain{Number: p.chain.Number, Next: 1, Head: u.Events[0].CID}.Grow(t, 1)
			u.PrevSeq, u.Events = 0, evs
		}},
		{"seq ahead", func(u *store.ParcelUpdate) {
			evs, _ := Chain{Number: p.chain.Number, Next: 5, Head: u.Events[0].CID}.Grow(t, 1)
			u.PrevSeq, u.Events = 4, evs
		}},
		{"other parcel's id", func(u *store.ParcelUpdate) { u.ParcelID = other.id }},
		{"unknown id", func(u *store.ParcelUpdate) { u.ParcelID = other.id + 1000 }},
		{"unknown number", func(u *store.ParcelUpdate) {
			evs, _ := Chain{Number: Number(9), Next: 2, Head: u.Events[0].CID}.Grow(t, 1)
			u.Number, u.Events = Number(9), evs
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, _ := p.chain.Update(t, p.id, 1)
			tc.mod(&u)
			_, err := s.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
			require.ErrorIs(t, err, store.ErrConflict)
		})
	}
	// The right guard still works.
	grow(t, s, p, 1)
}

// testConflictWritesNothing appends a batch whose last update is stale:
// the good updates before it (a new parcel, an append with audience and
// details, event ids) must leave no trace.
func testConflictWritesNothing(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := create(t, s, Number(1), 2)
	q := create(t, s, Number(2), 1)
	snapP, snapQ := snapshot(t, s, p.id), snapshot(t, s, q.id)

	fresh, _ := NewChain(Number(3)).Update(t, 0, 2)
	fresh.Details = protocol.Details{protocol.FieldRecipientPhone: "+44 20 7946 0000"}
	appendP, _ := p.chain.Update(t, p.id, 2)
	appendP.Audience = []string{"peerX"}
	appendP.Details = protocol.Details{protocol.FieldPOD: "signed"}
	stale, _ := q.chain.Update(t, q.id, 1)
	stale.PrevSeq, stale.Events = 5, mustGrowAt(t, q.chain.Number, 6, 1)

	_, err := s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{fresh, appendP, stale}})
	require.ErrorIs(t, err, store.ErrConflict)

	require.Equal(t, snapP, snapshot(t, s, p.id))
	require.Equal(t, snapQ, snapshot(t, s, q.id))
	_, err = s.Parcel(ctx, Number(3))
	require.ErrorIs(t, err, store.ErrNotFound)
	refs, err := s.LookupEventIDs(ctx, eventIDs(fresh, appendP))
	require.NoError(t, err)
	require.Empty(t, refs)

	// The good part alone commits.
	res := commit(t, s, fresh, appendP)
	require.Equal(t, snapQ.tail+2, res.FeedTail)
	require.NotContains(t, []uint64{p.id, q.id}, res.ParcelIDs[0])
}

// mustGrowAt builds n events of number from seq on, linked to a made-up
// predecessor: enough for a guard that must fail before anything is read.
func mustGrowAt(t *testing.T, number string, seq uint64, n int) []store.NewEvent {
	t.Helper()
	seed, _ := NewChain(number).Grow(t, 1)
	evs, _ := Chain{Number: number, Next: seq, Head: seed[0].CID}.Grow(t, n)
	return evs
}

func testUpdatesApplyInOrder(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := create(t, s, Number(1), 1)
	first, c := p.chain.Update(t, p.id, 2)
	second, c := c.Update(t, p.id, 1)
	res := commit(t, s, first, second)
	require.Equal(t, []uint64{p.id, p.id}, res.ParcelIDs)
	got, err := s.Parcel(ctx, Number(1))
	require.NoError(t, err)
	require.Equal(t, uint64(3), got.Seq)
	require.Equal(t, c.Head, got.Head)
	require.Equal(t, second.SignedHead, got.SignedHead)

	// Two updates with the same guard: the second is stale once the first
	// applied.
	a, _ := c.Update(t, p.id, 1)
	b, _ := c.Update(t, p.id, 2)
	_, err = s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{a, b}})
	require.ErrorIs(t, err, store.ErrConflict)

	// Two new parcels with one number: the second is the newest.
	n1, _ := NewChain(Number(2)).Update(t, 0, 1)
	n2, _ := NewChain(Number(2)).Update(t, 0, 2)
	res = commit(t, s, n1, n2)
	require.NotEqual(t, res.ParcelIDs[0], res.ParcelIDs[1])
	got, err = s.Parcel(ctx, Number(2))
	require.NoError(t, err)
	require.Equal(t, res.ParcelIDs[1], got.ID)
	require.Equal(t, uint64(1), got.Seq)
}

func testCanceledAppend(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	u, _ := NewChain(Number(1)).Update(t, 0, 1)
	_, err := s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.Parcel(t.Context(), Number(1))
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testRecycledNumber(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := create(t, s, Number(1), 3)
	oldParcel, err := s.Parcel(ctx, Number(1))
	require.NoError(t, err)

	u, c := NewChain(Number(1)).Update(t, 0, 1)
	res := commit(t, s, u)
	fresh := parcel{id: res.ParcelIDs[0], chain: c}
	require.NotEqual(t, old.id, fresh.id)

	got, err := s.Parcel(ctx, Number(1))
	require.NoError(t, err)
	require.Equal(t, fresh.id, got.ID)
	require.Equal(t, uint64(0), got.Seq)
	require.Equal(t, u.Events[0].CID, got.Genesis)

	// The old parcel stays readable by id, unchanged.
	byID, err := s.ParcelByID(ctx, old.id)
	require.NoError(t, err)
	require.Equal(t, oldParcel, byID)
	evs, err := s.Events(ctx, old.id, 0, 0)
	require.NoError(t, err)
	require.Len(t, evs, 3)
	refs, err := s.LookupEventIDs(ctx, []string{EventID(Number(1), 2)})
	require.NoError(t, err)
	require.Equal(t, old.id, refs[EventID(Number(1), 2)].ParcelID)

	// Appends go to the newest parcel only.
	stale, _ := old.chain.Update(t, old.id, 1)
	_, err = s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{stale}})
	require.ErrorIs(t, err, store.ErrConflict)
	u2, _ := fresh.chain.Update(t, fresh.id, 2)
	commit(t, s, u2)
	requireEvents(t, s, fresh.id, append(u.Events, u2.Events...))
	byID, err = s.ParcelByID(ctx, old.id)
	require.NoError(t, err)
	require.Equal(t, oldParcel, byID)
}

// testNewIfAbsent checks the guard that keeps two writers from both
// starting a parcel for one number.
func testNewIfAbsent(t *testing.T, s store.Store) {
	ctx := t.Context()
	u, _ := NewChain(Number(1)).Update(t, 0, 1)
	u.IfAbsent = true
	first := commit(t, s, u)

	again, _ := NewChain(Number(1)).Update(t, 0, 2)
	again.IfAbsent = true
	other, _ := NewChain(Number(2)).Update(t, 0, 1)
	_, err := s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{other, again}})
	require.ErrorIs(t, err, store.ErrConflict)
	got, err := s.Parcel(ctx, Number(1))
	require.NoError(t, err)
	require.Equal(t, first.ParcelIDs[0], got.ID)
	_, err = s.Parcel(ctx, Number(2))
	require.ErrorIs(t, err, store.ErrNotFound, "a batch that failed its guard wrote its other updates")

	// Within one batch, a number started by an earlier update is taken.
	a, _ := NewChain(Number(3)).Update(t, 0, 1)
	b, _ := NewChain(Number(3)).Update(t, 0, 1)
	a.IfAbsent, b.IfAbsent = true, true
	_, err = s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{a, b}})
	require.ErrorIs(t, err, store.ErrConflict)
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.Parcel(ctx, Number(1))
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.ParcelByID(ctx, 1)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.Events(ctx, 1, 0, 0)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.Details(ctx, 1)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.Grant(ctx, "00000000000000000000000000000000")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.RevokeGrant(ctx, "00000000000000000000000000000000", 1), store.ErrNotFound)
}

func testEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	u, _ := NewChain(Number(1)).Update(t, 0, 8)
	id := commit(t, s, u).ParcelIDs[0]
	create(t, s, Number(2), 3) // a neighbour whose events must not leak in
	cases := []struct {
		from  uint64
		limit int
		want  []uint64
	}{
		{0, 0, []uint64{0, 1, 2, 3, 4, 5, 6, 7}},
		{0, 3, []uint64{0, 1, 2}},
		{3, 2, []uint64{3, 4}},
		{6, 10, []uint64{6, 7}},
		{7, 0, []uint64{7}},
		{8, 0, nil},
		{100, 5, nil},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("from%d_limit%d", tc.from, tc.limit), func(t *testing.T) {
			evs, err := s.Events(ctx, id, tc.from, tc.limit)
			require.NoError(t, err)
			require.Len(t, evs, len(tc.want))
			for i, seq := range tc.want {
				require.Equal(t, seq, evs[i].Seq)
				require.Equal(t, u.Events[seq].Bytes, evs[i].Bytes)
			}
		})
	}
}

func testLookupEventIDs(t *testing.T, s store.Store) {
	ctx := t.Context()
	u1, _ := NewChain(Number(1)).Update(t, 0, 3)
	u2, _ := NewChain(Number(2)).Update(t, 0, 2)
	u2.Events[1].ID = "" // an event without a carrier id is not indexed
	res := commit(t, s, u1, u2)

	ids := []string{EventID(Number(1), 0), EventID(Number(1), 2), EventID(Number(2), 0), EventID(Number(2), 1), "never-stored", ""}
	refs, err := s.LookupEventIDs(ctx, ids)
	require.NoError(t, err)
	require.Equal(t, map[string]store.EventRef{
		EventID(Number(1), 0): {ParcelID: res.ParcelIDs[0], Number: Number(1), Seq: 0, CID: u1.Events[0].CID},
		EventID(Number(1), 2): {ParcelID: res.ParcelIDs[0], Number: Number(1), Seq: 2, CID: u1.Events[2].CID},
		EventID(Number(2), 0): {ParcelID: res.ParcelIDs[1], Number: Number(2), Seq: 0, CID: u2.Events[0].CID},
	}, refs)

	refs, err = s.LookupEventIDs(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, refs)
}

func testAudience(t *testing.T, s store.Store) {
	ctx := t.Context()
	u, c := NewChain(Number(1)).Update(t, 0, 1)
	u.Audience = []string{"peerC", "peerA"}
	id := commit(t, s, u).ParcelIDs[0]
	steps := []struct {
		add  []string
		want []string
	}{
		{[]string{"peerB", "peerA"}, []string{"peerA", "peerB", "peerC"}},
		{nil, []string{"peerA", "peerB", "peerC"}},
		{[]string{"peerD", "peerD"}, []string{"peerA", "peerB", "peerC", "peerD"}},
	}
	for _, st := range steps {
		var u store.ParcelUpdate
		u, c = c.Update(t, id, 1)
		u.Audience = st.add
		commit(t, s, u)
		p, err := s.Parcel(ctx, Number(1))
		require.NoError(t, err)
		require.Equal(t, st.want, p.Audience)
	}
}

// testReturnsCopies checks that callers cannot change stored data through
// slices they passed in or got back.
func testReturnsCopies(t *testing.T, s store.Store) {
	ctx := t.Context()
	u, _ := NewChain(Number(1)).Update(t, 0, 2)
	u.Audience = []string{"peerA"}
	want := append([]byte(nil), u.Events[0].Bytes...)
	id := commit(t, s, u).ParcelIDs[0]
	u.Events[0].Bytes[0] ^= 0xff
	u.Audience[0] = "peerZ"

	evs, err := s.Events(ctx, id, 0, 1)
	require.NoError(t, err)
	require.Equal(t, want, evs[0].Bytes)
	evs[0].Bytes[0] ^= 0xff
	p, err := s.Parcel(ctx, Number(1))
	require.NoError(t, err)
	require.Equal(t, []string{"peerA"}, p.Audience)
	p.Audience[0] = "peerY"
	p.SignedHead[0] ^= 0xff

	evs, err = s.Events(ctx, id, 0, 1)
	require.NoError(t, err)
	require.Equal(t, want, evs[0].Bytes)
	again, err := s.Parcel(ctx, Number(1))
	require.NoError(t, err)
	require.Equal(t, []string{"peerA"}, again.Audience)
	require.Equal(t, u.SignedHead, again.SignedHead)
}

// snap is what a failed Append must leave untouched.
type snap struct {
	parcel  *store.Parcel
	events  []store.Event
	details protocol.Details
	tail    uint64
	feed    []store.FeedEntry
	stats   store.Stats
}

func snapshot(t *testing.T, s store.Store, id uint64) snap {
	t.Helper()
	ctx := t.Context()
	var sn snap
	var err error
	sn.parcel, err = s.ParcelByID(ctx, id)
	require.NoError(t, err)
	sn.events, err = s.Events(ctx, id, 0, 0)
	require.NoError(t, err)
	sn.details, err = s.Details(ctx, id)
	if !errors.Is(err, store.ErrNotFound) {
		require.NoError(t, err)
	}
	sn.tail, err = s.FeedTail(ctx)
	require.NoError(t, err)
	sn.feed, err = s.Feed(ctx, 0, 0)
	require.NoError(t, err)
	sn.stats, err = s.Stats(ctx)
	require.NoError(t, err)
	sn.stats.DiskBytes = 0 // compactions change it
	return sn
}

// requireEvents checks that parcel id holds exactly want, from seq 0.
func requireEvents(t *testing.T, s store.Store, id uint64, want []store.NewEvent) {
	t.Helper()
	got, err := s.Events(t.Context(), id, 0, 0)
	require.NoError(t, err)
	require.Len(t, got, len(want))
	for i := range want {
		require.Equal(t, uint64(i), got[i].Seq)
		require.Equal(t, want[i].Bytes, got[i].Bytes, "seq %d", i)
		require.Equal(t, want[i].CID, protocol.CIDOf(got[i].Bytes), "seq %d", i)
	}
}

func eventIDs(updates ...store.ParcelUpdate) []string {
	var ids []string
	for _, u := range updates {
		for _, e := range u.Events {
			ids = append(ids, e.ID)
		}
	}
	return ids
}
