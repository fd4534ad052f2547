package node_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/client"
	lphost "github.com/opentrack/opentrack/node/host"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

// envNodeRepo makes the test binary run a node from that repo instead of
// the tests: the crash test's subprocess.
const envNodeRepo = "OPENTRACK_TEST_NODE_REPO"

func TestMain(m *testing.M) {
	if dir := os.Getenv(envNodeRepo); dir != "" {
		os.Exit(runNodeProcess(dir))
	}
	os.Exit(m.Run())
}

func runNodeProcess(dir string) int {
	r, err := repo.Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := node.Run(ctx, r, node.Options{AdminAddr: "127.0.0.1:0"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// nodeProcess is a node running as a child process of the test.
type nodeProcess struct {
	cmd  *exec.Cmd
	info *repo.NodeInfo
}

func startNodeProcess(t *testing.T, dir string) *nodeProcess {
	t.Helper()
	// A node killed with SIGKILL leaves its node.json behind.
	require.NoError(t, os.Remove(filepath.Join(dir, repo.NodeInfoFile)), "stale node.json")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envNodeRepo+"="+dir)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	p := &nodeProcess{cmd: cmd}
	t.Cleanup(func() { p.kill() })
	require.Eventually(t, func() bool {
		info, err := repo.ReadNodeInfo(dir)
		if err == nil {
			p.info = info
		}
		return err == nil
	}, 30*time.Second, 20*time.Millisecond, "node.json never appeared")
	return p
}

func (p *nodeProcess) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// batchOutcome is what one ingest POST returned.
type batchOutcome struct {
	events []ingest.InputEvent
	acked  bool              // got a 200
	cids   map[string]string // id -> cid, when acked
	// inFlight: not acknowledged, and the node had the connection (the
	// POST began before the kill and was not refused): the kill landed
	// while the batch was being received or committed.
	inFlight bool
}

// TestCrashRecovery ingests batches into a node subprocess, kills it with
// SIGKILL at a random moment, restarts it, and checks that every event
// whose batch got a 200 is stored, every chain verifies, and a batch that
// was in flight is stored whole or not at all.
//
// long: one kill-and-restart loop over a subprocess and the ledger of acknowledged batches.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	dir := t.TempDir()
	_, err := repo.Init(dir, repo.InitOptions{Carrier: "SF", Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	require.NoError(t, err)
	r, err := repo.Open(dir)
	require.NoError(t, err)
	// Init leaves no node.json; startNodeProcess expects one to remove.
	require.NoError(t, os.WriteFile(filepath.Join(dir, repo.NodeInfoFile), []byte("{}"), 0o644))

	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	const parcels = 300
	var outcomes []*batchOutcome
	seqOf := make([]int, parcels) // events generated per parcel so far
	nextBatch := func(n int) []ingest.InputEvent {
		statuses := []string{"info_received", "picked_up", "in_transit", "arrived_at_facility", "departed_facility", "out_for_delivery"}
		evs := make([]ingest.InputEvent, n)
		for i := range evs {
			p := rng.IntN(parcels)
			seqOf[p]++
			evs[i] = ingest.InputEvent{
				ID:       fmt.Sprintf("crash-%d-%d", p, seqOf[p]),
				Number:   fmt.Sprintf("SF%010d", 1000+p),
				Time:     time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano),
				Status:   statuses[seqOf[p]%len(statuses)],
				Location: protocol.Location{Country: "CN", City: "Shenzhen"},
			}
		}
		return evs
	}

	for round := 0; round < 3; round++ {
		p := startNodeProcess(t, dir)
		killAt := time.Now().Add(time.Duration(150+rng.IntN(500)) * time.Millisecond)
		var killed time.Time
		done := make(chan struct{})
		go func() {
			time.Sleep(time.Until(killAt))
			killed = time.Now()
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			close(done)
		}()
		for {
			o := &batchOutcome{events: nextBatch(50 + rng.IntN(150))}
			outcomes = append(outcomes, o)
			began := time.Now()
			var err error
			o.acked, o.cids, err = postBatch(t, p.info.AdminURL, r.AdminToken, o.events)
			if !o.acked {
				<-done
				o.inFlight = began.Before(killed) && !errors.Is(err, syscall.ECONNREFUSED)
				break // the node is gone
			}
		}
		<-done
		_ = p.cmd.Wait()
	}

	// Restart and check.
	p := startNodeProcess(t, dir)
	var acked, inFlight, unacked int
	for _, o := range outcomes {
		if o.acked {
			acked++
			continue
		}
		// Re-posting an unacknowledged batch must find all of it stored
		// or none of it: a half batch would show both kinds.
		unacked++
		if o.inFlight {
			inFlight++
		}
		ok, _, err := postBatch(t, p.info.AdminURL, r.AdminToken, o.events)
		require.True(t, ok, "re-post after restart: %v", err)
	}
	require.Greater(t, acked, 0)
	// Posts follow each other back to back, so a kill lands inside one
	// nearly always; the test means nothing unless one did.
	require.Positive(t, inFlight, "no kill of %d landed while a batch was in flight", unacked)

	// Every acknowledged event is in its parcel's verified chain.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, pid := dialNode(t, ctx, p.info)
	want := map[string]map[string]bool{} // number -> acked cids
	for _, o := range outcomes {
		if !o.acked {
			continue
		}
		for _, e := range o.events {
			if want[e.Number] == nil {
				want[e.Number] = map[string]bool{}
			}
			want[e.Number][o.cids[e.ID]] = true
		}
	}
	numbers := make([]string, 0, len(want))
	for n := range want {
		numbers = append(numbers, n)
	}
	info, err := cl.Info(ctx, pid, 0)
	require.NoError(t, err)
	views, err := cl.Lookup(ctx, pid, "SF", numbers, client.InfoKeys{Carrier: info.Carrier, Keys: info.Keys}, nil)
	require.NoError(t, err)
	present := 0
	for _, v := range views {
		require.Empty(t, v.Error, "%s: %s", v.Number, v.Message)
		require.True(t, v.Verified, v.Number)
		have := map[string]bool{}
		for _, e := range v.Events {
			have[e.CID] = true
		}
		for c := range want[v.Number] {
			require.True(t, have[c], "acknowledged event %s of %s lost", c, v.Number)
			present++
		}
	}
	t.Logf("%d batches acknowledged, %d in flight at a kill (of %d unacknowledged); %d acknowledged events present in %d verified chains", acked, inFlight, unacked, present, len(views))
}

// postBatch posts events as NDJSON. It reports whether the node answered
// 200, and the CID of each id. A batch re-posted after a crash must come
// back all accepted or all duplicate, never mixed.
func postBatch(t *testing.T, adminURL, token string, events []ingest.InputEvent) (bool, map[string]string, error) {
	t.Helper()
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	for i := range events {
		require.NoError(t, enc.Encode(&events[i]))
	}
	req, err := http.NewRequest(http.MethodPost, adminURL+"/v1/events", &body)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return false, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, nil, fmt.Errorf("status %s", resp.Status)
	}
	var out struct {
		Accepted, Duplicates, Rejected int
		Results                        []ingest.Result
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return false, nil, err
	}
	if out.Rejected > 0 || (out.Accepted > 0 && out.Duplicates > 0 && !withinBatchDuplicates(events, out.Results)) {
		t.Fatalf("half batch: %d accepted, %d duplicates, %d rejected", out.Accepted, out.Duplicates, out.Rejected)
	}
	cids := make(map[string]string, len(out.Results))
	for _, res := range out.Results {
		cids[res.ID] = res.CID
	}
	return true, cids, nil
}

// withinBatchDuplicates reports whether every duplicate result is an id
// repeated inside the batch itself, which is not a sign of a half batch.
func withinBatchDuplicates(events []ingest.InputEvent, results []ingest.Result) bool {
	seen := map[string]bool{}
	for i, res := range results {
		if res.Status == ingest.StatusDuplicate && !seen[events[i].ID] {
			return false
		}
		seen[events[i].ID] = true
	}
	return true
}

func dialNode(t *testing.T, ctx context.Context, info *repo.NodeInfo) (*client.Client, peer.ID) {
	t.Helper()
	key, _ := newIdentity(t)
	return dialNodeAs(t, ctx, key, info)
}

// newIdentity is a fresh libp2p key and its peer ID.
func newIdentity(t *testing.T) (crypto.PrivKey, peer.ID) {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(crand.Reader)
	require.NoError(t, err)
	id, err := peer.IDFromPrivateKey(key)
	require.NoError(t, err)
	return key, id
}

// dialNodeAs is dialNode with the client's identity given.
func dialNodeAs(t *testing.T, ctx context.Context, key crypto.PrivKey, info *repo.NodeInfo) (*client.Client, peer.ID) {
	t.Helper()
	h, err := lphost.New(key, &lphost.Options{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	ai, err := peer.AddrInfoFromString(info.Addrs[0])
	require.NoError(t, err)
	require.NoError(t, h.Connect(ctx, *ai))
	cl, err := client.New(h, nil)
	require.NoError(t, err)
	t.Cleanup(func() { cl.Close() })
	return cl, ai.ID
}
