package seal_test

import (
	"encoding/base64"
	"testing"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/node/store/seal"
	"github.com/opentrack/opentrack/node/store/storetest"
	"github.com/opentrack/opentrack/protocol"
)

// FuzzOpen stores arbitrary bytes as a parcel's sealed record and reads
// them: an error or the details sealed for it, never a panic or others.
func FuzzOpen(f *testing.F) {
	b := memstore.New()
	st, err := seal.Open(f.Context(), b, f.TempDir()+"/"+seal.KeyringFile, &seal.Options{Retention: 90 * day})
	if err != nil {
		f.Fatal(err)
	}
	u, _ := storetest.NewChain(storetest.Number(1)).Update(f, 0, 1)
	u.Details = details
	res, err := st.Append(f.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	if err != nil {
		f.Fatal(err)
	}
	d, err := b.Details(f.Context(), res.ParcelIDs[0])
	if err != nil {
		f.Fatal(err)
	}
	good, err := base64.RawStdEncoding.DecodeString(d["sealed"])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:seal.PrefixLen])
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xfe})
	f.Fuzz(func(t *testing.T, rec []byte) {
		// The same number and first event: the parcel the record was
		// sealed for, as far as the binding can tell.
		u, _ := storetest.NewChain(storetest.Number(1)).Update(t, 0, 1)
		u.Details = protocol.Details{"sealed": base64.RawStdEncoding.EncodeToString(rec)}
		res, err := b.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
		if err != nil {
			t.Fatal(err)
		}
		d, err := st.Details(t.Context(), res.ParcelIDs[0])
		if err == nil && (len(d) != len(details) || d[protocol.FieldRecipientName] != details[protocol.FieldRecipientName]) {
			t.Fatalf("record %x opened to %v", rec, d)
		}
	})
}
