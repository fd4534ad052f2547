package node_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store/postgres/pgtest"
	"github.com/opentrack/opentrack/protocol"
)

// launchReplicas starts two nodes of carrier SF on one PostgreSQL
// database, the second made with --replica-of the first, and a registry
// that lists both under SF's one key.
func launchReplicas(t *testing.T, a *testAuthority) (r1, r2 *testCarrier, reg []byte) {
	t.Helper()
	url := pgtest.URL(t)
	dir := t.TempDir()
	o := repo.InitOptions{Carrier: "SF", Store: url, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: []string{a.pubFile}}
	first, err := repo.Init(filepath.Join(dir, "sf1"), o)
	require.NoError(t, err)
	o.ReplicaOf = filepath.Join(dir, "sf1")
	second, err := repo.Init(filepath.Join(dir, "sf2"), o)
	require.NoError(t, err)
	require.True(t, first.CarrierKey.Equal(second.CarrierKey))
	r1, r2 = &testCarrier{code: "SF", repo: first}, &testCarrier{code: "SF", repo: second}
	for _, c := range []*testCarrier{r1, r2} {
		c.start(t)
		t.Cleanup(func() { _ = c.node.Close() })
	}
	require.Equal(t, r1.node.Store.ID(), r2.node.Store.ID(), "replicas share the store id, so cursors")
	e := r1.entry(t)
	e.Nodes = append(e.Nodes, r2.nodeEntry())
	reg = a.sign(t, e)
	for _, c := range []*testCarrier{r1, r2} {
		ok, err := c.node.Trust.Install(reg)
		require.NoError(t, err)
		require.True(t, ok)
	}
	return r1, r2, reg
}

// TestReplicas runs two replicas of a carrier on one database: an event
// ingested on one reaches a watcher of the other, concurrent ingest of
// the same parcels on both keeps every chain gap-free and verifiable, and
// a platform that tracks the carrier fails over when a replica dies.
//
// long: its three checks share one database and one pair of replicas, which take seconds to start.
func TestReplicas(t *testing.T) {
	pgtest.URL(t) // skips early without a server
	servicetest.CheckLeaks(t)
	a := newAuthority(t)
	r1, r2, reg := launchReplicas(t, a)
	p := launchPlatform(t, a, reg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Ingest on one, a watcher on the other receives it.
	const watched = "SF1000000001"
	require.NoError(t, p.node.Host.Connect(ctx, r2.node.AddrInfo()))
	w, err := p.cl.Watch(ctx, client.WatchOptions{
		Carrier: "SF", Peers: []peer.ID{r2.id()}, Keys: p.trust, Numbers: []string{watched},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
	})
	require.NoError(t, err)
	defer w.Close()
	require.Eventually(t, func() bool { return w.Cursor() != "" }, 10*time.Second, 10*time.Millisecond, "watch on the second replica is live")
	// Not ingested yet: the subscription opened with its status.
	select {
	case u := <-w.Updates():
		require.Equal(t, protocol.CodeNotFound, u.Code, "%+v", u)
		require.Equal(t, watched, u.Number)
	case <-time.After(10 * time.Second):
		t.Fatal("no status for the number the replicas do not hold yet")
	}
	r1.ingest(t, watched, 2)
	select {
	case u := <-w.Updates():
		require.True(t, u.Verified, u.Error)
		require.Equal(t, watched, u.Number)
		require.Len(t, u.Events, 2)
	case <-time.After(10 * time.Second):
		t.Fatal("the second replica's watcher did not receive what the first ingested")
	}

	// Concurrent ingest of the same parcels on both replicas, one event a
	// request, as two carrier systems posting to different replicas would.
	// A commit that keeps losing to the other replica gives up after its
	// retries and acknowledges nothing; the poster posts again, as the
	// ingest API tells it to.
	numbers := []string{"SF2000000001", "SF2000000002", "SF2000000003"}
	const perReplica = 12
	var wg sync.WaitGroup
	errs := make(chan error, 2*perReplica*len(numbers))
	for ri, c := range []*testCarrier{r1, r2} {
		for _, n := range numbers {
			wg.Go(func() {
				for i := range perReplica {
					ev := ingest.InputEvent{
						ID: fmt.Sprintf("%s-r%d-%d", n, ri, i), Number: n, Time: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano),
						Status: "in_transit", Location: protocol.Location{Country: "CN", City: "Shenzhen"},
					}
					var res []ingest.Result
					var err error
					for range 20 {
						if res, err = c.node.Ingester.Ingest(ctx, []ingest.InputEvent{ev}); !errors.Is(err, ingest.ErrCommit) {
							break
						}
					}
					if err == nil && res[0].Status != ingest.StatusAccepted {
						err = fmt.Errorf("%s: %s %s", res[0].ID, res[0].Status, res[0].Error)
					}
					if err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, n := range numbers {
		par, err := r2.node.Store.Parcel(ctx, n)
		require.NoError(t, err)
		require.Equal(t, uint64(2*perReplica-1), par.Seq, "%s: one parcel, every event once", n)
		evs, err := r1.node.Store.Events(ctx, par.ID, 0, 0)
		require.NoError(t, err)
		require.Len(t, evs, 2*perReplica)
		for i, ev := range evs {
			require.Equal(t, uint64(i), ev.Seq, "%s: gap-free", n)
			e, err := protocol.DecodeEvent(ev.Bytes)
			require.NoError(t, err)
			if i > 0 {
				require.Equal(t, protocol.CIDOf(evs[i-1].Bytes), e.Prev.Cid, "%s: seq %d links to seq %d", n, i, i-1)
			}
		}
	}
	views := p.track(t, numbers...)
	for i, v := range views {
		requireRegistryVerified(t, v, r1, numbers[i], 2*perReplica)
	}

	// Platforms fail over: with the first replica dead, the second
	// answers every lookup, and a new watcher resumes on it from a cursor
	// the first issued, since the two share the feed.
	require.NoError(t, p.node.Host.Connect(ctx, r1.node.AddrInfo()))
	w1, err := p.cl.Watch(ctx, client.WatchOptions{
		Carrier: "SF", Peers: []peer.ID{r1.id()}, Keys: p.trust, Numbers: []string{watched},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w1.Cursor() != "" }, 10*time.Second, 10*time.Millisecond)
	cursor := w1.Cursor()
	require.NoError(t, w1.Close())
	require.NoError(t, r1.node.Close())
	for range 10 {
		views := p.track(t, numbers[0], watched)
		requireRegistryVerified(t, views[0], r2, numbers[0], 2*perReplica)
		requireRegistryVerified(t, views[1], r2, watched, 2)
	}
	w2, err := p.cl.Watch(ctx, client.WatchOptions{
		Carrier: "SF", Peers: []peer.ID{r1.id(), r2.id()}, Keys: p.trust, Numbers: []string{watched}, Cursor: cursor,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
	})
	require.NoError(t, err)
	defer w2.Close()
	res, err := r2.node.Ingester.Ingest(ctx, []ingest.InputEvent{{
		ID: "after-failover", Number: watched, Time: time.Now().UTC().Format(time.RFC3339Nano),
		Status: "out_for_delivery", Location: protocol.Location{Country: "CN", City: "Shenzhen"},
	}})
	require.NoError(t, err)
	require.Equal(t, ingest.StatusAccepted, res[0].Status, res[0].Error)
	select {
	case u := <-w2.Updates():
		require.True(t, u.Verified, u.Error)
		require.Equal(t, watched, u.Number)
		require.NotEmpty(t, u.Events)
		require.Equal(t, res[0].CID, u.Events[len(u.Events)-1].CID)
	case <-time.After(20 * time.Second):
		t.Fatalf("no update after failing over to the second replica: %v", w2.Err())
	}
}
