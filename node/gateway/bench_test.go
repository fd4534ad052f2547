package gateway

import (
	"io"
	"net/http"
	"testing"

	"github.com/opentrack/opentrack/protocol"
)

// BenchmarkGetTrack is GET /v1/track/{number} end to end: HTTP, the
// client's lookup over libp2p to the carrier, and verification, from 16
// concurrent clients (8 per core on 2 cores) with keep-alive, over a
// small testnet on loopback. b.N lookups; see the req/s metric.
func BenchmarkGetTrack(b *testing.B) {
	f := newFixture(b, 1, &Options{Rate: 1e9, Burst: 1e9})
	c := f.net.Carriers[0]
	numbers := make([]string, 64)
	for i := range numbers {
		numbers[i] = book(b, c, "", protocol.StatusPickedUp, protocol.StatusInTransit)
	}
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
