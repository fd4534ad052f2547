package store

// What every backend shares beyond the interface: batch validation, the
// audience order and feed ids, so that all backends agree on them.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/opentrack/opentrack/protocol"
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

// Numbers returns the distinct numbers of b's updates, in first-seen
// order.
func (b *Batch) Numbers() []string {
	seen := make(map[string]bool, len(b.Updates))
	numbers := make([]string, 0, len(b.Updates))
	for i := range b.Updates {
		if n := b.Updates[i].Number; !seen[n] {
			seen[n] = true
			numbers = append(numbers, n)
		}
	}
	return numbers
}

// Applied is one parcel as a batch leaves it: what Apply hands a backend
// to write.
type Applied struct {
	*Parcel // its state after the batch
	// New says that the batch started the parcel. Replaced is then the
	// number's previous newest parcel, nil if it had none.
	New      bool
	Replaced *Parcel
	// Newest says that the parcel is its number's newest after the batch.
	Newest bool
	// Details are the fields the batch's updates set, merged in order,
	// nil if none; a backend lays them over the stored ones.
	Details protocol.Details
}

// Apply replays b over heads, the newest stored parcel of each number b
// names (absent for none), checking every guard as each update sees the
// ones before it: a failed guard returns ErrConflict, naming the update.
// newID gives a new parcel its id. each is called for every update in
// order, with the parcel it goes to already updated. Apply updates the
// parcels of heads in place and returns every parcel the batch touches,
// in the order first touched. It is the batch semantics every backend
// shares; the backend holds whatever lock keeps heads current.
func (b *Batch) Apply(heads map[string]*Parcel, newID func() uint64, now int64, each func(i int, a *Applied) error) ([]*Applied, error) {
	byNumber := make(map[string]*Applied, len(b.Updates))
	var order []*Applied
	for i := range b.Updates {
		u := &b.Updates[i]
		cur := byNumber[u.Number]
		if cur == nil {
			if p := heads[u.Number]; p != nil {
				cur = &Applied{Parcel: p}
				order = append(order, cur)
			}
		}
		if u.New {
			if u.IfAbsent && cur != nil {
				return nil, fmt.Errorf("update %d (%s): number taken: %w", i, u.Number, ErrConflict)
			}
			a := &Applied{Parcel: &Parcel{ID: newID(), Number: u.Number, Genesis: u.Events[0].CID, Created: now}, New: true}
			if cur != nil {
				a.Replaced = cur.Parcel
			}
			cur = a
			order = append(order, cur)
		} else if cur == nil || cur.ID != u.ParcelID || cur.Seq != u.PrevSeq {
			return nil, fmt.Errorf("update %d (%s): %w", i, u.Number, ErrConflict)
		}
		byNumber[u.Number] = cur
		last := u.Events[len(u.Events)-1]
		cur.Seq, cur.Head, cur.SignedHead = last.Seq, last.CID, u.SignedHead
		cur.Audience = MergeAudience(cur.Audience, u.Audience)
		if len(u.Details) > 0 {
			if cur.Details == nil {
				cur.Details = protocol.Details{}
			}
			maps.Copy(cur.Details, u.Details)
		}
		if err := each(i, cur); err != nil {
			return nil, err
		}
	}
	for _, a := range order {
		a.Newest = byNumber[a.Number] == a
	}
	return order, nil
}
