package admin_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

func TestBodyFormats(t *testing.T) {
	events := []ingest.InputEvent{event("a", s10(1)), event("b", s10(2)), event("c", s10(1))}
	jsonArray, err := json.Marshal(events)
	require.NoError(t, err)
	cborArray, err := protocol.Marshal(events)
	require.NoError(t, err)
	var nd []any
	for _, ev := range events {
		nd = append(nd, ev)
	}
	for _, tc := range []struct {
		contentType string
		body        []byte
	}{
		{ingest.TypeNDJSON, ndjson(t, nd...)},
		{ingest.TypeNDJSON + "; charset=utf-8", append([]byte("\n\r\n"), ndjson(t, nd...)...)},
		{ingest.TypeJSON, jsonArray},
		{ingest.TypeCBOR, cborArray},
	} {
		t.Run(tc.contentType, func(t *testing.T) {
			e := newEnv(t, nil, nil)
			code, body := post(t, e.server().URL+"/v1/events", tc.contentType, tc.body)
			require.Equal(t, http.StatusOK, code, string(body))
			r := decodeResponse(t, body)
			require.Equal(t, admin.EventsResponse{Accepted: 3, Results: r.Results}, r)
			refs := e.Stored("a", "b", "c")
			for i, res := range r.Results {
				require.Equal(t, events[i].ID, res.ID)
				require.Equal(t, refs[res.ID].CID.String(), res.CID)
			}
			require.Equal(t, uint64(1), r.Results[2].Seq)
		})
	}
}

// TestCBORUnknownField rejects only the CBOR event with an unknown key.
func TestCBORUnknownField(t *testing.T) {
	e := newEnv(t, nil, nil)
	bad := with(base("bad"), "colour", "red")
	body, err := protocol.Marshal([]any{event("ok", s10(1)), bad})
	require.NoError(t, err)
	code, resp := post(t, e.server().URL+"/v1/events", ingest.TypeCBOR, body)
	require.Equal(t, http.StatusOK, code, string(resp))
	r := decodeResponse(t, resp)
	require.Equal(t, 1, r.Accepted)
	require.Equal(t, "bad", r.Results[1].ID)
	require.Equal(t, `invalid event: unknown field "colour"`, r.Results[1].Error)
}

// TestRefusedBodies covers requests refused whole: nothing is stored.
func TestRefusedBodies(t *testing.T) {
	three := ndjson(t, event("a", s10(1)), event("b", s10(1)), event("c", s10(1)))
	threeJSON, _ := json.Marshal([]ingest.InputEvent{event("a", s10(1)), event("b", s10(1)), event("c", s10(1))})
	threeCBOR, _ := protocol.Marshal([]ingest.InputEvent{event("a", s10(1)), event("b", s10(1)), event("c", s10(1))})
	big := ndjson(t, with(base("big"), "description", strings.Repeat("x", 400)), with(base("big2"), "description", strings.Repeat("x", 400)))
	for _, tc := range []struct {
		name        string
		opts        ingest.Options
		contentType string
		body        io.Reader // a reader hides the length, as chunked encoding does
		code        int
		detail      string
	}{
		{"body over limit", ingest.Options{MaxBodyBytes: 512}, ingest.TypeNDJSON, bytes.NewReader(big), 413, "body exceeds 512 bytes; split the batch"},
		{"chunked body over limit", ingest.Options{MaxBodyBytes: 512}, ingest.TypeNDJSON, io.MultiReader(bytes.NewReader(big)), 413, "body exceeds 512 bytes"},
		{"too many NDJSON events", ingest.Options{MaxBatchEvents: 2}, ingest.TypeNDJSON, bytes.NewReader(three), 413, "more than 2 events"},
		{"too many JSON events", ingest.Options{MaxBatchEvents: 2}, ingest.TypeJSON, bytes.NewReader(threeJSON), 413, "more than 2 events"},
		{"too many CBOR events", ingest.Options{MaxBatchEvents: 2}, ingest.TypeCBOR, bytes.NewReader(threeCBOR), 413, "3 events, limit 2"},
		{"JSON not an array", ingest.Options{}, ingest.TypeJSON, strings.NewReader(`{"id": "a"}`), 400, "want a JSON array of event objects"},
		{"JSON truncated", ingest.Options{}, ingest.TypeJSON, bytes.NewReader(threeJSON[:40]), 400, "want a JSON array"},
		{"CBOR not CBOR", ingest.Options{}, ingest.TypeCBOR, bytes.NewReader(threeJSON), 400, "want a CBOR array of event maps"},
		{"empty body", ingest.Options{}, ingest.TypeNDJSON, strings.NewReader("\n\n"), 400, "body holds no events"},
		{"unknown content type", ingest.Options{}, "text/plain", bytes.NewReader(three), 415, `Content-Type "text/plain" is not one of`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, &tc.opts, nil)
			req, err := http.NewRequest(http.MethodPost, e.server().URL+"/v1/events", tc.body)
			require.NoError(t, err)
			req.Header.Set("Content-Type", tc.contentType)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tc.code, resp.StatusCode)
			require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
			var p admin.Problem
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
			require.Contains(t, p.Detail, tc.detail)
			require.Zero(t, e.EventCount())
		})
	}
}

// TestHugeJSONArrayCountedAsDecoded refuses a JSON array of 2M empty
// objects (6 MB) at the 10,001st element: before, the whole array was
// decoded first, 1.3 s and 242 MB of RSS.
func TestHugeJSONArrayCountedAsDecoded(t *testing.T) {
	e := newEnv(t, &ingest.Options{MaxBodyBytes: 8 << 20}, nil)
	h := e.api
	body := append(append([]byte("["), bytes.Repeat([]byte("{},"), 2_000_000-1)...), "{}]"...)
	req := httptest.NewRequest(http.MethodPost, "/v1/events", bytes.NewReader(body))
	req.Header.Set("Content-Type", ingest.TypeJSON)
	w := httptest.NewRecorder()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h.ServeHTTP(w, req)
	runtime.ReadMemStats(&after)
	require.Equal(t, http.StatusRequestEntityTooLarge, w.Code, "%s", w.Body)
	require.Contains(t, w.Body.String(), "more than 10000 events")
	// The body itself is 6 MB; decoding it whole allocated over 100 MB.
	alloc := after.TotalAlloc - before.TotalAlloc
	require.Less(t, alloc, uint64(24<<20), "allocated %d MB to refuse the batch", alloc>>20)
}

// TestHTTPStoreFailure answers 503 without results when the commit fails.
func TestHTTPStoreFailure(t *testing.T) {
	for _, tc := range []struct {
		name       string
		breakStore func(e *env, spy *appendSpy)
		detail     string
	}{
		{"append fails", func(_ *env, spy *appendSpy) { spy.fail = errors.New("no space left on device") }, "no space left on device"},
		{"store closed", func(e *env, _ *appendSpy) { require.NoError(t, e.Base.Close()) }, "store: closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spy := &appendSpy{}
			e := newEnv(t, nil, func(s store.Store) store.Store { spy.Store = s; return spy })
			tc.breakStore(e, spy)
			code, body := post(t, e.server().URL+"/v1/events", ingest.TypeNDJSON, ndjson(t, event("a", s10(1))))
			require.Equal(t, http.StatusServiceUnavailable, code)
			require.NotContains(t, string(body), "results")
			require.Contains(t, string(body), tc.detail)
			require.Contains(t, string(body), "nothing of this batch is acknowledged")
			if tc.name == "append fails" {
				require.Zero(t, e.EventCount())
			}
		})
	}
}

func TestParcelView(t *testing.T) {
	e := newEnv(t, nil, nil)
	const platform = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
	n := s10(5)
	res := e.IngestOK(
		event("a", n, func(in *ingest.InputEvent) {
			in.Audience = []string{platform}
			in.Details = map[string]string{protocol.FieldRecipientName: "A. Person"}
		}),
		event("b", n, func(in *ingest.InputEvent) {
			in.Status, in.Reason, in.Time = "delivered", "to_neighbour", "2025-06-01T11:59:00Z"
			in.Description, in.Lang = "Left with the neighbour", "en"
		}),
	)
	srv := e.server()
	resp, err := http.Get(srv.URL + "/v1/parcels/" + strings.ToLower(n))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var v ingest.ParcelView
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))

	require.Equal(t, n, v.Number)
	require.Equal(t, testCarrier, v.Carrier)
	require.Equal(t, res[0].CID, v.Genesis)
	require.Equal(t, res[1].CID, v.Head)
	require.Equal(t, uint64(1), v.Seq)
	require.Equal(t, []string{platform}, v.Audience)
	require.Equal(t, map[string]string{protocol.FieldRecipientName: "A. Person"}, v.Details)
	signed, err := hex.DecodeString(v.SignedHead)
	require.NoError(t, err)
	sh, err := protocol.ParseSignedHead(signed)
	require.NoError(t, err)
	require.Equal(t, v.Head, sh.Head.Head.String())
	require.Len(t, v.Events, 2)
	require.Equal(t, ingest.EventView{
		Seq: 1, CID: res[1].CID, Time: "2025-06-01T11:59:00Z", Status: "delivered", Reason: "to_neighbour",
		Location:    protocol.Location{Country: "GB", Locode: "GBLON", City: "London"},
		Description: "Left with the neighbour", Lang: "en",
	}, v.Events[1])

	for path, code := range map[string]int{"/v1/parcels/" + s10(6): 404, "/v1/parcels/a!": 400} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, code, resp.StatusCode, path)
	}
}

// TestAdminTokenGuardsIngest posts through the admin server: without the
// token, or with a wrong one, the answer is 401 and nothing is stored.
func TestAdminTokenGuardsIngest(t *testing.T) {
	e := newEnv(t, nil, nil)
	srv, err := admin.New(nil, "s3cret-token", e.api, e.M, nil)
	require.NoError(t, err)
	url := start(t, srv) + "/v1/events"
	body := ndjson(t, event("a", s10(1)))
	for _, auth := range []string{"", "Bearer wrong", "Basic s3cret-token", "Bearer s3cret-token2"} {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", ingest.TypeNDJSON)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, auth)
	}
	require.Zero(t, e.EventCount())

	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", ingest.TypeNDJSON)
	req.Header.Set("Authorization", "Bearer s3cret-token")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, uint64(1), e.EventCount())
}

// FuzzPostEvents feeds arbitrary bodies of every accepted type to the
// handler: it must answer 200, 400 or 413, never panic, and a 200 must
// account for every event it reports.
func FuzzPostEvents(f *testing.F) {
	events := []ingest.InputEvent{event("a", s10(1)), event("b", s10(2), func(in *ingest.InputEvent) {
		in.Ext = map[string]any{"xp.n": int64(1)}
	})}
	js, _ := json.Marshal(events)
	cb, _ := protocol.Marshal(events)
	f.Add(uint8(0), ndjson(f, events[0], events[1], `{"id":`))
	f.Add(uint8(1), js)
	f.Add(uint8(2), cb)
	types := []string{ingest.TypeNDJSON, ingest.TypeJSON, ingest.TypeCBOR}
	e := newEnv(f, &ingest.Options{MaxBodyBytes: 1 << 16, MaxBatchEvents: 50}, nil)
	h := e.api
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/events", bytes.NewReader(body))
		req.Header.Set("Content-Type", types[int(kind)%len(types)])
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK:
			r := decodeResponse(t, w.Body.Bytes())
			require.Equal(t, len(r.Results), r.Accepted+r.Duplicates+r.Rejected)
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	})
}
