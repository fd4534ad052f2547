package protocol

import (
	"bytes"
	"crypto/ed25519"
	"fmt"

	"github.com/ipfs/go-cid"
)

// Head is the statement a carrier signs: the newest event of a parcel.
// One signature covers the whole chain behind it.
type Head struct {
	Carrier string `cbor:"carrier"`
	Number  string `cbor:"number"`
	Seq     uint64 `cbor:"seq"`
	Head    Link   `cbor:"head"`
	Time    int64  `cbor:"time"` // Unix ms at signing
}

// Validate checks the head's fields.
func (h *Head) Validate() error {
	var p problems
	p.check(ValidCarrierCode(h.Carrier), "carrier")
	if n, err := NormalizeNumber(h.Number); err != nil || n != h.Number {
		p.add("number %q is not a normalized tracking number", h.Number)
	}
	if !h.Head.Defined() {
		p.add("head link missing")
	} else {
		p.check(CheckCID(h.Head.Cid), "head")
	}
	if h.Time < MinEventTime {
		p.add("time %d is not in Unix milliseconds", h.Time)
	}
	return p.err(ErrInvalid)
}

// SignHead encodes h canonically and signs it.
func SignHead(s *Signer, h *Head) ([]byte, error) { return s.signStatement(ContentHead, h) }

// SignedHead is a parsed signed head. Its signature is checked by Verify
// or VerifyWith, never implicitly.
type SignedHead struct {
	Head
	signed *Signed
}

// ParseSignedHead parses a COSE_Sign1 head from peer input; the payload
// must be a canonical Head.
func ParseSignedHead(b []byte) (*SignedHead, error) {
	s, err := ParseSigned(b, ContentHead)
	if err != nil {
		return nil, err
	}
	sh := &SignedHead{signed: s}
	if err := UnmarshalCanonical(s.Payload, &sh.Head); err != nil {
		return nil, fmt.Errorf("head payload: %w", err)
	}
	if err := sh.Head.Validate(); err != nil {
		return nil, err
	}
	return sh, nil
}

// KeyID is the id of the key that claims to have signed the head.
func (sh *SignedHead) KeyID() []byte { return sh.signed.KeyID }

// Verify checks the signature against one public key.
func (sh *SignedHead) Verify(pub ed25519.PublicKey) error { return sh.signed.Verify(pub) }

// KeyResolver finds the public key a carrier signed with at a given time.
// The registry implements it; it returns ErrUnknownKey, ErrKeyNotYetValid,
// ErrKeyExpired or ErrWrongCarrier when no key may be used.
type KeyResolver interface {
	CarrierKey(carrier string, kid []byte, at int64) (ed25519.PublicKey, error)
}

// VerifyWith checks the signature with the key keys binds to the head's
// carrier at the head's signing time.
func (sh *SignedHead) VerifyWith(keys KeyResolver) error {
	pub, err := keys.CarrierKey(sh.Carrier, sh.KeyID(), sh.Time)
	if err != nil {
		return err
	}
	return sh.Verify(pub)
}

// VerifyChain checks a parcel's full history against its head: events[0]
// is seq 0, every prev links to the CID of the event before it, seq rises
// by one, every event belongs to the head's carrier and number, and the
// last event's CID is the head. It returns the decoded events.
func VerifyChain(h *Head, events [][]byte) ([]*Event, error) {
	return VerifySuffix(h, Link{}, 0, events)
}

// VerifySuffix checks events that continue a chain whose head the client
// already holds (known, at knownSeq). With an undefined known link it is
// VerifyChain. Zero events verify only when known is already the head.
func VerifySuffix(h *Head, known Link, knownSeq uint64, events [][]byte) ([]*Event, error) {
	if len(events) == 0 {
		if known.Defined() && known.Equals(h.Head.Cid) && knownSeq == h.Seq {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: no events, but the head is %s at seq %d", ErrHeadMismatch, h.Head, h.Seq)
	}
	out, last, err := walkChain(h, known, knownSeq, events)
	if err != nil {
		return nil, err
	}
	if !last.Equals(h.Head.Cid) || out[len(out)-1].Seq != h.Seq {
		return nil, fmt.Errorf("%w: last event is %s at seq %d, head is %s at seq %d", ErrHeadMismatch, last, out[len(out)-1].Seq, h.Head, h.Seq)
	}
	return out, nil
}

// VerifyPage checks one page of a paged history (a result with more set):
// the events chain from known (or from seq 0) like VerifySuffix, but stop
// short of the head. The events are provisional until a later page ends
// at a verified head, which then covers them through the prev links.
func VerifyPage(h *Head, known Link, knownSeq uint64, events [][]byte) ([]*Event, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: empty page", ErrHeadMismatch)
	}
	out, _, err := walkChain(h, known, knownSeq, events)
	if err != nil {
		return nil, err
	}
	if last := out[len(out)-1].Seq; last >= h.Seq {
		return nil, fmt.Errorf("%w: page ends at seq %d, not below the head's seq %d", ErrHeadMismatch, last, h.Seq)
	}
	return out, nil
}

// walkChain decodes events and checks carrier, number, seq and prev links
// from known; it returns the events and the CID of the last one.
func walkChain(h *Head, known Link, knownSeq uint64, events [][]byte) ([]*Event, cid.Cid, error) {
	out := make([]*Event, len(events))
	prev, wantSeq := known, uint64(0)
	if known.Defined() {
		wantSeq = knownSeq + 1
	}
	var last cid.Cid
	for i, b := range events {
		e, err := DecodeEvent(b)
		if err != nil {
			return nil, cid.Undef, fmt.Errorf("event %d: %w", i, err)
		}
		if e.Carrier != h.Carrier || e.Number != h.Number {
			return nil, cid.Undef, fmt.Errorf("%w: event %d is %s/%s, head is %s/%s", ErrBrokenChain, i, e.Carrier, e.Number, h.Carrier, h.Number)
		}
		if e.Seq != wantSeq {
			return nil, cid.Undef, fmt.Errorf("%w: event %d has seq %d, want %d", ErrBrokenChain, i, e.Seq, wantSeq)
		}
		if !linkEqual(e.Prev, prev) {
			return nil, cid.Undef, fmt.Errorf("%w: event seq %d links prev %s, want %s", ErrBrokenChain, e.Seq, linkString(e.Prev), linkString(prev))
		}
		last = CIDOf(b)
		prev, wantSeq = Link{last}, wantSeq+1
		out[i] = e
	}
	return out, last, nil
}

func linkEqual(a, b Link) bool {
	if !a.Defined() || !b.Defined() {
		return a.Defined() == b.Defined()
	}
	return bytes.Equal(a.Bytes(), b.Bytes())
}

func linkString(l Link) string {
	if !l.Defined() {
		return "none"
	}
	return l.String()
}
