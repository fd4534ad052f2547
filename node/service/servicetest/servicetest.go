// Package servicetest is the harness that tests and benchmarks of the
// protocol services and the client share: real signed parcels, a carrier
// node on a loopback host over an in-memory store, and helpers to connect
// hosts. Everything is deterministic except the hosts' ports and keys.
package servicetest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	nodehost "github.com/opentrack/opentrack/node/host"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/protocol/numbertest"
)

// Carrier is the carrier code of every parcel built here.
const Carrier = "OT"

// Scheme matches Number: numbertest's.
var Scheme = numbertest.Scheme

// Number returns the i-th test tracking number, numbertest's.
func Number(i int) string { return numbertest.Number(i) }

// baseTime is 2026-01-01T00:00:00Z in Unix ms, the first scan time.
const baseTime int64 = 1767225600000

// Signer signs every head built here with a fixed Ed25519 key.
var Signer = sync.OnceValue(func() *protocol.Signer {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	s, err := protocol.NewSigner(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		panic("servicetest: " + err.Error())
	}
	return s
})

// Keys resolves Carrier to Signer's public key.
func Keys() protocol.KeyResolver {
	return protocol.PublicKeyResolver{Carrier: Carrier, Key: Signer().Public()}
}

// Parcel is a parcel as its carrier built it: event blocks, their CIDs and
// the signed head over the last one.
type Parcel struct {
	Number     string
	Events     [][]byte
	CIDs       []cid.Cid
	SignedHead []byte
}

// Head is the link to the parcel's newest event.
func (p *Parcel) Head() protocol.Link { return protocol.LinkTo(p.CIDs[len(p.CIDs)-1]) }

// NewParcel builds a parcel of n real events and signs its head. Each edit
// may change an event (to make it larger, say) before its prev link is set
// and it is encoded.
func NewParcel(tb testing.TB, number string, n int, edits ...func(*protocol.Event)) *Parcel {
	tb.Helper()
	p := &Parcel{Number: number}
	statuses := []protocol.Status{protocol.StatusPickedUp, protocol.StatusInTransit, protocol.StatusOutForDelivery}
	for seq := range n {
		e := &protocol.Event{
			Carrier:  Carrier,
			Number:   number,
			Seq:      uint64(seq),
			Time:     baseTime + int64(seq)*3_600_000,
			Status:   statuses[seq%len(statuses)],
			Location: protocol.Location{Country: "DE", Locode: "DEFRA", City: "Frankfurt am Main", Facility: "FRA-IMC"},
		}
		for _, edit := range edits {
			edit(e)
		}
		if seq > 0 {
			e.Prev = protocol.LinkTo(p.CIDs[seq-1])
		}
		b, c, err := protocol.EncodeEvent(e)
		if err != nil {
			tb.Fatalf("servicetest: event %s/%d: %v", number, seq, err)
		}
		p.Events, p.CIDs = append(p.Events, b), append(p.CIDs, c)
	}
	var err error
	p.SignedHead, err = protocol.SignHead(Signer(), &protocol.Head{
		Carrier: Carrier, Number: number, Seq: uint64(n - 1), Head: p.Head(), Time: baseTime + int64(n)*3_600_000,
	})
	if err != nil {
		tb.Fatalf("servicetest: sign head of %s: %v", number, err)
	}
	return p
}

// Load stores parcels in s as new parcels, a thousand per batch.
func Load(tb testing.TB, s store.Store, parcels []*Parcel) {
	tb.Helper()
	const batch = 1000
	for start := 0; start < len(parcels); start += batch {
		var b store.Batch
		for _, p := range parcels[start:min(start+batch, len(parcels))] {
			u := store.ParcelUpdate{Number: p.Number, New: true, SignedHead: p.SignedHead}
			for i, ev := range p.Events {
				u.Events = append(u.Events, store.NewEvent{Seq: uint64(i), CID: p.CIDs[i], Bytes: ev})
			}
			b.Updates = append(b.Updates, u)
		}
		if _, err := s.Append(context.Background(), &b); err != nil {
			tb.Fatalf("servicetest: load parcels: %v", err)
		}
	}
}

// NewHost starts a host on loopback TCP with a fresh identity and closes
// it at cleanup. opts may be nil; its listen addresses are replaced.
func NewHost(tb testing.TB, opts *nodehost.Options) host.Host {
	tb.Helper()
	return newHost(tb, opts, false)
}

// newHost is NewHost, listening on loopback QUIC as well when quic is
// set (ServerConfig.QUIC).
func newHost(tb testing.TB, opts *nodehost.Options, quic bool) host.Host {
	tb.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatalf("servicetest: key: %v", err)
	}
	var o nodehost.Options
	if opts != nil {
		o = *opts
	}
	o.ListenAddrs, o.DisableQUIC = []string{"/ip4/127.0.0.1/tcp/0"}, !quic
	if quic {
		o.ListenAddrs = append(o.ListenAddrs, "/ip4/127.0.0.1/udp/0/quic-v1")
	}
	h, err := nodehost.New(priv, &o)
	if err != nil {
		tb.Fatalf("servicetest: host: %v", err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

// Connect makes a dial b, so that streams from a to b need no discovery.
func Connect(tb testing.TB, a, b host.Host) {
	tb.Helper()
	if err := a.Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		tb.Fatalf("servicetest: connect: %v", err)
	}
}

// Server is a carrier node for tests: a loopback host serving track and
// info for Carrier over an in-memory store.
type Server struct {
	Host    host.Host
	Store   store.Store
	Track   *service.Track
	Info    *service.Info
	Parcels []*Parcel
}

// ServerConfig shapes a Server. The zero value serves no parcels with
// default options.
type ServerConfig struct {
	// Parcels and Events: how many parcels (numbered by Number) of how
	// many events each the store holds.
	Parcels, Events int
	// Options tune the services; nil for defaults.
	Options *service.Options
	// Track, when set, adjusts the track config before the service is
	// built (a policy, metrics).
	Track func(*service.TrackConfig)
	// Registry is handed to the info service.
	Registry service.RegistryProvider
	// Host tunes the server's host (its resource limits); nil for
	// defaults.
	Host *nodehost.Options
	// QUIC makes the server listen on loopback QUIC too. Default: TCP
	// only.
	QUIC bool
	// Store holds the parcels; nil for a fresh memstore. The caller
	// closes it.
	Store store.Store
}

// StartServer builds and registers a Server; it stops at cleanup.
func StartServer(tb testing.TB, cfg ServerConfig) *Server {
	tb.Helper()
	s := &Server{Host: newHost(tb, cfg.Host, cfg.QUIC), Store: cfg.Store}
	if s.Store == nil {
		s.Store = memstore.New()
	}
	for i := range cfg.Parcels {
		s.Parcels = append(s.Parcels, NewParcel(tb, Number(i), cfg.Events))
	}
	Load(tb, s.Store, s.Parcels)
	tc := service.TrackConfig{Carrier: Carrier, Schemes: []protocol.Scheme{Scheme}, Store: s.Store}
	if cfg.Track != nil {
		cfg.Track(&tc)
	}
	var err error
	if s.Track, err = service.NewTrack(tc, cfg.Options); err != nil {
		tb.Fatalf("servicetest: track service: %v", err)
	}
	if s.Info, err = service.NewInfo(service.InfoConfig{Carrier: Carrier, Keys: []ed25519.PublicKey{Signer().Public()}, Registry: cfg.Registry}, cfg.Options); err != nil {
		tb.Fatalf("servicetest: info service: %v", err)
	}
	s.Track.Register(s.Host)
	s.Info.Register(s.Host)
	// Cleanups run last-in first-out: the services stop, then the store
	// closes, then the host that NewHost registered.
	tb.Cleanup(func() { s.Store.Close() })
	tb.Cleanup(func() {
		s.Track.Unregister()
		s.Info.Unregister()
	})
	return s
}

// CheckLeaks fails t if goroutines that were not running when it was
// called are still running after t's other cleanups. Call it first in a
// test that starts hosts, so that its check runs last.
func CheckLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// RandomPeer is the ID of a peer no host has, for a grant's holder or an
// event's audience.
func RandomPeer(tb testing.TB) string {
	tb.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return id.String()
}

// OtherSigner signs with a fresh key, one no registry binds to Carrier:
// what a forger holds.
func OtherSigner(tb testing.TB) *protocol.Signer {
	tb.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := protocol.NewSigner(k)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
