package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// testConcurrentDistinct has writers append to their own parcels while
// readers follow the feed; every write must land once, in a gap-free feed.
func testConcurrentDistinct(t *testing.T, s store.Store) {
	const writers, rounds = 8, 10
	ctx := t.Context()
	// Updates are built up front: only the test goroutine may fail a test.
	plans := make([][]store.ParcelUpdate, writers)
	for w := range plans {
		u, c := NewChain(Number(w)).Update(t, 0, 1)
		plans[w] = append(plans[w], u)
		for range rounds {
			u, c = c.Update(t, 0, 1) // ParcelID is filled in once known
			plans[w] = append(plans[w], u)
		}
	}

	done := make(chan struct{})
	var readers sync.WaitGroup
	readErr := make(chan error, 2)
	for range 2 {
		readers.Go(func() { followFeed(ctx, s, done, readErr) })
	}

	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			var id uint64
			for i, u := range plans[w] {
				if i > 0 {
					u.ParcelID = id
				}
				res, err := s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{u}})
				if err != nil {
					errs <- err
					return
				}
				id = res.ParcelIDs[0]
			}
		})
	}
	wg.Wait()
	close(done)
	readers.Wait()
	close(errs)
	close(readErr)
	for err := range errs {
		require.NoError(t, err)
	}
	for err := range readErr {
		require.NoError(t, err)
	}

	feed, err := s.Feed(ctx, 0, 0)
	require.NoError(t, err)
	require.Len(t, feed, writers*(rounds+1))
	next := map[uint64]uint64{} // parcel id → next expected seq
	for i, e := range feed {
		require.Equal(t, uint64(i+1), e.Pos)
		require.Equal(t, next[e.ParcelID], e.FromSeq, "parcel %d", e.ParcelID)
		next[e.ParcelID] = e.ToSeq + 1
	}
	require.Len(t, next, writers)
	for w, plan := range plans {
		p, err := s.Parcel(ctx, Number(w))
		require.NoError(t, err)
		var want []store.NewEvent
		for _, u := range plan {
			want = append(want, u.Events...)
		}
		requireEvents(t, s, p.ID, want)
	}
}

// followFeed reads s's feed in small pages until done, reading each
// entry's events, and sends the first error, or a gap, to errc.
func followFeed(ctx context.Context, s store.Store, done <-chan struct{}, errc chan<- error) {
	var after uint64
	for {
		select {
		case <-done:
			return
		default:
		}
		entries, err := s.Feed(ctx, after, 7)
		if err != nil {
			errc <- err
			return
		}
		for _, e := range entries {
			if e.Pos != after+1 {
				errc <- errors.New("feed read has a gap")
				return
			}
			after = e.Pos
			if _, err := s.Events(ctx, e.ParcelID, e.FromSeq, 0); err != nil {
				errc <- err
				return
			}
		}
	}
}

// testConcurrentSame races writers on one parcel, round by round, all
// guarding on the same head: exactly one wins each round and the chain
// stays gap-free and linked.
func testConcurrentSame(t *testing.T, s store.Store) {
	const writers, rounds = 6, 15
	ctx := t.Context()
	p := create(t, s, Number(1), 1)
	want := protocol.Details{}
	for round := range rounds {
		// Writers add different numbers of events, so the stored chain
		// shows whose append won, and different details, merged into
		// those of the winners before.
		updates := make([]store.ParcelUpdate, writers)
		chains := make([]Chain, writers)
		for w := range updates {
			updates[w], chains[w] = p.chain.Update(t, p.id, w%3+1)
			updates[w].Details = protocol.Details{protocol.FieldCourierName: fmt.Sprintf("writer %d round %d", w, round)}
			if round%2 == 0 {
				updates[w].Details[protocol.FieldPOD] = fmt.Sprintf("pod %d of round %d", w, round)
			}
		}
		start := make(chan struct{})
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				<-start
				_, errs[w] = s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{updates[w]}})
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for w, err := range errs {
			if err == nil {
				require.Equal(t, -1, winner, "two appends with the same guard both won")
				winner = w
				continue
			}
			require.ErrorIs(t, err, store.ErrConflict)
		}
		require.NotEqual(t, -1, winner, "no append won")
		got, err := s.Parcel(ctx, Number(1))
		require.NoError(t, err)
		require.Equal(t, chains[winner].Next-1, got.Seq)
		require.Equal(t, chains[winner].Head, got.Head)
		p.chain = chains[winner]
		maps.Copy(want, updates[winner].Details)
		d, err := s.Details(ctx, p.id)
		require.NoError(t, err)
		require.Equal(t, want, d, "round %d: the winner's details over the earlier winners'", round)
	}

	evs, err := s.Events(ctx, p.id, 0, 0)
	require.NoError(t, err)
	require.Len(t, evs, int(p.chain.Next))
	for i, ev := range evs {
		require.Equal(t, uint64(i), ev.Seq)
		e, err := protocol.DecodeEvent(ev.Bytes)
		require.NoError(t, err)
		if i > 0 {
			require.Equal(t, protocol.CIDOf(evs[i-1].Bytes), e.Prev.Cid, "seq %d does not link to seq %d", i, i-1)
		}
	}
	feed, err := s.Feed(ctx, 0, 0)
	require.NoError(t, err)
	require.Len(t, feed, rounds+1)
	for i := 1; i < len(feed); i++ {
		require.Equal(t, feed[i-1].ToSeq+1, feed[i].FromSeq)
	}
}
