package protocol

import (
	"errors"
	"strings"
)

// Error is a protocol error with a stable machine-readable code: the code
// spec/vectors/vectors.json names in "error". Result codes on the wire are
// the separate set in limits.go; some spellings are shared.
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string { return ErrorPrefix + e.Msg }

// ErrorPrefix leads the text of every protocol error, the package's name
// as elsewhere in the module. It is not "opentrack: ": the command line
// puts that before the whole chain, and two of them read as a stutter.
const ErrorPrefix = "protocol: "

// Encoding errors: the bytes are not strict DAG-CBOR as the spec defines it.
var (
	ErrMalformed    = &Error{Code: "malformed", Msg: "malformed CBOR"}
	ErrNonCanonical = &Error{Code: "non_canonical", Msg: "non-canonical encoding"}
	ErrIndefinite   = &Error{Code: "indefinite_length", Msg: "indefinite-length item"}
	ErrDuplicateKey = &Error{Code: "duplicate_key", Msg: "duplicate map key"}
	ErrFloat        = &Error{Code: "float", Msg: "floating-point value"}
	ErrForeignTag   = &Error{Code: "foreign_tag", Msg: "tag other than 42"}
	ErrTooDeep      = &Error{Code: "too_deep", Msg: "nesting too deep"}
	ErrTooLarge     = &Error{Code: "too_large", Msg: "item too large"}
	ErrUnknownField = &Error{Code: "unknown_field", Msg: "unknown field"}
	ErrInvalid      = &Error{Code: "invalid_record", Msg: "invalid record"}
	ErrBadCID       = &Error{Code: "bad_cid", Msg: "invalid CID link"}
)

// Framing errors.
var (
	ErrFrameTooLarge = &Error{Code: "frame_too_large", Msg: "frame exceeds the protocol cap"}
	ErrBadFrame      = &Error{Code: "bad_frame", Msg: "bad frame length prefix"}
)

// Tracking-number errors.
var (
	ErrInvalidNumber = &Error{Code: "invalid_number", Msg: "invalid tracking number"}
	ErrCheckDigit    = &Error{Code: "bad_check_digit", Msg: "check digit mismatch"}
)

// Verification errors: the bytes decode, but the record cannot be trusted.
var (
	ErrCIDMismatch     = &Error{Code: "cid_mismatch", Msg: "content does not match its CID"}
	ErrBrokenChain     = &Error{Code: "broken_chain", Msg: "event chain broken"}
	ErrHeadMismatch    = &Error{Code: "head_mismatch", Msg: "events do not end at the signed head"}
	ErrBadSignature    = &Error{Code: "bad_signature", Msg: "signature does not verify"}
	ErrUnknownKey      = &Error{Code: "unknown_key", Msg: "signing key not bound to the carrier"}
	ErrKeyExpired      = &Error{Code: "key_expired", Msg: "signing key past its validity window"}
	ErrKeyNotYetValid  = &Error{Code: "key_not_yet_valid", Msg: "signing key not yet valid"}
	ErrWrongContent    = &Error{Code: "wrong_content_type", Msg: "COSE content type is not the one expected"}
	ErrExpired         = &Error{Code: "expired", Msg: "statement outside its validity window"}
	ErrWrongCarrier    = &Error{Code: "wrong_carrier", Msg: "record belongs to another carrier"}
	ErrStaleRegistry   = &Error{Code: "stale_registry", Msg: "registry sequence is not newer"}
	ErrUntrustedIssuer = &Error{Code: "untrusted_issuer", Msg: "statement not signed by a trust anchor"}
	ErrForbidden       = &Error{Code: CodeForbidden, Msg: "forbidden"}
)

// CodeOf returns the protocol code of err, or "" when err carries none.
func CodeOf(err error) string {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// Detail is err's text without the lead its protocol code already says
// ("protocol: invalid tracking number: "), for messages that print the
// code beside it. An error that is only its code gives the code's text.
func Detail(err error) string {
	s := err.Error()
	var pe *Error
	if !errors.As(err, &pe) {
		return s
	}
	if s == pe.Error() {
		return pe.Msg
	}
	return strings.TrimPrefix(s, pe.Error()+": ")
}
