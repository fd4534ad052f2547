package postgres_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/node/store/postgres"
	"github.com/opentrack/opentrack/node/store/postgres/pgtest"
	"github.com/opentrack/opentrack/node/store/storetest"
)

// The PostgreSQL store against the embedded default, in one run on the
// same events (DESIGN §6): durable ingest in batches of 1000 events
// (125 new parcels × 8), and lookups (a parcel's head and its history) at
// 16 concurrent in a store of 20k parcels × 8 events.
//
//	scripts/testpg.sh run go test -run '^$' -bench VsPebble -count 5 ./node/store/postgres/
const (
	benchParcels   = 125
	benchPerParcel = 8
	lookupParcels  = 20_000
)

// benchBackends opens an empty store of each backend.
var benchBackends = []struct {
	name string
	open func(b *testing.B) store.Store
}{
	{"pebble", func(b *testing.B) store.Store {
		s, err := pebble.Open(b.TempDir(), nil)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}},
	{"postgres", func(b *testing.B) store.Store {
		s, err := postgres.Open(context.Background(), &postgres.Options{URL: pgtest.URL(b), MaxConns: 20})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}},
}

// batches returns n batches of new parcels, numbered from first: the same
// events for every backend.
func batches(b *testing.B, first, n int) []*store.Batch {
	out := make([]*store.Batch, n)
	for i := range out {
		out[i] = &store.Batch{Updates: make([]store.ParcelUpdate, benchParcels)}
		for j := range out[i].Updates {
			out[i].Updates[j], _ = storetest.NewChain(storetest.Number(first+i*benchParcels+j)).Update(b, 0, benchPerParcel)
		}
	}
	return out
}

// lookupData is the lookup benchmark's store content, built once for
// every backend and run.
var lookupData struct {
	sync.Mutex
	batches []*store.Batch
}

func lookupFill(b *testing.B) []*store.Batch {
	lookupData.Lock()
	defer lookupData.Unlock()
	if lookupData.batches == nil {
		lookupData.batches = batches(b, 0, lookupParcels/benchParcels)
	}
	return lookupData.batches
}

func BenchmarkVsPebble(b *testing.B) {
	for _, be := range benchBackends {
		b.Run("ingest/"+be.name, func(b *testing.B) {
			s := be.open(b)
			defer s.Close()
			work := batches(b, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Append(context.Background(), work[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*benchParcels*benchPerParcel)/b.Elapsed().Seconds(), "events/s")
		})
	}
	for _, be := range benchBackends {
		b.Run("lookup/"+be.name, func(b *testing.B) {
			s := be.open(b)
			defer s.Close()
			for _, batch := range lookupFill(b) {
				if _, err := s.Append(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int64
			b.SetParallelism(8) // 16 concurrent on two cores
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					i := int(next.Add(7919) % lookupParcels) // spread over the store
					p, err := s.Parcel(ctx, storetest.Number(i))
					if err == nil {
						_, err = s.Events(ctx, p.ID, 0, 0)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
		})
	}
}
