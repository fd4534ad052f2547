package seal_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/opentrack/opentrack/node/internal/cputime"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/node/store/seal"
	"github.com/opentrack/opentrack/node/store/storetest"
	"github.com/opentrack/opentrack/protocol"
)

// benchBatch is an ingest batch: 1000 parcels, one event each.
const benchBatch = 1000

var benchDetails = protocol.Details{
	protocol.FieldRecipientName:    "Erika Mustermann",
	protocol.FieldRecipientPhone:   "+49 30 1234567",
	protocol.FieldRecipientAddress: "Heidestrasse 17, 51147 Koeln",
}

// benchStores opens a pebble store (or a memstore, which isolates the
// CPU the sealing costs from the disk), bare or under the sealing layer.
func benchStores(b *testing.B, backend string, sealed bool, clk *clock) store.Store {
	b.Helper()
	var p seal.Backend = memstore.New()
	if backend == "pebble" {
		var err error
		if p, err = pebble.Open(b.TempDir(), &pebble.Options{CacheSize: 64 << 20, MemTableSize: 64 << 20}); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { _ = p.Close() })
	if !sealed {
		return p
	}
	s, err := seal.Open(context.Background(), p, b.TempDir()+"/"+seal.KeyringFile, &seal.Options{Retention: 90 * day, Now: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

type benchParcel struct {
	id    uint64
	chain storetest.Chain
}

// batchOf builds the next batch of one event for each of ps, with
// details when withDetails; ps with no id are started.
func batchOf(b *testing.B, ps []benchParcel, withDetails bool) *store.Batch {
	batch := &store.Batch{Updates: make([]store.ParcelUpdate, len(ps))}
	for i := range ps {
		var u store.ParcelUpdate
		u, ps[i].chain = ps[i].chain.Update(b, ps[i].id, 1)
		if withDetails {
			u.Details = benchDetails
		}
		batch.Updates[i] = u
	}
	return batch
}

func appendBatch(b *testing.B, st store.Store, ps []benchParcel, batch *store.Batch) {
	res, err := st.Append(context.Background(), batch)
	if err != nil {
		b.Fatal(err)
	}
	for i := range ps {
		ps[i].id = res.ParcelIDs[i]
	}
}

// BenchmarkAppendDetails is durable ingest of batches of 1000 events on
// pebble, bare and sealed: new parcels with details; later events without
// details to parcels that have some, on the day of the first (nothing to
// re-wrap) and a day later (every data key re-wrapped). Building the
// batches is not timed.
func BenchmarkAppendDetails(b *testing.B) {
	for _, backend := range []string{"pebble", "memstore"} {
		for _, shape := range []string{"new", "continue", "rewrap"} {
			for _, sealed := range []bool{false, true} {
				benchAppend(b, backend, shape, sealed)
			}
		}
	}
}

func benchAppend(b *testing.B, backend, shape string, sealed bool) {
	name := map[bool]string{false: "plain", true: "sealed"}[sealed]
	b.Run(backend+"/"+shape+"/"+name, func(b *testing.B) {
		clk := newClock()
		st := benchStores(b, backend, sealed, clk)
		next := 0
		fresh := func() []benchParcel {
			ps := make([]benchParcel, benchBatch)
			for i := range ps {
				ps[i].chain = storetest.NewChain(storetest.Number(next))
				next++
			}
			return ps
		}
		b.ReportAllocs()
		var cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			ps := fresh()
			batch := batchOf(b, ps, true)
			if shape != "new" {
				appendBatch(b, st, ps, batch)
				if shape == "rewrap" {
					clk.Add(day)
				}
				batch = batchOf(b, ps, false)
			}
			b.StartTimer()
			cpu0 := cputime.Process()
			appendBatch(b, st, ps, batch)
			cpu += cputime.Process() - cpu0
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/event")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*benchBatch), "cpu-ns/event")
	})
}

// BenchmarkDetails reads the details of random parcels of 10000: by id,
// and with the parcel at hand as the services read them (DetailsFor).
func BenchmarkDetails(b *testing.B) {
	for _, tc := range []struct {
		name           string
		sealed, parcel bool
	}{{"plain", false, false}, {"sealed", true, false}, {"plain/parcel", false, true}, {"sealed/parcel", true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			st := benchStores(b, "pebble", tc.sealed, newClock())
			var ids []uint64
			for lo := 0; lo < 10_000; lo += benchBatch {
				ps := make([]benchParcel, benchBatch)
				for i := range ps {
					ps[i].chain = storetest.NewChain(storetest.Number(lo + i))
				}
				appendBatch(b, st, ps, batchOf(b, ps, true))
				for _, p := range ps {
					ids = append(ids, p.id)
				}
			}
			parcels := make([]*store.Parcel, len(ids))
			for i, id := range ids {
				p, err := st.ParcelByID(context.Background(), id)
				if err != nil {
					b.Fatal(err)
				}
				parcels[i] = p
			}
			rng := rand.New(rand.NewPCG(1, 2))
			b.ReportAllocs()
			for b.Loop() {
				i := rng.IntN(len(ids))
				var d protocol.Details
				var err error
				if tc.parcel {
					d, err = store.DetailsFor(context.Background(), st, parcels[i])
				} else {
					d, err = st.Details(context.Background(), ids[i])
				}
				if err != nil || len(d) != len(benchDetails) {
					b.Fatal(fmt.Sprint(d), err)
				}
			}
		})
	}
}
