package seal_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/node/store/seal"
	"github.com/opentrack/opentrack/node/store/storetest"
	"github.com/opentrack/opentrack/protocol"
)

var details = protocol.Details{protocol.FieldRecipientName: "Ada Lovelace", protocol.FieldRecipientPhone: "+44 20 7946 0000"}

// sealed is a parcel with details written through a sealing layer.
type sealed struct {
	id    uint64
	chain storetest.Chain
}

func appendDetails(t *testing.T, st store.Store, number string, d protocol.Details) sealed {
	t.Helper()
	u, c := storetest.NewChain(number).Update(t, 0, 1)
	u.Details = d
	res, err := st.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.NoError(t, err)
	return sealed{id: res.ParcelIDs[0], chain: c}
}

// grow appends one event without details.
func (p *sealed) grow(t *testing.T, st store.Store) {
	t.Helper()
	u, c := p.chain.Update(t, p.id, 1)
	_, err := st.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.NoError(t, err)
	p.chain = c
}

// raw returns the sealed record the backend holds for id.
func raw(t *testing.T, b store.Store, id uint64) []byte {
	t.Helper()
	d, err := b.Details(t.Context(), id)
	require.NoError(t, err)
	require.Len(t, d, 1, "the backend holds one sealed field, no plain text: %v", d)
	rec, err := base64.RawStdEncoding.DecodeString(d["sealed"])
	require.NoError(t, err)
	return rec
}

// TestRetention: details stay readable through the last day of their
// retention, are refused with ErrExpired the day after even before a
// sweep, and after the sweep no copy of the store opens them, not even
// with the keyring file read again from disk.
func TestRetention(t *testing.T) {
	clk := newClock()
	b, dir := memstore.New(), t.TempDir()
	st := open(t, b, dir, &seal.Options{Retention: 10 * day, Now: clk.Now})
	p := appendDetails(t, st, storetest.Number(1), details)
	backup := raw(t, b, p.id)

	clk.Add(10 * day)
	d, err := st.Details(t.Context(), p.id)
	require.NoError(t, err, "on the last day of retention")
	require.Equal(t, details, d)

	clk.Add(day)
	_, err = st.Details(t.Context(), p.id)
	require.ErrorIs(t, err, store.ErrExpired, "the day after retention, before any sweep")
	require.NoError(t, st.Sweep())

	// The backup of the record, restored into a fresh store under the
	// keyring as it is on disk now, does not open either.
	again := memstore.New()
	u, _ := storetest.NewChain(storetest.Number(1)).Update(t, 0, 1)
	u.Details = protocol.Details{"sealed": base64.RawStdEncoding.EncodeToString(backup)}
	res, err := again.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.NoError(t, err)
	clk.Add(-2 * day) // even with the clock turned back
	reopened := open(t, again, dir, &seal.Options{Retention: 10 * day, Now: clk.Now})
	_, err = reopened.Details(t.Context(), res.ParcelIDs[0])
	require.ErrorIs(t, err, store.ErrExpired, "a backup of the store after the sweep")
}

// TestNoRevival: details past their day, before any sweep, are not
// merged into the details a later event brings, nor kept alive by an
// event without details.
func TestNoRevival(t *testing.T) {
	clk := newClock()
	b := memstore.New()
	st := open(t, b, t.TempDir(), &seal.Options{Retention: 10 * day, Now: clk.Now})
	p := appendDetails(t, st, storetest.Number(1), details)
	clk.Add(11 * day)
	p.grow(t, st)
	_, err := st.Details(t.Context(), p.id)
	require.ErrorIs(t, err, store.ErrExpired, "an event after expiry re-wrapped the old details")

	u, _ := p.chain.Update(t, p.id, 1)
	u.Details = protocol.Details{protocol.FieldPOD: "left at door"}
	_, err = st.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.NoError(t, err)
	d, err := st.Details(t.Context(), p.id)
	require.NoError(t, err)
	require.Equal(t, protocol.Details{protocol.FieldPOD: "left at door"}, d, "only the new field; the expired ones stay gone")
}

// TestRewrap: a later event moves the expiry, and its batch re-wraps the
// data key under the new day and leaves the ciphertext as it was; the
// details then outlive the first expiry.
func TestRewrap(t *testing.T) {
	clk := newClock()
	b := memstore.New()
	st := open(t, b, t.TempDir(), &seal.Options{Retention: 10 * day, Now: clk.Now})
	p := appendDetails(t, st, storetest.Number(1), details)
	before := raw(t, b, p.id)

	p.grow(t, st) // same day: nothing to re-wrap
	require.Equal(t, before, raw(t, b, p.id), "an event on the same day rewrote the record")

	clk.Add(3 * day)
	p.grow(t, st)
	after := raw(t, b, p.id)
	require.Equal(t, seal.Day(clk.Now().Add(10*day)), dayOf(after), "expiry day after the later event")
	require.Equal(t, seal.Day(clk.Now().Add(7*day)), dayOf(before), "expiry day before it")
	require.Equal(t, before[seal.PrefixLen:], after[seal.PrefixLen:], "re-wrapping changed the ciphertext")
	require.NotEqual(t, before[:seal.PrefixLen], after[:seal.PrefixLen])

	clk.Add(9 * day) // past the first expiry, within the new one
	require.NoError(t, st.Sweep())
	d, err := st.Details(t.Context(), p.id)
	require.NoError(t, err, "details re-wrapped under the later day")
	require.Equal(t, details, d)
	clk.Add(2 * day)
	_, err = st.Details(t.Context(), p.id)
	require.ErrorIs(t, err, store.ErrExpired)
}

func dayOf(rec []byte) uint32 {
	return uint32(rec[1])<<24 | uint32(rec[2])<<16 | uint32(rec[3])<<8 | uint32(rec[4])
}

// TestTampered: a record with any byte changed, cut short, or copied to
// another parcel (another number, or the same number recycled) gives
// ErrCorrupt, never other details or a panic.
func TestTampered(t *testing.T) {
	b := memstore.New()
	st := open(t, b, t.TempDir(), &seal.Options{Retention: 10 * day})
	p := appendDetails(t, st, storetest.Number(1), details)
	rec := raw(t, b, p.id)

	put := func(number string, rec []byte) uint64 {
		u, _ := storetest.NewChain(number).Update(t, 0, 1)
		// Another first event, so another genesis: the number recycled.
		e, err := protocol.DecodeEvent(u.Events[0].Bytes)
		require.NoError(t, err)
		e.Time += 1000
		u.Events[0].Bytes, u.Events[0].CID, err = protocol.EncodeEvent(e)
		require.NoError(t, err)
		u.Details = protocol.Details{"sealed": base64.RawStdEncoding.EncodeToString(rec)}
		res, err := b.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
		require.NoError(t, err)
		return res.ParcelIDs[0]
	}
	tests := []struct {
		name   string
		number string
		rec    []byte
	}{
		{"copied to another number", storetest.Number(2), rec},
		{"copied to the number recycled", storetest.Number(1), rec},
		{"cut short", storetest.Number(3), rec[:len(rec)-1]},
		{"empty", storetest.Number(4), nil},
		{"another version", storetest.Number(5), append([]byte{2}, rec[1:]...)},
	}
	for i := range rec {
		if i >= 1 && i < 5 {
			continue // the day: a later one is below; an earlier one is expired
		}
		bad := append([]byte(nil), rec...)
		bad[i] ^= 0x01
		tests = append(tests, struct {
			name   string
			number string
			rec    []byte
		}{"byte flipped", storetest.Number(1), bad})
	}
	later := append([]byte(nil), rec...)
	later[4]++
	tests = append(tests, struct {
		name   string
		number string
		rec    []byte
	}{"day moved later", storetest.Number(1), later})
	for _, tc := range tests {
		id := put(tc.number, tc.rec)
		d, err := st.Details(t.Context(), id)
		require.ErrorIs(t, err, seal.ErrCorrupt, "%s: got details %v", tc.name, d)
		require.Nil(t, d, tc.name)
		at, err := st.ParcelByID(t.Context(), id)
		require.NoError(t, err)
		d, err = store.DetailsFor(t.Context(), st, at)
		require.ErrorIs(t, err, seal.ErrCorrupt, "%s, with the parcel at hand: got details %v", tc.name, d)
	}
	d, err := st.Details(t.Context(), p.id)
	require.NoError(t, err, "the untouched record")
	require.Equal(t, details, d)
}

// TestRestart: a reopened store reads its details with the keyring in the
// repo; one whose keyring is missing, damaged or another store's refuses
// to open, naming the file, and writes no new keyring over the old.
func TestRestart(t *testing.T) {
	dir, repo := t.TempDir(), t.TempDir()
	path := filepath.Join(repo, seal.KeyringFile)
	popts := &pebble.Options{CacheSize: 8 << 20, MemTableSize: 4 << 20}
	reopen := func() seal.Backend {
		b, err := pebble.Open(dir, popts)
		require.NoError(t, err)
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	b := reopen()
	st := open(t, b, repo, &seal.Options{Retention: 10 * day})
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "keyring mode")
	p := appendDetails(t, st, storetest.Number(1), details)
	require.NoError(t, st.Close())

	st = open(t, reopen(), repo, &seal.Options{Retention: 10 * day})
	d, err := st.Details(t.Context(), p.id)
	require.NoError(t, err, "after a restart")
	require.Equal(t, details, d)
	require.NoError(t, st.Close())

	good, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		setup func()
		want  error
	}{
		{"missing", func() { require.NoError(t, os.Remove(path)) }, seal.ErrNoKeyring},
		{"truncated", func() { require.NoError(t, os.WriteFile(path, good[:len(good)-1], 0o600)) }, seal.ErrBadKeyring},
		{"bit flipped", func() {
			bad := append([]byte(nil), good...)
			bad[20] ^= 1
			require.NoError(t, os.WriteFile(path, bad, 0o600))
		}, seal.ErrBadKeyring},
	} {
		tc.setup()
		b := reopen()
		_, err := seal.Open(t.Context(), b, path, &seal.Options{Retention: 10 * day})
		require.ErrorIs(t, err, tc.want, tc.name)
		require.ErrorContains(t, err, path, "%s: the error names the file", tc.name)
		require.NoError(t, b.Close())
		if tc.want == seal.ErrNoKeyring {
			_, err := os.Stat(path)
			require.ErrorIs(t, err, os.ErrNotExist, "a new keyring was written for a store with sealed details")
		}
	}
	// Another store's keyring, in place of this one's.
	require.NoError(t, os.Remove(path))
	_, err = seal.CreateKeyring(path, time.Now())
	require.NoError(t, err)
	b = reopen()
	_, err = seal.Open(t.Context(), b, path, &seal.Options{Retention: 10 * day})
	require.ErrorIs(t, err, seal.ErrBadKeyring, "another keyring")
	require.ErrorContains(t, err, path)
	require.NoError(t, b.Close())

	require.NoError(t, os.WriteFile(path, good, 0o600))
	st = open(t, reopen(), repo, &seal.Options{Retention: 10 * day})
	d, err = st.Details(t.Context(), p.id)
	require.NoError(t, err, "with the keyring restored")
	require.Equal(t, details, d)
}

// TestPlainTextBeforeSealing: details stored before sealing are read as
// they are, and the parcel's next event seals them and blanks the plain
// text in the live record.
func TestPlainTextBeforeSealing(t *testing.T) {
	b := memstore.New()
	u, c := storetest.NewChain(storetest.Number(1)).Update(t, 0, 1)
	u.Details = details
	res, err := b.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.NoError(t, err)
	id := res.ParcelIDs[0]

	st := open(t, b, t.TempDir(), &seal.Options{Retention: 10 * day})
	d, err := st.Details(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, details, d)
	p := sealed{id: id, chain: c}
	p.grow(t, st)
	stored, err := b.Details(t.Context(), id)
	require.NoError(t, err)
	for k, v := range details {
		require.Empty(t, stored[k], "plain text of %s left in the record", k)
		require.NotContains(t, stored["sealed"], v)
	}
	d, err = st.Details(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, details, d)
}

// TestKeyringAdvance: a keyring advanced past a day no longer derives its
// key, also when read again from its file.
func TestKeyringAdvance(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), seal.KeyringFile)
	k, err := seal.CreateKeyring(path, clk.Now())
	require.NoError(t, err)
	_, err = seal.CreateKeyring(path, clk.Now())
	require.Error(t, err, "a second keyring over the first")
	first := k.FirstDay()
	require.Equal(t, seal.Day(clk.Now()), first)
	gone, err := k.Advance(clk.Now())
	require.NoError(t, err)
	require.False(t, gone, "advance within the first day")
	clk.Add(3 * day)
	gone, err = k.Advance(clk.Now())
	require.NoError(t, err)
	require.True(t, gone)
	again, err := seal.LoadKeyring(path)
	require.NoError(t, err)
	require.Equal(t, first+3, again.FirstDay())
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "temporary file left behind: %v", entries)
}
