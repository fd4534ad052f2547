package service_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
)

func TestWatchNumbers(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 3, events: 6})
	ws.append(each(0, 3, 1)...) // positions 1-3, before the subscription
	w := openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0, 2)})
	ws.waitStreams(1)

	ws.append(step{parcel: 1, events: 1})                             // 4: not watched
	ws.append(step{parcel: 0, events: 2}, step{parcel: 2, events: 1}) // 5, 6
	ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 1, 5)
	ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 2, 1, 6)
	ws.append(step{parcel: 1, events: 1}) // 7: not watched
	ws.append(step{parcel: 2, events: 3}) // 8
	ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 2, 2, 8)

	require.Eventually(t, func() bool {
		return counter(t, ws.metrics.WatchUpdates.WithLabelValues(protocol.WatchUpdate)) == 3
	}, time.Second, time.Millisecond)
}

// TestWatchAudience delivers to a platform the parcels whose audience
// names it, and never another platform's.
func TestWatchAudience(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 4, events: 4})
	a, b := servicetest.NewHost(t, nil), servicetest.NewHost(t, nil)
	wa := openWatch(t, a, ws, &protocol.WatchRequest{Audience: true})
	wb := openWatch(t, b, ws, &protocol.WatchRequest{Audience: true})
	ws.waitStreams(2)

	ws.append(
		step{parcel: 0, events: 1, audience: []string{a.ID().String()}},                  // 1
		step{parcel: 1, events: 1, audience: []string{b.ID().String()}},                  // 2
		step{parcel: 2, events: 1, audience: []string{b.ID().String(), a.ID().String()}}, // 3
		step{parcel: 3, events: 1}, // 4: nobody's
	)
	ws.requireUpdate(wa.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 0, 1)
	ws.requireUpdate(wa.nextOf(protocol.WatchUpdate, 5*time.Second), 2, 0, 3)
	ws.requireUpdate(wb.nextOf(protocol.WatchUpdate, 5*time.Second), 1, 0, 2)
	ws.requireUpdate(wb.nextOf(protocol.WatchUpdate, 5*time.Second), 2, 0, 3)

	// The audience grows with later ingest; the parcel then reaches the
	// platform added too, with the events appended since.
	ws.append(step{parcel: 0, events: 1, audience: []string{b.ID().String()}}) // 5
	ws.requireUpdate(wa.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 1, 5)
	ws.requireUpdate(wb.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 1, 5)

	// Nothing else arrives (and no heartbeat is due).
	for _, w := range []*watcher{wa, wb} {
		_, err := w.read(300 * time.Millisecond)
		var ne interface{ Timeout() bool }
		require.ErrorAs(t, err, &ne)
		require.True(t, ne.Timeout(), "%v", err)
	}
}

// TestWatchResume subscribes from a cursor: exactly the updates after it
// come back, merged per parcel up to its current head, then live ones.
func TestWatchResume(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 4, events: 8})
	ws.append(each(0, 4, 1)...) // 1-4
	ws.append(step{parcel: 1, events: 2})
	mid := ws.tail()                      // 5
	ws.append(step{parcel: 2, events: 1}) // 6
	ws.append(step{parcel: 0, events: 1}) // 7
	ws.append(step{parcel: 2, events: 2}) // 8: joins 6 in one update
	ws.append(step{parcel: 3, events: 1}) // 9: not watched
	numbers := numbersOf(ws, 0, 1, 2)

	client := servicetest.NewHost(t, nil)
	w := openWatch(t, client, ws, &protocol.WatchRequest{Numbers: numbers, Cursor: ws.cursor(mid)})
	ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 2, 1, 6)
	ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 1, 7)
	ws.append(step{parcel: 1, events: 1}) // 10, live
	ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 1, 3, 10)

	// From the cursor of the last update, nothing is replayed.
	w2 := openWatch(t, client, ws, &protocol.WatchRequest{Numbers: numbers, Cursor: ws.cursor(10)})
	ws.waitStreams(2)
	ws.append(step{parcel: 0, events: 1}) // 11
	ws.requireUpdate(w2.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 2, 11)

	// From position 0 the whole feed is replayed.
	w3 := openWatch(t, client, ws, &protocol.WatchRequest{Numbers: numbers[:1], Cursor: ws.cursor(0)})
	ws.requireUpdate(w3.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 0, 1)
}

func TestWatchUnknownCursor(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 1, events: 2})
	ws.append(step{parcel: 0, events: 1})
	other := memstore.New()
	defer other.Close()
	for _, cursor := range []string{
		other.ID() + ".1",                       // another store's
		ws.cursor(2),                            // beyond the tail
		ws.cursor(1 << 62),                      // far beyond
		ws.store.ID() + ".01",                   // leading zero
		ws.store.ID() + ".+1",                   // sign
		ws.store.ID() + ".",                     // no position
		ws.store.ID() + ".1.",                   // trailing dot
		ws.store.ID(),                           // no dot
		ws.store.ID() + ".18446744073709551616", // overflows uint64
		"garbage",
	} {
		t.Run(cursor, func(t *testing.T) {
			w := openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0), Cursor: cursor})
			w.expectError(protocol.CodeUnknownCursor)
		})
	}
	// The tail itself is a valid cursor.
	w := openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0), Cursor: ws.cursor(1)})
	ws.waitStreams(1)
	ws.append(step{parcel: 0, events: 1})
	ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 1, 2)
}

// TestWatchHeartbeat: a quiet stream gets heartbeats whose cursor follows
// the feed even when nothing in it matched, so a resume skips it. It runs
// in a synctest bubble over mocknet, at the default Heartbeat on fake time.
func TestWatchHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hosts := mockHosts(t, 2)
		ws := startWatch(t, watchConfig{parcels: 2, events: 3, on: hosts[0]})
		beat := (&service.Options{}).EnsureDefaults().Heartbeat
		ws.append(each(0, 2, 1)...)
		w := openWatch(t, hosts[1], ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0)})
		// The opening heartbeat says the subscription is live and where it
		// starts; the next one comes after a quiet period, and not before.
		m := w.next(5 * time.Second)
		require.Equal(t, protocol.WatchHeartbeat, m.Type)
		require.Equal(t, ws.cursor(2), m.Cursor)
		require.Equal(t, time.Now().UnixMilli(), m.Time)
		start := time.Now()
		m = w.next(5 * time.Second)
		require.Equal(t, protocol.WatchHeartbeat, m.Type)
		require.Equal(t, beat, time.Since(start))
		require.Equal(t, ws.cursor(2), m.Cursor)

		// An entry that does not match moves the next heartbeat's cursor.
		ws.append(step{parcel: 1, events: 1}) // 3: not watched
		m = w.next(5 * time.Second)
		require.Equal(t, protocol.WatchHeartbeat, m.Type)
		require.Equal(t, ws.cursor(3), m.Cursor)
		require.Equal(t, 2*beat, time.Since(start))

		// Updates restart the quiet period; heartbeats come back after them.
		time.Sleep(beat / 2)
		ws.append(step{parcel: 0, events: 1}) // 4
		ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 1, 4)
		updated := time.Now()
		m = w.next(5 * time.Second)
		require.Equal(t, protocol.WatchHeartbeat, m.Type)
		require.Equal(t, ws.cursor(4), m.Cursor)
		require.Equal(t, beat, time.Since(updated))
		require.Equal(t, float64(4), counter(t, ws.metrics.WatchUpdates.WithLabelValues(protocol.WatchHeartbeat)))
	})
}

// TestWatchHalfClose: the subscriber may close its write side after the
// request; the subscription goes on. It runs in a synctest bubble over
// mocknet, so that the server has read the EOF once the bubble settles.
func TestWatchHalfClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hosts := mockHosts(t, 2)
		ws := startWatch(t, watchConfig{parcels: 1, events: 2, on: hosts[0]})
		w := openWatch(t, hosts[1], ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0)})
		require.NoError(t, w.s.CloseWrite())
		ws.waitStreams(1)
		synctest.Wait()
		ws.append(step{parcel: 0, events: 2})
		ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 0, 1)
	})
}

// TestWatchPeerReset: a subscriber that resets its stream ends the
// subscription at once, not at the next heartbeat.
func TestWatchPeerReset(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 1, events: 1})
	w := openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0)})
	ws.waitStreams(1)
	require.NoError(t, w.s.Reset())
	ws.waitStreams(0)
}

// TestWatchLongRun appends more events to a parcel at once than an update
// carries: the update keeps the newest, ending at the head.
func TestWatchLongRun(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 1, events: 9, opts: &service.Options{MaxEventsPerResult: 3}})
	w := openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0)})
	ws.waitStreams(1)
	ws.append(step{parcel: 0, events: 7})
	ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 4, 1)
	ws.append(step{parcel: 0, events: 2})
	ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 7, 2)
}

// TestWatchBurst: one ingest batch touching many more watched parcels than
// the queue holds reaches a subscriber that reads, without a catchup.
func TestWatchBurst(t *testing.T) {
	servicetest.CheckLeaks(t)
	const parcels = 300
	ws := startWatch(t, watchConfig{parcels: parcels, events: 1, opts: &service.Options{WatchBuffer: 2}})
	client := servicetest.NewHost(t, nil)
	w := openWatch(t, client, ws, &protocol.WatchRequest{Audience: true})
	ws.waitStreams(1)
	ws.append(each(0, parcels, 1, client.ID().String())...)
	for i := range parcels {
		ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), i, 0, uint64(i+1))
	}
}

// TestWatchStall: a subscriber that stops reading is given up on once its
// full queue has waited WatchStall, and not before; reading again, it
// finds the updates queued, a catchup at the first one left out and the
// end. It runs in a synctest bubble over mocknet, whose pipes hold a
// writer until the reader reads, so that the stall is timed on fake time.
func TestWatchStall(t *testing.T) {
	const parcels = 20 // more updates than the writer, the pipe and a queue of 2 hold
	stall := (&service.Options{}).EnsureDefaults().WatchStall
	for _, tc := range []struct {
		name    string
		wait    time.Duration
		givenUp bool
	}{
		{"just before the stall", stall - time.Millisecond, false},
		{"at the stall", stall, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hosts := mockHosts(t, 2)
				ws := startWatch(t, watchConfig{parcels: parcels, events: 1, on: hosts[0], opts: &service.Options{WatchBuffer: 2}})
				all := make([]int, parcels)
				for i := range all {
					all[i] = i
				}
				w := openWatch(t, hosts[1], ws, &protocol.WatchRequest{Numbers: numbersOf(ws, all...)})
				w.opening()
				ws.append(each(0, parcels, 1)...)
				synctest.Wait() // the queue is full and the producer waits
				time.Sleep(tc.wait)
				synctest.Wait()
				for i := range parcels {
					m := w.next(5 * time.Second)
					for m.Type == protocol.WatchHeartbeat {
						m = w.next(5 * time.Second)
					}
					if m.Type == protocol.WatchCatchUp {
						require.True(t, tc.givenUp, "catchup after %d updates", i)
						require.Positive(t, i)
						require.Equal(t, ws.cursor(uint64(i)), m.Cursor)
						w.expectEnd()
						return
					}
					ws.requireUpdate(m, i, 0, uint64(i+1))
				}
				require.False(t, tc.givenUp, "every update arrived")
			})
		})
	}
}
