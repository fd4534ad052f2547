package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
)

// RunFeed runs the suite of the store.FeedReader role: the feed, its
// tail and waits, and the feed id. open must return a new, empty store
// each time it is called.
func RunFeed(t *testing.T, open func(t *testing.T) store.Store) {
	run(t, open, []test{
		{"Feed", testFeed},
		{"WaitFeed", testWaitFeed},
		{"ID", func(t *testing.T, s store.Store) { testID(t, s, open(t)) }},
	})
}

func testFeed(t *testing.T, s store.Store) {
	ctx := t.Context()
	tail, err := s.FeedTail(ctx)
	require.NoError(t, err)
	require.Zero(t, tail)
	entries, err := s.Feed(ctx, 0, 10)
	require.NoError(t, err)
	require.Empty(t, entries)

	a, ca := NewChain(Number(1)).Update(t, 0, 2)
	b, cb := NewChain(Number(2)).Update(t, 0, 1)
	c, _ := NewChain(Number(3)).Update(t, 0, 3)
	res := commit(t, s, a, b, c)
	require.Equal(t, uint64(3), res.FeedTail)
	ida, idb, idc := res.ParcelIDs[0], res.ParcelIDs[1], res.ParcelIDs[2]
	a2, _ := ca.Update(t, ida, 3)
	b2, _ := cb.Update(t, idb, 1)
	res = commit(t, s, b2, a2)
	require.Equal(t, uint64(5), res.FeedTail)

	all := []store.FeedEntry{
		{Pos: 1, ParcelID: ida, Number: Number(1), FromSeq: 0, ToSeq: 1},
		{Pos: 2, ParcelID: idb, Number: Number(2), FromSeq: 0, ToSeq: 0},
		{Pos: 3, ParcelID: idc, Number: Number(3), FromSeq: 0, ToSeq: 2},
		{Pos: 4, ParcelID: idb, Number: Number(2), FromSeq: 1, ToSeq: 1},
		{Pos: 5, ParcelID: ida, Number: Number(1), FromSeq: 2, ToSeq: 4},
	}
	cases := []struct {
		after uint64
		limit int
		want  []store.FeedEntry
	}{
		{0, 0, all},
		{0, 2, all[:2]},
		{2, 0, all[2:]},
		{3, 1, all[3:4]},
		{4, 10, all[4:]},
		{5, 10, nil},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("after%d_limit%d", tc.after, tc.limit), func(t *testing.T) {
			got, err := s.Feed(ctx, tc.after, tc.limit)
			require.NoError(t, err)
			if tc.want == nil {
				require.Empty(t, got)
				return
			}
			require.Equal(t, tc.want, got)
		})
	}
	tail, err = s.FeedTail(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(5), tail)
	_, err = s.Feed(ctx, 6, 10)
	require.ErrorIs(t, err, store.ErrUnknownCursor)
}

func testWaitFeed(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := create(t, s, Number(1), 1)

	// Already beyond: returns at once.
	require.NoError(t, s.WaitFeed(ctx, 0))
	require.ErrorIs(t, s.WaitFeed(ctx, 2), store.ErrUnknownCursor)

	// Blocks until an append, then wakes.
	woke := make(chan error, 1)
	go func() { woke <- s.WaitFeed(ctx, 1) }()
	select {
	case err := <-woke:
		t.Fatalf("WaitFeed returned before an append: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	grow(t, s, p, 1)
	select {
	case err := <-woke:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("WaitFeed did not wake on append")
	}

	// Honours its context.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.WaitFeed(cctx, 2), context.DeadlineExceeded)

	// Close wakes a waiter.
	go func() { woke <- s.WaitFeed(ctx, 2) }()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, s.Close())
	select {
	case err := <-woke:
		require.ErrorIs(t, err, store.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("WaitFeed did not wake on Close")
	}
}

func testID(t *testing.T, s, other store.Store) {
	closeAtEnd(t, other)
	require.NotEmpty(t, s.ID())
	require.Equal(t, s.ID(), s.ID())
	require.NotEqual(t, s.ID(), other.ID(), "two stores share a feed id")
}
