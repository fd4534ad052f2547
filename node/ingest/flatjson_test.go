package ingest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

var flatSeeds = []string{
	`{"id":"ev-1","number":"RB000000015GB","time":"2025-05-01T08:00:00Z","status":"picked_up","reason":"collected","location":{"country":"GB","locode":"GBLON","city":"London","facility":"LHR-1"},"description":"Parcel scanned at the London sorting centre","lang":"en"}`,
	`{ "id" : "a" , "location" : { "city" : "München" } , "eta": "2025-05-02T08:00:00Z" }`,
	`{}`,
	`{"location":{}}`,
	`{"id":"a","id":"b"}`,
	`{"ID":"a"}`,
	`{"id":"a\n"}`,
	`{"id":"\u0041"}`,
	`{"id":null}`,
	`{"id":"a"} {}`,
	`{"id":"a",}`,
	`{"location":{"lat_e6":1}}`,
	`{"audience":["x"]}`,
	"{\"id\":\"\xff\"}",
	"{\"city\":\"a\x01\"}",
	`{"location":{"city":"a"},"location":{"country":"GB"}}`,
}

// TestDecodeFlat: the fast path takes the plain shapes and leaves the rest
// to encoding/json.
func TestDecodeFlat(t *testing.T) {
	for i, s := range flatSeeds {
		var in InputEvent
		ok := decodeFlat([]byte(s), &in)
		require.Equal(t, i < 4, ok, "%s", s)
		if ok {
			var want InputEvent
			require.NoError(t, decodeJSON([]byte(s), &want))
			require.Equal(t, want, in)
		} else {
			require.Equal(t, InputEvent{}, in, "left zero")
		}
	}
}

// FuzzDecodeFlat: whatever the fast path takes, encoding/json takes too,
// and decodes to the same event.
func FuzzDecodeFlat(f *testing.F) {
	for _, s := range flatSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var got InputEvent
		if !decodeFlat(raw, &got) {
			require.Equal(t, InputEvent{}, got)
			return
		}
		var want InputEvent
		require.NoError(t, decodeJSON(raw, &want), "%q", raw)
		require.Equal(t, want, got, "%q", raw)
	})
}
