package client

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

func TestWatchVerifiesAndDedupes(t *testing.T) {
	servicetest.CheckLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		a := servicetest.NewParcel(t, servicetest.Number(1), 10)
		ws := newBubbleWatchSetup(t, servicetest.ServerConfig{}, a)
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
	})
}

func TestWatchResumes(t *testing.T) {
	servicetest.CheckLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		a := servicetest.NewParcel(t, servicetest.Number(1), 10)
		ws := newBubbleWatchSetup(t, servicetest.ServerConfig{}, a)
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
	})
}

// Not in a bubble: the watcher notices a silent stream by its read
// deadline, which mocknet's streams ignore.
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
	synctest.Test(t, func(t *testing.T) {
		a := servicetest.NewParcel(t, servicetest.Number(1), 10)
		b := servicetest.NewParcel(t, servicetest.Number(2), 3)
		ws := newBubbleWatchSetup(t, servicetest.ServerConfig{}, a, b)
		missing := servicetest.Number(3) // no parcel yet
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
		// A subscription from now opens with the status of the number the
		// node lacks; the re-sync then does not ask for it.
		sub.send(&protocol.WatchMessage{Type: protocol.WatchStatus, Number: missing, Code: protocol.CodeNotFound})
		requireStatus(t, next(t, w), missing, protocol.CodeNotFound)
		sub.heartbeat("d1")
		requireEvents(t, next(t, w), a, 5, 9, "d1") // from the head held
		requireEvents(t, next(t, w), b, 0, 2, "d1") // none held: the whole history
		quiet(t, w, 50*time.Millisecond)
		require.Equal(t, "d1", w.Cursor())
	})
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
	require.Equal(t, watchDefaults.MinBackoff, good.MinBackoff)
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

// TestWatchStatus: the node's statuses at the start of a subscription
// are handed over once per number and do not end the watch (spec 8.5);
// Sync tracks only the numbers they leave open, Live waits for the
// opening heartbeat, and a parcel created later for a not_found number
// is delivered.
func TestWatchStatus(t *testing.T) {
	servicetest.CheckLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		a := servicetest.NewParcel(t, servicetest.Number(1), 6)
		b := servicetest.NewParcel(t, servicetest.Number(2), 3) // not stored
		m := metrics.New()
		ws := newBubbleWatchSetup(t, servicetest.ServerConfig{Track: func(c *service.TrackConfig) { c.Metrics = m }}, a)
		foreign := "SF1234567890"
		o := ws.options(a.Number, b.Number, foreign)
		o.Sync = true
		w := ws.watch(t, o)
		sub := ws.fake.next()
		sub.send(&protocol.WatchMessage{Type: protocol.WatchStatus, Number: b.Number, Code: protocol.CodeNotFound, Message: "no such parcel"})
		sub.send(&protocol.WatchMessage{Type: protocol.WatchStatus, Number: foreign, Code: protocol.CodeWrongCarrier})
		requireStatus(t, next(t, w), b.Number, protocol.CodeNotFound)
		requireStatus(t, next(t, w), foreign, protocol.CodeWrongCarrier)
		select {
		case <-w.Live():
			t.Fatal("live before the opening heartbeat")
		default:
		}
		sub.heartbeat("c1")
		// Sync hands over a's state, by track; b and the foreign number are
		// settled by their statuses and not asked again.
		requireEvents(t, next(t, w), a, 0, 5, "c1")
		select {
		case <-w.Live():
		case <-time.After(10 * time.Second):
			t.Fatal("not live after the opening and the sync")
		}
		// The server counts a result once it is written: wait for a's, then
		// the request that carried it is counted whole.
		require.Eventually(t, func() bool { return counterValue(t, m.TrackRequests.WithLabelValues(protocol.CodeOK)) == 1 },
			10*time.Second, time.Millisecond, "a tracked")
		require.Zero(t, counterValue(t, m.TrackRequests.WithLabelValues(protocol.CodeNotFound)), "b not tracked")
		require.Zero(t, counterValue(t, m.TrackRequests.WithLabelValues(protocol.CodeWrongCarrier)), "the foreign number not tracked")

		// b's parcel is created: it comes from its first event.
		sub.update(b, 0, 2, "c2")
		requireEvents(t, next(t, w), b, 0, 2, "c2")
		// A status for a number not watched is a bad message, shown.
		sub.send(&protocol.WatchMessage{Type: protocol.WatchStatus, Number: servicetest.Number(9), Code: protocol.CodeNotFound})
		u := next(t, w)
		require.Equal(t, protocol.ErrInvalid.Code, u.Error, "%+v", u)
		// The same status again (a new subscription after unknown_cursor)
		// is not handed over twice; one that changes is.
		sub.send(&protocol.WatchMessage{Type: protocol.WatchStatus, Number: foreign, Code: protocol.CodeWrongCarrier})
		sub.send(&protocol.WatchMessage{Type: protocol.WatchStatus, Number: foreign, Code: protocol.CodeRateLimited, RetryAfter: 5})
		requireStatus(t, next(t, w), foreign, protocol.CodeRateLimited)
		sub.heartbeat("c3")
		require.Eventually(t, func() bool { return w.Cursor() == "c3" }, 5*time.Second, 5*time.Millisecond)
		quiet(t, w, 50*time.Millisecond)
		ws.fake.none(50 * time.Millisecond)
	})
}

// TestWatchSyncNotFound: a subscription that resumes from a cursor gets
// no statuses, so Sync's track answers give each number its result.
func TestWatchSyncNotFound(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 2)
	b := servicetest.Number(2)
	ws := newWatchSetup(t, servicetest.ServerConfig{}, a)
	o := ws.options(a.Number, b)
	o.Sync, o.Cursor = true, "c0"
	w := ws.watch(t, o)
	ws.fake.next().heartbeat("c0")
	got := map[string]WatchUpdate{}
	for range 2 {
		u := next(t, w)
		got[u.Number] = u
	}
	requireEvents(t, got[a.Number], a, 0, 1, "c0")
	requireStatus(t, got[b], b, protocol.CodeNotFound)
}

// TestWatchableCode: a number no carrier claims gets its result in Code.
func TestWatchableCode(t *testing.T) {
	sf := &protocol.CarrierEntry{Code: "SF"}
	tr := staticTrust{carriers: map[string][]*protocol.CarrierEntry{"SF0001": {sf}}}
	ok, rejected := Watchable(tr, []string{"SF0001", "ZZ0009", "!"})
	require.Equal(t, []string{"SF0001"}, ok)
	require.Len(t, rejected, 2)
	for _, u := range rejected {
		require.Equal(t, protocol.CodeInvalidNumber, u.Code, "%+v", u)
		require.Empty(t, u.Error, "not a verification failure")
		require.NotEmpty(t, u.Message)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	require.NoError(t, c.Write(&d))
	return d.GetCounter().GetValue()
}
