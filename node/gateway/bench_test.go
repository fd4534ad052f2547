package gateway

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/protocol"
)

// BenchmarkGetTrack is GET /v1/track/{number} end to end: HTTP, the
// client's lookup over libp2p to the carrier, and verification, from 16
// concurrent clients (8 per core on 2 cores) with keep-alive, over a
// small testnet on loopback. b.N lookups; see the req/s metric.
func BenchmarkGetTrack(b *testing.B) {
	f := newFixture(b, 1, &Options{Rate: 1e9, Burst: 1e9})
	c := f.net.Carriers[0]
	// Every HTTP client reaches the carrier as the gateway's one peer,
	// which the carrier's default policy holds to 50 numbers a second
	// after a burst of 10000: lift it, to measure the gateway.
	require.NoError(b, f.net.Kill(c))
	c.Repo.Config.Policy.TrackRate, c.Repo.Config.Policy.TrackBurst = 1e9, 1e9
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(b, f.net.Restart(ctx, c))
	numbers := make([]string, 64)
	for i := range numbers {
		numbers[i] = book(b, c, "", protocol.StatusPickedUp, protocol.StatusInTransit)
	}
	require.NoError(b, f.net.WaitFor(20*time.Second, func() bool {
		views, err := f.plat.Track(ctx, nil, numbers[0])
		return err == nil && views[0].Verified
	}), "the platform reaches the restarted carrier")
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			resp, err := hc.Get(f.url + "/v1/track/" + numbers[i%len(numbers)])
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
