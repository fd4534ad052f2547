package storetest

import (
	"crypto/ed25519"
	"fmt"
	"hash/fnv"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/protocol/numbertest"
)

// Carrier is the carrier code of every event the helpers build.
const Carrier = "OT"

// baseTime is 2026-01-01T00:00:00Z in Unix ms, the first scan time.
const baseTime int64 = 1767225600000

// Number returns the i-th test tracking number, numbertest's.
func Number(i int) string { return numbertest.Number(i) }

// Chain is the state of one parcel's event chain as a writer sees it: the
// number, the seq of the next event and the CID of the newest one. It is a
// value, so a test can keep the old state when an append fails.
type Chain struct {
	Number string
	Next   uint64  // seq of the next event; 0 means the parcel is new
	Head   cid.Cid // CID of event Next-1, undefined when Next is 0
}

// NewChain starts a chain for number.
func NewChain(number string) Chain { return Chain{Number: number} }

// Grow returns n real events that continue c (canonical encodings, real
// CIDs, prev links) and the chain they lead to.
func (c Chain) Grow(tb testing.TB, n int) ([]store.NewEvent, Chain) {
	tb.Helper()
	out := make([]store.NewEvent, n)
	for i := range out {
		e := event(c.Number, c.Next, c.Head)
		b, id, err := protocol.EncodeEvent(e)
		if err != nil {
			tb.Fatalf("storetest: encode event %s/%d: %v", c.Number, c.Next, err)
		}
		out[i] = store.NewEvent{ID: EventID(c.Number, c.Next), Seq: c.Next, CID: id, Bytes: b}
		c.Next++
		c.Head = id
	}
	return out, c
}

// Update returns the ParcelUpdate that adds n events to c: a New update
// when c is new, otherwise an append to parcelID guarded by c's head. It
// carries a real signed head and no audience or details.
func (c Chain) Update(tb testing.TB, parcelID uint64, n int) (store.ParcelUpdate, Chain) {
	tb.Helper()
	evs, next := c.Grow(tb, n)
	u := store.ParcelUpdate{
		Number:     c.Number,
		New:        c.Next == 0,
		Events:     evs,
		SignedHead: SignHead(tb, next),
	}
	if !u.New {
		u.ParcelID, u.PrevSeq = parcelID, c.Next-1
	}
	return u, next
}

// EventID is the carrier event id Grow gives an event.
func EventID(number string, seq uint64) string { return fmt.Sprintf("scan-%s-%d", number, seq) }

// signer signs test heads with a fixed key, so runs are reproducible.
var signer = sync.OnceValue(func() *protocol.Signer {
	s, err := protocol.NewSigner(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	if err != nil {
		panic("storetest: " + err.Error())
	}
	return s
})

// SignHead returns a real COSE_Sign1 head for the newest event of c.
func SignHead(tb testing.TB, c Chain) []byte {
	tb.Helper()
	b, err := protocol.SignHead(signer(), &protocol.Head{
		Carrier: Carrier, Number: c.Number, Seq: c.Next - 1, Head: protocol.LinkTo(c.Head),
		Time: baseTime + int64(c.Next)*3_600_000,
	})
	if err != nil {
		tb.Fatalf("storetest: sign head: %v", err)
	}
	return b
}

// site is a scan location. The table mixes name lengths so that event
// sizes vary the way real ones do (about 150 to 210 bytes with a prev link).
type site struct{ country, locode, city, facility string }

var sites = []site{
	{"CN", "CNSZX", "Shenzhen", "SZX-HUB-01"},
	{"CN", "CNSHA", "Shanghai", "SHA-SORT-03"},
	{"CN", "CNPEK", "Beijing", "PEK-GW-2"},
	{"CN", "CNCAN", "Guangzhou", "CAN-DC-17"},
	{"DE", "DEFRA", "Frankfurt am Main", "FRA-IMC"},
	{"DE", "DELEJ", "Leipzig", "LEJ-AIRHUB"},
	{"GB", "GBLHR", "London Heathrow", "LHR-WC-4"},
	{"GB", "GBMAN", "Manchester", "MAN-DEPOT-12"},
	{"US", "USJFK", "New York", "JFK-ISC"},
	{"US", "USLAX", "Los Angeles", "LAX-SORT-A"},
	{"US", "USORD", "Chicago", "ORD-NDC"},
	{"FR", "FRCDG", "Roissy-en-France", "CDG-PIC-2"},
	{"NL", "NLAMS", "Amsterdam", "AMS-HUB"},
	{"JP", "JPNRT", "Narita", "NRT-EXCH-1"},
	{"BR", "BRGRU", "Guarulhos", "GRU-CTCE"},
	{"IN", "INBOM", "Mumbai", "BOM-FPO-3"},
}

// lifecycle is the status path of a typical parcel; events past its end
// repeat the middle (a parcel bouncing between facilities).
var lifecycle = []struct {
	status protocol.Status
	reason string
}{
	{protocol.StatusInfoReceived, "label_created"},
	{protocol.StatusPickedUp, ""},
	{protocol.StatusArrivedAtFacility, "sorting_centre"},
	{protocol.StatusDepartedFacility, ""},
	{protocol.StatusInTransit, "by_air"},
	{protocol.StatusArrivedAtFacility, "delivery_depot"},
	{protocol.StatusOutForDelivery, ""},
	{protocol.StatusDelivered, ""},
}

// event builds event seq of number, deterministic in both so that a run
// can be repeated byte for byte.
func event(number string, seq uint64, prev cid.Cid) *protocol.Event {
	h := fnv.New32a()
	h.Write([]byte(number))
	r := h.Sum32()
	step := lifecycle[min(seq, uint64(len(lifecycle)-1))]
	if seq >= uint64(len(lifecycle)) {
		step = lifecycle[2+seq%4]
	}
	s := sites[(r+uint32(seq)*7)%uint32(len(sites))]
	e := &protocol.Event{
		Carrier:  Carrier,
		Number:   number,
		Seq:      seq,
		Time:     baseTime + int64(r%86_400_000) + int64(seq)*10_800_000,
		Status:   step.status,
		Reason:   step.reason,
		Location: protocol.Location{Country: s.country, Locode: s.locode, City: s.city, Facility: s.facility},
	}
	if prev.Defined() {
		e.Prev = protocol.LinkTo(prev)
	}
	return e
}
