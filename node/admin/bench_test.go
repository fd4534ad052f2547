package admin_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/internal/cputime"
	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/protocol"
)

// BenchmarkIngestHTTP measures durable ingest through the admin HTTP API
// on loopback into a Pebble store with its default (tuned) options: NDJSON
// batches, token auth, fsync before every answer. One op is one batch;
// events/s is the figure DESIGN §8 sets at ≥ 60k for batches of 1000.
//
// Shapes: every event of a batch for a new parcel (one signature per
// event), 8 events for each of 125 new parcels (one signature per 8
// events), 1000 events continuing 1000 parcels that already have history
// (a head read and a signature per event), and batches of 10 from many
// posters, where group commit merges requests to share fsyncs. Posters is
// how many carrier connections post concurrently.
//
// rounds=8 is a carrier's live scan feed on a growing store, the shape of
// the ingest figure of the benchmark harness (bench/README.md): every
// batch holds one event for each of 1000 distinct parcels, the first
// round creates b.N/8 batches' worth of parcels in number order and the
// seven after it continue them in the same order. -benchtime 1000x grows
// the store to 1M events over 125k parcels. It also reports the rate of
// the first round (new parcels) and of the last full one (continued
// parcels, on the largest store). rounds=8-shuffled continues the parcels
// of each round in another order, so that a batch's parcels lie all over
// the key space, as those of a real feed do.
//
// Bodies are built by the posters just before they post them, as a
// carrier's poster reads them from its file, so the process heap stays
// the size of a node's and not of the whole run's input.
func BenchmarkIngestHTTP(b *testing.B) {
	for _, shape := range []struct {
		name    string
		mk      bodyMaker
		posters []int
	}{
		{"new=1000x1", bodyMaker{batch: 1000, parcels: 1000, perParcel: 1}, []int{1, 4}},
		{"new=125x8", bodyMaker{batch: 1000, parcels: 125, perParcel: 8}, []int{1, 4}},
		{"existing=1000x1", bodyMaker{batch: 1000, pool: 8000}, []int{1, 4}},
		{"small=10x1", bodyMaker{batch: 10, parcels: 10, perParcel: 1}, []int{16}},
		{"rounds=8", bodyMaker{batch: 1000, rounds: 8}, []int{4}},
		{"rounds=8-shuffled", bodyMaker{batch: 1000, rounds: 8, shuffle: true}, []int{4}},
	} {
		for _, posters := range shape.posters {
			b.Run(fmt.Sprintf("%s/posters=%d", shape.name, posters), func(b *testing.B) {
				benchIngestHTTP(b, shape.mk, posters)
			})
		}
	}
}

func benchIngestHTTP(b *testing.B, mk bodyMaker, posters int) {
	st, err := pebble.Open(b.TempDir(), nil)
	require.NoError(b, err)
	defer st.Close()
	_, key, err := ed25519.GenerateKey(nil)
	require.NoError(b, err)
	signer, err := protocol.NewSigner(key)
	require.NoError(b, err)
	g, err := ingest.New(ingest.Config{Carrier: testCarrier, Schemes: testSchemes, Signer: signer, Store: st, Metrics: metrics.New()}, nil)
	require.NoError(b, err)
	srv, err := admin.New(nil, "bench-token", admin.API(admin.APIConfig{Ingester: g}), nil, nil)
	require.NoError(b, err)
	url := start(b, srv) + "/v1/events"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: posters, DisableCompression: true}}

	mk.n = b.N
	warm := 0
	if mk.pool > 0 {
		// Give every parcel the benchmark will touch a history first.
		for i := 0; i < mk.pool; i += mk.batch {
			postBatch(b, client, url, mk.body(nil, i/mk.batch, true), mk.batch)
		}
		warm = mk.pool
	}

	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	done := make([]time.Duration, b.N) // since start, when batch i was answered
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cputime.Process()
	for range posters {
		wg.Go(func() {
			var buf []byte
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				buf = mk.body(buf[:0], i, false)
				t0 := time.Now()
				postBatch(b, client, url, buf, mk.batch)
				lat[i] = time.Since(t0)
				done[i] = time.Since(start)
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), cputime.Process()-cpu0
	b.StopTimer()

	// A benchmark that lost events must not report a rate.
	stats, err := st.Stats(context.Background())
	require.NoError(b, err)
	require.Equal(b, uint64(warm+b.N*mk.batch), stats.Events, "events in the store")

	slices.Sort(lat)
	b.ReportMetric(float64(b.N*mk.batch)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	if cpu > 0 {
		// Poster and node together: a rate that other work on the machine
		// cannot halve. Two cores run at most 2e6/cpu-µs/event events/s.
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*mk.batch), "cpu-µs/event")
	}
	if mk.rounds > 0 && b.N >= 2*mk.rounds {
		per := mk.perRound()
		for r := range mk.rounds {
			b.Logf("round %d: %.0f events/s", r+1, mk.roundRate(done, r))
		}
		b.ReportMetric(mk.roundRate(done, 0), "first-round-events/s")
		b.ReportMetric(mk.roundRate(done, b.N/per-1), "last-round-events/s")
	}
}

// bodyMaker builds NDJSON batches of realistic events. Each shape maps
// event k of batch i to a parcel serial and a step in that parcel's life.
type bodyMaker struct {
	batch int // events per batch

	// New parcels: parcels per batch, perParcel events each.
	parcels, perParcel int
	// > 0: continue parcels 0..pool-1, which a warm-up creates.
	pool int
	// > 0: n batches in this many rounds, each one event per parcel,
	// after the first in another order each round when shuffle is set.
	rounds  int
	shuffle bool
	n       int // batches in the run
}

var benchStatuses = []struct{ status, reason string }{
	{"picked_up", "collected"}, {"arrived_at_facility", "sorting_centre"}, {"departed_facility", "sorting_centre"},
	{"in_transit", "by_road"}, {"arrived_at_facility", "delivery_depot"}, {"out_for_delivery", "first_attempt"},
	{"delivery_attempted", "recipient_absent"}, {"delivered", "to_neighbour"},
}

// perRound is the number of batches of one round: n/rounds, rounded up.
func (m bodyMaker) perRound() int { return (m.n + m.rounds - 1) / m.rounds }

// roundRate is the events/s of round r (0-based), from the time the
// last batch of the round before it was answered to its own last answer.
// Posters run a few batches ahead, so rounds overlap at their edges.
func (m bodyMaker) roundRate(done []time.Duration, r int) float64 {
	per := m.perRound()
	var from time.Duration
	if r > 0 {
		from = slices.Max(done[(r-1)*per : r*per])
	}
	to := slices.Max(done[r*per : min(len(done), (r+1)*per)])
	return float64(per*m.batch) / (to - from).Seconds()
}

// at returns the parcel serial and step of event k of batch i; warm
// builds the pool's first events.
func (m bodyMaker) at(i, k int, warm bool) (serial, step int) {
	switch {
	case warm:
		return i*m.batch + k, 0
	case m.pool > 0:
		return (i*m.batch + k) % m.pool, 1 + (i*m.batch+k)/m.pool
	case m.rounds > 0:
		per := m.perRound()
		pool, round := per*m.batch, i/per
		pos := (i%per)*m.batch + k
		if round > 0 && m.shuffle {
			// A stride coprime with the pool permutes it.
			pos = (pos*m.stride(pool) + round*pool/m.rounds) % pool
		}
		return 20_000_000 + pos, round
	default:
		return 10_000_000 + i*m.parcels + k/m.perParcel, k % m.perParcel
	}
}

// stride returns a step coprime with pool, so that pos*stride mod pool
// visits every position once.
func (bodyMaker) stride(pool int) int {
	s := 7919
	for gcd(s, pool) != 1 {
		s += 2
	}
	return s
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// body appends batch number i to buf.
func (m bodyMaker) body(buf []byte, i int, warm bool) []byte {
	for k := range m.batch {
		serial, step := m.at(i, k, warm)
		s := benchStatuses[step%len(benchStatuses)]
		ts := time.Date(2025, 5, 1, 8, 0, 0, 0, time.UTC).Add(time.Duration(step) * time.Hour)
		buf = append(buf, `{"id":"ev-`...)
		buf = strconv.AppendInt(buf, int64(serial), 10)
		buf = append(buf, '-')
		buf = strconv.AppendInt(buf, int64(step), 10)
		buf = append(buf, `","number":"`...)
		buf = append(buf, s10(serial)...)
		buf = append(buf, `","time":"`...)
		buf = ts.AppendFormat(buf, time.RFC3339)
		buf = append(buf, `","status":"`...)
		buf = append(buf, s.status...)
		buf = append(buf, `","reason":"`...)
		buf = append(buf, s.reason...)
		buf = append(buf, `","location":{"country":"GB","locode":"GBLON","city":"London","facility":"LHR-`...)
		buf = strconv.AppendInt(buf, int64(k%40), 10)
		buf = append(buf, `"},"description":"Parcel scanned at the London sorting centre","lang":"en"}`+"\n"...)
	}
	return buf
}

// postBatch posts one NDJSON body of n events and requires every one of
// them accepted.
func postBatch(b *testing.B, client *http.Client, url string, body []byte, n int) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		b.Error(err)
		return
	}
	req.Header.Set("Content-Type", ingest.TypeNDJSON)
	req.Header.Set("Authorization", "Bearer bench-token")
	resp, err := client.Do(req)
	if err != nil {
		b.Error(err)
		return
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	// The counts lead the answer (admin.EventsResponse's field order).
	want := fmt.Sprintf(`{"accepted":%d,"duplicates":0,"rejected":0,`, n)
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(out, []byte(want)) {
		b.Errorf("%s: %.300s", resp.Status, out)
	}
}
