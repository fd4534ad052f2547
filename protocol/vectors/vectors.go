// Package vectors generates and checks spec/vectors/vectors.json, the
// byte-exact test vectors that let another implementation prove it speaks
// OpenTrack. Generation is deterministic: fixed seed keys, fixed times,
// and Ed25519, which signs deterministically.
package vectors

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Version is the format version of vectors.json.
const Version = 1

// File is the top level of vectors.json.
type File struct {
	Version int      `json:"version"`
	Note    string   `json:"note"`
	Vectors []Vector `json:"vectors"`
}

// Vector is one test case. Which fields are set depends on Type; see
// spec/opentrack.md, "Test vectors".
type Vector struct {
	Name         string   `json:"name"`
	Type         string   `json:"type"`
	Valid        bool     `json:"valid"`
	CBOR         string   `json:"cbor,omitempty"`           // hex: the record or message (for signed things, the payload)
	COSE         string   `json:"cose,omitempty"`           // hex: COSE_Sign1_Tagged
	PubKey       string   `json:"public_key,omitempty"`     // hex: raw Ed25519 public key to verify with
	CID          string   `json:"cid,omitempty"`            // CID of cbor, for valid records; for invalid events, the CID they claim
	Input        string   `json:"input,omitempty"`          // numbers: the raw input; frames: hex of the framed bytes
	Output       string   `json:"output,omitempty"`         // numbers: the normalized form
	Scheme       string   `json:"scheme,omitempty"`         // numbers: the scheme, in the CLI form
	Events       []string `json:"events,omitempty"`         // chains: hex of each event block, oldest first
	KeyNotBefore int64    `json:"key_not_before,omitempty"` // Unix ms window of public_key
	KeyNotAfter  int64    `json:"key_not_after,omitempty"`
	Max          int      `json:"max,omitempty"`    // frames: the cap to apply
	Time         int64    `json:"time,omitempty"`   // registries and grants: verify as of this Unix ms
	Holder       string   `json:"holder,omitempty"` // grants: the peer ID presenting the grant
	Error        string   `json:"error,omitempty"`  // expected error code, for invalid vectors
	Note         string   `json:"note"`
}

// Encode renders f as the canonical vectors.json bytes: two-space indent
// and a trailing newline, so regeneration is byte-identical.
func Encode(f *File) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode parses vectors.json.
func Decode(b []byte) (*File, error) {
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("vectors: %w", err)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("vectors: version %d, want %d", f.Version, Version)
	}
	return &f, nil
}

// Bytes decodes a hex field of a vector.
func Bytes(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(fmt.Sprintf("vectors: bad hex %q: %v", s, err))
	}
	return b
}

// Key returns the fixed test key for a seed byte: 32 copies of it.
func Key(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}
