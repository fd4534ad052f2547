package bench

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/node/store/storetest"
)

// TestBaselineSendsStoredBytes: the baseline does the node's work and no
// more. Its answer carries the stored head and event bytes unchanged,
// so that neither it nor its client decodes an event, and the JSON is
// what encoding/json writes for the same value.
func TestBaselineSendsStoredBytes(t *testing.T) {
	st, err := pebble.Open(t.TempDir(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	number := storetest.Number(1)
	u, _ := storetest.NewChain(number).Update(t, 0, 5)
	_, err = st.Append(t.Context(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.NoError(t, err)

	srv := httptest.NewServer(baselineHandler(st))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/v1/track/" + number)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))

	var got jsonParcel
	require.NoError(t, json.Unmarshal(body, &got))
	require.Equal(t, number, got.Number)
	require.Equal(t, u.SignedHead, got.SignedHead, "the signed head as stored")
	require.Len(t, got.Events, len(u.Events))
	for i, e := range u.Events {
		require.Equal(t, e.Bytes, got.Events[i], "event %d as stored", i)
	}
	want, err := json.Marshal(&got)
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(body))

	resp, err = http.Get(srv.URL + "/v1/track/" + storetest.Number(2))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// BenchmarkBaselineAnswer is the baseline's own encoding cost per lookup
// (base64 in JSON) for a parcel of 8 events, the share of the lookup
// that the node's CBOR framing does not have.
func BenchmarkBaselineAnswer(b *testing.B) {
	u, _ := storetest.NewChain(storetest.Number(1)).Update(b, 0, 8)
	p := &store.Parcel{Number: u.Number, SignedHead: u.SignedHead}
	evs := make([]store.Event, len(u.Events))
	for i, e := range u.Events {
		evs[i] = store.Event{Bytes: e.Bytes}
	}
	buf := make([]byte, 0, 16<<10)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendAnswer(buf[:0], p, evs)
	}
	b.SetBytes(int64(len(buf)))
}
