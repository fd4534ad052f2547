package protocol_test

import (
	"crypto/ed25519"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/protocol/vectors"
)

func benchEvent(b *testing.B) (*protocol.Event, []byte) {
	raw := vectors.Bytes(vectorNamed(b, "event_chained").CBOR)
	e, err := protocol.DecodeEvent(raw)
	if err != nil {
		b.Fatal(err)
	}
	return e, raw
}

// vectorNamed returns the generated test vector of that name.
func vectorNamed(b *testing.B, name string) *vectors.Vector {
	f, err := vectors.Generate()
	if err != nil {
		b.Fatal(err)
	}
	for i := range f.Vectors {
		if f.Vectors[i].Name == name {
			return &f.Vectors[i]
		}
	}
	b.Fatalf("no %s vector", name)
	return nil
}

func BenchmarkEventEncode(b *testing.B) {
	e, raw := benchEvent(b)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.Marshal(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEventDecode is the full peer-input path: strict scan, decode,
// re-encode and compare, and field validation.
func BenchmarkEventDecode(b *testing.B) {
	_, raw := benchEvent(b)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.DecodeEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCID(b *testing.B) {
	_, raw := benchEvent(b)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		_ = protocol.CIDOf(raw)
	}
}

func benchHead(b *testing.B) (*protocol.Signer, *protocol.Head, []byte, [][]byte) {
	v := vectorNamed(b, "chain_8_events")
	cose := vectors.Bytes(v.COSE)
	sh, err := protocol.ParseSignedHead(cose)
	if err != nil {
		b.Fatal(err)
	}
	events := make([][]byte, len(v.Events))
	for i, e := range v.Events {
		events[i] = vectors.Bytes(e)
	}
	s, err := protocol.NewSigner(vectors.Key(1))
	if err != nil {
		b.Fatal(err)
	}
	return s, &sh.Head, cose, events
}

func BenchmarkSignHead(b *testing.B) {
	s, h, _, _ := benchHead(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.SignHead(s, h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyHead(b *testing.B) {
	s, _, cose, _ := benchHead(b)
	b.ReportAllocs()
	for b.Loop() {
		sh, err := protocol.ParseSignedHead(cose)
		if err != nil {
			b.Fatal(err)
		}
		if err := sh.Verify(s.Public()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyChain8 is what a client pays per parcel: one signature
// and eight events.
func BenchmarkVerifyChain8(b *testing.B) {
	s, _, cose, events := benchHead(b)
	b.ReportAllocs()
	for b.Loop() {
		sh, err := protocol.ParseSignedHead(cose)
		if err != nil {
			b.Fatal(err)
		}
		if err := sh.Verify(s.Public()); err != nil {
			b.Fatal(err)
		}
		if _, err := protocol.VerifyChain(&sh.Head, events); err != nil {
			b.Fatal(err)
		}
	}
}

// Baselines, measured in the same run so the note can give ratios: what
// COSE adds over raw Ed25519, and what strict decoding adds over a plain
// fxamacker decode.

func BenchmarkBaselineEd25519Sign(b *testing.B) {
	_, h, _, _ := benchHead(b)
	msg, err := protocol.Marshal(h)
	if err != nil {
		b.Fatal(err)
	}
	key := vectors.Key(1)
	b.ReportAllocs()
	for b.Loop() {
		_ = ed25519.Sign(key, msg)
	}
}

func BenchmarkBaselineEd25519Verify(b *testing.B) {
	_, h, _, _ := benchHead(b)
	msg, err := protocol.Marshal(h)
	if err != nil {
		b.Fatal(err)
	}
	key := vectors.Key(1)
	sig := ed25519.Sign(key, msg)
	pub := key.Public().(ed25519.PublicKey)
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify")
		}
	}
}

func BenchmarkBaselinePlainDecode(b *testing.B) {
	_, raw := benchEvent(b)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		var e protocol.Event
		if err := cbor.Unmarshal(raw, &e); err != nil {
			b.Fatal(err)
		}
	}
}
