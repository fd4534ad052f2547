package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/multiformats/go-multihash"
	dto "github.com/prometheus/client_model/go"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
)

// BenchmarkWatchFanout is what the watch service spends to get feed
// entries to their subscriptions, at 1,000 and 10,000 watchers of three
// numbers each over a memstore: b.N events are appended, 100 a batch, to
// random watched numbers, and the clock stops once every subscription has
// queued and written all its updates. Run it with -benchtime=2000x, as
// bench/watch-fanout.md does.
//
// The streams have no network under them (writes are counted and
// dropped): 10,000 loopback streams and their readers would swamp a
// small machine with work that costs both ways of reading the feed the
// same. The subscriptions are the service's own, set up by subscribe and
// served by run, so this measures the feed readers, the update frames and
// the writers. ns/op is per appended event; ns/update per update written.
func BenchmarkWatchFanout(b *testing.B) {
	for _, watchers := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("watchers=%d", watchers), func(b *testing.B) { benchmarkWatchFanout(b, watchers) })
	}
}

func benchmarkWatchFanout(b *testing.B, watchers int) {
	const perWatcher, batch = 3, 100
	numbers := watchers * perWatcher
	st := memstore.New()
	defer st.Close()
	ev := fanoutEvent(b)
	head := make([]byte, 160) // the size of a signed head; the service does not verify it
	number := func(i int) string { return fmt.Sprintf("77%010d", i) }
	for start := 0; start < numbers; start += 1000 {
		var bt store.Batch
		for i := start; i < min(start+1000, numbers); i++ {
			bt.Updates = append(bt.Updates, store.ParcelUpdate{Number: number(i), New: true, SignedHead: head,
				Events: []store.NewEvent{ev(0)}})
		}
		if _, err := st.Append(context.Background(), &bt); err != nil {
			b.Fatal(err)
		}
	}
	// Parcel i has store id i+1; seqs[i] is its head's seq.
	seqs := make([]uint64, numbers)
	rng := rand.New(rand.NewPCG(1, uint64(watchers)))
	var batches []*store.Batch
	for n := 0; n < b.N; n += batch {
		bt := &store.Batch{}
		for range min(batch, b.N-n) {
			i := rng.IntN(numbers)
			seqs[i]++
			bt.Updates = append(bt.Updates, store.ParcelUpdate{Number: number(i), ParcelID: uint64(i) + 1,
				PrevSeq: seqs[i] - 1, SignedHead: head, Events: []store.NewEvent{ev(seqs[i])}})
		}
		batches = append(batches, bt)
	}

	mn := mocknet.New()
	defer mn.Close()
	h, err := mn.GenPeer()
	if err != nil {
		b.Fatal(err)
	}
	w, err := NewWatch(WatchConfig{Store: st, Metrics: metrics.New()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	w.Register(h)
	heapBefore := fanoutHeap()
	subs := make([]*subscription, watchers)
	streams := make([]*fanoutStream, watchers)
	var wg sync.WaitGroup
	for i := range subs {
		req := &protocol.WatchRequest{}
		for j := range perWatcher {
			req.Numbers = append(req.Numbers, number(i*perWatcher+j))
		}
		streams[i] = newFanoutStream()
		sub, code, msg := w.subscribe(w.srv.ctx, streams[i], req)
		if code != "" {
			b.Fatal(code, msg)
		}
		subs[i] = sub
		wg.Go(func() { sub.run(w.srv.ctx) })
	}
	for _, s := range streams {
		for s.written.Load() == 0 { // the opening
			time.Sleep(time.Millisecond)
		}
	}
	heapOpen := fanoutHeap()

	b.ReportAllocs()
	b.ResetTimer()
	var tail uint64
	for _, bt := range batches {
		res, err := st.Append(context.Background(), bt)
		if err != nil {
			b.Fatal(err)
		}
		tail = res.FeedTail
	}
	// Subscriptions are done in any order; once done, one stays so.
	for next := 0; next < len(subs); {
		if sub := subs[next]; sub.position() >= tail && len(sub.frames) == 0 {
			next++
			continue
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	elapsed := b.Elapsed()
	w.Unregister()
	wg.Wait()

	var m dto.Metric
	if err := w.sent[protocol.WatchUpdate].Write(&m); err != nil {
		b.Fatal(err)
	}
	updates := m.GetCounter().GetValue()
	b.ReportMetric(float64(elapsed.Nanoseconds())/updates, "ns/update")
	b.ReportMetric(updates/elapsed.Seconds(), "updates/s")
	b.ReportMetric(float64(int64(heapOpen)-int64(heapBefore))/float64(watchers), "B/watcher")
}

// fanoutEvent returns a maker of events of one real event's size and CID.
func fanoutEvent(b testing.TB) func(seq uint64) store.NewEvent {
	bytes, _, err := protocol.EncodeEvent(&protocol.Event{Carrier: "OT", Number: "770000000000", Time: 1767225600000,
		Status: protocol.StatusInTransit, Location: protocol.Location{Country: "DE", Locode: "DEFRA", City: "Frankfurt am Main"}})
	if err != nil {
		b.Fatal(err)
	}
	sum, err := multihash.Sum(bytes, multihash.SHA2_256, -1)
	if err != nil {
		b.Fatal(err)
	}
	c := cid.NewCidV1(cid.DagCBOR, sum)
	return func(seq uint64) store.NewEvent { return store.NewEvent{Seq: seq, CID: c, Bytes: bytes} }
}

func fanoutHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// fanoutStream is a watch stream without a network: writes are counted and
// dropped, or kept, and a read waits for the reset. The methods the
// service does not call are the nil embedded interface's, and panic.
type fanoutStream struct {
	network.Stream
	written atomic.Int64 // bytes
	reset   chan struct{}
	once    sync.Once
	mu      sync.Mutex
	kept    *bytes.Buffer // what was written, if kept
}

func newFanoutStream() *fanoutStream { return &fanoutStream{reset: make(chan struct{})} }

func (s *fanoutStream) Read([]byte) (int, error) {
	<-s.reset
	return 0, network.ErrReset
}

func (s *fanoutStream) Write(b []byte) (int, error) {
	s.written.Add(int64(len(b)))
	if s.kept != nil {
		s.mu.Lock()
		s.kept.Write(b)
		s.mu.Unlock()
	}
	return len(b), nil
}

func (s *fanoutStream) Reset() error {
	s.once.Do(func() { close(s.reset) })
	return nil
}

func (s *fanoutStream) Close() error                     { return s.Reset() }
func (s *fanoutStream) SetReadDeadline(time.Time) error  { return nil }
func (s *fanoutStream) SetWriteDeadline(time.Time) error { return nil }
func (s *fanoutStream) Conn() network.Conn               { return fanoutConn{} }
func (s *fanoutStream) Scope() network.StreamScope       { return fanoutScope{} }

// fanoutConn is the connection of every fanoutStream.
type fanoutConn struct{ network.Conn }

func (fanoutConn) RemotePeer() peer.ID           { return "fanout-bench-peer" }
func (fanoutConn) RemoteMultiaddr() ma.Multiaddr { return nil }

// fanoutScope grants every reservation.
type fanoutScope struct{ network.StreamScope }

func (fanoutScope) ReserveMemory(int, uint8) error { return nil }
func (fanoutScope) ReleaseMemory(int)              {}

// TestWatchFanoutHandOver: subscriptions whose inbox overflows (FeedBatch
// 2 while every append touches all their numbers), and one that resumes
// from the start of the feed, get every event of their numbers once and in
// order: the hand-overs between their own reader and the tailer lose and
// repeat nothing, and the cursors only grow.
func TestWatchFanoutHandOver(t *testing.T) {
	const parcels, rounds = 20, 30
	st := memstore.New()
	defer st.Close()
	number := func(i int) string { return fmt.Sprintf("77%010d", i) }
	ev := fanoutEvent(t)
	event := func(i int, seq uint64) store.NewEvent { // its bytes say whose and which
		e := ev(seq)
		e.Bytes = fmt.Appendf(nil, "%s/%d", number(i), seq)
		return e
	}
	appendRound := func(seq uint64) uint64 {
		var bt store.Batch
		for i := range parcels {
			u := store.ParcelUpdate{Number: number(i), New: seq == 0, ParcelID: uint64(i) + 1, SignedHead: []byte("head"),
				Events: []store.NewEvent{event(i, seq)}}
			if seq > 0 {
				u.PrevSeq = seq - 1
			}
			bt.Updates = append(bt.Updates, u)
		}
		res, err := st.Append(context.Background(), &bt)
		if err != nil {
			t.Fatal(err)
		}
		return res.FeedTail
	}
	appendRound(0)

	mn := mocknet.New()
	defer mn.Close()
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWatch(WatchConfig{Store: st}, &Options{FeedBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	w.Register(h)
	defer w.Unregister()
	var all []string
	for i := range parcels {
		all = append(all, number(i))
	}
	reqs := []*protocol.WatchRequest{{Numbers: all}, {Numbers: all[:5]}, {Numbers: all, Cursor: w.cursor(0)}}
	first := []uint64{1, 1, 0} // the first seq each should get
	subs := make([]*subscription, len(reqs))
	streams := make([]*fanoutStream, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		streams[i] = newFanoutStream()
		streams[i].kept = new(bytes.Buffer)
		sub, code, msg := w.subscribe(w.srv.ctx, streams[i], req)
		if code != "" {
			t.Fatal(code, msg)
		}
		subs[i] = sub
		wg.Go(func() { sub.run(w.srv.ctx) })
	}
	var tail uint64
	for seq := uint64(1); seq <= rounds; seq++ {
		tail = appendRound(seq)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, sub := range subs {
		for sub.position() < tail || len(sub.frames) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("a subscription is at %d of %d", sub.position(), tail)
			}
			time.Sleep(time.Millisecond)
		}
	}
	w.Unregister()
	wg.Wait()

	for i, s := range streams {
		next := map[string]uint64{} // number -> the next seq it should get
		for _, n := range reqs[i].Numbers {
			next[n] = first[i]
		}
		var cursor string
		fr := protocol.NewFrameReader(bytes.NewReader(s.kept.Bytes()), protocol.MaxWatchFrame)
		for {
			body, err := fr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			var m protocol.WatchMessage
			if err := protocol.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			if m.Type != protocol.WatchUpdate {
				continue
			}
			if len(m.Cursor) < len(cursor) || len(m.Cursor) == len(cursor) && m.Cursor <= cursor {
				t.Fatalf("subscription %d: cursor %s after %s", i, m.Cursor, cursor)
			}
			cursor = m.Cursor
			for _, b := range m.Events {
				if want := fmt.Sprintf("%s/%d", m.Number, next[m.Number]); string(b) != want {
					t.Fatalf("subscription %d: event %s, want %s", i, b, want)
				}
				next[m.Number]++
			}
		}
		for n, seq := range next {
			if seq != rounds+1 {
				t.Errorf("subscription %d: %s got events up to seq %d, want %d", i, n, int64(seq)-1, rounds)
			}
		}
	}
}
