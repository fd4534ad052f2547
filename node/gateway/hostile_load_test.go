package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opentrack/opentrack/node/internal/loadstat"
	"github.com/opentrack/opentrack/protocol"
)

// TestHostileGatewayLoad measures, in one run, an honest web client's GET
// /v1/track latency and the process's RSS with no attack and while 11
// addresses post batches of 100 unknown numbers as fast as they are
// answered (defect 1 of issue 16). Testnet, gateway and attackers share
// the process. A measurement, not a check:
//
//	OPENTRACK_HOSTILE_LOAD=1 go test -run TestHostileGatewayLoad -v -count=1 ./node/gateway/
func TestHostileGatewayLoad(t *testing.T) {
	lookups := loadstat.Lookups(t, 1000)
	// The honest client is one person polling; its own request budget
	// must not be what is measured.
	f := newFixture(t, 1, &Options{Rate: 1e6, Burst: 1e6})
	carrier := f.net.Carriers[0]
	parcel := book(t, carrier, "", protocol.StatusPickedUp, protocol.StatusInTransit)
	honest := httpFrom(t, "127.0.0.1")
	get := func() (int, error) {
		resp, err := honest.Get(f.url + "/v1/track/" + parcel)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, err
	}
	var report []string
	for _, attack := range []bool{false, true, false} {
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var answered, refused, notFound int64
		var mu sync.Mutex
		if attack {
			for i := range 11 {
				e := httpFrom(t, netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}).String())
				wg.Go(func() {
					for ctx.Err() == nil {
						numbers := make([]string, protocol.MaxNumbersPerRequest)
						for j := range numbers {
							numbers[j], _ = carrier.NewNumber()
						}
						status, views, _ := post(t, e, f.url, numbers)
						mu.Lock()
						answered++
						if status == http.StatusTooManyRequests {
							refused++
						}
						notFound += int64(countNotFound(views))
						mu.Unlock()
					}
				})
			}
			time.Sleep(time.Second)
		}
		var peak int64
		lat := make([]time.Duration, 0, lookups)
		failed := 0
		for range lookups {
			start := time.Now()
			status, err := get()
			lat = append(lat, time.Since(start))
			if err != nil || status != http.StatusOK {
				failed++
			}
			peak = max(peak, loadstat.RSS())
		}
		stop()
		wg.Wait()
		slices.Sort(lat)
		name := "no attack"
		if attack {
			name = fmt.Sprintf("11 addresses enumerating (%d batches, %d refused, %d not_found)", answered, refused, notFound)
		}
		report = append(report, fmt.Sprintf("%-64s p50 %7s  p99 %7s  failed %d/%d  peak RSS %d MiB",
			name, loadstat.Percentile(lat, 50), loadstat.Percentile(lat, 99), failed, lookups, peak>>20))
	}
	t.Log("\n" + strings.Join(report, "\n"))
}
