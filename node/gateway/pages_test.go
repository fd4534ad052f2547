package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// longParcel ingests a parcel of n scans at c, the last one delivered,
// and returns its number.
func longParcel(t *testing.T, c *testnet.Carrier, n int) string {
	t.Helper()
	number, err := c.NewNumber()
	require.NoError(t, err)
	start := time.Now().Add(-time.Duration(n+1) * time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for from := 0; from < n; from += 5000 {
		var evs []ingest.InputEvent
		for i := from; i < min(from+5000, n); i++ {
			s := protocol.StatusInTransit
			if i == n-1 {
				s = protocol.StatusDelivered
			}
			evs = append(evs, ingest.InputEvent{
				ID: fmt.Sprintf("%s-%d", number, i), Number: number, Status: string(s),
				Time:     start.Add(time.Duration(i) * time.Minute).UTC().Format(time.RFC3339),
				Location: protocol.Location{Country: "GB", City: cities[i%len(cities)], Facility: fmt.Sprintf("HUB-%02d", i%100)},
			})
		}
		res, err := c.Ingest(ctx, evs)
		require.NoError(t, err)
		for _, r := range res {
			require.Equal(t, ingest.StatusAccepted, r.Status, r.Error)
		}
	}
	return number
}

// requireComplete fails unless v is a verified history of n events that
// ends delivered.
func requireComplete(t *testing.T, v client.ParcelView, n int) {
	t.Helper()
	require.Empty(t, v.Error, "%s: %s", v.Number, v.Message)
	require.False(t, v.Partial, v.Number)
	require.True(t, v.Verified, v.Number)
	require.Len(t, v.Events, n, v.Number)
	require.EqualValues(t, n-1, v.Events[n-1].Seq, v.Number)
	require.Equal(t, protocol.StatusDelivered, v.Events[n-1].Status, v.Number)
}

// TestGatewayLongHistories serves parcels of 1,100 and 5,000 events whole
// and verified, by GET and in a batch, and one past the client's bound as
// partial: 200, "partial": true, "verified": false, never cached. Before
// the client followed pages, GET showed 1,000 events as verified.
func TestGatewayLongHistories(t *testing.T) {
	servicetest.CheckLeaks(t)
	f := newFixture(t, 1, &Options{Rate: 1000, Burst: 1000})
	c := f.net.Carriers[0]
	short, long := longParcel(t, c, 1100), longParcel(t, c, 5000)
	batch := []string{short, long}
	for range 8 {
		batch = append(batch, longParcel(t, c, 1100))
	}

	for _, tc := range []struct {
		number string
		n      int
	}{{short, 1100}, {long, 5000}} {
		resp, body := f.do(t, "GET", "/v1/track/"+tc.number, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		var v client.ParcelView
		require.NoError(t, json.Unmarshal(body, &v))
		requireComplete(t, v, tc.n)
		require.Equal(t, `"`+v.Head+`"`, resp.Header.Get("ETag"))
	}

	resp, body := f.do(t, "POST", "/v1/track", `{"numbers":["`+strings.Join(batch, `","`)+`"]}`, "Content-Type", "application/json")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var views []client.ParcelView
	require.NoError(t, json.Unmarshal(body, &views))
	require.Len(t, views, len(batch))
	for i, v := range views {
		n := 1100
		if i == 1 {
			n = 5000
		}
		requireComplete(t, v, n)
	}

	bounded, err := client.New(f.plat.Node.Host, &client.Options{MaxHistoryEvents: 2000})
	require.NoError(t, err)
	t.Cleanup(func() { bounded.Close() })
	g := f.start(t, Config{Client: bounded}, &Options{Rate: 1000, Burst: 1000})
	small := &fixture{url: g.url, http: f.http}
	resp, body = small.do(t, "GET", "/v1/track/"+long, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	require.Empty(t, resp.Header.Get("ETag"), "a partial view is not the parcel's answer")
	var raw map[string]any
	require.NoError(t, json.Unmarshal(body, &raw))
	require.Equal(t, true, raw["partial"])
	require.Equal(t, false, raw["verified"])
	require.Len(t, raw["events"], 2000)

	resp, body = small.do(t, "POST", "/v1/track", `{"numbers":["`+short+`","`+long+`"]}`, "Content-Type", "application/json")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.NoError(t, json.Unmarshal(body, &views))
	requireComplete(t, views[0], 1100)
	require.True(t, views[1].Partial)
	require.False(t, views[1].Verified)
}
