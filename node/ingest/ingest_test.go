package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/protocol"
)

// TestRejections decodes each kind of invalid event between two valid
// ones, as the admin API decodes a posted body, and ingests them: the
// invalid one is rejected with a reason naming the problem, and its
// neighbours are stored regardless.
func TestRejections(t *testing.T) {
	const validPeer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
	_, err := peer.Decode(validPeer)
	require.NoError(t, err)

	for _, tc := range []struct {
		name   string
		event  any // a map, or a raw NDJSON line
		reason string
		id     string // the id the rejection names
	}{
		{"missing id", with(base(""), "id", nil), "id: missing", ""},
		{"id too long", base(strings.Repeat("x", 129)), "id: 129 bytes, limit 128", strings.Repeat("x", 129)},
		{"bad number", with(base("e"), "number", "RB12€"), `number: invalid tracking number: character '€'`, "e"},
		{"number of no scheme", with(base("e"), "number", "ZZ123456789"), `"ZZ123456789" matches none of carrier XP's number schemes (s10:GB, XP\d{9}:luhn)`, "e"},
		{"S10 check digit", with(base("e"), "number", "RB123456784GB"), `check digit mismatch: S10 "RB123456784GB" has check digit 4, want 5`, "e"},
		{"pattern check digit", with(base("e"), "number", "XP123456789"), "check digit mismatch", "e"},
		{"unknown status", with(base("e"), "status", "lost_in_space"), `status: unknown status "lost_in_space" (one of info_received, picked_up`, "e"},
		{"reason of other status", with(base("e"), "reason", "to_neighbour"), `reason: "to_neighbour" is not defined for status "picked_up" (one of collected, dropped_off, dropped_off_locker)`, "e"},
		{"time 10 min in future", with(base("e"), "time", "2025-06-01T12:10:00Z"), "time: 2025-06-01T12:10:00Z is 10m0s in the future (limit 5m0s)", "e"},
		{"bad time format", with(base("e"), "time", "2025-06-01 11:00"), `time: "2025-06-01 11:00" is not an RFC 3339 time`, "e"},
		{"missing time", with(base("e"), "time", nil), "time: missing", "e"},
		{"bad country", with(base("e"), "location", map[string]any{"country": "gb"}), `location: country "gb" is not an ISO 3166-1 alpha-2 code`, "e"},
		{"locode of other country", with(base("e"), "location", map[string]any{"country": "GB", "locode": "FRPAR"}), `locode "FRPAR" is not in country "GB"`, "e"},
		{"unknown field", with(base("e"), "colour", "red"), `invalid event: unknown field "colour"`, "e"},
		{"unknown location field", with(base("e"), "location", map[string]any{"country": "GB", "zip": "N1"}), `unknown field "zip"`, "e"},
		{"bad audience peer id", with(base("e"), "audience", []string{validPeer, "not-a-peer"}), `audience: "not-a-peer" is not a peer ID`, "e"},
		{"bad details field", with(base("e"), "details", map[string]string{"shoe_size": "42"}), `details: unknown detail field "shoe_size"`, "e"},
		{"too-long description", with(base("e"), "description", strings.Repeat("d", 600)), "description is 600 bytes, limit 512", "e"},
		{"lang without description", with(base("e"), "lang", "en"), "lang without description", "e"},
		{"float in ext", with(base("e"), "ext", map[string]any{"xp.weight": 1.5}), `ext: "xp.weight": 1.5 is not a 64-bit integer`, "e"},
		{"ext not namespaced", with(base("e"), "ext", map[string]any{"weight": 2}), `ext key "weight" must be namespaced`, "e"},
		{"bad eta", with(base("e"), "eta", "tomorrow"), `eta: "tomorrow" is not an RFC 3339 time`, "e"},
		{"bad handoff", with(base("e"), "handoff", map[string]any{"carrier": "x", "number": "LX123456785DE"}), `handoff.carrier`, "e"},
		{"lat without lon", with(base("e"), "location", map[string]any{"country": "GB", "lat_e6": 51500000}), "lat_e6 and lon_e6 go together", "e"},
		{"float coordinate", with(base("e"), "location", map[string]any{"country": "GB", "lat_e6": 51.5, "lon_e6": 0}), "cannot unmarshal number 51.5", "e"},
		{"not an object", `["e"]`, "invalid event: not a JSON object", ""},
		{"broken JSON", `{"id": "e", "number": `, "invalid event: unexpected EOF", ""},
		{"data after object", `{"id": "e"} {"id": "f"}`, "invalid event: data after the event object", "e"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil, nil)
			res := e.decodeIngest(ndjson(t, base("before"), tc.event, with(base("after"), "number", "XP123456782")))
			accepted, _, rejected := ingest.Tally(res)
			require.Equal(t, 2, accepted)
			require.Equal(t, 1, rejected)
			require.Equal(t, ingest.StatusAccepted, res[0].Status)
			require.Equal(t, ingest.StatusAccepted, res[2].Status)
			bad := res[1]
			require.Equal(t, ingest.StatusRejected, bad.Status)
			require.Contains(t, bad.Error, tc.reason)
			require.Equal(t, tc.id, bad.ID)
			require.Empty(t, bad.CID)
			require.Len(t, e.Stored("before", "after", "e"), 2)
		})
	}
}

func TestValidEventAllFields(t *testing.T) {
	e := newEnv(t, nil, nil)
	lat, lon := int64(51_507_351), int64(-127_758)
	in := event("full", "rb 1234 5678 5gb", func(in *ingest.InputEvent) {
		in.Status, in.Reason = "departed_facility", "office_of_exchange"
		in.Time = "2025-06-01T12:04:00.123+02:00"
		in.Location = protocol.Location{Country: "GB", Locode: "GBLON", City: "London", Facility: "LHR-OE", LatE6: &lat, LonE6: &lon}
		in.Description, in.Lang = "Left the office of exchange", "en-GB"
		in.ETA = "2025-06-04T18:00:00Z"
		in.Handoff = &protocol.Handoff{Carrier: "DEP", Number: "RB123456785GB"}
		in.Ext = map[string]any{"xp.route": "LHR-FRA", "xp.legs": []any{int64(1), int64(2)}}
		in.Details = map[string]string{protocol.FieldRecipientName: "A. Person"}
	})
	res := e.IngestOK(in)
	require.Equal(t, ingest.Result{ID: "full", Number: "RB123456785GB", CID: res[0].CID, Status: ingest.StatusAccepted}, res[0])

	evs := e.verifyParcel("RB123456785GB")
	require.Len(t, evs, 1)
	got := evs[0]
	require.Equal(t, time.Date(2025, 6, 1, 10, 4, 0, 123e6, time.UTC).UnixMilli(), got.Time)
	require.Equal(t, protocol.StatusDepartedFacility, got.Status)
	require.Equal(t, "LHR-OE", got.Location.Facility)
	require.Equal(t, lat, *got.Location.LatE6)
	require.Equal(t, &protocol.Handoff{Carrier: "DEP", Number: "RB123456785GB"}, got.Handoff)
	require.Equal(t, "LHR-FRA", got.Ext["xp.route"])

	p, err := e.Base.Parcel(context.Background(), "RB123456785GB")
	require.NoError(t, err)
	d, err := e.Base.Details(context.Background(), p.ID)
	require.NoError(t, err)
	require.Equal(t, protocol.Details{protocol.FieldRecipientName: "A. Person"}, d)
}

func TestIdempotentRepost(t *testing.T) {
	e := newEnv(t, nil, nil)
	batch := []ingest.InputEvent{event("a", s10(1)), event("b", s10(1)), event("c", s10(2))}
	first := e.IngestOK(batch...)
	require.Equal(t, uint64(3), e.EventCount())

	// Posting again, with a new event at the end, stores only the new one
	// and answers the old ones with their original CIDs and seqs.
	again := e.IngestOK(append(batch, event("d", s10(1)))...)
	for i := range batch {
		want := first[i]
		want.Status = ingest.StatusDuplicate
		require.Equal(t, want, again[i])
	}
	require.Equal(t, ingest.StatusAccepted, again[3].Status)
	require.Equal(t, uint64(2), again[3].Seq)
	require.Equal(t, uint64(4), e.EventCount())
	e.verifyParcel(s10(1))
}

func TestSameIDTwiceInBatch(t *testing.T) {
	e := newEnv(t, nil, nil)
	res := e.IngestOK(event("a", s10(1)), event("a", s10(1), atTime("2025-06-01T11:30:00Z")), event("b", s10(1)))
	require.Equal(t, ingest.StatusAccepted, res[0].Status)
	require.Equal(t, ingest.StatusDuplicate, res[1].Status)
	require.Equal(t, res[0].CID, res[1].CID)
	require.Equal(t, res[0].Seq, res[1].Seq)
	require.Equal(t, uint64(1), res[2].Seq, "the duplicate takes no seq")
	require.Equal(t, uint64(2), e.EventCount())
}

func TestChaining(t *testing.T) {
	e := newEnv(t, nil, nil)
	n := s10(7)
	// Within one batch: seq 0, 1, 2 on one parcel, interleaved with another.
	res := e.IngestOK(event("1", n), event("x", s10(8)), event("2", n), event("3", n))
	require.Equal(t, []uint64{0, 0, 1, 2}, []uint64{res[0].Seq, res[1].Seq, res[2].Seq, res[3].Seq})
	// Across batches, continuing from the stored head; an event older than
	// the head is still appended, since seq is ingest order.
	res = e.IngestOK(event("4", n, atTime("2025-06-01T11:30:00Z")), event("5", n, atTime("2025-06-01T08:00:00Z")))
	require.Equal(t, []uint64{3, 4}, []uint64{res[0].Seq, res[1].Seq})

	evs := e.verifyParcel(n)
	require.Len(t, evs, 5)
	for i, ev := range evs {
		require.Equal(t, uint64(i), ev.Seq)
	}
	require.Less(t, evs[4].Time, evs[3].Time)
	require.Equal(t, res[1].CID, mustParcel(t, e, n).Head.String())
}

func mustParcel(t *testing.T, e *env, n string) *store.Parcel {
	t.Helper()
	p, err := e.Base.Parcel(context.Background(), n)
	require.NoError(t, err)
	return p
}

// TestOneSignaturePerParcel checks that a batch touching two parcels with
// three events each writes one update, with one signed head, per parcel.
func TestOneSignaturePerParcel(t *testing.T) {
	spy := &appendSpy{}
	e := newEnv(t, nil, func(s store.Store) store.Store { spy.Store = s; return spy })
	var batch []ingest.InputEvent
	for i := range 6 {
		batch = append(batch, event(fmt.Sprint(i), s10(i%2)))
	}
	e.IngestOK(batch...)
	require.Len(t, spy.batches, 1)
	ups := spy.batches[0].Updates
	require.Len(t, ups, 2)
	for _, u := range ups {
		require.Len(t, u.Events, 3)
		sh, err := protocol.ParseSignedHead(u.SignedHead)
		require.NoError(t, err)
		require.Equal(t, uint64(2), sh.Seq)
		require.True(t, sh.Head.Head.Equals(u.Events[2].CID))
		require.Equal(t, testNow.UnixMilli(), sh.Time)
	}
}

func TestAudienceMerged(t *testing.T) {
	e := newEnv(t, nil, nil)
	const p1 = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
	const p2 = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
	e.IngestOK(event("a", s10(1), func(in *ingest.InputEvent) { in.Audience = []string{p1} }))
	e.IngestOK(event("b", s10(1), func(in *ingest.InputEvent) { in.Audience = []string{p1, p2} }))
	require.ElementsMatch(t, []string{p1, p2}, mustParcel(t, e, s10(1)).Audience)
}

func TestTooManyEvents(t *testing.T) {
	e := newEnv(t, &ingest.Options{MaxBatchEvents: 2}, nil)
	_, err := e.G.Ingest(context.Background(), []ingest.InputEvent{event("a", s10(1)), event("b", s10(1)), event("c", s10(1))})
	require.ErrorIs(t, err, ingest.ErrTooManyEvents)
	require.Zero(t, e.EventCount())
}

func TestStoreFailureAcksNothing(t *testing.T) {
	spy := &appendSpy{fail: fmt.Errorf("pebble: %w", errors.New("no space left on device"))}
	e := newEnv(t, nil, func(s store.Store) store.Store { spy.Store = s; return spy })
	res, err := e.G.Ingest(context.Background(), []ingest.InputEvent{event("a", s10(1))})
	require.ErrorIs(t, err, ingest.ErrCommit)
	require.ErrorContains(t, err, "no space left on device")
	require.Nil(t, res)
	require.Zero(t, e.EventCount())

	require.NoError(t, e.Base.Close())
	_, err = e.G.Ingest(context.Background(), []ingest.InputEvent{event("a", s10(1))})
	require.ErrorIs(t, err, store.ErrClosed)
}

// rivalAppend lets a second Ingester (another node sharing the store)
// append to the same parcel just before this one's append, once armed.
type rivalAppend struct {
	store.Store
	t     *testing.T
	rival *ingest.Ingester // nil until armed
	once  sync.Once
}

func (c *rivalAppend) Append(ctx context.Context, b *store.Batch) (*store.AppendResult, error) {
	if c.rival != nil {
		c.once.Do(func() {
			_, err := c.rival.Ingest(ctx, []ingest.InputEvent{event("rival", b.Updates[0].Number)})
			require.NoError(c.t, err)
		})
	}
	return c.Store.Append(ctx, b)
}

func TestConflictRetried(t *testing.T) {
	c := &rivalAppend{t: t}
	e := newEnv(t, nil, func(s store.Store) store.Store { c.Store = s; return c })
	n := s10(3)
	e.IngestOK(event("first", n))

	c.rival = newIngesterOver(t, e.Base)
	res := e.IngestOK(event("second", n))
	require.Equal(t, ingest.StatusAccepted, res[0].Status)
	require.Equal(t, uint64(2), res[0].Seq, "rebuilt on top of the rival's event")
	require.Len(t, e.verifyParcel(n), 3)
}

func newIngesterOver(t *testing.T, st store.Store) *ingest.Ingester {
	t.Helper()
	signer, err := protocol.NewSigner(testKey)
	require.NoError(t, err)
	g, err := ingest.New(ingest.Config{Carrier: testCarrier, Schemes: testSchemes, Signer: signer, Store: st,
		Now: func() time.Time { return testNow }}, nil)
	require.NoError(t, err)
	return g
}

// backends are the stores the concurrency tests run over: pebble's reads
// heads in batches and keeps them for its appends, which the pipelined
// committer must not be able to fool.
var backends = []struct {
	name string
	open func(t *testing.T) store.Store
}{
	{"memstore", func(*testing.T) store.Store { return memstore.New() }},
	{"pebble", func(t *testing.T) store.Store {
		s, err := pebble.Open(t.TempDir(), &pebble.Options{CacheSize: 8 << 20, MemTableSize: 4 << 20})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	}},
}

// TestConcurrentSameParcel ingests into one parcel from many goroutines:
// group commit and the conflict guard must keep its seqs gap-free and its
// chain verifying under the signed head.
func TestConcurrentSameParcel(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testConcurrentSameParcel(t, newEnvOver(t, b.open(t), nil, nil)) })
	}
}

func testConcurrentSameParcel(t *testing.T, e *env) {
	const workers, perWorker, batch = 16, 10, 5
	n := s10(42)
	var wg sync.WaitGroup
	seqs := make(chan uint64, workers*perWorker*batch)
	for w := range workers {
		wg.Go(func() {
			for r := range perWorker {
				var evs []ingest.InputEvent
				for k := range batch {
					evs = append(evs, event(fmt.Sprintf("w%d-r%d-%d", w, r, k), n), event(fmt.Sprintf("o%d-r%d-%d", w, r, k), s10(w)))
				}
				res, err := e.G.Ingest(context.Background(), evs)
				if !assertNoError(t, err) {
					return
				}
				for i, r := range res {
					if i%2 == 0 {
						seqs <- r.Seq
					}
				}
			}
		})
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for s := range seqs {
		require.False(t, seen[s], "seq %d handed out twice", s)
		seen[s] = true
	}
	total := workers * perWorker * batch
	require.Len(t, seen, total)
	evs := e.verifyParcel(n)
	require.Len(t, evs, total)
	for w := range workers {
		require.Len(t, e.verifyParcel(s10(w)), perWorker*batch)
	}
}

// assertNoError reports err from a goroutine other than the test's.
func assertNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Errorf("ingest: %v", err)
		return false
	}
	return true
}

func TestOptions(t *testing.T) {
	o := (*ingest.Options)(nil).EnsureDefaults()
	require.Equal(t, int64(32<<20), o.MaxBodyBytes)
	require.Equal(t, 10000, o.MaxBatchEvents)
	require.Equal(t, 5*time.Minute, o.FutureSkew)
	require.Positive(t, o.SignWorkers)
	require.Equal(t, 128, o.MaxIDLen)

	err := (&ingest.Options{MaxBodyBytes: -1, SignWorkers: -2, FutureSkew: -time.Second}).Validate()
	require.ErrorIs(t, err, ingest.ErrInvalidOptions)
	for _, want := range []string{"MaxBodyBytes -1", "SignWorkers -2", "FutureSkew -1s"} {
		require.ErrorContains(t, err, want)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := ingest.New(ingest.Config{Carrier: "x", Schemes: []protocol.Scheme{{Kind: "nope"}}}, &ingest.Options{MaxIDLen: -1})
	require.ErrorIs(t, err, ingest.ErrInvalidConfig)
	require.ErrorIs(t, err, ingest.ErrInvalidOptions)
	for _, want := range []string{"MaxIDLen -1", `carrier code "x"`, "no signer", "no store", `unknown scheme kind "nope"`} {
		require.ErrorContains(t, err, want)
	}
}

// TestConcurrentSameIDs posts the same events from many goroutines at
// once: each id is stored once, and every answer for it names that event.
func TestConcurrentSameIDs(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testConcurrentSameIDs(t, newEnvOver(t, b.open(t), nil, nil)) })
	}
}

func testConcurrentSameIDs(t *testing.T, e *env) {
	var batch []ingest.InputEvent
	for i := range 50 {
		batch = append(batch, event(fmt.Sprint("id-", i), s10(i%10)))
	}
	const posters = 8
	results := make([][]ingest.Result, posters)
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			res, err := e.G.Ingest(context.Background(), batch)
			if assertNoError(t, err) {
				results[p] = res
			}
		})
	}
	wg.Wait()
	require.Equal(t, uint64(len(batch)), e.EventCount())
	for i := range batch {
		accepted := 0
		for p := range posters {
			r := results[p][i]
			require.Equal(t, results[0][i].CID, r.CID, "id %s", r.ID)
			require.Equal(t, results[0][i].Seq, r.Seq)
			if r.Status == ingest.StatusAccepted {
				accepted++
			}
		}
		require.Equal(t, 1, accepted, "id %s accepted once", batch[i].ID)
	}
	for n := range 10 {
		require.Len(t, e.verifyParcel(s10(n)), 5)
	}
}

// appendOverlap fails the test if two Appends run at once: the pipeline
// plans a group while the previous one appends, but appends one at a time.
type appendOverlap struct {
	store.Store
	t       *testing.T
	running atomic.Int32
	calls   atomic.Int32
}

func (a *appendOverlap) Append(ctx context.Context, b *store.Batch) (*store.AppendResult, error) {
	if a.running.Add(1) != 1 {
		a.t.Error("two appends at once")
	}
	defer a.running.Add(-1)
	a.calls.Add(1)
	time.Sleep(time.Millisecond) // an fsync, so that plans overlap appends
	return a.Store.Append(ctx, b)
}

func TestPipelinedDisjointParcels(t *testing.T) {
	spy := &appendOverlap{t: t}
	e := newEnv(t, nil, func(s store.Store) store.Store { spy.Store = s; return spy })
	const posters, rounds = 8, 10
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			for r := range rounds {
				n := s10(1000 + p)
				_, err := e.G.Ingest(context.Background(), []ingest.InputEvent{event(fmt.Sprintf("%d-%d", p, r), n)})
				assertNoError(t, err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, uint64(posters*rounds), e.EventCount())
	for p := range posters {
		require.Len(t, e.verifyParcel(s10(1000+p)), rounds)
	}
	require.Less(t, spy.calls.Load(), int32(posters*rounds), "small concurrent requests share appends")
}
