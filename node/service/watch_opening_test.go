package service_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// budgetPolicy records the not_found charges and can say the not_found
// budget is spent.
type budgetPolicy struct {
	watchPolicy
	spent   bool
	mu      sync.Mutex
	charges []int
}

func (p *budgetPolicy) ObserveNotFound(_ peer.ID, _ ma.Multiaddr, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.charges = append(p.charges, n)
}

func (p *budgetPolicy) AdmitNotFound(peer.ID, ma.Multiaddr) (bool, time.Duration) {
	return !p.spent, 2 * time.Second
}

func (p *budgetPolicy) charged() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.charges)
}

// TestWatchStatus: a subscription of numbers the node has and has not
// opens with a status for each number it has no parcel for (spec 8.5),
// charged to the not_found budget per 100 numbers, and goes on for all of
// them: the stored parcel keeps its updates, and one created later is
// delivered from its first event. A spent budget tells nothing; a resume
// gets no statuses.
func TestWatchStatus(t *testing.T) {
	servicetest.CheckLeaks(t)
	known, unknown, foreign := servicetest.Number(0), servicetest.Number(1), "SF1234567890"
	many := make([]string, 250)
	for i := range many {
		many[i] = servicetest.Number(1000 + i)
	}
	manyStatuses := map[string]string{}
	for _, n := range many {
		manyStatuses[n] = protocol.CodeNotFound
	}
	cases := []struct {
		name     string
		numbers  []string
		spent    bool
		resume   bool
		statuses map[string]string
		charges  []int
	}{
		{name: "known, unknown and another carrier's", numbers: []string{known, unknown, foreign},
			statuses: map[string]string{unknown: protocol.CodeNotFound, foreign: protocol.CodeWrongCarrier}, charges: []int{1}},
		{name: "all known", numbers: []string{known}, statuses: map[string]string{}, charges: []int{0}},
		{name: "charged per 100", numbers: many, statuses: manyStatuses, charges: []int{100, 100, 50}},
		{name: "budget spent", numbers: []string{known, unknown, foreign}, spent: true,
			statuses: map[string]string{known: protocol.CodeRateLimited, unknown: protocol.CodeRateLimited, foreign: protocol.CodeRateLimited}},
		{name: "resume", numbers: []string{known, unknown, foreign}, resume: true, statuses: map[string]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol := &budgetPolicy{spent: tc.spent}
			ws := startWatch(t, watchConfig{parcels: 2, events: 4, policy: pol})
			ws.append(step{parcel: 0, events: 1}) // 1
			req := &protocol.WatchRequest{Numbers: tc.numbers}
			if tc.resume {
				req.Cursor = ws.cursor(1)
			}
			w := openWatch(t, servicetest.NewHost(t, nil), ws, req)
			statuses, hb := w.opening()
			require.Equal(t, tc.statuses, statuses, "the opening statuses")
			require.Equal(t, ws.cursor(1), hb.Cursor, "the first heartbeat carries the start cursor")
			require.Equal(t, tc.charges, pol.charged(), "not_found charged")
			if tc.spent {
				// The statuses were read in order; check one's retry_after.
				w2 := openWatch(t, servicetest.NewHost(t, nil), ws, &protocol.WatchRequest{Numbers: []string{unknown}})
				m := w2.next(10 * time.Second)
				require.Equal(t, protocol.WatchStatus, m.Type, "%+v", m)
				require.Equal(t, uint64(2000), m.RetryAfter)
			}
			// Counted once written: the count may trail what was read.
			want := float64(len(tc.statuses))
			if tc.spent {
				want++ // the second subscription's
			}
			require.Eventually(t, func() bool {
				return counter(t, ws.metrics.WatchUpdates.WithLabelValues(protocol.WatchStatus)) == want
			}, 10*time.Second, time.Millisecond, "statuses counted: want %v", want)

			// The subscription goes on: the stored parcel changes, and the
			// unknown number's parcel is created.
			if slices.Contains(tc.numbers, known) {
				ws.append(step{parcel: 0, events: 1}) // 2
				ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 10*time.Second), 0, 1, 2)
			}
			if slices.Contains(tc.numbers, unknown) {
				ws.append(step{parcel: 1, events: 2})
				ws.requireUpdate(w.nextOf(protocol.WatchUpdate, 10*time.Second), 1, 0, ws.tail())
			}
		})
	}
}

// TestWatchOpeningHeartbeat: the first heartbeat of a resumed
// subscription carries the request's cursor and comes before the replay
// it has pending (spec 8.5), every time.
func TestWatchOpeningHeartbeat(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 8, events: 2})
	ws.append(each(0, 8, 1)...) // 1-8
	ws.append(each(0, 8, 1)...) // 9-16
	numbers := numbersOf(ws, 0, 1, 2, 3, 4, 5, 6, 7)
	client := servicetest.NewHost(t, nil)
	for i := range 20 {
		from := uint64(i % 8)
		w := openWatch(t, client, ws, &protocol.WatchRequest{Numbers: numbers, Cursor: ws.cursor(from)})
		m := w.next(10 * time.Second)
		require.Equal(t, protocol.WatchHeartbeat, m.Type, "attempt %d: first message %+v", i, m)
		require.Equal(t, ws.cursor(from), m.Cursor, "attempt %d", i)
		require.Equal(t, protocol.WatchUpdate, w.next(10*time.Second).Type, "attempt %d: the replay follows", i)
		w.s.Reset()
	}
}
