package store

// What every backend shares beyond the interface: batch validation, the
// audience order and feed ids, so that all backends agree on them.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// ErrInvalid means a Batch is malformed: a caller bug, not a race. Append
// checks it before looking at stored state and writes nothing.
var ErrInvalid = errors.New("store: invalid batch")

// MaxSeq is the highest event seq a backend must store. It bounds the key
// width embedded stores spend on seqs (four bytes); no parcel comes near it.
const MaxSeq = math.MaxUint32

// Validate checks what every backend relies on before it touches stored
// state: each update names a number and carries at least one event, and
// its events are consecutive from 0 (New) or from PrevSeq+1, each with a
// CID and bytes. It reports every problem at once.
func (b *Batch) Validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for i := range b.Updates {
		u := &b.Updates[i]
		if u.Number == "" {
			add("update %d: no number", i)
		}
		if len(u.Events) == 0 {
			add("update %d (%s): no events", i, u.Number)
			continue
		}
		want := u.PrevSeq + 1
		if u.New {
			want = 0
		}
		for j := range u.Events {
			e := &u.Events[j]
			if e.Seq != want+uint64(j) {
				add("update %d (%s): event %d has seq %d, want %d", i, u.Number, j, e.Seq, want+uint64(j))
				break // the rest are off by the same amount
			}
			if e.Seq > MaxSeq {
				add("update %d (%s): seq %d above %d", i, u.Number, e.Seq, uint64(MaxSeq))
			}
			if !e.CID.Defined() {
				add("update %d (%s): event %d has no CID", i, u.Number, j)
			}
			if len(e.Bytes) == 0 {
				add("update %d (%s): event %d has no bytes", i, u.Number, j)
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return nil
}

// MergeAudience returns the sorted set union of have and add, the one
// audience order every backend stores and returns.
func MergeAudience(have, add []string) []string {
	if len(add) == 0 {
		return have
	}
	out := slices.Concat(have, add)
	slices.Sort(out)
	return slices.Compact(out)
}

// NewID returns a fresh store id: 16 random hex characters. A backend
// calls it once, when it creates a store, and keeps the result.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
