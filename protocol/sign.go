package protocol

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strings"

	"github.com/veraison/go-cose"
)

// KeyIDLen is the length of a key id: the first 16 bytes of SHA-256 over
// the raw 32-byte Ed25519 public key.
const KeyIDLen = 16

// Content types carried in the protected header (label 3). They separate
// the statement kinds, so a signature over one can never pass as another.
const (
	ContentHead     = "application/opentrack-head+cbor"
	ContentRegistry = "application/opentrack-registry+cbor"
	ContentGrant    = "application/opentrack-grant+cbor"
)

// MaxSigned bounds the size of a COSE_Sign1 by statement kind.
var maxSigned = map[string]int{
	ContentHead:     1024,
	ContentGrant:    MaxGrantSize,
	ContentRegistry: MaxRegistrySize,
}

// KeyID derives the key id of an Ed25519 public key.
func KeyID(pub ed25519.PublicKey) []byte {
	sum := sha256.Sum256(pub)
	return sum[:KeyIDLen]
}

// KeyIDString is the hex form of a key id, as JSON and logs show it.
func KeyIDString(pub ed25519.PublicKey) string { return hex.EncodeToString(KeyID(pub)) }

// Signer signs statements with one Ed25519 key.
type Signer struct {
	key ed25519.PrivateKey
	kid []byte
}

// NewSigner wraps an Ed25519 private key.
func NewSigner(key ed25519.PrivateKey) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: Ed25519 private key must be %d bytes", ErrInvalid, ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	return &Signer{key: key, kid: KeyID(pub)}, nil
}

// Public returns the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// KeyID returns the signer's key id.
func (s *Signer) KeyID() []byte { return s.kid }

// Sign wraps payload in a tagged COSE_Sign1 with protected header
// {1: -8 (EdDSA), 3: contentType, 4: kid} and an empty unprotected header.
// Ed25519 is deterministic, so the same input gives the same bytes.
//
// The message is laid out here, byte for byte as go-cose lays it out
// (TestSignMatchesGoCOSE), rather than by go-cose, which parses and
// verifies: its generic CBOR encoding of the header, the Sig_structure
// and the message cost a fifth of the signature itself, and a node signs
// a head for every parcel of every commit.
func (s *Signer) Sign(contentType string, payload []byte) ([]byte, error) {
	if payload == nil {
		return nil, fmt.Errorf("protocol: sign: %w", cose.ErrMissingPayload)
	}
	// go-cose's rule for a text content type.
	if contentType == "" || strings.TrimSpace(contentType) != contentType || strings.Count(contentType, "/") != 1 {
		return nil, fmt.Errorf("protocol: sign: content type %q is not of the form type/subtype", contentType)
	}
	protected := s.protectedHeader(contentType)
	// Sig_structure = ["Signature1", protected, external_aad: h'', payload]
	tbs := make([]byte, 0, 16+len(protected)+len(payload)+2*9)
	tbs = append(tbs, 0x84, 0x6a)
	tbs = append(tbs, "Signature1"...)
	tbs = appendBytes(tbs, protected)
	tbs = append(tbs, 0x40)
	tbs = appendBytes(tbs, payload)
	sig := ed25519.Sign(s.key, tbs)
	// COSE_Sign1_Tagged = 18([protected, unprotected: {}, payload, signature])
	out := make([]byte, 0, 4+len(protected)+len(payload)+len(sig)+3*9)
	out = append(out, 0xd2, 0x84)
	out = appendBytes(out, protected)
	out = append(out, 0xa0)
	out = appendBytes(out, payload)
	return appendBytes(out, sig), nil
}

// protectedHeader encodes {1: -8, 3: contentType, 4: kid} with its keys
// in order, as deterministic CBOR wants them.
func (s *Signer) protectedHeader(contentType string) []byte {
	b := make([]byte, 0, 8+len(contentType)+len(s.kid)+2*9)
	b = append(b, 0xa3, 0x01, 0x27, 0x03) // map(3), 1: -8, 3:
	b = appendCBORHead(b, 3, uint64(len(contentType)))
	b = append(b, contentType...)
	b = append(b, 0x04)
	return appendBytes(b, s.kid)
}

// appendBytes appends v as a CBOR byte string.
func appendBytes(b, v []byte) []byte {
	return append(appendCBORHead(b, 2, uint64(len(v))), v...)
}

// appendCBORHead appends the head of a CBOR item of major type major and
// argument n, in its shortest form.
func appendCBORHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= math.MaxUint8:
		return append(b, m|24, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), n)
}

// signStatement validates a statement, encodes it canonically and signs it.
func (s *Signer) signStatement(contentType string, v interface{ Validate() error }) ([]byte, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	payload, err := Marshal(v)
	if err != nil {
		return nil, err
	}
	return s.Sign(contentType, payload)
}

// Signed is a parsed COSE_Sign1 whose signature has not been checked yet.
type Signed struct {
	KeyID   []byte
	Payload []byte
	msg     cose.Sign1Message
}

// ParseSigned parses a tagged COSE_Sign1 and checks its headers: EdDSA,
// the expected content type, a key id of KeyIDLen bytes, an attached
// payload, and nothing in the unprotected header.
func ParseSigned(b []byte, contentType string) (*Signed, error) {
	if max := maxSigned[contentType]; len(b) > max {
		return nil, fmt.Errorf("%w: signed statement is %d bytes, limit %d", ErrTooLarge, len(b), max)
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(b); err != nil {
		return nil, fmt.Errorf("%w: COSE_Sign1: %v", ErrMalformed, err)
	}
	alg, err := msg.Headers.Protected.Algorithm()
	if err != nil || alg != cose.AlgorithmEdDSA {
		return nil, fmt.Errorf("%w: algorithm must be EdDSA (-8)", ErrBadSignature)
	}
	if ct, ok := msg.Headers.Protected[cose.HeaderLabelContentType].(string); !ok || ct != contentType {
		return nil, fmt.Errorf("%w: got %v, want %q", ErrWrongContent, msg.Headers.Protected[cose.HeaderLabelContentType], contentType)
	}
	kid, ok := msg.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
	if !ok || len(kid) != KeyIDLen {
		return nil, fmt.Errorf("%w: protected header needs a %d-byte key id", ErrBadSignature, KeyIDLen)
	}
	if len(msg.Headers.Protected) != 3 || len(msg.Headers.Unprotected) != 0 {
		return nil, fmt.Errorf("%w: unexpected COSE header parameters", ErrBadSignature)
	}
	if msg.Payload == nil {
		return nil, fmt.Errorf("%w: detached payload", ErrMalformed)
	}
	return &Signed{KeyID: kid, Payload: msg.Payload, msg: msg}, nil
}

// Verify checks the signature with pub, which must match the key id.
func (s *Signed) Verify(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key must be %d bytes", ErrUnknownKey, ed25519.PublicKeySize)
	}
	if !bytes.Equal(KeyID(pub), s.KeyID) {
		return fmt.Errorf("%w: key id %x is not the key offered (%x)", ErrUnknownKey, s.KeyID, KeyID(pub))
	}
	v, err := cose.NewVerifier(cose.AlgorithmEdDSA, pub)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnknownKey, err)
	}
	if err := s.msg.Verify(nil, v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return nil
}
