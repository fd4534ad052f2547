package seal

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/opentrack/opentrack/protocol"
)

// A sealed record:
//
//	version (1) | expiry day (BE4) | wrap nonce (12) | wrapped data key (32+16) | nonce (12) | ciphertext (CBOR Details + 16)
//
// The wrap is bound to the version and day, the ciphertext to the
// parcel: moving a record to another parcel, or editing its day, makes it
// fail to open. Re-wrapping rewrites only the first 65 bytes.
const (
	recordVersion = 1
	headerLen     = 1 + 4
	nonceLen      = 12
	tagLen        = 16
	wrappedLen    = nonceLen + keyLen + tagLen
	prefixLen     = headerLen + wrappedLen
	minRecordLen  = prefixLen + nonceLen + tagLen
	// maxRecordLen bounds what open decrypts: every field at its longest,
	// with room for CBOR framing.
	maxRecordLen = minRecordLen + 8*(protocol.MaxDetailLen+32)
)

var (
	adWrap = []byte("opentrack sealed details v1: data key\x00")
	adData = []byte("opentrack sealed details v1: details\x00")
)

// binding is what the ciphertext is bound to: the parcel's number and
// genesis, its identity (spec section 4.3).
func binding(number string, genesis cid.Cid) []byte {
	b := append([]byte(nil), adData...)
	b = binary.AppendUvarint(b, uint64(len(number)))
	b = append(b, number...)
	return append(b, genesis.Bytes()...)
}

// seal encrypts d under a fresh data key wrapped with day's bucket key.
func seal(k *Keyring, day uint32, bind []byte, d protocol.Details) ([]byte, error) {
	plain, err := protocol.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("seal: encode details: %w", err)
	}
	var dk [keyLen]byte
	_, _ = rand.Read(dk[:])
	data, err := newAEAD(dk[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, prefixLen, prefixLen+nonceLen+len(plain)+tagLen)
	if err := wrapInto(k, day, out, &dk); err != nil {
		return nil, err
	}
	clear(dk[:])
	nonce := out[len(out) : len(out)+nonceLen]
	_, _ = rand.Read(nonce)
	out = out[:len(out)+nonceLen]
	return data.Seal(out, nonce, plain, bind), nil
}

// wrapInto writes the header and dk wrapped under day's key into
// rec[:prefixLen].
func wrapInto(k *Keyring, day uint32, rec []byte, dk *[keyLen]byte) error {
	w, err := k.bucket(day)
	if err != nil {
		return err
	}
	rec[0] = recordVersion
	binary.BigEndian.PutUint32(rec[1:headerLen], day)
	nonce := rec[headerLen : headerLen+nonceLen]
	_, _ = rand.Read(nonce)
	w.Seal(rec[headerLen+nonceLen:headerLen+nonceLen], nonce, dk[:], wrapAD(rec))
	return nil
}

func wrapAD(rec []byte) []byte {
	return append(append([]byte(nil), adWrap...), rec[:headerLen]...)
}

// recordDay is the expiry day a record names.
func recordDay(rec []byte) (uint32, error) {
	if len(rec) < minRecordLen || len(rec) > maxRecordLen || rec[0] != recordVersion {
		return 0, fmt.Errorf("%w: a version %d record is %d to %d bytes, this is %d", ErrCorrupt, recordVersion, minRecordLen, maxRecordLen, len(rec))
	}
	return binary.BigEndian.Uint32(rec[1:headerLen]), nil
}

// unwrap returns the data key of rec.
func unwrap(k *Keyring, rec []byte) (*[keyLen]byte, error) {
	day, err := recordDay(rec)
	if err != nil {
		return nil, err
	}
	w, err := k.bucket(day)
	if err != nil {
		return nil, err
	}
	var dk [keyLen]byte
	nonce := rec[headerLen : headerLen+nonceLen]
	if _, err := w.Open(dk[:0], nonce, rec[headerLen+nonceLen:prefixLen], wrapAD(rec)); err != nil {
		return nil, fmt.Errorf("%w: data key does not unwrap", ErrCorrupt)
	}
	return &dk, nil
}

// open decrypts rec, sealed for the parcel bind names.
func open(k *Keyring, bind, rec []byte) (protocol.Details, error) {
	dk, err := unwrap(k, rec)
	if err != nil {
		return nil, err
	}
	data, err := newAEAD(dk[:])
	clear(dk[:])
	if err != nil {
		return nil, err
	}
	nonce := rec[prefixLen : prefixLen+nonceLen]
	plain, err := data.Open(nil, nonce, rec[prefixLen+nonceLen:], bind)
	if err != nil {
		return nil, fmt.Errorf("%w: ciphertext does not open for this parcel", ErrCorrupt)
	}
	var d protocol.Details
	if err := protocol.Unmarshal(plain, &d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return d, nil
}

// rewrap returns rec with its data key wrapped under day's key instead;
// the ciphertext is unchanged.
func rewrap(k *Keyring, rec []byte, day uint32) ([]byte, error) {
	dk, err := unwrap(k, rec)
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), rec...)
	err = wrapInto(k, day, out, dk)
	clear(dk[:])
	return out, err
}
