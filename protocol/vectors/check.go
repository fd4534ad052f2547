package vectors

import (
	"bytes"
	"crypto/ed25519"
	"fmt"

	"github.com/opentrack/opentrack/protocol"
)

// Check runs one vector through this implementation: a valid vector must
// decode, re-encode to the same bytes, hash to its CID and verify; an
// invalid one must fail with exactly its error code.
func Check(v *Vector) error {
	err := check(v)
	switch {
	case v.Valid && err != nil:
		return fmt.Errorf("%s: valid vector failed: %w", v.Name, err)
	case !v.Valid && err == nil:
		return fmt.Errorf("%s: invalid vector accepted (want %s)", v.Name, v.Error)
	case !v.Valid && protocol.CodeOf(err) != v.Error:
		return fmt.Errorf("%s: want error %s, got %s (%v)", v.Name, v.Error, protocol.CodeOf(err), err)
	}
	return nil
}

func check(v *Vector) error {
	b := Bytes(v.CBOR)
	switch v.Type {
	case "event":
		return checkEvent(v, b)
	case "head":
		var h protocol.Head
		return decodeRecord(v, b, &h, h.Validate)
	case "signed_head":
		return checkSignedHead(v, b)
	case "chain":
		return checkChain(v)
	case "registry":
		r, err := protocol.OpenRegistry(Bytes(v.COSE), []ed25519.PublicKey{pubKey(v)}, v.Time)
		if err != nil {
			return err
		}
		return samePayload(v, b, r)
	case "grant":
		g, err := protocol.OpenGrant(Bytes(v.COSE), windowKey(v), v.Holder, v.Time)
		if err != nil {
			return err
		}
		return samePayload(v, b, g)
	case "track_request":
		var m protocol.TrackRequest
		return decodeMessage(v, b, &m, m.Validate)
	case "track_response":
		var m protocol.TrackResponse
		return decodeMessage(v, b, &m, func() error { return m.Validate(len(m.Results)) })
	case "watch_request":
		var m protocol.WatchRequest
		return decodeMessage(v, b, &m, m.Validate)
	case "watch_update":
		var m protocol.WatchMessage
		return decodeMessage(v, b, &m, m.Validate)
	case "info":
		var m protocol.Info
		return decodeMessage(v, b, &m, m.Validate)
	case "number":
		return checkNumber(v)
	case "frame":
		body, rest, err := protocol.ReadFrame(Bytes(v.Input), v.Max)
		if err != nil {
			return err
		}
		if len(rest) != 0 || !bytes.Equal(body, b) {
			return fmt.Errorf("frame body differs from cbor")
		}
		return nil
	}
	return fmt.Errorf("unknown vector type %q", v.Type)
}

func checkEvent(v *Vector, b []byte) error {
	if _, err := protocol.DecodeEvent(b); err != nil {
		return err
	}
	if got := protocol.CIDOf(b).String(); v.CID != "" && got != v.CID {
		return fmt.Errorf("%w: bytes hash to %s, expected %s", protocol.ErrCIDMismatch, got, v.CID)
	}
	return nil
}

// decodeRecord decodes b canonically, validates it and checks its CID.
func decodeRecord(v *Vector, b []byte, into any, validate func() error) error {
	if err := protocol.UnmarshalCanonical(b, into); err != nil {
		return err
	}
	if err := validate(); err != nil {
		return err
	}
	if v.Valid && protocol.CIDOf(b).String() != v.CID {
		return fmt.Errorf("%w: CID %s, vector says %s", protocol.ErrCIDMismatch, protocol.CIDOf(b), v.CID)
	}
	return nil
}

// decodeMessage decodes a protocol message strictly, validates it, and
// for valid vectors checks that it re-encodes to the same bytes.
func decodeMessage(v *Vector, b []byte, into any, validate func() error) error {
	if err := protocol.Unmarshal(b, into); err != nil {
		return err
	}
	if err := validate(); err != nil {
		return err
	}
	again, err := protocol.Marshal(into)
	if err != nil {
		return err
	}
	if !bytes.Equal(again, b) {
		return fmt.Errorf("%w: message re-encodes differently", protocol.ErrNonCanonical)
	}
	return nil
}

func checkSignedHead(v *Vector, payload []byte) error {
	sh, err := protocol.ParseSignedHead(Bytes(v.COSE))
	if err != nil {
		return err
	}
	if err := samePayload(v, payload, &sh.Head); err != nil {
		return err
	}
	return sh.VerifyWith(windowKey(v))
}

func checkChain(v *Vector) error {
	sh, err := protocol.ParseSignedHead(Bytes(v.COSE))
	if err != nil {
		return err
	}
	if err := sh.VerifyWith(windowKey(v)); err != nil {
		return err
	}
	events := make([][]byte, len(v.Events))
	for i, e := range v.Events {
		events[i] = Bytes(e)
	}
	_, err = protocol.VerifyChain(&sh.Head, events)
	return err
}

// windowKey is a one-carrier registry holding the vector's key and window.
func windowKey(v *Vector) protocol.KeyResolver {
	nb, na := v.KeyNotBefore, v.KeyNotAfter
	if na == 0 {
		nb, na = 0, 1<<62
	}
	return &protocol.Registry{Carriers: []protocol.CarrierEntry{{
		Code: "SF", Keys: []protocol.CarrierKey{{Key: pubKey(v), NotBefore: nb, NotAfter: na}},
	}}}
}

// samePayload checks that the record re-encodes to the vector's cbor.
func samePayload(v *Vector, payload []byte, rec any) error {
	again, err := protocol.Marshal(rec)
	if err != nil {
		return err
	}
	if !bytes.Equal(again, payload) {
		return fmt.Errorf("%w: signed payload differs from cbor", protocol.ErrNonCanonical)
	}
	return nil
}

func checkNumber(v *Vector) error {
	n, err := protocol.NormalizeNumber(v.Input)
	if err != nil {
		return err
	}
	if n != v.Output {
		return fmt.Errorf("normalized to %q, want %q", n, v.Output)
	}
	s, err := protocol.ParseScheme(v.Scheme)
	if err != nil {
		return err
	}
	c, err := protocol.CompileScheme(s)
	if err != nil {
		return err
	}
	return c.Check(n)
}
