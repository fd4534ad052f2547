package seal_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/node/store/postgres"
	"github.com/opentrack/opentrack/node/store/postgres/pgtest"
	"github.com/opentrack/opentrack/node/store/seal"
	"github.com/opentrack/opentrack/node/store/storetest"
	"github.com/opentrack/opentrack/protocol"
)

// clock is a settable clock for retention tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const day = 24 * time.Hour

// open wraps b with a keyring in dir.
func open(t *testing.T, b seal.Backend, dir string, o *seal.Options) *seal.Store {
	t.Helper()
	s, err := seal.Open(t.Context(), b, filepath.Join(dir, seal.KeyringFile), o)
	require.NoError(t, err)
	return s
}

// TestConformance runs the store suite over a sealed memstore: sealing
// keeps every semantic of the store, details merging field by field
// included.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, memstore.New(), t.TempDir(), &seal.Options{Retention: 90 * day})
	})
}

// TestConformancePebble and TestConformancePostgres run the suite over
// the real backends, whose commits race the details the layer read
// before them (ConcurrentSameParcel).
func TestConformancePebble(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		b, err := pebble.Open(t.TempDir(), &pebble.Options{CacheSize: 8 << 20, MemTableSize: 4 << 20})
		require.NoError(t, err)
		return open(t, b, t.TempDir(), &seal.Options{Retention: 90 * day})
	})
}

func TestConformancePostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		b, err := postgres.Open(t.Context(), &postgres.Options{URL: pgtest.URL(t)})
		require.NoError(t, err)
		return open(t, b, t.TempDir(), &seal.Options{Retention: 90 * day})
	})
}

// secret returns a detail value found nowhere else.
func secret(t *testing.T, what string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return what + "-" + hex.EncodeToString(b[:])
}

// writeSecrets appends parcels with details through st, merging a second
// batch of details into the first, and returns every value written.
func writeSecrets(t *testing.T, st store.Store, n int) []string {
	t.Helper()
	var values []string
	for i := range n {
		name, addr, pod := secret(t, "name"), secret(t, "address"), secret(t, "pod")
		values = append(values, name, addr, pod)
		u, c := storetest.NewChain(storetest.Number(i+1)).Update(t, 0, 1)
		u.Details = protocol.Details{protocol.FieldRecipientName: name, protocol.FieldRecipientAddress: addr}
		res, err := st.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
		require.NoError(t, err)
		u, _ = c.Update(t, res.ParcelIDs[0], 1)
		u.Details = protocol.Details{protocol.FieldPOD: pod}
		_, err = st.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
		require.NoError(t, err)
		d, err := st.Details(t.Context(), res.ParcelIDs[0])
		require.NoError(t, err)
		require.Equal(t, protocol.Details{protocol.FieldRecipientName: name, protocol.FieldRecipientAddress: addr, protocol.FieldPOD: pod}, d)
	}
	return values
}

// filesContaining returns the files under dir that hold any of values,
// with the values each holds.
func filesContaining(t *testing.T, dir string, values []string) map[string][]string {
	t.Helper()
	found := map[string][]string{}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, v := range values {
			if bytes.Contains(b, []byte(v)) {
				found[path] = append(found[path], v)
			}
		}
		return nil
	})
	require.NoError(t, err)
	return found
}

// TestNoDetailsAtRest writes details through the sealing layer into a
// Pebble store and finds none of them in any file of its directory, WAL
// and sstables alike. A control parcel written to the bare store is
// found, so the search would see a leak.
func TestNoDetailsAtRest(t *testing.T) {
	dir := t.TempDir()
	b, err := pebble.Open(dir, &pebble.Options{CacheSize: 8 << 20, MemTableSize: 4 << 20})
	require.NoError(t, err)
	st := open(t, b, t.TempDir(), &seal.Options{Retention: 90 * day})
	values := writeSecrets(t, st, 20)
	control := writeControl(t, b)
	require.NoError(t, b.Compact(t.Context()), "compact: details go to sstables too")
	require.NoError(t, st.Close())

	checkFiles(t, dir, values, control)
}

// TestNoDetailsAtRestPostgres is TestNoDetailsAtRest on PostgreSQL: its
// data directory after a CHECKPOINT (heap, indexes, WAL).
func TestNoDetailsAtRestPostgres(t *testing.T) {
	url := pgtest.URL(t)
	b, err := postgres.Open(t.Context(), &postgres.Options{URL: url})
	require.NoError(t, err)
	st := open(t, b, t.TempDir(), &seal.Options{Retention: 90 * day})
	values := writeSecrets(t, st, 20)
	control := writeControl(t, b)
	require.NoError(t, st.Close())

	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var dataDir string
	require.NoError(t, conn.QueryRow(t.Context(), `SHOW data_directory`).Scan(&dataDir))
	_, err = conn.Exec(t.Context(), `CHECKPOINT`)
	require.NoError(t, err)

	checkFiles(t, dataDir, values, control)
}

// writeControl writes one parcel with plain-text details to the bare
// backend and returns its value.
func writeControl(t *testing.T, b store.Store) string {
	t.Helper()
	v := secret(t, "control")
	u, _ := storetest.NewChain(storetest.Number(9999)).Update(t, 0, 1)
	u.Details = protocol.Details{protocol.FieldRecipientName: v}
	_, err := b.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.NoError(t, err)
	return v
}

// checkFiles requires that no file under dir holds any of values, and
// that one holds control, so that the search would have seen them.
func checkFiles(t *testing.T, dir string, values []string, control string) {
	t.Helper()
	found := filesContaining(t, dir, append(values, control))
	seen := false
	for path, vs := range found {
		for _, v := range vs {
			if v == control {
				seen = true
				continue
			}
			t.Errorf("detail value %q in plain text in %s", v, path)
		}
	}
	require.True(t, seen, "the bare store's control value %q is in no file under %s: the search sees nothing", control, dir)
}
