package client

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/protocol"
)

// transportParcels sizes the store of BenchmarkLookupTransports: 125k
// parcels of 8 events, the 1M events DESIGN section 8 measures against.
// OPENTRACK_BENCH_PARCELS overrides it for a quick run.
func transportParcels(b *testing.B) int {
	if s := os.Getenv("OPENTRACK_BENCH_PARCELS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("OPENTRACK_BENCH_PARCELS=%q", s)
		}
		return n
	}
	return 125_000
}

// BenchmarkLookupTransports compares, in one run over one Pebble store,
// single-number lookups over libp2p on TCP (Noise, yamux) and on QUIC
// with the same lookups through an HTTPS API (TLS 1.3, keep-alive) that
// answers JSON: the baseline a central tracking API would be. Both
// clients decode the answer and neither verifies it; both servers read
// the parcel and its events from the store. Compare parcels/s of
// "https-json/c=16" with "tcp/c=16": DESIGN section 8 asks p2p ≥ 1.0x.
func BenchmarkLookupTransports(b *testing.B) {
	parcels := transportParcels(b)
	st, err := pebble.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	srv := servicetest.StartServer(b, servicetest.ServerConfig{Parcels: parcels, Events: benchEvents, Store: st,
		QUIC: true})
	numbers := make([]string, parcels)
	for i := range numbers {
		numbers[i] = servicetest.Number(i)
	}
	p := srv.Host.ID()
	libp2pClient := func(transport string) *Client {
		h := servicetest.NewQUICHost(b, nil)
		var addrs []ma.Multiaddr
		for _, a := range srv.Host.Addrs() {
			if strings.Contains(a.String(), transport) {
				addrs = append(addrs, a)
			}
		}
		if err := h.Connect(context.Background(), peer.AddrInfo{ID: p, Addrs: addrs}); err != nil {
			b.Fatal(err)
		}
		c, err := New(h, &Options{MaxIdleStreams: 64})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	lookup := func(c *Client) func(ctx context.Context, i int) error {
		return func(ctx context.Context, i int) error {
			resp, err := c.Track(ctx, p, []protocol.TrackQuery{{Number: numbers[i%parcels]}}, nil)
			if err != nil {
				return err
			}
			return okResults(resp, 1)
		}
	}
	tcp, quic := libp2pClient("/tcp/"), libp2pClient("/quic-v1")

	api := httptest.NewUnstartedServer(jsonTrackHandler(st))
	api.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	api.StartTLS()
	b.Cleanup(api.Close)
	hc := api.Client()
	tr := hc.Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost, tr.ForceAttemptHTTP2 = 64, false // HTTP/1.1 keep-alive, DESIGN's faster baseline
	httpsLookup := func(ctx context.Context, i int) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api.URL+"/v1/track/"+numbers[i%parcels], nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var v jsonParcel
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || len(v.Events) != benchEvents {
			return fmt.Errorf("https: %s, %d events", resp.Status, len(v.Events))
		}
		return nil
	}

	for _, conc := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("tcp/c=%d", conc), func(b *testing.B) { runLookups(b, conc, 1, lookup(tcp)) })
		b.Run(fmt.Sprintf("quic/c=%d", conc), func(b *testing.B) { runLookups(b, conc, 1, lookup(quic)) })
		b.Run(fmt.Sprintf("https-json/c=%d", conc), func(b *testing.B) { runLookups(b, conc, 1, httpsLookup) })
	}
}

// jsonParcel is the baseline API's answer: the signed head and the events,
// as JSON.
type jsonParcel struct {
	Number     string      `json:"number"`
	SignedHead string      `json:"signed_head"` // base64 COSE_Sign1
	Events     []jsonEvent `json:"events"`
}

type jsonEvent struct {
	Seq      uint64            `json:"seq"`
	Time     int64             `json:"time"`
	Status   protocol.Status   `json:"status"`
	Reason   string            `json:"reason,omitempty"`
	Location protocol.Location `json:"location"`
}

// jsonTrackHandler is a minimal central tracking API over st: one parcel
// lookup and one event range read, the same store work as the track
// handler, and the events decoded and sent as JSON. It computes no CIDs,
// which only makes the baseline cheaper.
func jsonTrackHandler(st store.Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/track/{number}", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		p, err := st.Parcel(ctx, r.PathValue("number"))
		if errors.Is(err, store.ErrNotFound) {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		evs, err := st.Events(ctx, p.ID, 0, protocol.MaxEventsPerResult)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out := jsonParcel{Number: p.Number, SignedHead: base64.StdEncoding.EncodeToString(p.SignedHead), Events: make([]jsonEvent, len(evs))}
		for i, e := range evs {
			ev, err := protocol.DecodeEvent(e.Bytes)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			out.Events[i] = jsonEvent{Seq: ev.Seq, Time: ev.Time, Status: ev.Status, Reason: ev.Reason, Location: ev.Location}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&out)
	})
	return mux
}
