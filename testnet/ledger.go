package testnet

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// ledger is the simulator's record of truth: every parcel booked, every
// event a carrier acknowledged, and what each platform received. The
// invariants are checked against it.
type ledger struct {
	mu      sync.Mutex
	parcels map[string]*parcelInfo
	numbers []string // booked, for random lookups
	acked   map[string]*ackInfo
	recv    []map[string]int // platform -> event CID -> times handed over
}

type parcelInfo struct {
	carrier  string
	platform int
	acked    int // events acknowledged
}

type ackInfo struct {
	number   string
	platform int
	at       time.Time
}

func newLedger(platforms int) *ledger {
	l := &ledger{parcels: map[string]*parcelInfo{}, acked: map[string]*ackInfo{}, recv: make([]map[string]int, platforms)}
	for i := range l.recv {
		l.recv[i] = map[string]int{}
	}
	return l
}

func (l *ledger) book(number, carrier string, platform int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.parcels[number] = &parcelInfo{carrier: carrier, platform: platform}
	l.numbers = append(l.numbers, number)
}

// ack records an acknowledged event. A duplicate acknowledgement (a batch
// posted again after a crash) is the same CID and changes nothing.
func (l *ledger) ack(cid, number string, platform int, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.acked[cid]; ok {
		return
	}
	l.acked[cid] = &ackInfo{number: number, platform: platform, at: at}
	l.parcels[number].acked++
}

// receive records that platform pi was handed event cid of number at
// now. It returns the lag from the event's acknowledgement (0 when the
// update beat the acknowledgement back), whether this is the first time,
// and whether pi booked the parcel. Whose the event is, is decided by the
// number, which was booked before any of its scans: an update that beats
// the carrier's HTTP reply is judged as surely as one that follows it.
func (l *ledger) receive(pi int, number, cid string, now time.Time) (lag time.Duration, first, mine bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.parcels[number]; !ok || p.platform != pi {
		return 0, false, false
	}
	if a, ok := l.acked[cid]; ok && a.number != number {
		return 0, false, false
	}
	l.recv[pi][cid]++
	first = l.recv[pi][cid] == 1
	a, ok := l.acked[cid]
	if !ok {
		// Not acknowledged yet: the watch was faster than the HTTP reply.
		return 0, first, true
	}
	return max(now.Sub(a.at), 0), first, true
}

// parcel returns a copy of what the ledger holds of number.
func (l *ledger) parcel(number string) parcelInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return *l.parcels[number]
}

// randomParcel picks a booked parcel that has at least one event.
func (l *ledger) randomParcel(r *rand.Rand) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for range 8 {
		if len(l.numbers) == 0 {
			return "", false
		}
		n := l.numbers[r.IntN(len(l.numbers))]
		if l.parcels[n].acked > 0 {
			return n, true
		}
	}
	return "", false
}

// missing counts acknowledged events that the booking platform, among
// live, has not received.
func (l *ledger) missing(live []int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for cid, a := range l.acked {
		if slices.Contains(live, a.platform) && l.recv[a.platform][cid] == 0 {
			n++
		}
	}
	return n
}

// backlog counts acknowledged events of carrier's parcels that their
// booking platform, among platforms, has not received yet.
func (l *ledger) backlog(carrier string, platforms []int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for cid, a := range l.acked {
		if slices.Contains(platforms, a.platform) && l.parcels[a.number].carrier == carrier && l.recv[a.platform][cid] == 0 {
			n++
		}
	}
	return n
}

func (l *ledger) missingSample(live []int, k int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for cid, a := range l.acked {
		if len(out) == k {
			break
		}
		if slices.Contains(live, a.platform) && l.recv[a.platform][cid] == 0 {
			out = append(out, fmt.Sprintf("platform%d never received event %s of %s (acknowledged %s)", a.platform+1, cid, a.number, a.at.Format(time.RFC3339Nano)))
		}
	}
	return out
}

// duplicates counts events handed over more than once to one platform.
func (l *ledger) duplicates() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, m := range l.recv {
		for _, c := range m {
			n += int64(max(c-1, 0))
		}
	}
	return n
}

// numbersOf returns up to k booked numbers of carrier with events.
func (l *ledger) numbersOf(carrier string, k int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, n := range l.numbers {
		if p := l.parcels[n]; p.carrier == carrier && p.acked > 0 {
			out = append(out, n)
			if len(out) == k {
				break
			}
		}
	}
	return out
}
