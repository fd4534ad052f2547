package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// TestWatchBackfill shows updates that do not link to the head held being
// completed with track, through histories paged four events at a time.
func TestWatchBackfill(t *testing.T) {
	servicetest.CheckLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		a := servicetest.NewParcel(t, servicetest.Number(1), 14)
		ws := newBubbleWatchSetup(t, servicetest.ServerConfig{Options: &service.Options{MaxEventsPerResult: 4}}, a)
		w := ws.watch(t, ws.options(a.Number, servicetest.Number(2)))
		sub := ws.fake.next()

		sub.update(a, 5, 6, "c1") // no head held
		// Track answers with what the store holds now, beyond the update.
		requireEvents(t, next(t, w), a, 0, 13, "c1")
		sub.update(a, 12, 13, "c2")
		quiet(t, w, 50*time.Millisecond)

		// A gap: the parcel grew by events the watcher missed.
		c := servicetest.NewParcel(t, servicetest.Number(2), 12)
		servicetest.Load(t, ws.srv.Store, []*servicetest.Parcel{c})
		sub.update(c, 0, 2, "c3")
		requireEvents(t, next(t, w), c, 0, 2, "c3")
		sub.update(c, 9, 10, "c4")
		requireEvents(t, next(t, w), c, 3, 11, "c4")
		sub.update(c, 11, 11, "c5")
		quiet(t, w, 50*time.Millisecond)
	})
}

// TestWatchVerificationFailure shows failures handed over as such, never
// dropped, and the watcher carrying on.
func TestWatchVerificationFailure(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 6)
	ws := newWatchSetup(t, servicetest.ServerConfig{}, a)
	w := ws.watch(t, ws.options(a.Number))
	sub := ws.fake.next()

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	forger, err := protocol.NewSigner(priv)
	require.NoError(t, err)
	tampered := append([][]byte{}, a.Events[:3]...)
	tampered[1] = a.Events[2]
	other := servicetest.NewParcel(t, servicetest.Number(9), 1)
	badSig := headAt(t, a, 2)
	badSig[len(badSig)-1] ^= 1 // the signature is last

	for _, c := range []struct {
		name string
		msg  *protocol.WatchMessage
		code string
	}{
		{"head of another key", &protocol.WatchMessage{Head: signHead(t, forger, a, 2), Events: a.Events[:3]}, protocol.ErrUnknownKey.Code},
		{"head of another key for a gap", &protocol.WatchMessage{Head: signHead(t, forger, a, 4), Events: a.Events[3:5]}, protocol.ErrUnknownKey.Code},
		{"tampered signature", &protocol.WatchMessage{Head: badSig, Events: a.Events[:3]}, protocol.ErrBadSignature.Code},
		{"events out of chain", &protocol.WatchMessage{Head: headAt(t, a, 2), Events: tampered}, protocol.ErrBrokenChain.Code},
		{"events past the head", &protocol.WatchMessage{Head: headAt(t, a, 1), Events: a.Events[:3]}, protocol.ErrHeadMismatch.Code},
		{"not watched", &protocol.WatchMessage{Number: other.Number, Head: other.SignedHead, Events: other.Events}, protocol.ErrInvalid.Code},
	} {
		c.msg.Type, c.msg.Cursor = protocol.WatchUpdate, c.name
		if c.msg.Number == "" {
			c.msg.Number = a.Number
		}
		sub.send(c.msg)
		u := next(t, w)
		require.False(t, u.Verified, c.name)
		require.Equal(t, c.code, u.Error, "%s: %s", c.name, u.Message)
		require.Equal(t, c.msg.Number, u.Number, c.name)
		require.Equal(t, c.name, u.Cursor, c.name)
		require.Empty(t, u.Events, c.name)
		require.Empty(t, u.Head, c.name)
	}
	sub.update(a, 0, 2, "good")
	requireEvents(t, next(t, w), a, 0, 2, "good")
}

// TestWatchRecycledNumber follows spec 6.4 for a full history of a
// parcel other than the one held: a fork of it, or a newer parcel with
// the number.
func TestWatchRecycledNumber(t *testing.T) {
	servicetest.CheckLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		n := servicetest.Number(1)
		old := servicetest.NewParcel(t, n, 3)
		recycled := servicetest.NewParcel(t, n, 2, func(e *protocol.Event) { e.Time += 30 * 24 * 3_600_000 })
		fork := servicetest.NewParcel(t, n, 4, func(e *protocol.Event) {
			if e.Seq >= 2 {
				e.Description = "another history"
			}
		})
		ws := newBubbleWatchSetup(t, servicetest.ServerConfig{})
		w := ws.watch(t, ws.options(n))
		sub := ws.fake.next()

		sub.update(old, 0, 2, "c1")
		requireEvents(t, next(t, w), old, 0, 2, "c1")
		sub.update(fork, 0, 3, "c2")
		u := next(t, w)
		require.False(t, u.Verified)
		require.Equal(t, protocol.ErrBrokenChain.Code, u.Error, u.Message)
		sub.update(recycled, 0, 1, "c3") // a lower seq, but a newer parcel
		requireEvents(t, next(t, w), recycled, 0, 1, "c3")
		sub.update(old, 0, 2, "c4") // the old parcel is stale now
		quiet(t, w, 50*time.Millisecond)
	})
}

// TestWatchBackfillBound stops a back-fill at the client's history bound:
// a history longer than MaxHistoryPages pages is handed over as a failed,
// unverified update, and the watcher carries on with the next parcel.
func TestWatchBackfillBound(t *testing.T) {
	servicetest.CheckLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		long := servicetest.NewParcel(t, servicetest.Number(1), 14) // 4 pages of 4
		short := servicetest.NewParcel(t, servicetest.Number(2), 6) // 2 pages
		ws := newBubbleWatchSetup(t, servicetest.ServerConfig{Options: &service.Options{MaxEventsPerResult: 4}}, long, short)
		c, err := New(ws.c.h, &Options{MaxHistoryPages: 2})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		ws.c = c
		w := ws.watch(t, ws.options(long.Number, short.Number))
		sub := ws.fake.next()

		sub.update(long, 12, 13, "c1") // no head held: back-fill from seq 0
		u := next(t, w)
		require.Equal(t, long.Number, u.Number)
		require.False(t, u.Verified)
		require.Equal(t, "too_large", u.Error, u.Message)
		require.Contains(t, u.Message, "history incomplete after 2 pages (8 events, head seq 13)")
		require.Empty(t, u.Events, "events past no verified head are not handed over")

		sub.update(short, 4, 5, "c2")
		requireEvents(t, next(t, w), short, 0, 5, "c2")
	})
}
