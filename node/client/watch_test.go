package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// The watch tests run the client against a scripted watch server: each
// subscription is handed to the test, which reads the request and writes
// the frames, so that every turn of spec 8.5 (resume, catchup,
// unknown_cursor, a silent stream, a forged update) can be staged. Track,
// which back-fills use, is the real service over the same store.
// TestWatchRealService runs the client against the node's watch service.

// fakeWatch hands each subscription to the test.
type fakeWatch struct {
	t    *testing.T
	subs chan *fakeSub
}

// fakeSub is one subscription on the scripted server.
type fakeSub struct {
	t   *testing.T
	s   network.Stream
	req protocol.WatchRequest
}

// startFakeWatch serves scripted watch streams on srv's host.
func startFakeWatch(t *testing.T, srv *servicetest.Server) *fakeWatch {
	t.Helper()
	f := &fakeWatch{t: t, subs: make(chan *fakeSub, 16)}
	srv.Host.SetStreamHandler(protocol.WatchID, func(s network.Stream) {
		body, err := protocol.NewFrameReader(s, protocol.MaxWatchRequest).Next()
		if err != nil {
			s.Reset()
			return
		}
		sub := &fakeSub{t: t, s: s}
		if err := protocol.Unmarshal(body, &sub.req); err != nil {
			s.Reset()
			return
		}
		f.subs <- sub
	})
	t.Cleanup(func() {
		srv.Host.RemoveStreamHandler(protocol.WatchID)
		for {
			select {
			case sub := <-f.subs:
				sub.s.Reset()
			default:
				return
			}
		}
	})
	return f
}

// next returns the next subscription, with its request checked.
func (f *fakeWatch) next() *fakeSub {
	f.t.Helper()
	select {
	case sub := <-f.subs:
		require.NoError(f.t, sub.req.Validate())
		f.t.Cleanup(func() { sub.s.Reset() })
		return sub
	case <-time.After(10 * time.Second):
		f.t.Fatal("no subscription")
		return nil
	}
}

// none checks that no subscription arrives for a while.
func (f *fakeWatch) none(d time.Duration) {
	f.t.Helper()
	select {
	case sub := <-f.subs:
		f.t.Fatalf("unexpected subscription from cursor %q", sub.req.Cursor)
	case <-time.After(d):
	}
}

func (sub *fakeSub) send(m *protocol.WatchMessage) {
	sub.t.Helper()
	require.NoError(sub.t, m.Validate())
	b, err := protocol.Marshal(m)
	require.NoError(sub.t, err)
	require.NoError(sub.t, protocol.WriteFrame(sub.s, b, protocol.MaxWatchFrame))
}

// update sends p's events from..to under a head signed at to.
func (sub *fakeSub) update(p *servicetest.Parcel, from, to int, cursor string) {
	sub.t.Helper()
	sub.send(&protocol.WatchMessage{Type: protocol.WatchUpdate, Cursor: cursor, Number: p.Number, Head: headAt(sub.t, p, to), Events: p.Events[from : to+1]})
}

func (sub *fakeSub) heartbeat(cursor string) {
	sub.t.Helper()
	sub.send(&protocol.WatchMessage{Type: protocol.WatchHeartbeat, Cursor: cursor, Time: time.Now().UnixMilli()})
}

func (sub *fakeSub) fail(code string) {
	sub.t.Helper()
	sub.send(&protocol.WatchMessage{Type: protocol.WatchError, Code: code})
	sub.s.Close() // the client may have reset the stream already
}

// headAt signs p's head at seq, as the carrier did when that event was
// the newest; its time follows the event's.
func headAt(t *testing.T, p *servicetest.Parcel, seq int) []byte {
	t.Helper()
	return signHead(t, servicetest.Signer(), p, seq)
}

func signHead(t *testing.T, s *protocol.Signer, p *servicetest.Parcel, seq int) []byte {
	t.Helper()
	e, err := protocol.DecodeEvent(p.Events[seq])
	require.NoError(t, err)
	b, err := protocol.SignHead(s, &protocol.Head{
		Carrier: servicetest.Carrier, Number: p.Number, Seq: uint64(seq), Head: protocol.LinkTo(p.CIDs[seq]), Time: e.Time + 60_000,
	})
	require.NoError(t, err)
	return b
}

// watchSetup is a server with parcels in its store, the scripted watch
// server on its host and a client connected to it.
type watchSetup struct {
	srv  *servicetest.Server
	fake *fakeWatch
	c    *Client
}

func newWatchSetup(t *testing.T, cfg servicetest.ServerConfig, parcels ...*servicetest.Parcel) *watchSetup {
	t.Helper()
	srv := servicetest.StartServer(t, cfg)
	servicetest.Load(t, srv.Store, parcels)
	ws := &watchSetup{srv: srv, fake: startFakeWatch(t, srv)}
	ws.c = newClient(t, srv, nil)
	return ws
}

// options watch numbers at the server, with short backoffs for tests.
func (ws *watchSetup) options(numbers ...string) WatchOptions {
	return WatchOptions{
		Carrier: servicetest.Carrier, Peers: []peer.ID{ws.srv.Host.ID()}, Keys: servicetest.Keys(), Numbers: numbers,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	}
}

func (ws *watchSetup) watch(t *testing.T, o WatchOptions) *Watcher {
	t.Helper()
	w, err := ws.c.Watch(context.Background(), o)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	return w
}

// next returns the watcher's next update.
func next(t *testing.T, w *Watcher) WatchUpdate {
	t.Helper()
	select {
	case u, ok := <-w.Updates():
		require.True(t, ok, "updates closed: %v", w.Err())
		return u
	case <-time.After(10 * time.Second):
		t.Fatal("no update")
		return WatchUpdate{}
	}
}

// quiet checks that the watcher hands over nothing for a while.
func quiet(t *testing.T, w *Watcher, d time.Duration) {
	t.Helper()
	select {
	case u := <-w.Updates():
		t.Fatalf("unexpected update %+v", u)
	case <-time.After(d):
	}
}

// requireEvents checks that u is a verified update of p carrying events
// from..to and the cursor.
func requireEvents(t *testing.T, u WatchUpdate, p *servicetest.Parcel, from, to int, cursor string) {
	t.Helper()
	require.True(t, u.Verified, "%s: %s", u.Error, u.Message)
	require.Equal(t, p.Number, u.Number)
	require.Equal(t, servicetest.Carrier, u.Carrier)
	require.Equal(t, cursor, u.Cursor)
	require.Len(t, u.Events, to-from+1)
	for i, e := range u.Events {
		require.Equal(t, uint64(from+i), e.Seq)
		require.Equal(t, p.CIDs[from+i].String(), e.CID)
	}
	require.Equal(t, p.CIDs[to].String(), u.Head)
}

func TestWatchVerifiesAndDedupes(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 10)
	ws := newWatchSetup(t, servicetest.ServerConfig{}, a)
	w := ws.watch(t, ws.options(" 77 0000000001 ")) // normalized before subscribing
	sub := ws.fake.next()
	require.Equal(t, []string{a.Number}, sub.req.Numbers)
	require.Empty(t, sub.req.Cursor)

	sub.update(a, 0, 2, "c1")
	requireEvents(t, next(t, w), a, 0, 2, "c1")
	sub.update(a, 3, 5, "c2")
	requireEvents(t, next(t, w), a, 3, 5, "c2")
	// Replays after a resume: a whole history, an older head, the same
	// head. None carries a new event.
	sub.update(a, 0, 5, "c3")
	sub.update(a, 3, 4, "c4")
	sub.update(a, 5, 5, "c5")
	// An update that starts inside what is held hands over only the rest.
	sub.update(a, 4, 7, "c6")
	requireEvents(t, next(t, w), a, 6, 7, "c6")
	sub.heartbeat("c7")
	require.Eventually(t, func() bool { return w.Cursor() == "c7" }, 5*time.Second, 5*time.Millisecond)
	quiet(t, w, 50*time.Millisecond)
	ws.fake.none(50 * time.Millisecond)
}

func TestWatchResumes(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 10)
	ws := newWatchSetup(t, servicetest.ServerConfig{}, a)
	w := ws.watch(t, ws.options(a.Number))

	sub := ws.fake.next()
	sub.update(a, 0, 1, "c1")
	requireEvents(t, next(t, w), a, 0, 1, "c1")
	sub.s.Reset() // the node died

	sub = ws.fake.next()
	require.Equal(t, "c1", sub.req.Cursor)
	sub.update(a, 0, 3, "c2") // the replay of an entry past the cursor carries the head now
	requireEvents(t, next(t, w), a, 2, 3, "c2")
	sub.send(&protocol.WatchMessage{Type: protocol.WatchCatchUp, Cursor: "c3"})
	sub.s.Close()

	sub = ws.fake.next()
	require.Equal(t, "c3", sub.req.Cursor, "resumes from the catchup's cursor")
	sub.update(a, 4, 4, "c4")
	requireEvents(t, next(t, w), a, 4, 4, "c4")
	sub.s.Close() // a clean end without a word is a failure too

	sub = ws.fake.next()
	require.Equal(t, "c4", sub.req.Cursor)
	sub.fail(protocol.CodeUnavailable) // the node is shutting down: try again

	sub = ws.fake.next()
	require.Equal(t, "c4", sub.req.Cursor)
	require.NoError(t, w.Close())
	require.NoError(t, w.Err())
	_, open := <-w.Updates()
	require.False(t, open)
}

func TestWatchIdleStream(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 2)
	ws := newWatchSetup(t, servicetest.ServerConfig{}, a)
	o := ws.options(a.Number)
	o.IdleTimeout = 200 * time.Millisecond
	ws.watch(t, o)

	sub := ws.fake.next()
	sub.heartbeat("c1")
	start := time.Now()
	sub = ws.fake.next() // the first stream fell silent
	require.Equal(t, "c1", sub.req.Cursor)
	require.GreaterOrEqual(t, time.Since(start), o.IdleTimeout)
}

// TestWatchUnknownCursor follows spec 8.5: a new subscription from now
// first, then a track query of every watched number from the head held.
func TestWatchUnknownCursor(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 10)
	b := servicetest.NewParcel(t, servicetest.Number(2), 3)
	ws := newWatchSetup(t, servicetest.ServerConfig{}, a, b)
	missing := servicetest.Number(3) // no parcel yet: nothing to say
	w := ws.watch(t, ws.options(a.Number, b.Number, missing))

	sub := ws.fake.next()
	sub.update(a, 0, 4, "c1")
	requireEvents(t, next(t, w), a, 0, 4, "c1")
	sub.s.Reset()

	sub = ws.fake.next()
	require.Equal(t, "c1", sub.req.Cursor)
	sub.fail(protocol.CodeUnknownCursor)

	sub = ws.fake.next()
	require.Empty(t, sub.req.Cursor, "a re-sync subscribes from now before it queries")
	sub.heartbeat("d1")
	requireEvents(t, next(t, w), a, 5, 9, "d1") // from the head held
	requireEvents(t, next(t, w), b, 0, 2, "d1") // none held: the whole history
	quiet(t, w, 50*time.Millisecond)
	require.Equal(t, "d1", w.Cursor())
}

// TestWatchBackfill shows updates that do not link to the head held being
// completed with track, through histories paged four events at a time.
func TestWatchBackfill(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 14)
	ws := newWatchSetup(t, servicetest.ServerConfig{Options: &service.Options{MaxEventsPerResult: 4}}, a)
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
	n := servicetest.Number(1)
	old := servicetest.NewParcel(t, n, 3)
	recycled := servicetest.NewParcel(t, n, 2, func(e *protocol.Event) { e.Time += 30 * 24 * 3_600_000 })
	fork := servicetest.NewParcel(t, n, 4, func(e *protocol.Event) {
		if e.Seq >= 2 {
			e.Description = "another history"
		}
	})
	ws := newWatchSetup(t, servicetest.ServerConfig{})
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
}

func TestWatchCursorFile(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 6)
	ws := newWatchSetup(t, servicetest.ServerConfig{}, a)
	file := filepath.Join(t.TempDir(), "cursor")
	o := ws.options(a.Number)
	o.CursorFile, o.Cursor = file, "ignored-once-the-file-exists"
	o.CursorInterval = time.Hour // only the end of a stream writes it here

	w := ws.watch(t, o)
	sub := ws.fake.next()
	require.Equal(t, o.Cursor, sub.req.Cursor, "no file yet")
	sub.update(a, 0, 2, "c1")
	requireEvents(t, next(t, w), a, 0, 2, "c1")
	sub.heartbeat("c2")
	require.Eventually(t, func() bool { return w.Cursor() == "c2" }, 5*time.Second, 5*time.Millisecond)
	_, err := os.Stat(file)
	require.ErrorIs(t, err, os.ErrNotExist, "coalesced")
	sub.s.Reset()
	sub = ws.fake.next()
	require.Equal(t, "c2", sub.req.Cursor)
	require.Equal(t, "c2\n", readFile(t, file), "written when the stream ended")
	sub.update(a, 3, 3, "c3")
	requireEvents(t, next(t, w), a, 3, 3, "c3")
	require.Eventually(t, func() bool { return w.Cursor() == "c3" }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, w.Close())
	require.Equal(t, "c3\n", readFile(t, file), "written at Close")

	// A restart resumes from the file and, holding no head, back-fills.
	w = ws.watch(t, o)
	sub = ws.fake.next()
	require.Equal(t, "c3", sub.req.Cursor)
	sub.update(a, 4, 5, "c4")
	requireEvents(t, next(t, w), a, 0, 5, "c4")
	require.NoError(t, w.Close())
	require.Equal(t, "c4\n", readFile(t, file))

	// The file follows the stream within CursorInterval.
	o.CursorInterval = 20 * time.Millisecond
	w = ws.watch(t, o)
	sub = ws.fake.next()
	require.Equal(t, "c4", sub.req.Cursor)
	sub.heartbeat("c5")
	require.Eventually(t, func() bool { return readFile(t, file) == "c5\n" }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, w.Close())

	require.NoError(t, os.WriteFile(file, make([]byte, protocol.MaxCursorLen+1), 0o600))
	_, err = ws.c.Watch(context.Background(), o)
	require.ErrorIs(t, err, ErrCursorFile)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// TestWatchCursorFileDuringResync keeps the stale cursor in the file until
// the re-sync after unknown_cursor is done: a restart before then must
// re-sync again rather than resume past the gap.
func TestWatchCursorFileDuringResync(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 3)
	ws := newWatchSetup(t, servicetest.ServerConfig{}, a)
	file := filepath.Join(t.TempDir(), "cursor")
	require.NoError(t, writeCursorFile(file, "stale"))
	o := ws.options(a.Number)
	o.CursorFile, o.CursorInterval = file, time.Millisecond

	w := ws.watch(t, o)
	sub := ws.fake.next()
	require.Equal(t, "stale", sub.req.Cursor)
	// Take the track service away, so that the re-sync cannot finish.
	ws.srv.Track.Unregister()
	sub.fail(protocol.CodeUnknownCursor)
	sub = ws.fake.next()
	require.Empty(t, sub.req.Cursor)
	sub.heartbeat("fresh")
	sub = ws.fake.next() // the re-sync failed, so did the stream
	require.Equal(t, "fresh", sub.req.Cursor)
	require.Equal(t, "stale\n", readFile(t, file))
	require.NoError(t, w.Close())
	require.Equal(t, "stale\n", readFile(t, file))
}

func TestWatchRefused(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := newWatchSetup(t, servicetest.ServerConfig{})
	for _, code := range []string{protocol.CodeBadRequest, protocol.CodeTooMany, protocol.CodeForbidden} {
		w := ws.watch(t, ws.options(servicetest.Number(1)))
		ws.fake.next().fail(code)
		_, open := <-w.Updates()
		require.False(t, open)
		require.ErrorIs(t, w.Err(), ErrWatchRefused)
		require.Equal(t, code, protocol.CodeOf(w.Err()))
		require.ErrorIs(t, w.Close(), ErrWatchRefused)
	}
}

func TestWatchOptions(t *testing.T) {
	good := WatchOptions{Carrier: "OT", Peers: []peer.ID{"p"}, Keys: servicetest.Keys(), Numbers: []string{servicetest.Number(1)}}
	require.NoError(t, good.EnsureDefaults().Validate())
	require.Equal(t, defaultMinBackoff, good.MinBackoff)
	require.Equal(t, protocol.WatchIdleTimeout, good.IdleTimeout)

	bad := WatchOptions{Carrier: "ot", Numbers: []string{"?"}, Audience: true, MinBackoff: time.Second, MaxBackoff: time.Millisecond, Cursor: string(make([]byte, 200))}
	err := bad.EnsureDefaults().Validate()
	require.ErrorIs(t, err, ErrInvalidOptions)
	for _, want := range []string{"Carrier", "Peers", "Keys", "not both", `number "?"`, "Cursor", "MaxBackoff"} {
		require.Contains(t, err.Error(), want)
	}

	for i := range 8 {
		d := backoff(i, 200*time.Millisecond, 30*time.Second)
		ceil := min(200*time.Millisecond<<i, 30*time.Second)
		require.GreaterOrEqual(t, d, ceil/2)
		require.LessOrEqual(t, d, ceil)
	}
	require.LessOrEqual(t, backoff(1000, time.Second, 30*time.Second), 30*time.Second)
}

// TestWatchRealService runs the watcher against the node's watch service
// over a store that grows, through a restart of the service.
func TestWatchRealService(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{})
	startWatch := func() *service.Watch {
		sw, err := service.NewWatch(service.WatchConfig{Store: srv.Store}, &service.Options{Heartbeat: 50 * time.Millisecond})
		require.NoError(t, err)
		sw.Register(srv.Host)
		return sw
	}
	sw := startWatch()
	defer func() { sw.Unregister() }()
	c := newClient(t, srv, nil)
	parcels := []*servicetest.Parcel{servicetest.NewParcel(t, servicetest.Number(1), 12), servicetest.NewParcel(t, servicetest.Number(2), 12)}

	ids := make([]uint64, len(parcels))
	appendEvents := func(from, to int) {
		var b store.Batch
		for i, p := range parcels {
			u := store.ParcelUpdate{Number: p.Number, New: from == 0, ParcelID: ids[i], PrevSeq: uint64(max(from-1, 0)), SignedHead: headAt(t, p, to)}
			for seq := from; seq <= to; seq++ {
				u.Events = append(u.Events, store.NewEvent{Seq: uint64(seq), CID: p.CIDs[seq], Bytes: p.Events[seq]})
			}
			b.Updates = append(b.Updates, u)
		}
		res, err := srv.Store.Append(context.Background(), &b)
		require.NoError(t, err)
		copy(ids, res.ParcelIDs)
	}
	// Before the watcher starts: Sync hands these over, by track, once
	// the subscription is live.
	appendEvents(0, 3)
	w, err := c.Watch(context.Background(), WatchOptions{
		Carrier: servicetest.Carrier, Peers: []peer.ID{srv.Host.ID()}, Keys: servicetest.Keys(),
		Numbers: []string{parcels[0].Number, parcels[1].Number}, Sync: true,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	defer w.Close()

	got := map[string][]uint64{}
	receive := func(upTo int) {
		t.Helper()
		for len(got[parcels[0].Number]) <= upTo || len(got[parcels[1].Number]) <= upTo {
			u := next(t, w)
			require.True(t, u.Verified, "%s: %s", u.Error, u.Message)
			for _, e := range u.Events {
				got[u.Number] = append(got[u.Number], e.Seq)
			}
		}
	}
	// The back-fill waits for this consumer (Updates is unbuffered), so
	// the watcher cannot be live before it is received.
	select {
	case <-w.Live():
		t.Fatal("Live closed before the current state was handed over")
	default:
	}
	receive(3)
	select {
	case <-w.Live():
	case <-time.After(30 * time.Second):
		t.Fatal("Live still open after the current state of both parcels was handed over")
	}
	appendEvents(4, 6)
	receive(6)

	sw.Unregister() // the node restarts; its feed is durable
	appendEvents(7, 9)
	sw = startWatch()
	receive(9)
	appendEvents(10, 11)
	receive(11)
	for _, p := range parcels {
		require.Equal(t, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, got[p.Number], "every event once, in order")
	}
	quiet(t, w, 100*time.Millisecond)
}

// TestWatchTarget watches numbers the way `opentrack watch --repo` does:
// the registry names the carrier and its node, the connector reaches it,
// and the heads verify against the key the registry binds.
func TestWatchTarget(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 3)
	ws := newWatchSetup(t, servicetest.ServerConfig{})
	trust := registryOf(t, ws.srv.Host)
	c := newResolveClient(t, nil) // not connected: the connector must dial
	o, err := WatchTarget(trust, []string{a.Number})
	require.NoError(t, err)
	require.Equal(t, servicetest.Carrier, o.Carrier)
	require.Equal(t, []peer.ID{ws.srv.Host.ID()}, o.Peers)
	o.Connector = &hostConnector{h: c.h, trust: trust}
	w, err := c.Watch(context.Background(), o)
	require.NoError(t, err)
	defer w.Close()
	ws.fake.next().update(a, 0, 2, "c1")
	requireEvents(t, next(t, w), a, 0, 2, "c1")

	sf := &protocol.CarrierEntry{Code: "SF"}
	tr := staticTrust{carriers: map[string][]*protocol.CarrierEntry{
		"SF0001": {sf}, "SF0002": {sf}, "DX0001": {{Code: "DX"}}, "SF0003": {sf, {Code: "SF1"}},
	}}
	for _, numbers := range [][]string{{"SF0001", "DX0001"}, {"SF0001", "SF0003"}} {
		_, err := WatchTarget(tr, numbers)
		require.ErrorIs(t, err, ErrSeveralCarriers, numbers)
	}
	_, err = WatchTarget(tr, []string{"SF0001", "SF0002"})
	require.ErrorIs(t, err, ErrNoAnswer, "SF lists no node")
	_, err = WatchTarget(tr, []string{"ZZ0009"})
	require.ErrorIs(t, err, protocol.ErrInvalidNumber)
}

// TestWatchBackfillBound stops a back-fill at the client's history bound:
// a history longer than MaxHistoryPages pages is handed over as a failed,
// unverified update, and the watcher carries on with the next parcel.
func TestWatchBackfillBound(t *testing.T) {
	servicetest.CheckLeaks(t)
	long := servicetest.NewParcel(t, servicetest.Number(1), 14) // 4 pages of 4
	short := servicetest.NewParcel(t, servicetest.Number(2), 6) // 2 pages
	ws := newWatchSetup(t, servicetest.ServerConfig{Options: &service.Options{MaxEventsPerResult: 4}}, long, short)
	ws.c = newClient(t, ws.srv, &Options{MaxHistoryPages: 2})
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
}
