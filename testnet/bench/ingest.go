package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/protocol"
)

// A parcel's life as the benchmark scans it, one step per round.
var steps = []struct{ status, reason string }{
	{"picked_up", "collected"}, {"arrived_at_facility", "sorting_centre"}, {"departed_facility", "sorting_centre"},
	{"in_transit", "by_road"}, {"arrived_at_facility", "delivery_depot"}, {"out_for_delivery", "first_attempt"},
	{"delivery_attempted", "recipient_absent"}, {"delivered", "to_neighbour"},
}

// epoch is the first scan time; round r is r minutes later, so that no
// round of a long watch phase runs into the future.
var epoch = time.Now().UTC().Add(-30 * 24 * time.Hour).Truncate(time.Hour)

// eventID is the carrier's id of parcel i's event in round r.
func eventID(i, round int) string { return "bench-" + strconv.Itoa(i) + "-" + strconv.Itoa(round) }

// scan is one event to post: parcel i's event of round r.
type scan struct{ parcel, round int }

// body is one NDJSON request, about 330 bytes an event, as a carrier's
// scan feed posts them.
func body(scans []scan) []byte {
	var buf bytes.Buffer
	buf.Grow(len(scans) * 340)
	for _, sc := range scans {
		s := steps[sc.round%len(steps)]
		ts := epoch.Add(time.Duration(sc.round) * time.Minute).Format(time.RFC3339)
		fmt.Fprintf(&buf, `{"id":"%s","number":"%s","time":"%s","status":"%s","reason":"%s",`+
			`"location":{"country":"GB","locode":"GBLON","city":"London","facility":"LHR-%d"},`+
			`"description":"Parcel scanned at the London sorting centre","lang":"en"}`+"\n",
			eventID(sc.parcel, sc.round), number(sc.parcel), ts, s.status, s.reason, sc.parcel%40)
	}
	return buf.Bytes()
}

// poster posts NDJSON batches to a node's admin API.
type poster struct{ c *admin.Client }

func newPoster(adminURL, token string, conns int) *poster {
	return &poster{c: &admin.Client{URL: adminURL, Token: token, HTTP: &http.Client{
		Timeout:   2 * time.Minute,
		Transport: &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true},
	}}}
}

// errRejected is a batch the node did not accept whole.
var errRejected = errors.New("bench: ingest rejected events")

// post sends one batch of n events and requires every one accepted.
func (p *poster) post(ctx context.Context, b []byte, n int) (*admin.EventsResponse, error) {
	out, err := p.c.Post(ctx, ingest.TypeNDJSON, b, n)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if out.Accepted != n {
		for _, r := range out.Results {
			if r.Status != ingest.StatusAccepted {
				return nil, fmt.Errorf("%w: %d of %d accepted; %s %s: %s %s", errRejected, out.Accepted, n, r.ID, r.Number, r.Status, r.Error)
			}
		}
		return nil, fmt.Errorf("%w: %d of %d accepted", errRejected, out.Accepted, n)
	}
	return out, nil
}

// ingestResult is what the ingest phase measured.
type ingestResult struct {
	events   int
	elapsed  time.Duration
	batchLat []time.Duration
}

// ingestAll posts rounds x parcels events, round by round, each batch a
// run of distinct parcels with one event each, on posters connections.
// The bodies are built before the clock starts.
func ingestAll(ctx context.Context, o *Options, p *poster) (*ingestResult, error) {
	var bodies [][]byte
	var sizes []int
	for round := range o.EventsPerParcel {
		for lo := 0; lo < o.Parcels; lo += o.Batch {
			hi := min(lo+o.Batch, o.Parcels)
			scans := make([]scan, 0, hi-lo)
			for i := lo; i < hi; i++ {
				scans = append(scans, scan{i, round})
			}
			bodies = append(bodies, body(scans))
			sizes = append(sizes, hi-lo)
		}
	}
	total := int64(o.Parcels * o.EventsPerParcel)
	lat := make([]time.Duration, len(bodies))
	var next, done atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for range o.Posters {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= len(bodies) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if _, err := p.post(ctx, bodies[k], sizes[k]); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				lat[k] = time.Since(t0)
				if d := done.Add(int64(sizes[k])); o.Progress != nil {
					o.Progress("ingest", d, total)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return nil, firstErr
	}
	return &ingestResult{events: int(total), elapsed: elapsed, batchLat: lat}, nil
}

// readBack rebuilds, from a stopped node's store, the store batches that
// ingest committed: every feed entry in order, with its event blocks and
// the parcel's signed head, at most batch updates and never one parcel
// twice in a batch. The heads are each parcel's newest, which costs the
// store the same bytes as the head of that moment.
func readBack(ctx context.Context, st *pebble.Store, batch int) ([]*store.Batch, int, error) {
	heads := make(map[uint64][]byte)
	var out []*store.Batch
	cur := &store.Batch{}
	inCur := make(map[uint64]bool)
	events := 0
	for after := uint64(0); ; {
		feed, err := st.Feed(ctx, after, 10_000)
		if err != nil {
			return nil, 0, err
		}
		if len(feed) == 0 {
			break
		}
		for _, f := range feed {
			after = f.Pos
			head, ok := heads[f.ParcelID]
			if !ok {
				p, err := st.ParcelByID(ctx, f.ParcelID)
				if err != nil {
					return nil, 0, err
				}
				head, heads[f.ParcelID] = p.SignedHead, p.SignedHead
			}
			evs, err := st.Events(ctx, f.ParcelID, f.FromSeq, int(f.ToSeq-f.FromSeq+1))
			if err != nil {
				return nil, 0, err
			}
			u := store.ParcelUpdate{Number: f.Number, New: f.FromSeq == 0, ParcelID: f.ParcelID, SignedHead: head}
			if !u.New {
				u.PrevSeq = f.FromSeq - 1
			}
			for _, e := range evs {
				u.Events = append(u.Events, store.NewEvent{ID: "readback-" + strconv.FormatUint(f.ParcelID, 10) + "-" + strconv.FormatUint(e.Seq, 10),
					Seq: e.Seq, CID: protocol.CIDOf(e.Bytes), Bytes: e.Bytes})
			}
			events += len(evs)
			if len(cur.Updates) == batch || inCur[f.ParcelID] {
				out = append(out, cur)
				cur, inCur = &store.Batch{}, make(map[uint64]bool)
			}
			cur.Updates = append(cur.Updates, u)
			inCur[f.ParcelID] = true
		}
	}
	if len(cur.Updates) > 0 {
		out = append(out, cur)
	}
	return out, events, nil
}

// putAll appends batches to a fresh store in dir, each durably, and
// returns the time the appends took. Parcel ids are mapped from the
// node's store to the ones this store assigns.
func putAll(ctx context.Context, dir string, batches []*store.Batch, events int, progress func(string, int64, int64)) (time.Duration, error) {
	st, err := pebble.Open(dir, nil)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	ids := make(map[uint64]uint64)
	var took time.Duration
	done := 0
	for _, b := range batches {
		for i := range b.Updates {
			if u := &b.Updates[i]; !u.New {
				u.ParcelID = ids[u.ParcelID]
			}
		}
		t0 := time.Now()
		res, err := st.Append(ctx, b)
		took += time.Since(t0)
		if err != nil {
			return 0, fmt.Errorf("bench: store put: %w", err)
		}
		for i, u := range b.Updates {
			if u.New {
				ids[u.ParcelID] = res.ParcelIDs[i]
			}
			done += len(u.Events)
		}
		if progress != nil {
			progress("store put", int64(done), int64(events))
		}
	}
	return took, nil
}
