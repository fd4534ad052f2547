package service_test

import (
	"context"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	nodehost "github.com/opentrack/opentrack/node/host"
	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
)

// watchServer is a carrier's watch service on a loopback host over an
// in-memory store, with prebuilt parcels to append to it as ingest would.
type watchServer struct {
	tb      testing.TB
	host    host.Host
	store   store.Store
	watch   *service.Watch
	metrics *metrics.Metrics

	parcels []*servicetest.Parcel
	ids     []uint64 // store ids, 0 before a parcel's first append
	stored  []int    // events appended per parcel
}

type watchConfig struct {
	parcels, events int // prebuilt parcels (numbered by servicetest.Number) of this many events each
	opts            *service.Options
	host            *nodehost.Options
	on              host.Host                     // serve on this host; default a new loopback one
	store           func(store.Store) store.Store // wraps the store the service reads
	open            func(testing.TB) store.Store  // the backend; default memstore
	policy          service.Policy                // nil admits all
}

func startWatch(tb testing.TB, cfg watchConfig) *watchServer {
	tb.Helper()
	ws := &watchServer{tb: tb, host: cfg.on, metrics: metrics.New()}
	if ws.host == nil {
		ws.host = servicetest.NewHost(tb, cfg.host)
	}
	if cfg.open != nil {
		ws.store = cfg.open(tb)
	} else {
		ws.store = memstore.New()
	}
	for i := range cfg.parcels {
		ws.parcels = append(ws.parcels, servicetest.NewParcel(tb, servicetest.Number(i), cfg.events))
	}
	ws.ids, ws.stored = make([]uint64, cfg.parcels), make([]int, cfg.parcels)
	served := ws.store
	if cfg.store != nil {
		served = cfg.store(served)
	}
	var err error
	ws.watch, err = service.NewWatch(service.WatchConfig{Store: served, Metrics: ws.metrics, Policy: cfg.policy,
		Carrier: servicetest.Carrier, Keys: servicetest.Keys(), Schemes: []protocol.Scheme{servicetest.Scheme}}, cfg.opts)
	require.NoError(tb, err)
	ws.watch.Register(ws.host)
	// Cleanups run last-in first-out: the service stops, then the store
	// closes, then the host.
	tb.Cleanup(func() { ws.store.Close() })
	tb.Cleanup(ws.watch.Unregister)
	return ws
}

// mockHosts are n hosts on an in-memory network, linked to each other.
// Made inside a synctest bubble, they belong to it: unlike loopback TCP,
// mocknet's pipes block durably, so fake time advances while a stream
// waits. Mocknet ignores stream deadlines, so a test that needs them
// cannot use it. synctest.Test fails on goroutines left in the bubble,
// which stands in for servicetest.CheckLeaks.
func mockHosts(tb testing.TB, n int) []host.Host {
	tb.Helper()
	mn := mocknet.New()
	tb.Cleanup(func() { mn.Close() })
	hosts := make([]host.Host, n)
	for i := range hosts {
		var err error
		hosts[i], err = mn.GenPeer()
		require.NoError(tb, err)
	}
	require.NoError(tb, mn.LinkAll())
	return hosts
}

// step appends the next events of one prebuilt parcel.
type step struct {
	parcel, events int
	audience       []string
}

// update is the store update for st, with the head signed over its last
// event, and advances the parcel's bookkeeping as if it were committed.
func (ws *watchServer) update(st step) store.ParcelUpdate {
	p, from := ws.parcels[st.parcel], ws.stored[st.parcel]
	last := from + st.events - 1
	head, err := protocol.SignHead(servicetest.Signer(), &protocol.Head{
		Carrier: servicetest.Carrier, Number: p.Number, Seq: uint64(last), Head: protocol.LinkTo(p.CIDs[last]), Time: 1767225600000 + int64(last),
	})
	require.NoError(ws.tb, err)
	u := store.ParcelUpdate{Number: p.Number, New: from == 0, ParcelID: ws.ids[st.parcel], SignedHead: head, Audience: st.audience}
	if from > 0 {
		u.PrevSeq = uint64(from - 1)
	}
	for seq := from; seq <= last; seq++ {
		u.Events = append(u.Events, store.NewEvent{Seq: uint64(seq), CID: p.CIDs[seq], Bytes: p.Events[seq]})
	}
	ws.stored[st.parcel] = last + 1
	return u
}

// batch builds one batch of steps; commit appends it.
func (ws *watchServer) batch(steps ...step) (*store.Batch, []int) {
	b := &store.Batch{}
	which := make([]int, len(steps))
	for i, st := range steps {
		b.Updates = append(b.Updates, ws.update(st))
		which[i] = st.parcel
	}
	return b, which
}

func (ws *watchServer) commit(b *store.Batch, which []int) *store.AppendResult {
	ws.tb.Helper()
	res, err := ws.store.Append(context.Background(), b)
	require.NoError(ws.tb, err)
	for i, id := range res.ParcelIDs {
		ws.ids[which[i]] = id
	}
	return res
}

// append commits one batch of steps.
func (ws *watchServer) append(steps ...step) *store.AppendResult {
	ws.tb.Helper()
	return ws.commit(ws.batch(steps...))
}

// each is one step of n events for every parcel in [from, to).
func each(from, to, n int, audience ...string) []step {
	var s []step
	for i := from; i < to; i++ {
		s = append(s, step{parcel: i, events: n, audience: audience})
	}
	return s
}

func (ws *watchServer) cursor(pos uint64) string {
	return ws.store.ID() + "." + strconv.FormatUint(pos, 10)
}

func (ws *watchServer) tail() uint64 {
	ws.tb.Helper()
	t, err := ws.store.FeedTail(context.Background())
	require.NoError(ws.tb, err)
	return t
}

func (ws *watchServer) signedHead(parcel int) []byte {
	ws.tb.Helper()
	p, err := ws.store.ParcelByID(context.Background(), ws.ids[parcel])
	require.NoError(ws.tb, err)
	return p.SignedHead
}

func gauge(tb testing.TB, m *metrics.Metrics) float64 {
	var d dto.Metric
	require.NoError(tb, m.WatchStreams.Write(&d))
	return d.GetGauge().GetValue()
}

// waitStreams waits until n subscriptions are running: a subscription
// without a cursor starts at the tail it finds, so a test appends only
// once it has.
func (ws *watchServer) waitStreams(n int) {
	ws.tb.Helper()
	// Each subscription checks its numbers before it runs, so the wait
	// grows with how many there are: it fails only when the count stops
	// moving towards n, which on a loaded machine takes longer, not never.
	const still = 15 * time.Second
	last, moved := gauge(ws.tb, ws.metrics), time.Now()
	for last != float64(n) {
		if time.Since(moved) > still {
			ws.tb.Fatalf("%v subscriptions running, want %d: no change in %s", last, n, still)
		}
		time.Sleep(time.Millisecond)
		if g := gauge(ws.tb, ws.metrics); g != last {
			last, moved = g, time.Now()
		}
	}
}

// watcher speaks the watch protocol byte for byte, so that tests can send
// what no well-behaved client would.
type watcher struct {
	tb     testing.TB
	s      network.Stream
	frames *protocol.FrameReader
}

// openWatch opens a watch stream from a host to ws and sends req, if any.
func openWatch(tb testing.TB, from host.Host, ws *watchServer, req *protocol.WatchRequest) *watcher {
	tb.Helper()
	servicetest.Connect(tb, from, ws.host)
	s, err := from.NewStream(context.Background(), ws.host.ID(), protocol.WatchID)
	require.NoError(tb, err)
	tb.Cleanup(func() { s.Reset() })
	w := &watcher{tb: tb, s: s, frames: protocol.NewFrameReader(s, protocol.MaxWatchFrame)}
	if req != nil {
		w.send(req)
	}
	return w
}

func (w *watcher) send(req *protocol.WatchRequest) {
	w.tb.Helper()
	msg, err := protocol.Marshal(req)
	require.NoError(w.tb, err)
	require.NoError(w.tb, protocol.WriteFrame(w.s, msg, protocol.MaxWatchRequest))
}

// next reads one message, which must be valid.
func (w *watcher) next(within time.Duration) *protocol.WatchMessage {
	w.tb.Helper()
	m, err := w.read(within)
	require.NoError(w.tb, err)
	return m
}

func (w *watcher) read(within time.Duration) (*protocol.WatchMessage, error) {
	if err := w.s.SetReadDeadline(time.Now().Add(within)); err != nil {
		return nil, err
	}
	body, err := w.frames.Next()
	if err != nil {
		return nil, err
	}
	var m protocol.WatchMessage
	if err := protocol.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	return &m, m.Validate()
}

// nextOf reads messages, skipping heartbeats and the statuses of
// numbers not stored yet, until one of type typ.
func (w *watcher) nextOf(typ string, within time.Duration) *protocol.WatchMessage {
	w.tb.Helper()
	for {
		m := w.next(within)
		if m.Type != protocol.WatchHeartbeat && (m.Type != protocol.WatchStatus || typ == protocol.WatchStatus) {
			require.Equal(w.tb, typ, m.Type, "%+v", m)
			return m
		}
	}
}

// opening reads a subscription's opening (spec 8.5): its statuses, as
// number to code, then its first heartbeat, which it returns. Any other
// message before that heartbeat fails the test.
func (w *watcher) opening() (map[string]string, *protocol.WatchMessage) {
	w.tb.Helper()
	statuses := map[string]string{}
	for {
		m := w.next(10 * time.Second)
		switch m.Type {
		case protocol.WatchHeartbeat:
			return statuses, m
		case protocol.WatchStatus:
			_, dup := statuses[m.Number]
			require.False(w.tb, dup, "two statuses for %s", m.Number)
			statuses[m.Number] = m.Code
		default:
			require.Fail(w.tb, "a message before the opening heartbeat", "%+v", m)
		}
	}
}

// expectEnd checks that the server closed the stream cleanly.
func (w *watcher) expectEnd() {
	w.tb.Helper()
	require.NoError(w.tb, w.s.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := w.frames.Next()
	require.ErrorIs(w.tb, err, io.EOF)
}

// expectError reads an error message with code, then the end.
func (w *watcher) expectError(code string) *protocol.WatchMessage {
	w.tb.Helper()
	m := w.nextOf(protocol.WatchError, 5*time.Second)
	require.Equal(w.tb, code, m.Code, m.Message)
	w.expectEnd()
	return m
}

// expectReset waits for the server to reset the stream and returns how
// long that took.
func (w *watcher) expectReset(within time.Duration) time.Duration {
	w.tb.Helper()
	start := time.Now()
	require.NoError(w.tb, w.s.SetReadDeadline(start.Add(within)))
	for {
		_, err := w.frames.Next()
		if err != nil {
			require.ErrorIs(w.tb, err, network.ErrReset, "want a reset within %s", within)
			return time.Since(start)
		}
	}
}

// requireUpdate checks an update: the parcel's number, the events from
// seq from up to its stored head, that head, and the cursor.
func (ws *watchServer) requireUpdate(m *protocol.WatchMessage, parcel, from int, pos uint64) {
	ws.tb.Helper()
	require.Equal(ws.tb, protocol.WatchUpdate, m.Type)
	p := ws.parcels[parcel]
	require.Equal(ws.tb, p.Number, m.Number)
	require.Equal(ws.tb, p.Events[from:ws.stored[parcel]], m.Events)
	require.Equal(ws.tb, ws.signedHead(parcel), m.Head)
	require.Equal(ws.tb, ws.cursor(pos), m.Cursor)
}

func numbersOf(ws *watchServer, parcels ...int) []string {
	out := make([]string, len(parcels))
	for i, p := range parcels {
		out[i] = ws.parcels[p].Number
	}
	return out
}

// watchPolicy refuses subscriptions or closes public lookups.
type watchPolicy struct{ refuseWatch, closed bool }

func (watchPolicy) AdmitTrack(peer.ID, ma.Multiaddr, int) (bool, time.Duration) { return true, 0 }
func (watchPolicy) ObserveNotFound(peer.ID, ma.Multiaddr, int)                  {}
func (watchPolicy) AdmitNotFound(peer.ID, ma.Multiaddr) (bool, time.Duration)   { return true, 0 }
func (p watchPolicy) AdmitWatch(peer.ID) (bool, time.Duration)                  { return !p.refuseWatch, time.Second }
func (p watchPolicy) AllowPublic(peer.ID) bool                                  { return !p.closed }
