package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// MaxDepth is the deepest nesting of arrays and maps a decoder accepts.
const MaxDepth = 16

// MaxItems bounds the element count of any one array or map. It is above
// MaxWatchNumbers so that a full watch subscription fits.
const MaxItems = 16384

// The one encode mode and one decode mode for everything on the wire.
// Building a mode is costly and the modes are safe for concurrent use.
var (
	encMode cbor.UserBufferEncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.EncOptions{
		Sort:          cbor.SortCanonical, // length-first: DAG-CBOR map key order
		ShortestFloat: cbor.ShortestFloatNone,
		NaNConvert:    cbor.NaNConvertReject,
		InfConvert:    cbor.InfConvertReject,
		IndefLength:   cbor.IndefLengthForbidden,
		NilContainers: cbor.NilContainerAsEmpty,
		TagsMd:        cbor.TagsAllowed,
		Time:          cbor.TimeUnixMicro, // never used: records carry integer ms
	}.UserBufferEncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyQuiet, // checkStrict rejects duplicates first
		MaxNestedLevels:   MaxDepth,
		MaxArrayElements:  MaxItems,
		MaxMapPairs:       MaxItems,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsAllowed, // only 42 survives checkStrict
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		DefaultMapType:    reflect.TypeOf(map[string]any(nil)),
		UTF8:              cbor.UTF8RejectInvalid,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		IntDec:            cbor.IntDecConvertSignedOrFail,
		NaN:               cbor.NaNDecodeForbidden,
		Inf:               cbor.InfDecodeForbidden,
		MapKeyByteString:  cbor.MapKeyByteStringForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes v as canonical DAG-CBOR.
func Marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return b, nil
}

// Unmarshal decodes strict DAG-CBOR from peer input into v. It rejects
// anything checkStrict rejects, trailing bytes and unknown struct fields,
// and then re-encodes v and compares bytes, so that exactly one encoding
// stands for a value: an optional field present with its empty value, a
// null for an absent field, or an array of small integers where a byte
// string belongs all fail as non_canonical. The re-encoding costs about a
// third of the decode; it is paid for every message, not only for records
// whose CID or signature depends on the bytes, because a uniform rule is
// simpler for every implementation to get right.
func Unmarshal(b []byte, v any) error {
	if err := checkStrict(b); err != nil {
		return err
	}
	if err := decMode.Unmarshal(b, v); err != nil {
		return mapDecodeError(err)
	}
	again, err := encMode.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !bytes.Equal(again, b) {
		return fmt.Errorf("%w: re-encoding differs (an empty optional field or a null is present, or a value has the wrong CBOR type)", ErrNonCanonical)
	}
	return nil
}

// UnmarshalCanonical is Unmarshal; the name marks call sites where a CID
// or a signature depends on the bytes.
func UnmarshalCanonical(b []byte, v any) error { return Unmarshal(b, v) }

func mapDecodeError(err error) error {
	var unknown *cbor.UnknownFieldError
	var typ *cbor.UnmarshalTypeError
	var depth *cbor.MaxNestedLevelError
	var arr *cbor.MaxArrayElementsError
	var mp *cbor.MaxMapPairsError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("%w: %v", ErrUnknownField, err)
	case errors.As(err, &depth):
		return fmt.Errorf("%w: %v", ErrTooDeep, err)
	case errors.As(err, &arr), errors.As(err, &mp):
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	case errors.As(err, &typ):
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var pe *Error
	if errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrMalformed, err)
}

// checkStrict walks b once and enforces the DAG-CBOR rules that a struct
// decoder cannot see: shortest-form heads, definite lengths, text map keys
// in length-first order without duplicates, no floats or undefined, tag 42
// only (around a byte string with the 0x00 multibase prefix), bounded depth
// and no trailing bytes. Each rule has its own error code.
func checkStrict(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty input", ErrMalformed)
	}
	s := scanner{b: b}
	if err := s.item(0); err != nil {
		return err
	}
	if s.off != len(b) {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b)-s.off)
	}
	return nil
}

type scanner struct {
	b   []byte
	off int
}

// head reads an item head and returns its major type and argument. It
// rejects non-shortest arguments and indefinite lengths.
func (s *scanner) head() (major byte, arg uint64, err error) {
	if s.off >= len(s.b) {
		return 0, 0, fmt.Errorf("%w: unexpected end of input at offset %d", ErrMalformed, s.off)
	}
	ib := s.b[s.off]
	s.off++
	major, info := ib>>5, ib&0x1f
	if major == 7 {
		return major, uint64(info), nil // simple values and floats: caller decides
	}
	var n int
	switch {
	case info < 24:
		return major, uint64(info), nil
	case info == 24:
		n = 1
	case info == 25:
		n = 2
	case info == 26:
		n = 4
	case info == 27:
		n = 8
	case info == 31:
		return 0, 0, fmt.Errorf("%w: at offset %d", ErrIndefinite, s.off-1)
	default:
		return 0, 0, fmt.Errorf("%w: reserved additional info %d at offset %d", ErrMalformed, info, s.off-1)
	}
	if len(s.b)-s.off < n {
		return 0, 0, fmt.Errorf("%w: truncated head at offset %d", ErrMalformed, s.off-1)
	}
	for _, c := range s.b[s.off : s.off+n] {
		arg = arg<<8 | uint64(c)
	}
	s.off += n
	var min uint64
	switch n {
	case 1:
		min = 24
	case 2:
		min = 1 << 8
	case 4:
		min = 1 << 16
	case 8:
		min = 1 << 32
	}
	if arg < min {
		return 0, 0, fmt.Errorf("%w: integer or length %d not in shortest form at offset %d", ErrNonCanonical, arg, s.off-1-n)
	}
	return major, arg, nil
}

func (s *scanner) need(n uint64) error {
	if n > uint64(len(s.b)-s.off) {
		return fmt.Errorf("%w: length %d runs past the end of input", ErrMalformed, n)
	}
	return nil
}

func (s *scanner) item(depth int) error {
	start := s.off
	major, arg, err := s.head()
	if err != nil {
		return err
	}
	switch major {
	case 0, 1:
		return nil
	case 2:
		if err := s.need(arg); err != nil {
			return err
		}
		s.off += int(arg)
	case 3:
		if err := s.need(arg); err != nil {
			return err
		}
		if !utf8.Valid(s.b[s.off : s.off+int(arg)]) {
			return fmt.Errorf("%w: invalid UTF-8 in text at offset %d", ErrMalformed, start)
		}
		s.off += int(arg)
	case 4:
		return s.array(depth, arg)
	case 5:
		return s.pairs(depth, arg)
	case 6:
		if arg != 42 {
			return fmt.Errorf("%w: tag %d at offset %d", ErrForeignTag, arg, start)
		}
		return s.link(start)
	case 7:
		return simple(arg, start)
	}
	return nil
}

// array scans the arg elements of an array at depth.
func (s *scanner) array(depth int, arg uint64) error {
	if depth+1 > MaxDepth {
		return fmt.Errorf("%w: more than %d levels", ErrTooDeep, MaxDepth)
	}
	if arg > MaxItems {
		return fmt.Errorf("%w: array of %d elements", ErrTooLarge, arg)
	}
	if err := s.need(arg); err != nil { // every element takes at least one byte
		return err
	}
	for i := uint64(0); i < arg; i++ {
		if err := s.item(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

// pairs scans the arg pairs of a map at depth: text keys, in canonical
// order, none twice.
func (s *scanner) pairs(depth int, arg uint64) error {
	if depth+1 > MaxDepth {
		return fmt.Errorf("%w: more than %d levels", ErrTooDeep, MaxDepth)
	}
	if arg > MaxItems {
		return fmt.Errorf("%w: map of %d pairs", ErrTooLarge, arg)
	}
	if err := s.need(2 * arg); err != nil {
		return err
	}
	var prev []byte
	for i := uint64(0); i < arg; i++ {
		key, err := s.textKey()
		if err != nil {
			return err
		}
		if prev != nil {
			switch c := compareKeys(prev, key); {
			case c == 0:
				return fmt.Errorf("%w: %q", ErrDuplicateKey, key)
			case c > 0:
				return fmt.Errorf("%w: map key %q sorts after %q (keys are ordered length-first, then bytewise)", ErrNonCanonical, prev, key)
			}
		}
		prev = key
		if err := s.item(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

// simple checks a major type 7 item: only false, true and null are
// DAG-CBOR here.
func simple(arg uint64, start int) error {
	switch arg {
	case 20, 21, 22: // false, true, null
		return nil
	case 23:
		return fmt.Errorf("%w: undefined at offset %d", ErrMalformed, start)
	case 25, 26, 27:
		return fmt.Errorf("%w: at offset %d", ErrFloat, start)
	case 31:
		return fmt.Errorf("%w: stray break at offset %d", ErrIndefinite, start)
	default:
		return fmt.Errorf("%w: simple value %d at offset %d", ErrMalformed, arg, start)
	}
}

// textKey reads a map key, which DAG-CBOR restricts to text strings.
func (s *scanner) textKey() ([]byte, error) {
	at := s.off
	major, n, err := s.head()
	if err != nil {
		return nil, err
	}
	if major != 3 {
		return nil, fmt.Errorf("%w: map key of major type %d at offset %d; keys must be text", ErrMalformed, major, at)
	}
	if err := s.need(n); err != nil {
		return nil, err
	}
	k := s.b[s.off : s.off+int(n)]
	if !utf8.Valid(k) {
		return nil, fmt.Errorf("%w: invalid UTF-8 in map key at offset %d", ErrMalformed, at)
	}
	s.off += int(n)
	return k, nil
}

// link checks the content of tag 42: a byte string holding 0x00 then a
// binary CIDv1 dag-cbor sha2-256.
func (s *scanner) link(start int) error {
	major, n, err := s.head()
	if err != nil {
		return err
	}
	if major != 2 {
		return fmt.Errorf("%w: tag 42 must wrap a byte string (offset %d)", ErrBadCID, start)
	}
	if err := s.need(n); err != nil {
		return err
	}
	if n < 2 || s.b[s.off] != 0x00 {
		return fmt.Errorf("%w: tag 42 content must start with the 0x00 multibase prefix (offset %d)", ErrBadCID, start)
	}
	// Every link, in ext too, is a record CID: one fixed prefix and a
	// 32-byte digest, so a link no IPLD tool can parse never gets in.
	body := s.b[s.off+1 : s.off+int(n)]
	if len(body) != len(cidPrefix)+32 || !bytes.Equal(body[:len(cidPrefix)], cidPrefix) {
		return fmt.Errorf("%w: link at offset %d is not a CIDv1 dag-cbor sha2-256", ErrBadCID, start)
	}
	s.off += int(n)
	return nil
}

// compareKeys orders map keys as DAG-CBOR does: shorter first, then bytewise.
func compareKeys(a, b []byte) int {
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return bytes.Compare(a, b)
}
