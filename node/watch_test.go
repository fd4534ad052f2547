package node_test

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	lphost "github.com/opentrack/opentrack/node/host"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// delivery is one event as a watcher handed it over.
type delivery struct {
	seq uint64
	cid string
	run int // which watcher: 0 before the platform restart, 1 after
}

// watchLog collects what watchers hand over.
type watchLog struct {
	mu         sync.Mutex
	events     map[string][]delivery // number -> in arrival order
	unverified []client.WatchUpdate
}

// collect records w's updates, as run, until w stops.
func (l *watchLog) collect(w *client.Watcher, run int) {
	for u := range w.Updates() {
		l.mu.Lock()
		// A number not ingested yet gets its status (Code); no failure.
		if !u.Verified && u.Code == "" {
			l.unverified = append(l.unverified, u)
		}
		for _, e := range u.Events {
			l.events[u.Number] = append(l.events[u.Number], delivery{seq: e.Seq, cid: e.CID, run: run})
		}
		l.mu.Unlock()
	}
}

// has reports whether number's events include every cid of want.
func (l *watchLog) has(number string, want []string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range want {
		if !slices.ContainsFunc(l.events[number], func(d delivery) bool { return d.cid == c }) {
			return false
		}
	}
	return true
}

// freePort returns a loopback TCP port that was free a moment ago, so that
// a node restarted on it is at the same address.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestWatchNoLostUpdate is the "no lost update" test. A carrier
// node runs as a subprocess on a fixed port; a watcher with a cursor file
// watches a thousand parcels while ten thousand events are ingested in
// batches. Midway the carrier is killed with SIGKILL and restarted on the
// same address, and the watcher must find it again by itself; later the
// watcher is stopped while ingest goes on, and a new one resumes from the
// cursor file. Every event the node acknowledged, indeed every event it
// stored, must arrive at least once, verified; after dedupe by CID each
// arrives once, in seq order per parcel. Within one watcher nothing
// arrives twice.
//
// long: one scenario whose phases (a kill, a restart, a resume from the cursor file) share the watcher and the ledger of what was acknowledged.
func TestWatchNoLostUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	servicetest.CheckLeaks(t)
	const (
		parcels   = 1000
		perParcel = 10
		batch     = 200
	)
	dir := t.TempDir()
	_, err := repo.Init(dir, repo.InitOptions{Carrier: "SF", Listen: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t))}})
	require.NoError(t, err)
	r, err := repo.Open(dir)
	require.NoError(t, err)
	// Init leaves no node.json; startNodeProcess expects one to remove.
	require.NoError(t, os.WriteFile(filepath.Join(dir, repo.NodeInfoFile), []byte("{}"), 0o644))
	node := startNodeProcess(t, dir)
	addr := node.info.Addrs[0]

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	key, _, err := crypto.GenerateEd25519Key(crand.Reader)
	require.NoError(t, err)
	h, err := lphost.New(key, &lphost.Options{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, DisableQUIC: true})
	require.NoError(t, err)
	defer h.Close()
	ai, err := peer.AddrInfoFromString(addr)
	require.NoError(t, err)
	// The node's address for good: the watcher redials it after the
	// restart, however long the node was gone.
	h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
	cl, err := client.New(h, nil)
	require.NoError(t, err)
	defer cl.Close()
	info, err := cl.Info(ctx, ai.ID, 0)
	require.NoError(t, err)
	keys := client.InfoKeys{Carrier: info.Carrier, Keys: info.Keys}

	numbers := make([]string, parcels)
	for i := range numbers {
		numbers[i] = fmt.Sprintf("SF%010d", 5000+i)
	}
	opts := client.WatchOptions{
		Carrier: "SF", Peers: []peer.ID{ai.ID}, Keys: keys, Numbers: numbers,
		CursorFile: filepath.Join(t.TempDir(), "cursor"), MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
	}
	log := &watchLog{events: map[string][]delivery{}}
	var collectors sync.WaitGroup
	startWatcher := func(run int, withSync bool) *client.Watcher {
		o := opts
		o.Sync = withSync
		w, err := cl.Watch(ctx, o)
		require.NoError(t, err)
		collectors.Go(func() { log.collect(w, run) })
		return w
	}

	// The events: each parcel's ten in order, the parcels interleaved.
	rng := rand.New(rand.NewPCG(5, uint64(time.Now().UnixNano())))
	var order []int
	for p := range parcels {
		for range perParcel {
			order = append(order, p)
		}
	}
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	statuses := []string{"info_received", "picked_up", "in_transit", "arrived_at_facility", "departed_facility", "out_for_delivery"}
	seqOf := make([]int, parcels)
	events := make([]ingest.InputEvent, len(order))
	at := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	for i, p := range order {
		events[i] = ingest.InputEvent{
			ID: fmt.Sprintf("watch-%d-%d", p, seqOf[p]), Number: numbers[p], Time: at,
			Status: statuses[seqOf[p]%len(statuses)], Location: protocol.Location{Country: "CN", City: "Shenzhen"},
		}
		seqOf[p]++
	}

	// A first event, seen by the watcher, shows the subscription is live:
	// through the subscription, or through Sync's track once it is.
	w := startWatcher(0, true)
	ok, warmCIDs, err := postBatch(t, node.info.AdminURL, r.AdminToken, events[:1])
	require.True(t, ok, "%v", err)
	require.Eventually(t, func() bool { return log.has(numbers[order[0]], []string{warmCIDs[events[0].ID]}) }, 20*time.Second, 10*time.Millisecond)

	var outcomes []*batchOutcome
	post := func(evs []ingest.InputEvent) {
		o := &batchOutcome{events: evs}
		o.acked, o.cids, _ = postBatch(t, node.info.AdminURL, r.AdminToken, evs)
		outcomes = append(outcomes, o)
	}
	outcomes = append(outcomes, &batchOutcome{events: events[:1], acked: true, cids: warmCIDs})
	rest := events[1:]
	nBatches := (len(rest) + batch - 1) / batch
	killAt, stopAt, resumeAt := nBatches*2/5, nBatches*3/5, nBatches*4/5
	var kills, reposted int
	for b := 0; b < nBatches; b++ {
		switch b {
		case killAt:
			// Kill the carrier while a batch may be in flight.
			killed := make(chan struct{})
			go func() {
				time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
				_ = node.cmd.Process.Signal(syscall.SIGKILL)
				close(killed)
			}()
			post(rest[b*batch : min((b+1)*batch, len(rest))])
			<-killed
			_ = node.cmd.Wait()
			kills++
			node = startNodeProcess(t, dir)
			require.Equal(t, addr, node.info.Addrs[0], "restarted on the same address")
			// A batch the kill cut off is posted again: ingest is
			// idempotent on event ids.
			for _, o := range outcomes {
				if !o.acked {
					o.acked, o.cids, _ = postBatch(t, node.info.AdminURL, r.AdminToken, o.events)
					require.True(t, o.acked, "re-post after the restart")
					reposted++
				}
			}
			continue
		case stopAt:
			require.NoError(t, w.Close()) // the platform stops; ingest goes on
		case resumeAt:
			w = startWatcher(1, false)
		}
		post(rest[b*batch : min((b+1)*batch, len(rest))])
		require.True(t, outcomes[len(outcomes)-1].acked, "batch %d", b)
		time.Sleep(10 * time.Millisecond) // spread ingest over the watcher's life
	}

	// What the node stores, verified: every parcel's whole chain.
	stored, err := cl.Lookup(ctx, ai.ID, "SF", numbers, keys, nil)
	require.NoError(t, err)
	for _, v := range stored {
		require.True(t, v.Verified, "%s: %s %s", v.Number, v.Error, v.Message)
		require.Len(t, v.Events, perParcel, v.Number)
	}
	require.Eventually(t, func() bool {
		for _, v := range stored {
			cids := make([]string, len(v.Events))
			for i, e := range v.Events {
				cids[i] = e.CID
			}
			if !log.has(v.Number, cids) {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "not every stored event arrived")
	require.NoError(t, w.Close())
	collectors.Wait()

	acked := 0
	for _, o := range outcomes {
		require.True(t, o.acked)
		for _, e := range o.events {
			c := o.cids[e.ID]
			require.NotEmpty(t, c, e.ID)
			require.True(t, log.has(e.Number, []string{c}), "acknowledged event %s (%s) never arrived", e.ID, c)
			acked++
		}
	}
	require.Empty(t, log.unverified)
	delivered, duplicates := 0, 0
	for _, v := range stored {
		got := log.events[v.Number]
		delivered += len(got)
		seen := map[string]bool{}
		perRun := map[int]map[string]bool{0: {}, 1: {}}
		var firsts []client.EventView
		for _, d := range got {
			require.False(t, perRun[d.run][d.cid], "%s: watcher %d handed over %s twice", v.Number, d.run, d.cid)
			perRun[d.run][d.cid] = true
			if seen[d.cid] {
				duplicates++
				continue
			}
			seen[d.cid] = true
			firsts = append(firsts, client.EventView{Seq: d.seq, CID: d.cid})
		}
		require.Len(t, firsts, perParcel, v.Number)
		for i, e := range firsts {
			require.Equal(t, uint64(i), e.Seq, "%s: deduped events out of seq order", v.Number)
			require.Equal(t, v.Events[i].CID, e.CID, "%s seq %d", v.Number, i)
		}
	}
	t.Logf("%d events in %d parcels: %d acknowledged (%d batches re-posted after %d kill -9 of the carrier, 1 watcher restart from its cursor file); "+
		"%d delivered, %d duplicates before dedupe, %d unverified; after dedupe every event once, in seq order",
		len(events), parcels, acked, reposted, kills, delivered, duplicates, len(log.unverified))
}
