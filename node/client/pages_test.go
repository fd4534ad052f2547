package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// longParcels loads into srv parcels numbered from first, one per length.
func longParcels(t *testing.T, srv *servicetest.Server, first int, lengths ...int) []*servicetest.Parcel {
	t.Helper()
	var ps []*servicetest.Parcel
	for i, n := range lengths {
		ps = append(ps, servicetest.NewParcel(t, servicetest.Number(first+i), n))
	}
	servicetest.Load(t, srv.Store, ps)
	return ps
}

// requireWhole fails unless v is p's whole history, verified.
func requireWhole(t *testing.T, p *servicetest.Parcel, v ParcelView) {
	t.Helper()
	require.Empty(t, v.Error, "%s: %s", v.Number, v.Message)
	require.False(t, v.Partial, "%s: %s", v.Number, v.Message)
	require.True(t, v.Verified, v.Number)
	require.Len(t, v.Events, len(p.CIDs), v.Number)
	for i, e := range v.Events {
		if e.Seq != uint64(i) || e.CID != p.CIDs[i].String() {
			t.Fatalf("%s: event %d is seq %d %s, want %s", v.Number, i, e.Seq, e.CID, p.CIDs[i])
		}
	}
	require.Equal(t, p.CIDs[len(p.CIDs)-1].String(), v.Head, v.Number)
}

// TestLongHistories reads parcels of 1,100 and 5,000 events to their
// signed heads, alone and in a batch whose response cap gives each
// number a few dozen events per page, through TrackPeer (Lookup) and
// TrackNumbers. Before paging was followed, each showed its first page
// as verified.
func TestLongHistories(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{})
	lengths := []int{1100, 5000}
	for range 98 {
		lengths = append(lengths, 1100)
	}
	parcels := longParcels(t, srv, 0, lengths...)
	trust := registryOf(t, srv.Host)
	var requests atomic.Int64
	// The test counts requests, not time: under -race on a loaded machine
	// a 4 MiB response can take longer than the default 5 s to arrive.
	c := newResolveClient(t, &Options{RequestTimeout: time.Minute, TamperResponse: func(peer.ID, *protocol.TrackResponse) { requests.Add(1) }})
	servicetest.Connect(t, c.h, srv.Host)
	conn := &hostConnector{h: c.h, trust: trust}

	paths := map[string]func(numbers []string) ([]ParcelView, error){
		"TrackPeer": func(numbers []string) ([]ParcelView, error) {
			return c.TrackPeer(context.Background(), srv.Host.ID(), trust, numbers, nil)
		},
		"TrackNumbers": func(numbers []string) ([]ParcelView, error) {
			return c.TrackNumbers(context.Background(), trust, conn, numbers, nil)
		},
	}
	for name, track := range paths {
		for _, tc := range []struct {
			name    string
			parcels []*servicetest.Parcel
		}{
			{"1100", parcels[:1]},
			{"5000", parcels[1:2]},
			{"batch of 100", parcels},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				var numbers []string
				for _, p := range tc.parcels {
					numbers = append(numbers, p.Number)
				}
				requests.Store(0)
				views, err := track(numbers)
				require.NoError(t, err)
				require.Len(t, views, len(numbers))
				for i, v := range views {
					requireWhole(t, tc.parcels[i], v)
				}
				// Pages of several numbers travel together: the whole
				// batch (about 15 MB of events) takes a few requests per
				// 4 MiB response, not one per page per number.
				events := 0
				for _, p := range tc.parcels {
					events += len(p.CIDs)
				}
				t.Logf("%d events in %d requests", events, requests.Load())
				require.LessOrEqual(t, requests.Load(), int64(5+events/1000), "requests for %d events", events)
			})
		}
	}
}

// TestLongHistoryBound shows a history longer than MaxHistoryEvents as
// partial and never verified, through both lookups, with the events read
// so far, and one within the bound as verified.
func TestLongHistoryBound(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{})
	parcels := longParcels(t, srv, 0, 5000, 1100)
	trust := registryOf(t, srv.Host)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"events", Options{MaxHistoryEvents: 2000}},
		{"pages", Options{MaxHistoryPages: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newResolveClient(t, &tc.opts)
			servicetest.Connect(t, c.h, srv.Host)
			numbers := []string{parcels[0].Number, parcels[1].Number}
			byPeer, err := c.TrackPeer(context.Background(), srv.Host.ID(), trust, numbers, nil)
			require.NoError(t, err)
			byRegistry, err := c.TrackNumbers(context.Background(), trust, &hostConnector{h: c.h, trust: trust}, numbers, nil)
			require.NoError(t, err)
			for _, views := range [][]ParcelView{byPeer, byRegistry} {
				require.Len(t, views, 2)
				v := views[0]
				require.True(t, v.Partial, "5000 events past the bound: %+v", v.Message)
				require.False(t, v.Verified)
				require.True(t, v.Found)
				require.Empty(t, v.Error)
				require.Empty(t, v.KeySource, "a partial history is not verified against any key")
				require.Contains(t, v.Message, "partial history, not verified")
				require.Contains(t, v.Message, "at most")
				require.Len(t, v.Events, 2000)
				for i, e := range v.Events {
					require.Equal(t, parcels[0].CIDs[i].String(), e.CID)
				}
				requireWhole(t, parcels[1], views[1])
			}
		})
	}
}

// TestPagedViewNeverVerified is the floor under every path: a view of
// one page with more is partial, whoever builds it.
func TestPagedViewNeverVerified(t *testing.T) {
	p := servicetest.NewParcel(t, servicetest.Number(1), 3)
	res := &protocol.TrackResult{Number: p.Number, Code: protocol.CodeOK, Head: p.SignedHead, Events: p.Events[:2], More: true}
	v, err := VerifyResult(res, servicetest.Carrier, servicetest.Keys(), protocol.Link{}, 0)
	require.NoError(t, err)
	pv := View(p.Number, servicetest.Carrier, res, v, nil)
	require.False(t, pv.Verified)
	require.True(t, pv.Partial)
	require.Len(t, pv.Events, 2)
}
