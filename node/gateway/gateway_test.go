package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

var lifecycle = []protocol.Status{protocol.StatusInfoReceived, protocol.StatusPickedUp, protocol.StatusInTransit}

// TestGateway runs the handlers against a testnet of two carriers, the
// first an S10 postal operator.
//
// long: its subtests share one testnet (two carriers, a platform, gateways), which takes seconds to start.
func TestGateway(t *testing.T) {
	servicetest.CheckLeaks(t)
	f := newFixture(t, 2, &Options{Rate: 1000, Burst: 1000})
	post, sf := f.net.Carriers[0], f.net.Carriers[1]
	number := book(t, post, "", lifecycle...)
	other := book(t, sf, "", protocol.StatusPickedUp)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gateways := []*Gateway{f.gw.Gateway}
	defer func() {
		for _, g := range gateways {
			requireDocumentedCodes(t, g)
		}
	}()
	// another starts one more gateway over the platform; its answers are
	// checked against the document too.
	another := func(t *testing.T, cfg Config, opts *Options) *fixture {
		g := f.start(t, cfg, opts)
		gateways = append(gateways, g.Gateway)
		return &fixture{url: g.url, http: f.http, gw: g}
	}

	t.Run("get verified", func(t *testing.T) {
		want, err := f.plat.Track(ctx, nil, number)
		require.NoError(t, err)
		require.Len(t, want, 1)
		require.True(t, want[0].Verified)
		resp, body := f.do(t, "GET", "/v1/track/"+url.PathEscape(strings.ToLower(number[:4])+" "+number[4:]), "")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		var got client.ParcelView
		require.NoError(t, json.Unmarshal(body, &got))
		require.Equal(t, want[0], got, "the same view as track --json")
		require.Equal(t, client.KeySourceRegistry, got.KeySource)
		require.Len(t, got.Events, len(lifecycle))
		require.Equal(t, `"`+got.Head+`"`, resp.Header.Get("ETag"))
		require.Equal(t, "public, max-age=10", resp.Header.Get("Cache-Control"))

		resp, body = f.do(t, "GET", "/v1/track/"+number, "", "If-None-Match", `"other", `+resp.Header.Get("ETag"))
		require.Equal(t, http.StatusNotModified, resp.StatusCode)
		require.Empty(t, body)
		resp, _ = f.do(t, "GET", "/v1/track/"+number, "", "If-None-Match", `W/"`+got.Head+`"`)
		require.Equal(t, http.StatusNotModified, resp.StatusCode, "If-None-Match compares weakly")
		resp, _ = f.do(t, "GET", "/v1/track/"+number, "", "If-None-Match", `"bafyold"`)
		require.Equal(t, http.StatusOK, resp.StatusCode)

		resp, body = f.do(t, "GET", "/v1/track/"+number+"?carrier="+post.Code, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		resp, body = f.do(t, "GET", "/v1/track/"+number+"?carrier="+sf.Code, "")
		requireProblem(t, resp, body, http.StatusNotFound, protocol.CodeNotFound)
	})

	t.Run("get problems", func(t *testing.T) {
		bad := []byte(number)
		bad[10] = '0' + (bad[10]-'0'+1)%10 // the S10 check digit
		unbooked, err := post.NewNumber()
		require.NoError(t, err)
		cases := []struct {
			path   string
			status int
			code   string
		}{
			{"/v1/track/%21%21", http.StatusBadRequest, protocol.CodeInvalidNumber},
			{"/v1/track/" + strings.Repeat("9", 200), http.StatusBadRequest, protocol.CodeInvalidNumber},
			{"/v1/track/" + string(bad), http.StatusBadRequest, protocol.ErrCheckDigit.Code},
			{"/v1/track/" + unbooked, http.StatusNotFound, protocol.CodeNotFound},
			{"/v1/track/" + number + "?carrier=x!", http.StatusBadRequest, protocol.CodeBadRequest},
			{"/v1/track/" + number + "?carier=SF", http.StatusBadRequest, protocol.CodeBadRequest},
			{"/v1/nothing", http.StatusNotFound, protocol.CodeNotFound},
			{"/static/..%2fopenapi.json", http.StatusNotFound, protocol.CodeNotFound},
			{"/static/missing.js", http.StatusNotFound, protocol.CodeNotFound},
		}
		for _, tc := range cases {
			resp, body := f.do(t, "GET", tc.path, "")
			p := requireProblem(t, resp, body, tc.status, tc.code)
			require.NotEmpty(t, p.Detail, tc.path)
		}
		resp, _ := f.do(t, "GET", "/v1/track/"+unbooked, "")
		require.Equal(t, "public, max-age=10", resp.Header.Get("Cache-Control"), "not_found is cached briefly")
		resp, body := f.do(t, "DELETE", "/v1/track", "")
		requireProblem(t, resp, body, http.StatusMethodNotAllowed, codeMethod)
		require.Equal(t, "POST", resp.Header.Get("Allow"))
	})

	t.Run("batch", func(t *testing.T) {
		unbooked, err := post.NewNumber()
		require.NoError(t, err)
		numbers := []string{other, "not a number!", number, unbooked}
		want, err := f.plat.Track(ctx, nil, numbers...)
		require.NoError(t, err)
		b, _ := json.Marshal(map[string]any{"numbers": numbers})
		resp, body := f.do(t, "POST", "/v1/track", string(b), "Content-Type", "application/json")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		var got []client.ParcelView
		require.NoError(t, json.Unmarshal(body, &got))
		// As JSON, which is what track --json prints: fields out of JSON
		// (ParcelView.Answered) are not the gateway's to carry.
		wantJSON, err := json.Marshal(want)
		require.NoError(t, err)
		want = nil
		require.NoError(t, json.Unmarshal(wantJSON, &want))
		require.Equal(t, want, got, "the same array as track --json")
		require.Len(t, got, 4)
		require.True(t, got[0].Verified)
		require.Equal(t, protocol.CodeInvalidNumber, got[1].Error)
		require.True(t, got[2].Verified)
		require.Equal(t, protocol.CodeNotFound, got[3].Error)

		many, _ := json.Marshal(map[string]any{"numbers": make([]string, protocol.MaxNumbersPerRequest+1)})
		cases := []struct {
			name, body, ctype string
			status            int
			code              string
		}{
			{"content type", `{"numbers":["x"]}`, "text/plain", http.StatusBadRequest, protocol.CodeBadRequest},
			{"not json", `{"numbers":`, "application/json", http.StatusBadRequest, protocol.CodeBadRequest},
			{"unknown field", `{"numbers":["x"],"grant":"y"}`, "application/json", http.StatusBadRequest, protocol.CodeBadRequest},
			{"trailing", `{"numbers":["x"]} {}`, "application/json", http.StatusBadRequest, protocol.CodeBadRequest},
			{"empty", `{"numbers":[]}`, "application/json", http.StatusBadRequest, protocol.CodeBadRequest},
			{"too many", string(many), "application/json", http.StatusBadRequest, protocol.CodeTooMany},
			{"too large", `{"numbers":["` + strings.Repeat("1", DefaultMaxBodyBytes) + `"]}`, "application/json", http.StatusRequestEntityTooLarge, protocol.ErrTooLarge.Code},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				resp, body := f.do(t, "POST", "/v1/track", tc.body, "Content-Type", tc.ctype)
				requireProblem(t, resp, body, tc.status, tc.code)
			})
		}
	})

	t.Run("watch", func(t *testing.T) {
		resp, stream := f.openStream(t, t.Context(), "/v1/watch?number="+url.QueryEscape(number))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "text/event-stream; charset=utf-8", resp.Header.Get("Content-Type"))
		// A fresh stream starts with the parcel's history.
		ev, u := nextUpdate(t, stream)
		require.True(t, u.Verified, u.Message)
		require.Equal(t, number, u.Number)
		require.Equal(t, post.Code, u.Carrier)
		require.Len(t, u.Events, len(lifecycle))
		// A new scan arrives live.
		cid := scan(t, post, number, "", len(lifecycle), protocol.StatusOutForDelivery)
		for u.Events[len(u.Events)-1].CID != cid {
			ev, u = nextUpdate(t, stream)
			require.True(t, u.Verified, u.Message)
		}
		require.Equal(t, protocol.StatusOutForDelivery, u.Events[len(u.Events)-1].Status)
		require.NotEmpty(t, ev.id)
		cursors, err := decodeCursors(ev.id)
		require.NoError(t, err)
		require.Equal(t, u.Cursor, cursors[post.Code], "the id holds the carrier's cursor")
		resp.Body.Close()

		// Resume from the id: the scan made while away arrives.
		missed := scan(t, post, number, "", len(lifecycle)+1, protocol.StatusDelivered)
		for _, how := range []struct{ path, header string }{
			{"/v1/watch?number=" + number, ev.id},
			{"/v1/watch?number=" + number + "&lastEventId=" + url.QueryEscape(ev.id), ""},
		} {
			var h []string
			if how.header != "" {
				h = []string{"Last-Event-ID", how.header}
			}
			resp, stream = f.openStream(t, t.Context(), how.path, h...)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			seen := false
			for !seen {
				_, u = nextUpdate(t, stream)
				require.True(t, u.Verified, u.Message)
				for _, e := range u.Events {
					seen = seen || e.CID == missed
				}
			}
			resp.Body.Close()
		}
		require.Eventually(t, func() bool { return f.gw.streams.count() == 0 }, 10*time.Second, 20*time.Millisecond, "streams end with their clients")
	})

	t.Run("watch statuses", func(t *testing.T) {
		// A stored parcel, one the carrier has not scanned yet, and two
		// no carrier covers: each number gets its event first, and the
		// stream goes on for the first two.
		unscanned, err := post.NewNumber()
		require.NoError(t, err)
		const unclaimed, garbage = "ZZ1", "!!"
		q := url.Values{"number": {number, unscanned, unclaimed, garbage}}
		resp, stream := f.openStream(t, t.Context(), "/v1/watch?"+q.Encode())
		require.Equal(t, http.StatusOK, resp.StatusCode)
		codes := map[string]client.WatchUpdate{}
		for len(codes) < 3 {
			ev, err := stream.next()
			require.NoError(t, err)
			require.Equal(t, "status", ev.event, "every status before the first update: %s", ev.data)
			var u client.WatchUpdate
			require.NoError(t, json.Unmarshal([]byte(ev.data), &u), ev.data)
			require.NotContains(t, codes, u.Number, "one status per number")
			require.Empty(t, u.Events)
			codes[u.Number] = u
		}
		require.Equal(t, protocol.CodeInvalidNumber, codes[unclaimed].Code, "%+v", codes[unclaimed])
		require.Equal(t, protocol.CodeInvalidNumber, codes[garbage].Code, "%+v", codes[garbage])
		require.Equal(t, protocol.CodeNotFound, codes[unscanned].Code, "%+v", codes[unscanned])
		require.Equal(t, post.Code, codes[unscanned].Carrier, "the node's answer")
		_, u := nextUpdate(t, stream)
		require.True(t, u.Verified, u.Message)
		require.Equal(t, number, u.Number, "the stored parcel's history")
		cid := scan(t, post, unscanned, "", 0, protocol.StatusPickedUp)
		_, u = nextUpdate(t, stream)
		require.True(t, u.Verified, u.Message)
		require.Equal(t, unscanned, u.Number, "the first scan of the number the node lacked")
		require.Equal(t, cid, u.Events[0].CID)
		resp.Body.Close()

		// With nothing left to watch, the stream is refused.
		resp, body := f.do(t, "GET", "/v1/watch?number="+unclaimed+"&number=%21%21", "")
		requireProblem(t, resp, body, http.StatusBadRequest, protocol.CodeInvalidNumber)
	})

	t.Run("watch audience", func(t *testing.T) {
		resp, stream := f.openStream(t, t.Context(), "/v1/watch?audience&carrier="+sf.Code)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		// The audience subscription is live once the carrier sends a
		// heartbeat or an update; scan until one of ours arrives.
		booked := book(t, sf, f.plat.ID.String(), protocol.StatusPickedUp)
		_, u := nextUpdate(t, stream)
		require.True(t, u.Verified, u.Message)
		require.Equal(t, booked, u.Number)
	})

	t.Run("watch problems", func(t *testing.T) {
		many := strings.Repeat("number="+number+"x&", 0)
		for i := 0; i <= DefaultMaxWatchNumbers; i++ {
			n, err := sf.NewNumber()
			require.NoError(t, err)
			many += "number=" + n + "&"
		}
		cases := []struct {
			query  string
			header []string
			status int
			code   string
		}{
			{"", nil, http.StatusBadRequest, protocol.CodeBadRequest},
			{"?audience&number=" + number, nil, http.StatusBadRequest, protocol.CodeBadRequest},
			{"?number=%21%21", nil, http.StatusBadRequest, protocol.CodeInvalidNumber},
			{"?number=" + number + "&cursor=%zz", nil, http.StatusBadRequest, protocol.CodeBadRequest},
			{"?number=" + number, []string{"Last-Event-ID", "lower=abc"}, http.StatusBadRequest, protocol.CodeBadRequest},
			{"?number=" + number + "&numbers=x", nil, http.StatusBadRequest, protocol.CodeBadRequest},
			{"?" + many, nil, http.StatusBadRequest, protocol.CodeTooMany},
			{"?audience&carrier=NOPE", nil, http.StatusNotFound, protocol.CodeNotFound},
		}
		for _, tc := range cases {
			resp, body := f.do(t, "GET", "/v1/watch"+tc.query, "", tc.header...)
			requireProblem(t, resp, body, tc.status, tc.code)
		}
	})

	t.Run("stream limit and shutdown", func(t *testing.T) {
		lf := another(t, Config{}, &Options{MaxStreamsPerClient: 1})
		resp, stream := lf.openStream(t, t.Context(), "/v1/watch?number="+number)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		_, _ = nextUpdate(t, stream)
		resp2, body := lf.do(t, "GET", "/v1/watch?number="+number, "")
		requireProblem(t, resp2, body, http.StatusTooManyRequests, protocol.CodeRateLimited)
		require.Equal(t, "5", resp2.Header.Get("Retry-After"))

		// Shutting down ends the open stream rather than waiting for it.
		began := time.Now()
		lf.gw.stop()
		for {
			if _, err := stream.next(); err != nil {
				break
			}
		}
		<-lf.gw.done
		require.NoError(t, lf.gw.err)
		require.Less(t, time.Since(began), shutdownGrace/2)
	})

	t.Run("heartbeat", func(t *testing.T) {
		lf := another(t, Config{}, &Options{Heartbeat: 20 * time.Millisecond})
		resp, stream := lf.openStream(t, t.Context(), "/v1/watch?number="+number)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		for {
			line, err := stream.br.ReadString('\n')
			require.NoError(t, err)
			if line == ": heartbeat\n" {
				break
			}
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		lf := another(t, Config{}, &Options{Rate: 0.01, Burst: protocol.MaxNumbersPerRequest})
		numbers := make([]string, protocol.MaxNumbersPerRequest)
		for i := range numbers {
			numbers[i] = number
		}
		b, _ := json.Marshal(map[string]any{"numbers": numbers})
		resp, body := lf.do(t, "POST", "/v1/track", string(b), "Content-Type", "application/json")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		resp, body = lf.do(t, "GET", "/v1/track/"+number, "")
		p := requireProblem(t, resp, body, http.StatusTooManyRequests, protocol.CodeRateLimited)
		secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		require.NoError(t, err)
		require.InDelta(t, 100, secs, 1, "one token at 0.01/s")
		require.Positive(t, p.RetryAfterMS)
	})

	t.Run("verification failure is never served", func(t *testing.T) {
		cl, err := client.New(f.plat.Node.Host, &client.Options{TamperResponse: func(_ peer.ID, resp *protocol.TrackResponse) {
			for i := range resp.Results {
				if len(resp.Results[i].Head) > 0 {
					resp.Results[i].Head[len(resp.Results[i].Head)-1] ^= 1
				}
			}
		}})
		require.NoError(t, err)
		defer cl.Close()
		lf := another(t, Config{Client: cl}, nil)
		resp, body := lf.do(t, "GET", "/v1/track/"+number, "")
		require.Equal(t, http.StatusBadGateway, resp.StatusCode, "%s", body)
		var p problem
		require.NoError(t, json.Unmarshal(body, &p))
		require.NotEmpty(t, p.Code)
		require.Equal(t, "/problems/"+p.Code, p.Type)
		require.Empty(t, resp.Header.Get("ETag"))
		require.NotContains(t, string(body), `"verified":true`)

		resp, body = lf.do(t, "POST", "/v1/track", `{"numbers":["`+number+`"]}`, "Content-Type", "application/json")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var views []client.ParcelView
		require.NoError(t, json.Unmarshal(body, &views))
		require.False(t, views[0].Verified)
		require.Equal(t, p.Code, views[0].Error)
		require.Empty(t, views[0].Events)

		// A stream's first update comes from track too: it is sent
		// marked, with no events.
		sresp, stream := lf.openStream(t, t.Context(), "/v1/watch?number="+number)
		require.Equal(t, http.StatusOK, sresp.StatusCode)
		_, u := nextUpdate(t, stream)
		require.False(t, u.Verified)
		require.Equal(t, p.Code, u.Error)
		require.Empty(t, u.Events)
	})

	t.Run("timeout", func(t *testing.T) {
		lf := another(t, Config{Connector: stuck{}}, &Options{TrackTimeout: 300 * time.Millisecond})
		resp, body := lf.do(t, "GET", "/v1/track/"+number, "")
		requireProblem(t, resp, body, http.StatusGatewayTimeout, codeTimeout)
	})

	t.Run("cors", func(t *testing.T) {
		preflight := []string{"Origin", "https://shop.example", "Access-Control-Request-Method", "GET"}
		// Default: same origin only.
		resp, body := f.do(t, "GET", "/v1/track/"+number, "", "Origin", "https://shop.example")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
		resp, body = f.do(t, "OPTIONS", "/v1/track/"+number, "", preflight...)
		requireProblem(t, resp, body, http.StatusForbidden, codeOrigin)

		lf := another(t, Config{}, &Options{CORSOrigins: []string{"https://shop.example"}})
		resp, _ = lf.do(t, "OPTIONS", "/v1/track/"+number, "", preflight...)
		require.Equal(t, http.StatusNoContent, resp.StatusCode)
		require.Equal(t, "https://shop.example", resp.Header.Get("Access-Control-Allow-Origin"))
		require.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID")
		resp, _ = lf.do(t, "GET", "/v1/track/"+number, "", "Origin", "https://shop.example")
		require.Equal(t, "https://shop.example", resp.Header.Get("Access-Control-Allow-Origin"))
		require.Contains(t, resp.Header.Get("Access-Control-Expose-Headers"), "ETag")
		require.Contains(t, resp.Header.Values("Vary"), "Origin")
		resp, _ = lf.do(t, "GET", "/v1/track/"+number, "", "Origin", "https://evil.example")
		require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
	})

	t.Run("page, assets, openapi, metrics", func(t *testing.T) {
		resp, body := f.do(t, "GET", "/", "")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
		require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'none'")
		require.Contains(t, string(body), `<label for="n">`)
		require.NotContains(t, string(body), "http://", "no external assets")
		require.NotContains(t, string(body), "https://", "no external assets")
		for _, asset := range []string{"app.js", "style.css"} {
			resp, body := f.do(t, "GET", "/static/"+asset, "")
			require.Equal(t, http.StatusOK, resp.StatusCode, asset)
			require.NotEmpty(t, body)
			require.NotContains(t, string(body), "://", "%s loads nothing from elsewhere", asset)
		}
		resp, body = f.do(t, "GET", "/openapi.json", "")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.JSONEq(t, string(openAPI), string(body))
		resp, body = f.do(t, "GET", "/metrics", "")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, string(body), `opentrack_gateway_requests_total{code="200",route="track"}`)
		require.Contains(t, string(body), "opentrack_gateway_sse_streams")
		require.Contains(t, string(body), "opentrack_gateway_request_seconds_bucket")
	})
}

// stuck is a Connector that never connects.
type stuck struct{}

func (stuck) Connect(ctx context.Context, _ peer.ID) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestOptionsValidate(t *testing.T) {
	require.NoError(t, (&Options{}).EnsureDefaults().Validate())
	o := (&Options{
		Rate: -1, Burst: 5, TrackTimeout: time.Minute, MaxStreams: -2,
		CORSOrigins:     []string{"https://ok.example", "ftp://x", "https://x.example/path"},
		MaxWatchNumbers: protocol.MaxWatchNumbers + 1,
	}).EnsureDefaults()
	err := o.Validate()
	require.ErrorIs(t, err, ErrInvalidOptions)
	for _, want := range []string{"Rate", "Burst", "WriteTimeout", "MaxStreams", `"ftp://x"`, `"https://x.example/path"`, "MaxWatchNumbers"} {
		require.ErrorContains(t, err, want)
	}
	require.NotContains(t, err.Error(), "ok.example")
	_, err = New(Config{}, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.ErrorContains(t, err, "Client")
	require.ErrorContains(t, err, "Trust")
}

func TestLimiter(t *testing.T) {
	l := newLimiter(1, 3, 4)
	now := time.Now()
	a, b := mustAddr(t, "10.0.0.1"), mustAddr(t, "10.0.0.2")
	ok, _ := l.allow(a, 3, now)
	require.True(t, ok)
	ok, wait := l.allow(a, 1, now)
	require.False(t, ok)
	require.InDelta(t, time.Second, wait, float64(10*time.Millisecond))
	ok, _ = l.allow(b, 1, now)
	require.True(t, ok, "buckets are per client")
	ok, _ = l.allow(a, 1, now.Add(time.Second))
	require.True(t, ok, "refills at the rate")
	for i := range 100 {
		l.allow(mustAddr(t, fmt.Sprintf("10.1.0.%d", i)), 1, now)
	}
	require.LessOrEqual(t, len(l.cur)+len(l.prev), 4, "bounded")

	req := &http.Request{RemoteAddr: "[2001:db8:1:2:3:4:5:6]:443"}
	require.Equal(t, "2001:db8:1:2::", clientKey(req).String(), "IPv6 by /64")
	req.RemoteAddr = "[::ffff:192.0.2.1]:80"
	require.Equal(t, "192.0.2.1", clientKey(req).String())
}

// TestRetryAfterRoundsUp: a wait below a millisecond still tells the
// client to wait, in the body and in the header.
func TestRetryAfterRoundsUp(t *testing.T) {
	for _, tc := range []struct {
		wait   time.Duration
		ms     uint64
		header string
	}{
		{300 * time.Microsecond, 1, "1"},
		{time.Millisecond, 1, "1"},
		{1500 * time.Millisecond, 1500, "2"},
	} {
		rec := httptest.NewRecorder()
		p := newProblem(protocol.CodeRateLimited, "slow down").retryAfter(tc.wait)
		p.write(rec)
		require.Equal(t, tc.ms, p.RetryAfterMS, tc.wait)
		require.Equal(t, tc.header, rec.Header().Get("Retry-After"), tc.wait)
	}
}
