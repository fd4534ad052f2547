package client

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service/servicetest"
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

// newBubbleWatchSetup is newWatchSetup on bubbleServer's in-memory
// network, for a test inside a synctest bubble: backoffs and the quiet
// spells of quiet and none pass on fake time, once every goroutine of the
// bubble waits.
func newBubbleWatchSetup(t *testing.T, cfg servicetest.ServerConfig, parcels ...*servicetest.Parcel) *watchSetup {
	t.Helper()
	srv, h := bubbleServer(t, cfg)
	servicetest.Load(t, srv.Store, parcels)
	ws := &watchSetup{srv: srv, fake: startFakeWatch(t, srv)}
	var err error
	ws.c, err = New(h, nil)
	require.NoError(t, err)
	t.Cleanup(func() { ws.c.Close() })
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

// requireStatus checks that u is the status code of number.
func requireStatus(t *testing.T, u WatchUpdate, number, code string) {
	t.Helper()
	require.Equal(t, number, u.Number, "%+v", u)
	require.Equal(t, code, u.Code, "%+v", u)
	require.False(t, u.Verified)
	require.Empty(t, u.Error)
	require.Empty(t, u.Events)
}
