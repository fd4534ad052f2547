package node_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/repo"
)

// rssKB is this process's resident set, in KiB.
func rssKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			require.NoError(t, err)
			return kb
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestMeasureFullDisk measures an honest client's track latency and the
// process's RSS with no fault, then while ingest is refused for a full
// disk and a poster keeps trying, in one run. It is a measurement, not a
// check: OPENTRACK_MEASURE=1 runs it.
//
// long: one measurement in phases over one node.
func TestMeasureFullDisk(t *testing.T) {
	if os.Getenv("OPENTRACK_MEASURE") == "" {
		t.Skip("OPENTRACK_MEASURE=1 runs the full-disk measurement")
	}
	disk := smallDisk(t, 256<<20)
	r, err := repo.Init(filepath.Join(disk, "repo"), repo.InitOptions{Carrier: "DF", Schemes: []string{`DF\d{8}`}, Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	require.NoError(t, err)
	r.Config.Store.ReserveMB = 32
	// One honest client: the per-peer budget is not what is measured.
	r.Config.Policy.TrackRate, r.Config.Policy.TrackBurst = 1e6, 1e6
	n, err := node.Start(r, node.Options{AdminAddr: "127.0.0.1:0", Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.Close() })
	admin := adminClient{url: n.AdminURL(), token: r.AdminToken}
	const parcels = 1000
	var numbers []string
	for i := range parcels {
		numbers = append(numbers, fmt.Sprintf("DF%08d", i))
	}
	for start := 0; start < parcels; start += 100 {
		var b strings.Builder
		for _, num := range numbers[start : start+100] {
			b.WriteString(scans(num, 0, 8))
		}
		code, body := admin.do(t, "POST", "/v1/events", b.String())
		require.Equal(t, http.StatusOK, code, body)
	}
	ctx := context.Background()
	cl, p := dialNode(t, ctx, n.NodeInfo())
	info, err := cl.Info(ctx, p, 0)
	require.NoError(t, err)
	keys := client.InfoKeys{Carrier: info.Carrier, Keys: info.Keys}
	phase := func(name string, lookups int) {
		const workers = 8
		lat := make([]time.Duration, lookups)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < lookups; i += workers {
					t0 := time.Now()
					views, err := cl.Lookup(ctx, p, info.Carrier, []string{numbers[i%parcels]}, keys, nil)
					lat[i] = time.Since(t0)
					if err != nil || !views[0].Verified {
						t.Errorf("%s: lookup %d: %v %+v", name, i, err, views)
						return
					}
				}
			})
		}
		wg.Wait()
		slices.Sort(lat)
		t.Logf("%s: %d lookups c=%d p50 %.2f ms p99 %.2f ms, RSS %d MiB", name, lookups, workers,
			float64(lat[lookups/2].Microseconds())/1000, float64(lat[lookups*99/100].Microseconds())/1000, rssKB(t)>>10)
	}
	for round := range 3 {
		phase(fmt.Sprintf("round %d no fault", round), 4000)
		ballast := fillTo(t, disk, 16<<20)
		stop := make(chan struct{})
		var refused int
		var pw sync.WaitGroup
		pw.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, body := admin.do(t, "POST", "/v1/events", scans(numbers[i%parcels], 100+i, 100))
				if code != http.StatusInsufficientStorage {
					t.Errorf("ingest on a full disk: %d %s", code, body)
					return
				}
				refused++
			}
		})
		phase(fmt.Sprintf("round %d disk full, ingest refused", round), 4000)
		close(stop)
		pw.Wait()
		t.Logf("round %d: %d batches refused with 507", round, refused)
		require.NoError(t, os.Remove(ballast))
	}
}
