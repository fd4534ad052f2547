package protocol

import (
	"crypto/sha256"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// CodecDagCBOR is the multicodec of every OpenTrack record.
const CodecDagCBOR = 0x71

// cidPrefix is the binary head of every record CID: CIDv1, dag-cbor,
// sha2-256, 32-byte digest. A CID is this prefix and the digest.
var cidPrefix = []byte{0x01, CodecDagCBOR, multihash.SHA2_256, 32}

// CIDOf returns the CID of a record's canonical bytes: v1, dag-cbor, sha2-256.
func CIDOf(b []byte) cid.Cid {
	sum := sha256.Sum256(b)
	raw := make([]byte, 0, len(cidPrefix)+len(sum))
	raw = append(append(raw, cidPrefix...), sum[:]...)
	c, err := cid.Cast(raw)
	if err != nil {
		panic("protocol: constant CID prefix rejected: " + err.Error())
	}
	return c
}

// CheckCID rejects a CID of a kind OpenTrack does not use, so that a
// record can never be linked under another hash or codec.
func CheckCID(c cid.Cid) error {
	p := c.Prefix()
	if p.Version != 1 || p.Codec != CodecDagCBOR || p.MhType != multihash.SHA2_256 || p.MhLength != 32 {
		return fmt.Errorf("%w: want CIDv1 dag-cbor sha2-256, got %v", ErrBadCID, p)
	}
	return nil
}

// Link is a CID in a record, encoded as tag 42 over 0x00 || binary CID.
type Link struct{ cid.Cid }

// LinkTo wraps c.
func LinkTo(c cid.Cid) Link { return Link{c} }

// IsZero reports whether the link is absent; omitempty relies on it.
func (l Link) IsZero() bool { return !l.Defined() }

// MarshalCBOR implements cbor.Marshaler.
func (l Link) MarshalCBOR() ([]byte, error) {
	if !l.Defined() {
		return []byte{0xf6}, nil // null; omitempty keeps it off the wire
	}
	raw := l.Bytes()
	n := len(raw) + 1
	out := make([]byte, 0, n+4)
	out = append(out, 0xd8, 42)
	switch {
	case n < 24:
		out = append(out, 0x40|byte(n))
	case n < 256:
		out = append(out, 0x58, byte(n))
	default:
		out = append(out, 0x59, byte(n>>8), byte(n))
	}
	out = append(out, 0x00)
	return append(out, raw...), nil
}

// UnmarshalCBOR implements cbor.Unmarshaler. checkStrict has already
// verified the tag and the multibase prefix for peer input.
func (l *Link) UnmarshalCBOR(b []byte) error {
	if len(b) < 3 || b[0] != 0xd8 || b[1] != 42 {
		return fmt.Errorf("%w: expected tag 42", ErrBadCID)
	}
	var body []byte
	if err := decMode.Unmarshal(b[2:], &body); err != nil {
		return fmt.Errorf("%w: %v", ErrBadCID, err)
	}
	if len(body) < 2 || body[0] != 0x00 {
		return fmt.Errorf("%w: missing 0x00 multibase prefix", ErrBadCID)
	}
	c, err := cid.Cast(body[1:])
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadCID, err)
	}
	if err := CheckCID(c); err != nil {
		return err
	}
	l.Cid = c
	return nil
}
