package pebble

import (
	"context"
	"sync"

	"github.com/opentrack/opentrack/node/store"
)

// Ingest reads the heads of a group's parcels to chain and sign its events,
// then appends; the append reads the same records again, for its guards
// and to rewrite them. recentHeads keeps what Parcels read so that the
// append can skip its reads (a third of its time when every event
// continues a parcel), as long as the records are provably unchanged.
//
// The proof uses the store's single writer. Every append that commits
// takes the next commit generation, and the last recentCommits of them
// remember which numbers they wrote. A record read when the generation was
// g is still the newest one if none of the commits after g wrote its
// number; when they are too many to know, the append reads it again.

// recentCommits is how many commits recentHeads remembers, so how many
// appends may land between a Parcels call and the append that uses it.
// The ingest pipeline has one in between.
const recentCommits = 8

// maxRecentHeads is about how many records recentHeads keeps, at least
// this many and less than twice; the oldest go first. One ingest group
// reads at most ingest.DefaultMaxBatchEvents.
const maxRecentHeads = 1 << 13

type recentHeads struct {
	mu      sync.Mutex
	gen     uint64 // commits so far
	heads   map[string]recentHead
	fifo    []string // numbers in the order they were put, for eviction
	commits [recentCommits]recentCommit
}

// recentHead is a record read, nil when the number had no parcel, and the
// commit generation before the read began.
type recentHead struct {
	p   *store.Parcel
	gen uint64
}

// recentCommit is the numbers commit gen wrote.
type recentCommit struct {
	gen     uint64
	numbers map[string]bool
}

// generation returns the commits so far; a read that starts after this
// call sees at least those.
func (r *recentHeads) generation() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

// put keeps records read at generation gen, by number (nil for none).
func (r *recentHeads) put(numbers []string, records []*store.Parcel, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.heads == nil {
		r.heads = make(map[string]recentHead)
	}
	for i, n := range numbers {
		var p *store.Parcel
		if records[i] != nil {
			cp := *records[i] // the caller's copy is theirs to change
			p = &cp
		}
		r.heads[n] = recentHead{p, gen}
		r.fifo = append(r.fifo, n)
	}
	// A number may be in fifo more than once, and evicting an old place
	// may drop its newer record: that only costs the append a read.
	if len(r.fifo) >= 2*maxRecentHeads {
		over := len(r.fifo) - maxRecentHeads
		for _, n := range r.fifo[:over] {
			delete(r.heads, n)
		}
		r.fifo = append(r.fifo[:0], r.fifo[over:]...)
	}
}

// take removes the kept records of numbers and returns those that are
// provably the newest, by number, nil for a number known to have no
// parcel; missing lists the numbers it cannot vouch for. The caller holds
// writeMu, so no commit can land meanwhile. The records are copies, for
// the append to change.
func (r *recentHeads) take(numbers []string) (known map[string]*store.Parcel, missing []string) {
	known = make(map[string]*store.Parcel, len(numbers))
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range numbers {
		h, ok := r.heads[n]
		delete(r.heads, n)
		if !ok || !r.unchangedSince(n, h.gen) {
			missing = append(missing, n)
			continue
		}
		if h.p == nil {
			known[n] = nil
			continue
		}
		cp := *h.p
		known[n] = &cp
	}
	return known, missing
}

// unchangedSince reports whether no commit after generation gen wrote
// number, false when that is too long ago to know.
func (r *recentHeads) unchangedSince(number string, gen uint64) bool {
	if r.gen-gen > recentCommits {
		return false
	}
	for g := gen + 1; g <= r.gen; g++ {
		if c := &r.commits[g%recentCommits]; c.gen != g || c.numbers[number] {
			return false
		}
	}
	return true
}

// committed records that the next commit wrote numbers. The caller holds
// writeMu and calls it after every commit attempt, failed ones too, since
// a failed commit may still have written.
func (r *recentHeads) committed(numbers []string) {
	set := make(map[string]bool, len(numbers))
	for _, n := range numbers {
		set[n] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	r.commits[r.gen%recentCommits] = recentCommit{gen: r.gen, numbers: set}
}

// Parcels returns the newest parcel of each number, nil where there is
// none, read in one pass. It is Parcel for many numbers at once, for
// ingest: the store keeps the records for a while, so that an Append to
// these parcels, the usual next step, need not read them again.
func (s *Store) Parcels(_ context.Context, numbers []string) ([]*store.Parcel, error) {
	if err := s.enter("parcels"); err != nil {
		return nil, err
	}
	defer s.leave()
	gen := s.recent.generation()
	byNumber, err := s.newestMany(numbers)
	if err != nil {
		return nil, err
	}
	out := make([]*store.Parcel, len(numbers))
	for i, n := range numbers {
		out[i] = byNumber[n]
	}
	s.recent.put(numbers, out, gen)
	return out, nil
}
