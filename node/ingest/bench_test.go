package ingest_test

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/ingest"
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
func BenchmarkIngestHTTP(b *testing.B) {
	for _, shape := range []struct {
		name                    string
		batch, parcels, perParc int
		existing                bool
		posters                 []int
	}{
		{"new=1000x1", 1000, 1000, 1, false, []int{1, 4}},
		{"new=125x8", 1000, 125, 8, false, []int{1, 4}},
		{"existing=1000x1", 1000, 1000, 1, true, []int{1, 4}},
		{"small=10x1", 10, 10, 1, false, []int{16}},
	} {
		for _, posters := range shape.posters {
			b.Run(fmt.Sprintf("%s/posters=%d", shape.name, posters), func(b *testing.B) {
				benchIngestHTTP(b, shape.batch, bodyMaker{parcels: shape.parcels, perParcel: shape.perParc}, shape.existing, posters)
			})
		}
	}
}

func benchIngestHTTP(b *testing.B, batch int, mk bodyMaker, existing bool, posters int) {
	st, err := pebble.Open(b.TempDir(), nil)
	require.NoError(b, err)
	defer st.Close()
	_, key, err := ed25519.GenerateKey(nil)
	require.NoError(b, err)
	signer, err := protocol.NewSigner(key)
	require.NoError(b, err)
	g, err := ingest.New(ingest.Config{Carrier: testCarrier, Schemes: testSchemes, Signer: signer, Store: st, Metrics: metrics.New()}, nil)
	require.NoError(b, err)
	srv, err := admin.New(nil, "bench-token", g.Handler(), nil, nil)
	require.NoError(b, err)
	url := startAdmin(b, srv) + "/v1/events"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: posters, DisableCompression: true}}

	if existing {
		// Give every parcel the benchmark will touch a history first.
		mk.pool = 8000
		for i := 0; i < mk.pool; i += batch {
			postBatch(b, client, url, mk.body(i/batch, batch, true))
		}
	}
	bodies := make([][]byte, b.N)
	for i := range bodies {
		bodies[i] = mk.body(i, batch, false)
	}

	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range posters {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t0 := time.Now()
				postBatch(b, client, url, bodies[i])
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N*batch)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// bodyMaker builds NDJSON batches of realistic events.
type bodyMaker struct {
	parcels, perParcel int
	pool               int // > 0: continue parcels 0..pool-1 instead of new ones
}

var benchStatuses = []struct{ status, reason string }{
	{"picked_up", "collected"}, {"arrived_at_facility", "sorting_centre"}, {"departed_facility", "sorting_centre"},
	{"in_transit", "by_road"}, {"arrived_at_facility", "delivery_depot"}, {"out_for_delivery", "first_attempt"},
	{"delivery_attempted", "recipient_absent"}, {"delivered", "to_neighbour"},
}

// body returns batch number i. warm builds the pool's first events.
func (m bodyMaker) body(i, size int, warm bool) []byte {
	var buf bytes.Buffer
	buf.Grow(size * 300)
	for k := range size {
		var serial, step int
		switch {
		case warm:
			serial, step = i*size+k, 0
		case m.pool > 0:
			serial = (i*size + k) % m.pool
			step = 1 + (i*size+k)/m.pool
		default:
			serial, step = 10_000_000+i*m.parcels+k/m.perParcel, k%m.perParcel
		}
		s := benchStatuses[step%len(benchStatuses)]
		ts := time.Date(2025, 5, 1, 8, 0, 0, 0, time.UTC).Add(time.Duration(step) * time.Hour).Format(time.RFC3339)
		fmt.Fprintf(&buf, `{"id":"ev-%d-%d-%t","number":"%s","time":"%s","status":"%s","reason":"%s",`+
			`"location":{"country":"GB","locode":"GBLON","city":"London","facility":"LHR-%d"},`+
			`"description":"Parcel scanned at the London sorting centre","lang":"en"}`+"\n",
			i, k, warm, s10(serial), ts, s.status, s.reason, k%40)
	}
	return buf.Bytes()
}

// postBatch posts one NDJSON body and requires every event accepted.
func postBatch(b *testing.B, client *http.Client, url string, body []byte) {
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
	if resp.StatusCode != http.StatusOK || !bytes.Contains(out, []byte(`"rejected":0`)) || bytes.Contains(out, []byte(`"duplicate"`)) {
		b.Errorf("%s: %.300s", resp.Status, out)
	}
}
