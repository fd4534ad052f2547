package client

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// TestWatchRealService runs the watcher against the node's watch service
// over a store that grows, through a restart of the service.
func TestWatchRealService(t *testing.T) {
	servicetest.CheckLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		srv, h := bubbleServer(t, servicetest.ServerConfig{})
		startWatch := func() *service.Watch {
			sw, err := service.NewWatch(service.WatchConfig{Store: srv.Store}, &service.Options{Heartbeat: 50 * time.Millisecond})
			require.NoError(t, err)
			sw.Register(srv.Host)
			return sw
		}
		sw := startWatch()
		defer func() { sw.Unregister() }()
		c, err := New(h, nil)
		require.NoError(t, err)
		defer c.Close()
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
	})
}

// TestWatchRealServiceStatus: against the node's watch service, a watch
// of a stored parcel, a number the node lacks and another carrier's
// number gives each its result before Live, and goes on: the missing
// parcel, once ingested, is delivered.
func TestWatchRealServiceStatus(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 3)
	b := servicetest.NewParcel(t, servicetest.Number(2), 2)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{})
	servicetest.Load(t, srv.Store, []*servicetest.Parcel{a})
	sw, err := service.NewWatch(service.WatchConfig{Store: srv.Store, Carrier: servicetest.Carrier, Schemes: []protocol.Scheme{servicetest.Scheme}}, nil)
	require.NoError(t, err)
	sw.Register(srv.Host)
	defer sw.Unregister()
	c := newClient(t, srv, nil)
	foreign := "SF1234567890"
	w, err := c.Watch(context.Background(), WatchOptions{
		Carrier: servicetest.Carrier, Peers: []peer.ID{srv.Host.ID()}, Keys: servicetest.Keys(),
		Numbers: []string{a.Number, b.Number, foreign}, Sync: true,
	})
	require.NoError(t, err)
	defer w.Close()
	got := map[string]WatchUpdate{}
	for len(got) < 3 {
		u := next(t, w)
		require.NotContains(t, got, u.Number, "one result per number")
		got[u.Number] = u
	}
	requireEvents(t, got[a.Number], a, 0, 2, w.Cursor())
	requireStatus(t, got[b.Number], b.Number, protocol.CodeNotFound)
	requireStatus(t, got[foreign], foreign, protocol.CodeWrongCarrier)
	select {
	case <-w.Live():
	case <-time.After(10 * time.Second):
		t.Fatal("not live after every number's result")
	}
	servicetest.Load(t, srv.Store, []*servicetest.Parcel{b})
	u := next(t, w)
	require.Equal(t, b.Number, u.Number, "%+v", u)
	require.True(t, u.Verified, "%s: %s", u.Error, u.Message)
	require.Len(t, u.Events, 2)
}
