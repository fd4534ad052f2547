package service_test

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
)

// TestWatchRequestErrors sends requests that decode but break a rule: an
// error with the right code comes back, and the stream closes.
func TestWatchRequestErrors(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 1, events: 1})
	many := make([]string, protocol.MaxWatchNumbers+1)
	for i := range many {
		many[i] = servicetest.Number(i)
	}
	n := servicetest.Number(0)
	tests := []struct {
		name string
		req  protocol.WatchRequest
		code string
	}{
		{"both scopes", protocol.WatchRequest{Numbers: []string{n}, Audience: true}, protocol.CodeBadRequest},
		{"neither scope", protocol.WatchRequest{Cursor: ws.cursor(0)}, protocol.CodeBadRequest},
		{"10001 numbers", protocol.WatchRequest{Numbers: many}, protocol.CodeTooMany},
		{"unnormalized number", protocol.WatchRequest{Numbers: []string{"77-0000-0000-00"}}, protocol.CodeBadRequest},
		{"lower case", protocol.WatchRequest{Numbers: []string{"rb123456785gb"}}, protocol.CodeBadRequest},
		{"number twice", protocol.WatchRequest{Numbers: []string{n, n}}, protocol.CodeBadRequest},
		{"long cursor", protocol.WatchRequest{Numbers: []string{n}, Cursor: strings.Repeat("1", protocol.MaxCursorLen+1)}, protocol.CodeBadRequest},
		{"large grant", protocol.WatchRequest{Numbers: []string{n}, Grant: make([]byte, protocol.MaxGrantSize+1)}, protocol.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := openWatch(t, servicetest.NewHost(t, nil), ws, &tc.req)
			m := w.expectError(tc.code)
			require.NotEmpty(t, m.Message)
		})
	}
	require.Eventually(t, func() bool {
		return counter(t, ws.metrics.WatchUpdates.WithLabelValues(protocol.WatchError)) == float64(len(tests))
	}, time.Second, time.Millisecond)
	require.Zero(t, gauge(t, ws.metrics))
}

// TestWatchBadInput sends what only a broken or hostile peer sends: the
// server resets that stream, counts it, and goes on serving others.
func TestWatchBadInput(t *testing.T) {
	servicetest.CheckLeaks(t)
	const request = 300 * time.Millisecond
	ws := startWatch(t, watchConfig{parcels: 1, events: 2, opts: &service.Options{RequestTimeout: request}})
	valid, err := protocol.Marshal(&protocol.WatchRequest{Numbers: numbersOf(ws, 0)})
	require.NoError(t, err)
	unknownField := append([]byte{0xa2, 0x63}, "foo"...)
	unknownField = append(append(unknownField, 0x01), valid[1:]...) // valid is a1 ...
	frame := func(b []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(b))), b...) }
	tests := []struct {
		name   string
		send   []byte
		reason string
		min    time.Duration // the reset comes no sooner
	}{
		{"garbage body", frame([]byte("GET / HTTP/1.1\r\n\r\n")), "decode", 0},
		{"not a map", frame([]byte{0x80}), "decode", 0},
		{"trailing bytes", frame(append(append([]byte{}, valid...), 0x00)), "decode", 0},
		{"unknown field", frame(unknownField), "decode", 0},
		{"empty numbers", frame(append([]byte{0xa1, 0x67}, append([]byte("numbers"), 0x80)...)), "decode", 0},
		{"one past the cap", binary.AppendUvarint(nil, protocol.MaxWatchRequest+1), "bad_frame", 0},
		{"zero length", []byte{0x00}, "bad_frame", 0},
		{"truncated body", frame(valid)[:len(valid)/2], "timeout", request},
		{"never sends", nil, "timeout", request},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resets := ws.metrics.StreamResets.WithLabelValues("watch", tc.reason)
			before := counter(t, resets)
			w := openWatch(t, servicetest.NewHost(t, nil), ws, nil)
			// With nothing to send, the read in expectReset sends the
			// protocol header, which starts the handler.
			if tc.send != nil {
				_, err := w.s.Write(tc.send)
				require.NoError(t, err)
			}
			took := w.expectReset(request + 2*time.Second)
			require.GreaterOrEqual(t, took, tc.min-50*time.Millisecond)
			if tc.reason != "timeout" {
				require.Less(t, took, request, "rejected at once, not when a deadline passed")
			}
			require.Eventually(t, func() bool { return counter(t, resets) == before+1 }, time.Second, 10*time.Millisecond)
		})
	}
	// The node goes on serving another client.
	w := openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0)})
	ws.waitStreams(1)
	ws.append(step{parcel: 0, events: 1})
	ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 5*time.Second), 0, 0, 1)
}

// TestWatchDataAfterRequest: the subscriber writes nothing after its
// request, so anything more is a protocol violation.
func TestWatchDataAfterRequest(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 1, events: 1})
	w := openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0)})
	ws.waitStreams(1)
	_, err := w.s.Write([]byte{0x01})
	require.NoError(t, err)
	w.expectReset(time.Second)
	ws.waitStreams(0)
	require.Equal(t, float64(1), counter(t, ws.metrics.StreamResets.WithLabelValues("watch", "bad_frame")))
}

// stuckStore fails lookups the way a broken disk would, once told to.
type stuckStore struct {
	store.Store
	broken atomic.Bool
}

func (s *stuckStore) ParcelByID(ctx context.Context, id uint64) (*store.Parcel, error) {
	if s.broken.Load() {
		return nil, errors.New("disk on fire")
	}
	return s.Store.ParcelByID(ctx, id)
}

func TestWatchStoreErrors(t *testing.T) {
	servicetest.CheckLeaks(t)
	var broken *stuckStore
	ws := startWatch(t, watchConfig{parcels: 2, events: 2, store: func(s store.Store) store.Store {
		broken = &stuckStore{Store: s}
		return broken
	}})
	w := openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0)})
	ws.waitStreams(1)
	broken.broken.Store(true)
	ws.append(step{parcel: 0, events: 1})
	m := w.expectError(protocol.CodeInternal)
	require.Empty(t, m.Message, "internal errors stay inside the node")

	// A store that closes under a subscription (the node shutting down)
	// tells the subscriber to come back.
	broken.broken.Store(false)
	w = openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 1)})
	ws.waitStreams(1)
	require.NoError(t, ws.store.Close())
	w.expectError(protocol.CodeUnavailable)
}

func TestWatchUnregister(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 1, events: 1})
	w := openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: numbersOf(ws, 0)})
	ws.waitStreams(1)
	ws.watch.Unregister()
	w.expectReset(time.Second)
	require.Zero(t, gauge(t, ws.metrics))
}

func TestNewWatchInvalid(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	tests := []struct {
		name string
		cfg  service.WatchConfig
		opts *service.Options
		want []string
	}{
		{"no store", service.WatchConfig{}, nil, []string{"no store"}},
		{"long store id", service.WatchConfig{Store: longID{s}}, nil, []string{"store id"}},
		{"stall above write timeout", service.WatchConfig{Store: s}, &service.Options{WatchStall: 10 * time.Second}, []string{"watch_stall"}},
		{"all at once", service.WatchConfig{}, &service.Options{Heartbeat: time.Minute, WatchBuffer: -1, FeedBatch: 1 << 20, WatchStall: -1},
			[]string{"no store", "heartbeat", "watch_buffer", "feed_batch", "watch_stall"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := service.NewWatch(tc.cfg, tc.opts)
			require.ErrorIs(t, err, service.ErrInvalidConfig)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

type longID struct{ store.Store }

func (longID) ID() string { return strings.Repeat("a", 120) }
