package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/postgres/pgtest"
	"github.com/opentrack/opentrack/node/store/storetest"
)

// TestNaiveFeedMissesRows shows the hazard of DESIGN §6 on this server:
// positions taken from a sequence commit out of order, and a reader that
// follows "pos > cursor" skips the row that commits late. The store must
// not have it (TestFeedManyWriters, TestFeedPositionsCommitInOrder).
func TestNaiveFeedMissesRows(t *testing.T) {
	url := pgtest.URL(t)
	ctx := t.Context()
	a, b, r := connect(t, url), connect(t, url), connect(t, url)
	_, err := a.Exec(ctx, `CREATE SEQUENCE naive_pos; CREATE TABLE naive_feed (pos BIGINT PRIMARY KEY DEFAULT nextval('naive_pos'))`)
	require.NoError(t, err)

	slow, err := a.Begin(ctx)
	require.NoError(t, err)
	_, err = slow.Exec(ctx, `INSERT INTO naive_feed DEFAULT VALUES`) // takes pos 1
	require.NoError(t, err)
	_, err = b.Exec(ctx, `INSERT INTO naive_feed DEFAULT VALUES`) // takes pos 2, commits first
	require.NoError(t, err)

	var seen []int64
	read := func(after int64) int64 {
		rows, err := r.Query(ctx, `SELECT pos FROM naive_feed WHERE pos > $1 ORDER BY pos`, after)
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		seen = append(seen, got...)
		if len(got) > 0 {
			return got[len(got)-1]
		}
		return after
	}
	cursor := read(0)
	require.NoError(t, slow.Commit(ctx))
	read(cursor)
	require.Equal(t, []int64{2}, seen, "the naive reader was expected to miss pos 1")
}

// TestFeedPositionsCommitInOrder replays that interleaving on the store:
// while a writer holds the position lock (as an append between taking
// its positions and committing does), another store's append cannot
// commit a later position; it waits, and takes the next one after.
func TestFeedPositionsCommitInOrder(t *testing.T) {
	url := pgtest.URL(t)
	ctx := t.Context()
	s1, s2 := open(t, url), open(t, url)
	t.Cleanup(func() { s1.Close(); s2.Close() })
	u, _ := storetest.NewChain(storetest.Number(1)).Update(t, 0, 1)
	res, err := s1.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.NoError(t, err)
	require.Equal(t, uint64(1), res.FeedTail)

	inFlight, err := connect(t, url).Begin(ctx)
	require.NoError(t, err)
	_, err = inFlight.Exec(ctx, `UPDATE ot_meta SET feed_tail = feed_tail + 1 WHERE singleton = 1`) // takes pos 2
	require.NoError(t, err)

	done := make(chan *store.AppendResult, 1)
	go func() {
		u, _ := storetest.NewChain(storetest.Number(2)).Update(t, 0, 1)
		res, err := s2.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{u}})
		if err != nil {
			res = nil
		}
		done <- res
	}()
	select {
	case <-done:
		t.Fatal("an append committed while an earlier position was in flight")
	case <-time.After(300 * time.Millisecond):
	}
	entries, err := s1.Feed(ctx, 1, 0)
	require.NoError(t, err)
	require.Empty(t, entries)
	require.NoError(t, inFlight.Rollback(ctx)) // the in-flight writer fails: its position is not used
	select {
	case res := <-done:
		require.NotNil(t, res)
		require.Equal(t, uint64(2), res.FeedTail, "a position was skipped")
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting append did not commit")
	}
}

// TestFeedManyWriters has several stores, each with its own pool as a
// replica would, append concurrently while readers on another store
// follow the feed by position. Every reader must see every update
// exactly once, at consecutive positions.
//
// long: the writers, the readers and the final check share the positions seen.
func TestFeedManyWriters(t *testing.T) {
	const stores, writersPer, rounds, perBatch = 3, 3, 12, 3
	url := pgtest.URL(t)
	ctx := t.Context()
	writers := make([]store.Store, stores)
	for i := range writers {
		writers[i] = open(t, url)
	}
	reader := open(t, url)
	t.Cleanup(func() {
		for _, s := range writers {
			s.Close()
		}
		reader.Close()
	})
	// Batches are built up front: only the test goroutine may fail a test.
	type plan struct{ batches []*store.Batch }
	plans := make([]plan, stores*writersPer)
	total := 0
	for w := range plans {
		chains := make([]storetest.Chain, perBatch)
		for j := range chains {
			chains[j] = storetest.NewChain(storetest.Number(w*perBatch + j))
		}
		for range rounds {
			b := &store.Batch{}
			for j := range chains {
				var u store.ParcelUpdate
				u, chains[j] = chains[j].Update(t, 0, 1)
				b.Updates = append(b.Updates, u)
			}
			plans[w].batches = append(plans[w].batches, b)
			total += perBatch
		}
	}

	type seen struct {
		number string
		from   uint64
	}
	const readers = 2
	got := make([][]seen, readers)
	readErr := make([]error, readers)
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	for r := range readers {
		rwg.Go(func() {
			var after uint64
			for {
				entries, err := reader.Feed(ctx, after, 5)
				if err != nil {
					readErr[r] = err
					return
				}
				for _, e := range entries {
					if e.Pos != after+1 {
						readErr[r] = fmt.Errorf("read pos %d after %d", e.Pos, after)
						return
					}
					after = e.Pos
					got[r] = append(got[r], seen{e.Number, e.FromSeq})
				}
				if len(entries) > 0 {
					continue
				}
				select {
				case <-stop:
					if tail, err := reader.FeedTail(ctx); err != nil || tail == after {
						readErr[r] = err
						return
					}
				default:
				}
				wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				err = reader.WaitFeed(wctx, after)
				cancel()
				if err != nil && wctx.Err() == nil {
					readErr[r] = err
					return
				}
			}
		})
	}

	errs := make([]error, len(plans))
	var wg sync.WaitGroup
	for w := range plans {
		s := writers[w%stores]
		wg.Go(func() {
			ids := make([]uint64, perBatch)
			for _, b := range plans[w].batches {
				for j := range b.Updates {
					b.Updates[j].ParcelID = ids[j]
				}
				res, err := s.Append(ctx, b)
				if err != nil {
					errs[w] = err
					return
				}
				copy(ids, res.ParcelIDs)
			}
		})
	}
	wg.Wait()
	close(stop)
	rwg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	for r := range readers {
		require.NoError(t, readErr[r])
		require.Len(t, got[r], total, "reader %d", r)
		once := map[seen]bool{}
		for _, s := range got[r] {
			require.False(t, once[s], "reader %d saw %v twice", r, s)
			once[s] = true
		}
		for w := range plans {
			for j := range perBatch {
				for seq := range rounds {
					require.True(t, once[seen{storetest.Number(w*perBatch + j), uint64(seq)}], "reader %d missed %s/%d", r, storetest.Number(w*perBatch+j), seq)
				}
			}
		}
	}
}

// TestWaitFeedWakesOnOtherStore: a waiter on one store wakes for an
// append through another store on the same database, by notification and,
// with notifications off, by polling.
func TestWaitFeedWakesOnOtherStore(t *testing.T) {
	for _, notify := range []bool{true, false} {
		t.Run(fmt.Sprintf("notify=%v", notify), func(t *testing.T) {
			url := pgtest.URL(t)
			ctx := t.Context()
			a := open(t, url)
			b := openWith(t, url, !notify)
			t.Cleanup(func() { a.Close(); b.Close() })
			require.Equal(t, a.ID(), b.ID(), "replicas must share the feed id")
			woke := make(chan error, 1)
			go func() { woke <- b.WaitFeed(ctx, 0) }()
			time.Sleep(50 * time.Millisecond)
			u, _ := storetest.NewChain(storetest.Number(1)).Update(t, 0, 1)
			_, err := a.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{u}})
			require.NoError(t, err)
			select {
			case err := <-woke:
				require.NoError(t, err)
			case <-time.After(5 * time.Second):
				t.Fatal("WaitFeed did not wake for the other store's append")
			}
			// A cursor another replica issued is known here at once.
			u2, _ := storetest.NewChain(storetest.Number(2)).Update(t, 0, 1)
			res, err := a.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{u2}})
			require.NoError(t, err)
			entries, err := b.Feed(ctx, res.FeedTail-1, 0)
			require.NoError(t, err)
			require.Len(t, entries, 1)
		})
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}
