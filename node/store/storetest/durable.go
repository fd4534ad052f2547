package storetest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// RunDurable runs the restart tests: everything written before Close is
// read back after reopening the same directory, and the counters a store
// assigns (parcel ids, feed positions, audit seqs) continue instead of
// starting over. open must open the store in dir, creating it when dir is
// empty.
func RunDurable(t *testing.T, open func(t *testing.T, dir string) store.Store) {
	t.Run("Reopen", func(t *testing.T) { testReopen(t, open) })
	t.Run("ReopenEmpty", func(t *testing.T) {
		dir := t.TempDir()
		s := closeAtEnd(t, open(t, dir))
		id := s.ID()
		require.NoError(t, s.Close())
		s = closeAtEnd(t, open(t, dir))
		require.Equal(t, id, s.ID())
		tail, err := s.FeedTail(t.Context())
		require.NoError(t, err)
		require.Zero(t, tail)
	})
}

// state is everything a reopened store must return as before.
type state struct {
	id        string
	parcels   []*store.Parcel
	events    [][]store.Event
	details   protocol.Details
	refs      map[string]store.EventRef
	feed      []store.FeedEntry
	grants    []*store.GrantRecord
	audit     []store.AuditEntry
	parcelsN  uint64
	eventsN   uint64
	recycled  *store.Parcel
	recycledE []store.Event
}

func readState(t *testing.T, s store.Store, numbers []string, oldID uint64, ids []string) state {
	t.Helper()
	ctx := t.Context()
	st := state{id: s.ID()}
	for _, n := range numbers {
		p, err := s.Parcel(ctx, n)
		require.NoError(t, err)
		evs, err := s.Events(ctx, p.ID, 0, 0)
		require.NoError(t, err)
		st.parcels, st.events = append(st.parcels, p), append(st.events, evs)
	}
	var err error
	st.details, err = s.Details(ctx, st.parcels[0].ID)
	require.NoError(t, err)
	st.recycled, err = s.ParcelByID(ctx, oldID)
	require.NoError(t, err)
	st.recycledE, err = s.Events(ctx, oldID, 0, 0)
	require.NoError(t, err)
	st.refs, err = s.LookupEventIDs(ctx, ids)
	require.NoError(t, err)
	st.feed, err = s.Feed(ctx, 0, 0)
	require.NoError(t, err)
	st.grants, err = s.Grants(ctx)
	require.NoError(t, err)
	st.audit, err = s.Audit(ctx, store.AuditQuery{})
	require.NoError(t, err)
	stats, err := s.Stats(ctx)
	require.NoError(t, err)
	st.parcelsN, st.eventsN = stats.Parcels, stats.Events
	return st
}

func testReopen(t *testing.T, open func(t *testing.T, dir string) store.Store) {
	ctx := t.Context()
	dir := t.TempDir()
	s := closeAtEnd(t, open(t, dir))

	old := create(t, s, Number(1), 2)
	u, c1 := NewChain(Number(1)).Update(t, 0, 3) // recycles Number(1)
	u.Audience = []string{"peerB", "peerA"}
	u.Details = protocol.Details{protocol.FieldRecipientName: "R. Cipient", protocol.FieldPOD: "signed"}
	p1 := parcel{id: commit(t, s, u).ParcelIDs[0], chain: c1}
	p2 := create(t, s, Number(2), 1)
	p2 = grow(t, s, p2, 4)
	g := testGrant("11111111111111111111111111111111", baseTime)
	require.NoError(t, s.PutGrant(ctx, g))
	require.NoError(t, s.RevokeGrant(ctx, g.Grant.ID, baseTime+10))
	require.NoError(t, s.PutGrant(ctx, testGrant("22222222222222222222222222222222", baseTime+1)))
	require.NoError(t, s.AppendAudit(ctx, []store.AuditEntry{
		{Time: baseTime, Peer: "peerA", GrantID: g.Grant.ID, Number: Number(1), Fields: []string{protocol.FieldPOD}, Allowed: true},
		{Time: baseTime + 1, Peer: "peerB", Number: Number(2), Allowed: false, Reason: "no grant"},
	}))

	numbers := []string{Number(1), Number(2)}
	ids := []string{EventID(Number(1), 0), EventID(Number(1), 2), EventID(Number(2), 4)}
	before := readState(t, s, numbers, old.id, ids)
	require.Len(t, before.refs, 3)
	require.NoError(t, s.Close())

	s = closeAtEnd(t, open(t, dir))
	require.Equal(t, before, readState(t, s, numbers, old.id, ids))
	require.NoError(t, s.WaitFeed(ctx, before.feed[len(before.feed)-1].Pos-1))

	// Counters continue: a new parcel gets a fresh id, the feed goes on
	// from its tail, audit seqs keep rising, and guards see the reopened
	// heads.
	fresh := create(t, s, Number(3), 1)
	require.NotContains(t, []uint64{old.id, p1.id, p2.id}, fresh.id)
	p1 = grow(t, s, p1, 1)
	tail, err := s.FeedTail(ctx)
	require.NoError(t, err)
	require.Equal(t, before.feed[len(before.feed)-1].Pos+2, tail)
	require.NoError(t, s.AppendAudit(ctx, []store.AuditEntry{{Time: baseTime + 2, Peer: "peerC"}}))
	audit, err := s.Audit(ctx, store.AuditQuery{})
	require.NoError(t, err)
	require.Len(t, audit, 3)
	require.Greater(t, audit[2].Seq, audit[1].Seq)
	stale, _ := p2.chain.Update(t, p2.id, 1)
	stale.PrevSeq, stale.Events = 1, mustGrowAt(t, Number(2), 2, 1)
	_, err = s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{stale}})
	require.ErrorIs(t, err, store.ErrConflict)

	// And all of that survives a second restart.
	after := readState(t, s, numbers, old.id, ids)
	require.NoError(t, s.Close())
	s = closeAtEnd(t, open(t, dir))
	require.Equal(t, after, readState(t, s, numbers, old.id, ids))
	got, err := s.Parcel(ctx, Number(3))
	require.NoError(t, err)
	require.Equal(t, fresh.id, got.ID)
}
