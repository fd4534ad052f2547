package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// Store size of the lookup benchmark: DESIGN section 8 measures 8 events
// per parcel; 10k parcels keep the setup under a few seconds.
const (
	benchParcels = 10_000
	benchEvents  = 8
)

// BenchmarkTrackLookup measures single-number track lookups over libp2p
// (loopback TCP, Noise, yamux) against an in-memory store, the client
// decoding but not verifying. It reports lookups/s and the p50 and p99
// latency of one lookup. "reused" goes through Client and its stream
// pool; "new-stream" opens a stream per request, for comparison. DESIGN
// section 8 targets at least 20k lookups/s with p99 at most 5 ms at 16
// concurrent.
func BenchmarkTrackLookup(b *testing.B) {
	srv := servicetest.StartServer(b, servicetest.ServerConfig{Parcels: benchParcels, Events: benchEvents})
	h := servicetest.NewHost(b, nil)
	servicetest.Connect(b, h, srv.Host)
	c, err := New(h, &Options{MaxIdleStreams: 32})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	p := srv.Host.ID()
	numbers := make([]string, benchParcels) // formatted once, out of the measurement
	for i := range numbers {
		numbers[i] = servicetest.Number(i)
	}

	reused := func(ctx context.Context, i int) error {
		resp, err := c.Track(ctx, p, []protocol.TrackQuery{{Number: numbers[i]}}, nil)
		if err != nil {
			return err
		}
		return okResults(resp, 1)
	}
	newStream := func(ctx context.Context, i int) error {
		return trackOnNewStream(ctx, h, p, numbers[i])
	}
	batch := func(ctx context.Context, i int) error {
		q := make([]protocol.TrackQuery, protocol.MaxNumbersPerRequest)
		for j := range q {
			q[j].Number = numbers[(i+j)%benchParcels]
		}
		resp, err := c.Track(ctx, p, q, nil)
		if err != nil {
			return err
		}
		return okResults(resp, len(q))
	}
	for _, conc := range []int{1, 16} {
		b.Run(fmt.Sprintf("reused/c=%d", conc), func(b *testing.B) { runLookups(b, conc, 1, reused) })
		b.Run(fmt.Sprintf("new-stream/c=%d", conc), func(b *testing.B) { runLookups(b, conc, 1, newStream) })
	}
	b.Run("batch100/c=16", func(b *testing.B) { runLookups(b, 16, protocol.MaxNumbersPerRequest, batch) })
}

// runLookups runs b.N requests on conc goroutines and reports throughput
// (in parcels, perRequest per request) and request latency percentiles.
// do makes request i, given a parcel index spread over the store.
func runLookups(b *testing.B, conc, perRequest int, do func(ctx context.Context, i int) error) {
	ctx := context.Background()
	var next atomic.Int64
	lat := make([][]time.Duration, conc)
	errs := make([]error, conc)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) || errs[g] != nil {
					return
				}
				t0 := time.Now()
				errs[g] = do(ctx, int(i*7919)%benchParcels)
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N*perRequest)/elapsed.Seconds(), "parcels/s")
	b.ReportMetric(ms(all[len(all)/2]), "p50-ms")
	b.ReportMetric(ms(all[len(all)*99/100]), "p99-ms")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func okResults(resp *protocol.TrackResponse, n int) error {
	if resp.Error != nil || len(resp.Results) != n {
		return fmt.Errorf("bad response %+v", resp.Error)
	}
	for i := range resp.Results {
		if resp.Results[i].Code != protocol.CodeOK {
			return fmt.Errorf("result %s: %s", resp.Results[i].Number, resp.Results[i].Code)
		}
	}
	return nil
}

// trackOnNewStream is one lookup the way a client without a pool does it.
func trackOnNewStream(ctx context.Context, h host.Host, p peer.ID, number string) error {
	msg, err := protocol.Marshal(&protocol.TrackRequest{Queries: []protocol.TrackQuery{{Number: number}}})
	if err != nil {
		return err
	}
	s, err := h.NewStream(ctx, p, protocol.TrackID)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Scope().SetService(protocol.TrackServiceName); err != nil {
		s.Reset()
		return err
	}
	if err := protocol.WriteFrame(s, msg, protocol.MaxTrackRequest); err != nil {
		s.Reset()
		return err
	}
	body, err := protocol.NewFrameReader(s, protocol.MaxTrackResponse).Next()
	if err != nil {
		s.Reset()
		return err
	}
	var resp protocol.TrackResponse
	if err := protocol.Unmarshal(body, &resp); err != nil {
		return err
	}
	return okResults(&resp, 1)
}
