// Package storetest is the conformance suite every store.Store backend
// must pass, and the event builders its tests and benchmarks share.
//
// A backend's test calls Run with a function that opens a new, empty
// store, and RunDurable with one that opens (or reopens) a store in a
// directory. Run is the suites of every role of store.Store in turn
// (RunEvents, RunFeed, RunAccess, RunStatsCloser); a test of one role
// can run its suite alone. The suites close every store they open.
package storetest

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
)

// Run runs the whole conformance suite, every role's in turn: RunEvents,
// RunFeed, RunAccess and RunStatsCloser. open must return a new, empty
// store each time it is called.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	RunEvents(t, open)
	RunFeed(t, open)
	RunAccess(t, open)
	RunStatsCloser(t, open)
}

// test is one named test of a suite.
type test struct {
	name string
	fn   func(t *testing.T, s store.Store)
}

// run runs each test as a subtest of t, on a new store from open that
// is closed when the subtest ends.
func run(t *testing.T, open func(t *testing.T) store.Store, tests []test) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, closeAtEnd(t, open(t)))
		})
	}
}

// closeAtEnd closes s when the test ends; a test may have closed it.
func closeAtEnd(t *testing.T, s store.Store) store.Store {
	t.Helper()
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// parcel is a test's view of one stored parcel.
type parcel struct {
	id    uint64
	chain Chain
}

// create appends a new parcel with n events and returns it.
func create(t *testing.T, s store.Store, number string, n int) parcel {
	t.Helper()
	u, c := NewChain(number).Update(t, 0, n)
	res := commit(t, s, u)
	return parcel{id: res.ParcelIDs[0], chain: c}
}

// grow appends n events to p and returns its new state.
func grow(t *testing.T, s store.Store, p parcel, n int) parcel {
	t.Helper()
	u, c := p.chain.Update(t, p.id, n)
	commit(t, s, u)
	return parcel{id: p.id, chain: c}
}

// commit appends one batch of updates and requires success.
func commit(t *testing.T, s store.Store, updates ...store.ParcelUpdate) *store.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), &store.Batch{Updates: updates})
	require.NoError(t, err)
	require.Len(t, res.ParcelIDs, len(updates))
	return res
}
