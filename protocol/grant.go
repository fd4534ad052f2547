package protocol

import (
	"crypto/ed25519"
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
)

// MaxGrantSize bounds a signed grant.
const MaxGrantSize = 16 << 10

// Detail field names. A grant lists the ones it discloses.
const (
	FieldRecipientName    = "recipient_name"
	FieldRecipientPhone   = "recipient_phone"
	FieldRecipientAddress = "recipient_address"
	FieldCourierName      = "courier_name"
	FieldCourierPhone     = "courier_phone"
	FieldPOD              = "pod"
)

// DetailFields lists every detail field.
var DetailFields = []string{FieldPOD, FieldCourierName, FieldCourierPhone, FieldRecipientName, FieldRecipientPhone, FieldRecipientAddress}

// MaxDetailLen bounds one detail field value.
const MaxDetailLen = 512

// Details holds a parcel's personal data. It is never part of an event,
// a CID or a public response: only a grant holder sees the fields named
// in the grant. Keys are DetailFields.
type Details map[string]string

// Validate rejects unknown fields and oversized values.
func (d Details) Validate() error {
	var p problems
	for k, v := range d {
		if !slices.Contains(DetailFields, k) {
			p.add("unknown detail field %q", k)
		}
		if v == "" || len(v) > MaxDetailLen {
			p.add("detail %q must be 1 to %d bytes", k, MaxDetailLen)
		}
	}
	return p.err(ErrInvalid)
}

// Only returns the subset of d named by fields.
func (d Details) Only(fields []string) Details {
	out := Details{}
	for _, f := range fields {
		if v, ok := d[f]; ok {
			out[f] = v
		}
	}
	return out
}

// Grant is a capability the carrier signs: Holder may read Fields of the
// parcels in scope until Expires. The scope is Numbers, or Audience (the
// parcels whose ingest named the holder).
type Grant struct {
	ID       string   `cbor:"id"` // 32 hex chars, unique per carrier
	Carrier  string   `cbor:"carrier"`
	Holder   string   `cbor:"holder"` // peer ID
	Numbers  []string `cbor:"numbers,omitempty"`
	Audience bool     `cbor:"audience,omitempty"`
	Fields   []string `cbor:"fields"`
	Issued   int64    `cbor:"issued"`  // Unix ms
	Expires  int64    `cbor:"expires"` // Unix ms
}

// MaxGrantNumbers bounds a grant's parcel list.
const MaxGrantNumbers = 500

// Validate checks the grant's fields.
func (g *Grant) Validate() error {
	var p problems
	if len(g.ID) != 32 || !isLowerHex(g.ID) {
		p.add("id must be 32 lower-case hex characters")
	}
	p.check(ValidCarrierCode(g.Carrier), "carrier")
	if id, err := peer.Decode(g.Holder); err != nil || id.String() != g.Holder {
		p.add("holder %q is not a peer ID in base58btc form", g.Holder)
	}
	if g.Audience == (len(g.Numbers) > 0) {
		p.add("scope must be numbers or audience, not both or neither")
	}
	if len(g.Numbers) > MaxGrantNumbers {
		p.add("%d numbers, limit %d", len(g.Numbers), MaxGrantNumbers)
	}
	for i, n := range g.Numbers {
		if !isNormalizedNumber(n) {
			p.add("number %q is not a normalized tracking number", n)
		}
		if slices.Contains(g.Numbers[:i], n) {
			p.add("number %q listed twice", n)
		}
	}
	if len(g.Fields) == 0 {
		p.add("no fields")
	}
	for i, f := range g.Fields {
		if !slices.Contains(DetailFields, f) {
			p.add("unknown field %q", f)
		}
		if slices.Contains(g.Fields[:i], f) {
			p.add("field %q listed twice", f)
		}
	}
	if g.Expires <= g.Issued {
		p.add("expires must be after issued")
	}
	return p.err(ErrInvalid)
}

// SignGrant encodes g canonically and signs it with the carrier key.
func SignGrant(s *Signer, g *Grant) ([]byte, error) { return s.signStatement(ContentGrant, g) }

// OpenGrant parses a signed grant and checks the signature with the
// carrier's keys, the expiry against now, and that holder presents it.
func OpenGrant(b []byte, keys KeyResolver, holder string, now int64) (*Grant, error) {
	s, err := ParseSigned(b, ContentGrant)
	if err != nil {
		return nil, err
	}
	var g Grant
	if err := UnmarshalCanonical(s.Payload, &g); err != nil {
		return nil, fmt.Errorf("grant payload: %w", err)
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	pub, err := keys.CarrierKey(g.Carrier, s.KeyID, g.Issued)
	if err != nil {
		return nil, err
	}
	if err := s.Verify(pub); err != nil {
		return nil, err
	}
	if now < g.Issued || now > g.Expires {
		return nil, fmt.Errorf("%w: grant %s is valid from %s to %s, now is %s", ErrExpired, g.ID, FormatTime(g.Issued), FormatTime(g.Expires), FormatTime(now))
	}
	if hid, err := peer.Decode(holder); err != nil || hid.String() != g.Holder {
		return nil, fmt.Errorf("%w: grant %s was issued to %s, presented by %s", ErrForbidden, g.ID, g.Holder, holder)
	}
	return &g, nil
}

// PublicKeyResolver is a KeyResolver for one carrier key with no window,
// for callers that pinned a key out of band (before a registry exists).
type PublicKeyResolver struct {
	Carrier string
	Key     ed25519.PublicKey
}

// CarrierKey implements KeyResolver.
func (r PublicKeyResolver) CarrierKey(carrier string, kid []byte, _ int64) (ed25519.PublicKey, error) {
	if carrier != r.Carrier {
		return nil, fmt.Errorf("%w: pinned key is for %s, record is for %s", ErrWrongCarrier, r.Carrier, carrier)
	}
	return r.Key, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
