// Package protocol is the OpenTrack wire format: records (events, heads,
// registry, grants), protocol messages, the strict DAG-CBOR codec, CIDs,
// COSE_Sign1 signatures, framing, limits, the status vocabulary and
// tracking-number schemes. It does no I/O beyond reading frames from an
// io.Reader; the node and client build on it. spec/opentrack.md is the
// normative description; where this code and the spec disagree, the spec
// wins and the code has a bug.
//
// Peer input goes through Unmarshal (strict) or UnmarshalCanonical (strict
// and byte-exact), never through a bare cbor.Unmarshal.
package protocol
