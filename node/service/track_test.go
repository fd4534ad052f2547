package service_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	nodehost "github.com/opentrack/opentrack/node/host"
	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// rawStream speaks the track protocol byte for byte, so that tests can
// send what no well-behaved client would.
type rawStream struct {
	t      *testing.T
	s      network.Stream
	frames *protocol.FrameReader
}

func openRaw(t *testing.T, from host.Host, to *servicetest.Server, id libp2pprotocol.ID) *rawStream {
	t.Helper()
	servicetest.Connect(t, from, to.Host)
	s, err := from.NewStream(context.Background(), to.Host.ID(), id)
	require.NoError(t, err)
	t.Cleanup(func() { s.Reset() })
	return &rawStream{t: t, s: s, frames: protocol.NewFrameReader(s, protocol.MaxTrackResponse)}
}

func (r *rawStream) send(b []byte) {
	r.t.Helper()
	_, err := r.s.Write(b)
	require.NoError(r.t, err)
}

func (r *rawStream) sendMsg(v any) {
	r.t.Helper()
	msg, err := protocol.Marshal(v)
	require.NoError(r.t, err)
	require.NoError(r.t, protocol.WriteFrame(r.s, msg, protocol.MaxTrackRequest))
}

// track sends one request and returns the response.
func (r *rawStream) track(queries ...protocol.TrackQuery) *protocol.TrackResponse {
	r.t.Helper()
	r.sendMsg(&protocol.TrackRequest{Queries: queries})
	return r.read()
}

func (r *rawStream) read() *protocol.TrackResponse {
	r.t.Helper()
	require.NoError(r.t, r.s.SetReadDeadline(time.Now().Add(5*time.Second)))
	body, err := r.frames.Next()
	require.NoError(r.t, err)
	var resp protocol.TrackResponse
	require.NoError(r.t, protocol.Unmarshal(body, &resp))
	return &resp
}

// expectReset waits for the server to reset the stream and returns how
// long that took.
func (r *rawStream) expectReset(within time.Duration) time.Duration {
	r.t.Helper()
	start := time.Now()
	require.NoError(r.t, r.s.SetReadDeadline(start.Add(within)))
	_, err := r.s.Read(make([]byte, 1))
	require.ErrorIs(r.t, err, network.ErrReset, "want a reset within %s", within)
	return time.Since(start)
}

func numbers(ns ...string) []protocol.TrackQuery {
	q := make([]protocol.TrackQuery, len(ns))
	for i, n := range ns {
		q[i].Number = n
	}
	return q
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

func TestTrackLookup(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 3, Events: 8, Track: func(c *service.TrackConfig) {
		// EAN-13 with its GS1 check digit, such as 4006381333931.
		c.Schemes = append(c.Schemes, protocol.Scheme{Kind: protocol.SchemePattern, Pattern: `\d{13}`, Check: protocol.CheckMod10})
	}})
	p, other := srv.Parcels[0], srv.Parcels[1]
	raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)

	tests := []struct {
		name       string
		query      protocol.TrackQuery
		wantNumber string
		wantCode   string
		wantEvents [][]byte
	}{
		{"full history", protocol.TrackQuery{Number: p.Number}, p.Number, protocol.CodeOK, p.Events},
		{"normalized", protocol.TrackQuery{Number: " 77-0000 0000.00 "}, p.Number, protocol.CodeOK, p.Events},
		{"known head", protocol.TrackQuery{Number: p.Number, Known: p.Head()}, p.Number, protocol.CodeOK, nil},
		{"known middle", protocol.TrackQuery{Number: p.Number, Known: protocol.LinkTo(p.CIDs[4])}, p.Number, protocol.CodeOK, p.Events[5:]},
		{"known first", protocol.TrackQuery{Number: p.Number, Known: protocol.LinkTo(p.CIDs[0])}, p.Number, protocol.CodeOK, p.Events[1:]},
		{"known of another parcel", protocol.TrackQuery{Number: p.Number, Known: other.Head()}, p.Number, protocol.CodeOK, p.Events},
		{"not found", protocol.TrackQuery{Number: servicetest.Number(99)}, servicetest.Number(99), protocol.CodeNotFound, nil},
		{"not a number", protocol.TrackQuery{Number: "77#123"}, "77#123", protocol.CodeInvalidNumber, nil},
		{"another carrier's number", protocol.TrackQuery{Number: "RB123456785GB"}, "RB123456785GB", protocol.CodeWrongCarrier, nil},
		{"too short", protocol.TrackQuery{Number: "77"}, "77", protocol.CodeInvalidNumber, nil},
		{"second scheme", protocol.TrackQuery{Number: "4006381333931"}, "4006381333931", protocol.CodeNotFound, nil},
		{"wrong check digit", protocol.TrackQuery{Number: "4006381333932"}, "4006381333932", protocol.CodeInvalidNumber, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := raw.track(tc.query)
			require.Nil(t, resp.Error)
			require.NoError(t, resp.Validate(1))
			res := resp.Results[0]
			require.Equal(t, tc.wantNumber, res.Number)
			require.Equal(t, tc.wantCode, res.Code, res.Message)
			require.Equal(t, tc.wantEvents, res.Events)
			require.False(t, res.More)
			if tc.wantCode == protocol.CodeOK {
				require.Equal(t, p.SignedHead, res.Head)
			}
		})
	}
}

func TestTrackPaging(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 8, Options: &service.Options{MaxEventsPerResult: 3}})
	p := srv.Parcels[0]
	raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)

	tests := []struct {
		name     string
		known    protocol.Link
		from, to int // events returned, [from, to)
		more     bool
	}{
		{"first page", protocol.Link{}, 0, 3, true},
		{"middle page", protocol.LinkTo(p.CIDs[2]), 3, 6, true},
		{"last page", protocol.LinkTo(p.CIDs[5]), 6, 8, false},
		{"known in the tail window", protocol.LinkTo(p.CIDs[6]), 7, 8, false},
		{"known two windows back", protocol.LinkTo(p.CIDs[1]), 2, 5, true},
		{"known at seq 0", protocol.LinkTo(p.CIDs[0]), 1, 4, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := raw.track(protocol.TrackQuery{Number: p.Number, Known: tc.known}).Results[0]
			require.Equal(t, protocol.CodeOK, res.Code)
			require.Equal(t, p.Events[tc.from:tc.to], res.Events)
			require.Equal(t, tc.more, res.More)
		})
	}
}

// TestTrackResponseCap asks for more history than fits in one response:
// the response stays under the cap and the number cut short says more.
func TestTrackResponseCap(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{})
	pad := func(e *protocol.Event) {
		e.Description = strings.Repeat("d", protocol.MaxDescriptionLen)
		e.Ext = map[string]any{"test.pad": strings.Repeat("x", 2000)}
	}
	big := []*servicetest.Parcel{
		servicetest.NewParcel(t, servicetest.Number(1), 1000, pad),
		servicetest.NewParcel(t, servicetest.Number(2), 1000, pad),
	}
	servicetest.Load(t, srv.Store, big)
	raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)

	raw.sendMsg(&protocol.TrackRequest{Queries: numbers(big[0].Number, big[1].Number)})
	require.NoError(t, raw.s.SetReadDeadline(time.Now().Add(10*time.Second)))
	body, err := raw.frames.Next()
	require.NoError(t, err)
	require.LessOrEqual(t, len(body), protocol.MaxTrackResponse)
	var resp protocol.TrackResponse
	require.NoError(t, protocol.Unmarshal(body, &resp))
	require.NoError(t, resp.Validate(2))

	first, second := resp.Results[0], resp.Results[1]
	require.Equal(t, big[0].Events, first.Events)
	require.False(t, first.More)
	require.Equal(t, protocol.CodeOK, second.Code)
	require.True(t, second.More)
	require.NotEmpty(t, second.Events)
	require.Equal(t, big[1].Events[:len(second.Events)], second.Events)

	// The stream goes on serving after a large response.
	require.Equal(t, protocol.CodeOK, raw.track(protocol.TrackQuery{Number: big[1].Number, Known: protocol.LinkTo(big[1].CIDs[998])}).Results[0].Code)
}

// TestTrackUnavailable gives the track service too little memory for a
// large response: the peer is told to come back, and the stream goes on.
func TestTrackUnavailable(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{
		Parcels: 1, Events: 1000,
		Host: &nodehost.Options{Limits: nodehost.Limits{Track: nodehost.ServiceLimits{Memory: 200 << 10}}},
	})
	raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)
	resp := raw.track(protocol.TrackQuery{Number: srv.Parcels[0].Number})
	require.NotNil(t, resp.Error)
	require.Equal(t, protocol.CodeUnavailable, resp.Error.Code)
	require.Equal(t, uint64(1000), resp.Error.RetryAfter)
	require.NoError(t, resp.Validate(1))

	small := raw.track(protocol.TrackQuery{Number: srv.Parcels[0].Number, Known: protocol.LinkTo(srv.Parcels[0].CIDs[990])})
	require.Equal(t, srv.Parcels[0].Events[991:], small.Results[0].Events)
}

func TestTrackManyRequestsOneStream(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 50, Events: 4})
	raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)
	for i, p := range srv.Parcels {
		res := raw.track(protocol.TrackQuery{Number: p.Number}).Results[0]
		require.Equal(t, protocol.CodeOK, res.Code, "request %d", i)
		require.Equal(t, p.Events, res.Events, "request %d", i)
	}
	// A client closing its side ends the stream cleanly.
	require.NoError(t, raw.s.CloseWrite())
	_, err := raw.frames.Next()
	require.ErrorIs(t, err, io.EOF)
}

func TestTrackRequestErrors(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 2})
	raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)
	many := make([]string, protocol.MaxNumbersPerRequest+1)
	for i := range many {
		many[i] = servicetest.Number(i)
	}
	tests := []struct {
		name string
		req  protocol.TrackRequest
		code string
	}{
		{"101 numbers", protocol.TrackRequest{Queries: numbers(many...)}, protocol.CodeTooMany},
		{"no numbers", protocol.TrackRequest{Queries: []protocol.TrackQuery{}}, protocol.CodeBadRequest},
		{"oversized number", protocol.TrackRequest{Queries: numbers(strings.Repeat("7", 2*protocol.MaxNumberLen+1))}, protocol.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw.sendMsg(&tc.req)
			resp := raw.read()
			require.NotNil(t, resp.Error)
			require.Equal(t, tc.code, resp.Error.Code)
			require.Empty(t, resp.Results)
			require.NoError(t, resp.Validate(len(tc.req.Queries)))
			// The stream keeps serving.
			require.Equal(t, protocol.CodeOK, raw.track(protocol.TrackQuery{Number: srv.Parcels[0].Number}).Results[0].Code)
		})
	}
}

// TestTrackBadInput sends what only a broken or hostile peer sends. The
// server resets that stream, counts it, and goes on serving others.
func TestTrackBadInput(t *testing.T) {
	servicetest.CheckLeaks(t)
	m := metrics.New()
	const idle, request = 200 * time.Millisecond, 400 * time.Millisecond
	srv := servicetest.StartServer(t, servicetest.ServerConfig{
		Parcels: 1, Events: 2,
		Options: &service.Options{IdleTimeout: idle, RequestTimeout: request},
		Track:   func(c *service.TrackConfig) { c.Metrics = m },
	})
	query := protocol.TrackQuery{Number: srv.Parcels[0].Number}
	valid, err := protocol.Marshal(&protocol.TrackRequest{Queries: []protocol.TrackQuery{query}})
	require.NoError(t, err)

	// {"queries": [...], "grant": h''}: the keys out of length-first order.
	unsorted := append([]byte{0xa2, 0x67}, "queries"...)
	unsorted = append(unsorted, valid[9:]...) // valid is a1 67 "queries" [...]
	unsorted = append(append(unsorted, 0x65), "grant"...)
	unsorted = append(unsorted, 0x41, 0x00)
	unknownField := append([]byte{0xa2, 0x63}, "foo"...)
	unknownField = append(append(unknownField, 0x01, 0x67), "queries"...)
	unknownField = append(unknownField, valid[9:]...)

	frame := func(b []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(b))), b...) }
	tests := []struct {
		name   string
		send   []byte
		reason string
		min    time.Duration // the reset comes no sooner
		max    time.Duration // and no later
	}{
		{"varint overflow", bytes.Repeat([]byte{0xff}, 11), "bad_frame", 0, time.Second},
		{"non-minimal varint", []byte{0x81, 0x00}, "bad_frame", 0, time.Second},
		{"zero length", []byte{0x00}, "bad_frame", 0, time.Second},
		{"huge length prefix", binary.AppendUvarint(nil, 1<<30), "bad_frame", 0, time.Second},
		{"one past the cap", binary.AppendUvarint(nil, protocol.MaxTrackRequest+1), "bad_frame", 0, time.Second},
		{"garbage body", frame([]byte("GET / HTTP/1.1\r\n\r\n")), "decode", 0, time.Second},
		{"trailing bytes", frame(append(append([]byte{}, valid...), 0x00)), "decode", 0, time.Second},
		{"unsorted keys", frame(unsorted), "decode", 0, time.Second},
		{"unknown field", frame(unknownField), "decode", 0, time.Second},
		{"truncated body", frame(valid)[:len(valid)/2], "timeout", request, request + 2*time.Second},
		{"never sends", nil, "timeout", idle, idle + 2*time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resets := m.StreamResets.WithLabelValues("track", tc.reason)
			before := counter(t, resets)
			raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)
			// With nothing to send, the read in expectReset sends the
			// protocol header, which starts the handler.
			if tc.send != nil {
				raw.send(tc.send)
			}
			took := raw.expectReset(tc.max)
			require.GreaterOrEqual(t, took, tc.min-50*time.Millisecond)
			if tc.reason != "timeout" {
				require.Less(t, took, idle, "rejected at once, not when a deadline passed")
			}
			require.Eventually(t, func() bool { return counter(t, resets) == before+1 }, time.Second, 10*time.Millisecond)

			// The node goes on serving another client.
			other := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)
			require.Equal(t, protocol.CodeOK, other.track(query).Results[0].Code)
		})
	}
}

// TestTrackIdleBetweenRequests shows the idle timeout applies between
// requests, not only before the first.
func TestTrackIdleBetweenRequests(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 1, Options: &service.Options{IdleTimeout: 150 * time.Millisecond}})
	raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)
	require.Equal(t, protocol.CodeOK, raw.track(protocol.TrackQuery{Number: srv.Parcels[0].Number}).Results[0].Code)
	raw.expectReset(2 * time.Second)
}

type policyFunc func(peer.ID, int) (bool, time.Duration)

func (f policyFunc) AdmitTrack(p peer.ID, _ ma.Multiaddr, n int) (bool, time.Duration) {
	return f(p, n)
}
func (policyFunc) ObserveNotFound(peer.ID, ma.Multiaddr, int) {}
func (policyFunc) AdmitWatch(peer.ID) (bool, time.Duration)   { return true, 0 }
func (f policyFunc) AdmitNotFound(p peer.ID, _ ma.Multiaddr) (bool, time.Duration) {
	return f(p, 0)
}
func (policyFunc) AllowPublic(peer.ID) bool { return true }

func TestTrackPolicy(t *testing.T) {
	servicetest.CheckLeaks(t)
	var mu sync.Mutex
	var asked []int
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 2, Events: 1, Track: func(c *service.TrackConfig) {
		c.Policy = policyFunc(func(_ peer.ID, n int) (bool, time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, n)
			return n == 1, 1500 * time.Microsecond
		})
	}})
	raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)

	resp := raw.track(numbers(srv.Parcels[0].Number, "77-0000-0000-01", "77#")...)
	require.NoError(t, resp.Validate(3))
	for i, res := range resp.Results[:2] {
		require.Equal(t, protocol.CodeRateLimited, res.Code)
		require.Equal(t, uint64(2), res.RetryAfter, "rounded up to whole ms")
		require.Equal(t, srv.Parcels[i].Number, res.Number)
	}
	require.Equal(t, protocol.CodeInvalidNumber, resp.Results[2].Code, "normalization comes before the rate limit")
	require.Equal(t, protocol.CodeOK, raw.track(protocol.TrackQuery{Number: srv.Parcels[0].Number}).Results[0].Code)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []int{3, 1}, asked)
}

// failingStore fails lookups of one number, the way a broken disk would.
type failingStore struct {
	service.TrackStore
	number string
}

func (s failingStore) Parcel(ctx context.Context, number string) (*store.Parcel, error) {
	if number == s.number {
		return nil, errors.New("disk on fire")
	}
	return s.TrackStore.Parcel(ctx, number)
}

func TestTrackInternalError(t *testing.T) {
	servicetest.CheckLeaks(t)
	m := metrics.New()
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 2, Events: 1, Track: func(c *service.TrackConfig) {
		c.Store = failingStore{TrackStore: c.Store, number: servicetest.Number(1)}
		c.Metrics = m
	}})
	raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)
	resp := raw.track(numbers(servicetest.Number(0), servicetest.Number(1))...)
	require.NoError(t, resp.Validate(2))
	require.Equal(t, protocol.CodeOK, resp.Results[0].Code)
	require.Equal(t, protocol.CodeInternal, resp.Results[1].Code)
	require.Empty(t, resp.Results[1].Message, "internal errors stay inside the node")
	require.Equal(t, protocol.CodeOK, raw.track(numbers(servicetest.Number(0))...).Results[0].Code)
	// The server counts after it has written the response.
	require.Eventually(t, func() bool {
		return counter(t, m.TrackRequests.WithLabelValues(protocol.CodeOK)) == 2 &&
			counter(t, m.TrackRequests.WithLabelValues(protocol.CodeInternal)) == 1
	}, time.Second, 10*time.Millisecond)
}

func TestUnregister(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 1})
	client := servicetest.NewHost(t, nil)
	raw := openRaw(t, client, srv, protocol.TrackID)
	require.Equal(t, protocol.CodeOK, raw.track(numbers(servicetest.Number(0))...).Results[0].Code)

	srv.Track.Unregister()
	raw.expectReset(time.Second)
	s, err := client.NewStream(context.Background(), srv.Host.ID(), protocol.TrackID)
	if err == nil {
		_, err = s.Read(make([]byte, 1)) // negotiation is lazy
		s.Reset()
	}
	require.Error(t, err)
	srv.Track.Unregister() // a second call is harmless
}

func TestNewTrackInvalid(t *testing.T) {
	s := service.TrackStore(failingStore{})
	tests := []struct {
		name string
		cfg  service.TrackConfig
		opts *service.Options
		want []string
	}{
		{"no store", service.TrackConfig{Carrier: "OT"}, nil, []string{"no store"}},
		{"bad carrier", service.TrackConfig{Carrier: "ot", Store: s}, nil, []string{"carrier"}},
		{"bad scheme", service.TrackConfig{Carrier: "OT", Store: s, Schemes: []protocol.Scheme{{Kind: "regex"}}}, nil, []string{"scheme 0"}},
		{"bad options", service.TrackConfig{Carrier: "OT", Store: s}, &service.Options{IdleTimeout: -1, MaxEventsPerResult: 1001}, []string{"idle_timeout", "max_events_per_result"}},
		{"all at once", service.TrackConfig{Carrier: "", Schemes: []protocol.Scheme{{Kind: "regex"}}}, &service.Options{WriteTimeout: -1}, []string{"no store", "carrier", "scheme 0", "write_timeout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := service.NewTrack(tc.cfg, tc.opts)
			require.ErrorIs(t, err, service.ErrInvalidConfig)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := (*service.Options)(nil).EnsureDefaults()
	require.NoError(t, o.Validate())
	require.Equal(t, service.Options{
		IdleTimeout: protocol.StreamIdleTimeout, RequestTimeout: protocol.RequestTimeout,
		WriteTimeout: 10 * time.Second, MaxEventsPerResult: protocol.MaxEventsPerResult,
		WatchBuffer: 256, WatchStall: 2 * time.Second, Heartbeat: protocol.HeartbeatInterval, FeedBatch: 256,
	}, *o)
}
