package protocol_test

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/protocol/vectors"
)

// seeds adds every vector's bytes of the given field to f's corpus.
func seeds(f *testing.F, pick func(v *vectors.Vector) string) {
	b, err := os.ReadFile("../spec/vectors/vectors.json")
	if err != nil {
		f.Fatal(err)
	}
	file, err := vectors.Decode(b)
	if err != nil {
		f.Fatal(err)
	}
	for i := range file.Vectors {
		if s := pick(&file.Vectors[i]); s != "" {
			f.Add(vectors.Bytes(s))
		}
	}
}

func cborOf(v *vectors.Vector) string { return v.CBOR }
func coseOf(v *vectors.Vector) string { return v.COSE }

// wellformed is an independent opinion on CBOR well-formedness.
var wellformed, _ = cbor.DecOptions{MaxNestedLevels: 64}.DecMode()

// FuzzStrict checks the strict scanner against fxamacker's decoder: what
// the scanner accepts must be well-formed CBOR, and decoding it into any
// and re-encoding must give the same bytes (that is what canonical means).
func FuzzStrict(f *testing.F) {
	seeds(f, cborOf)
	f.Fuzz(func(t *testing.T, b []byte) {
		var v any
		if err := protocol.Unmarshal(b, &v); err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if err := wellformed.Wellformed(b); err != nil {
			t.Fatalf("strict accepted malformed CBOR %x: %v", b, err)
		}
		again, err := protocol.Marshal(v)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("strict accepted non-canonical %x (canonical %x)", b, again)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	seeds(f, cborOf)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := protocol.DecodeEvent(b)
		if err != nil {
			return
		}
		again, _, err := protocol.EncodeEvent(e)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded event does not re-encode to its bytes: %v", err)
		}
	})
}

// FuzzMessages decodes peer input as every message type.
func FuzzMessages(f *testing.F) {
	seeds(f, cborOf)
	f.Fuzz(func(t *testing.T, b []byte) {
		var tr protocol.TrackRequest
		if protocol.Unmarshal(b, &tr) == nil {
			_ = tr.Validate()
		}
		var ts protocol.TrackResponse
		if protocol.Unmarshal(b, &ts) == nil {
			_ = ts.Validate(len(ts.Results))
		}
		var wr protocol.WatchRequest
		if protocol.Unmarshal(b, &wr) == nil {
			_ = wr.Validate()
		}
		var wm protocol.WatchMessage
		if protocol.Unmarshal(b, &wm) == nil {
			_ = wm.Validate()
		}
		var in protocol.Info
		if protocol.Unmarshal(b, &in) == nil {
			_ = in.Validate()
		}
		var h protocol.Head
		_ = protocol.UnmarshalCanonical(b, &h)
	})
}

// FuzzSigned parses COSE input as each signed statement kind.
func FuzzSigned(f *testing.F) {
	seeds(f, coseOf)
	anchor := vectors.Key(3).Public().(ed25519.PublicKey)
	keys := protocol.PublicKeyResolver{Carrier: "SF", Key: vectors.Key(1).Public().(ed25519.PublicKey)}
	f.Fuzz(func(t *testing.T, b []byte) {
		if sh, err := protocol.ParseSignedHead(b); err == nil {
			_ = sh.VerifyWith(keys)
		}
		_, _ = protocol.OpenRegistry(b, []ed25519.PublicKey{anchor}, 1767229200000)
		_, _ = protocol.OpenGrant(b, keys, "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", 1767229200000)
	})
}

// FuzzFrames feeds arbitrary bytes to both frame readers; they must agree.
func FuzzFrames(f *testing.F) {
	seeds(f, func(v *vectors.Vector) string {
		if v.Type == "frame" {
			return v.Input
		}
		return ""
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		const max = 1024
		body, _, err := protocol.ReadFrame(b, max)
		r := protocol.NewFrameReader(bytes.NewReader(b), max)
		body2, err2 := r.Next()
		if (err == nil) != (err2 == nil) {
			t.Fatalf("readers disagree: %v vs %v", err, err2)
		}
		if err == nil && !bytes.Equal(body, body2) {
			t.Fatal("readers return different bodies")
		}
		if err == nil && len(body) > max {
			t.Fatal("frame above cap accepted")
		}
	})
}
