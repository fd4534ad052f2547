package pebble_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opentrack/opentrack/node/internal/cputime"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/node/store/storetest"
)

// Benchmark sizes, DESIGN §6: ingest batches of 1000 events, lookups in a
// store of 125k parcels × 8 events (1M), disk use over 200k events.
const (
	batchEvents     = 1000
	lookupParcels   = 125_000
	eventsPerParcel = 8
	diskParcels     = 25_000
)

// parcelRef is a benchmark's handle on one stored parcel.
type parcelRef struct {
	id    uint64
	chain storetest.Chain
}

// fill appends rounds of one event to each of parcels, in batches of
// batchEvents, the way steady ingest touches parcels: every parcel gets
// its events one at a time, each its own update and feed entry. perUpdate
// > 1 instead writes whole parcels at once, which is faster to build.
func fill(b *testing.B, s *pebble.Store, first, parcels, events, perUpdate int) []parcelRef {
	b.Helper()
	refs := make([]parcelRef, parcels)
	for i := range refs {
		refs[i].chain = storetest.NewChain(storetest.Number(first + i))
	}
	for done := 0; done < events; done += perUpdate {
		for lo := 0; lo < parcels; lo += batchEvents / perUpdate {
			hi := min(lo+batchEvents/perUpdate, parcels)
			batch := &store.Batch{Updates: make([]store.ParcelUpdate, 0, hi-lo)}
			for i := lo; i < hi; i++ {
				var u store.ParcelUpdate
				u, refs[i].chain = refs[i].chain.Update(b, refs[i].id, perUpdate)
				batch.Updates = append(batch.Updates, u)
			}
			res, err := s.AppendNoSync(context.Background(), batch)
			if err != nil {
				b.Fatal(err)
			}
			for i := lo; i < hi; i++ {
				refs[i].id = res.ParcelIDs[i-lo]
			}
		}
	}
	return refs
}

func openBench(b *testing.B, dir string, o pebble.Options) *pebble.Store {
	b.Helper()

	s, err := pebble.Open(dir, &o)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkAppend is durable ingest: one op is one fsynced batch of 1000
// events. Building the batch (encoding, CIDs, signing heads) is the
// ingest's cost, not the store's, and is not timed.
func BenchmarkAppend(b *testing.B) {
	shapes := []struct {
		name              string
		parcels, perBatch int // parcels per batch, events per parcel
		existing          bool
	}{
		{"new_125x8", 125, 8, false},
		{"new_1000x1", 1000, 1, false},
		{"next_1000x1", 1000, 1, true},
	}
	for _, sh := range shapes {
		b.Run(sh.name, func(b *testing.B) {
			s := openBench(b, b.TempDir(), pebble.Options{})
			defer s.Close()
			var pool []parcelRef
			if sh.existing {
				// Parcels that already have history, so each update is a
				// guarded append to a parcel record read from disk.
				pool = fill(b, s, 0, 50_000, 2, 1)
			}
			next := len(pool)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				batch := &store.Batch{Updates: make([]store.ParcelUpdate, sh.parcels)}
				for j := range batch.Updates {
					if sh.existing {
						r := &pool[(i*sh.parcels+j)%len(pool)]
						batch.Updates[j], r.chain = r.chain.Update(b, r.id, sh.perBatch)
						continue
					}
					batch.Updates[j], _ = storetest.NewChain(storetest.Number(next)).Update(b, 0, sh.perBatch)
					next++
				}
				b.StartTimer()
				start := time.Now()
				if _, err := s.Append(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*batchEvents)/b.Elapsed().Seconds(), "events/s")
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// lookupStores are built once per process and compression: 125k parcels
// × 8 events take some seconds to generate, and every -cpu setting
// reuses them.
var lookupStores = struct {
	sync.Mutex
	dirs map[string]string
}{dirs: map[string]string{}}

func lookupStore(b *testing.B, compression string) string {
	lookupStores.Lock()
	defer lookupStores.Unlock()
	if dir, ok := lookupStores.dirs[compression]; ok {
		return dir
	}
	dir, err := os.MkdirTemp("", "opentrack-lookup-*")
	if err != nil {
		b.Fatal(err)
	}
	lookupStores.dirs[compression] = dir
	s := openBench(b, dir, pebble.Options{Compression: compression})
	fill(b, s, 0, lookupParcels, eventsPerParcel, eventsPerParcel)
	if err := errors.Join(s.CompactAll(context.Background()), s.Close()); err != nil {
		b.Fatal(err)
	}
	return dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, dir := range lookupStores.dirs {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// BenchmarkParcelLookup is a track lookup in process: the newest parcel
// of a random number, then its whole history, uniformly over 125k parcels
// (1M events). With the default 64 MiB cache, which blocks share with the
// room kept for memtables (about 256 MiB in all on an idle store), part of
// the lookups miss it (the uncompressed working set is about 300 MB) and
// decompress blocks; with 256 MiB everything is cached, the case of a
// node whose hot parcels fit. Each compression has its own store, since a
// miss costs a decompression.
func BenchmarkParcelLookup(b *testing.B) {
	for _, c := range []string{pebble.CompressionZstd, pebble.CompressionMinLZ} {
		for _, cache := range []int64{64 << 20, 256 << 20} {
			b.Run(fmt.Sprintf("compression=%s/cache=%dMiB", c, cache>>20), func(b *testing.B) {
				s := openBench(b, lookupStore(b, c), pebble.Options{Compression: c, CacheSize: cache})
				defer s.Close()
				benchLookups(b, s)
			})
		}
	}
}

func benchLookups(b *testing.B, s *pebble.Store) {
	ctx := context.Background()
	numbers := make([]string, lookupParcels)
	for i := range numbers {
		numbers[i] = storetest.Number(i)
	}
	// Warm the cache as a running node's would be.
	for _, n := range numbers {
		p, err := s.Parcel(ctx, n)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Events(ctx, p.ID, 0, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cputime.Process()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 0))
		for pb.Next() {
			p, err := s.Parcel(ctx, numbers[r.IntN(len(numbers))])
			if err != nil {
				b.Error(err)
				return
			}
			evs, err := s.Events(ctx, p.ID, 0, 0)
			if err != nil || len(evs) != eventsPerParcel {
				b.Errorf("events of %s: %d, %v", p.Number, len(evs), err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
	b.ReportMetric(float64((cputime.Process()-cpu0).Microseconds())/float64(b.N), "cpu-µs/lookup")
}

// BenchmarkDiskSize reports the bytes per stored event after a full
// compaction, for each compression, over 200k events written the way
// steady ingest writes them: one event per parcel per batch, so every
// event has its own feed entry and idempotency key and its parcel record
// was rewritten each time. sst-B/event is the sstables; dir-B/event is the
// whole directory after a restart. A running store also keeps WAL files
// (up to a few memtables' worth, however large the store).
// The store is built once per run whatever b.N is.
func BenchmarkDiskSize(b *testing.B) {
	for _, c := range []string{pebble.CompressionZstd, pebble.CompressionMinLZ, pebble.CompressionSnappy, pebble.CompressionNone} {
		b.Run(c, func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			s := openBench(b, dir, pebble.Options{Compression: c})
			refs := fill(b, s, 0, diskParcels, eventsPerParcel, 1)
			if err := s.CompactAll(ctx); err != nil {
				b.Fatal(err)
			}
			sst := s.Metrics().Table.Local.LiveSize
			var raw, n int
			for _, r := range refs[:1000] {
				evs, err := s.Events(ctx, r.id, 0, 0)
				if err != nil {
					b.Fatal(err)
				}
				for _, e := range evs {
					raw += len(e.Bytes)
					n++
				}
			}
			// Reopening drops the WAL files pebble keeps for reuse, leaving
			// what a restarted node has on disk.
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			if err := openBench(b, dir, pebble.Options{Compression: c}).Close(); err != nil {
				b.Fatal(err)
			}
			du := dirSize(b, dir)
			for b.Loop() {
				// The work is the build above; b.Loop runs this function
				// once, and would drop metrics reported before it.
			}
			events := float64(diskParcels * eventsPerParcel)
			b.ReportMetric(float64(sst)/events, "sst-B/event")
			b.ReportMetric(float64(du)/events, "dir-B/event")
			b.ReportMetric(float64(raw)/float64(n), "raw-B/event")
		})
	}
}

func dirSize(b *testing.B, dir string) int64 {
	b.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += info.Size()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}
