package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
)

// MaxRegistrySize bounds the encoded registry and its signature.
const MaxRegistrySize = 1 << 20

// Registry is the signed list of who is who: carriers, their signing keys,
// their nodes and their number schemes. It holds no tracking data.
type Registry struct {
	Seq       uint64         `cbor:"seq"`        // rises with every signed edition
	Issued    int64          `cbor:"issued"`     // Unix ms
	NotBefore int64          `cbor:"not_before"` // Unix ms
	NotAfter  int64          `cbor:"not_after"`  // Unix ms
	Carriers  []CarrierEntry `cbor:"carriers"`   // sorted by code, unique
}

// CarrierEntry describes one carrier.
type CarrierEntry struct {
	Code    string       `cbor:"code"`
	Name    string       `cbor:"name"`
	Country string       `cbor:"country"` // ISO 3166-1 alpha-2
	Keys    []CarrierKey `cbor:"keys"`
	Nodes   []NodeEntry  `cbor:"nodes"`
	Schemes []Scheme     `cbor:"schemes"`
}

// CarrierKey is a signing key and the window in which it may sign. Two
// windows may overlap; that is how keys rotate.
type CarrierKey struct {
	Key       []byte `cbor:"key"`        // raw Ed25519 public key, 32 bytes
	NotBefore int64  `cbor:"not_before"` // Unix ms
	NotAfter  int64  `cbor:"not_after"`  // Unix ms
}

// NodeEntry is a node that serves a carrier.
type NodeEntry struct {
	Peer  string   `cbor:"peer"`  // libp2p peer ID in base58btc form
	Addrs []string `cbor:"addrs"` // multiaddrs without the /p2p part
}

// Validate checks the registry and reports every problem at once.
func (r *Registry) Validate() error {
	var p problems
	if r.Seq == 0 {
		p.add("seq starts at 1 (0 means no registry)")
	}
	if r.NotAfter <= r.NotBefore {
		p.add("not_after must be after not_before")
	}
	// A key bound to two carriers would verify records of both.
	owner := map[string]string{}
	for _, c := range r.Carriers {
		for _, k := range c.Keys {
			id := string(KeyID(k.Key))
			if o, dup := owner[id]; dup {
				p.add("key %x is listed twice (%s and %s)", KeyID(k.Key), o, c.Code)
			}
			owner[id] = c.Code
		}
	}
	for i := range r.Carriers {
		c := &r.Carriers[i]
		if i > 0 && r.Carriers[i-1].Code >= c.Code {
			p.add("carriers must be sorted by code without duplicates (%q after %q)", c.Code, r.Carriers[i-1].Code)
		}
		p.check(c.validate(), "carrier "+c.Code)
	}
	return p.err(ErrInvalid)
}

func (c *CarrierEntry) validate() error {
	var p problems
	p.check(ValidCarrierCode(c.Code), "code")
	if c.Name == "" || len(c.Name) > 128 {
		p.add("name must be 1 to 128 bytes")
	}
	if !isUpperAlpha(c.Country, 2) {
		p.add("country %q is not an ISO 3166-1 alpha-2 code", c.Country)
	}
	if len(c.Keys) == 0 {
		p.add("no signing key")
	}
	for _, k := range c.Keys {
		if len(k.Key) != ed25519.PublicKeySize {
			p.add("key of %d bytes, want %d", len(k.Key), ed25519.PublicKeySize)
		}
		if k.NotAfter <= k.NotBefore {
			p.add("key %x: not_after must be after not_before", KeyID(k.Key))
		}
	}
	peers := map[string]bool{}
	for _, n := range c.Nodes {
		if id, err := peer.Decode(n.Peer); err != nil {
			p.add("node peer %q: %v", n.Peer, err)
		} else if id.String() != n.Peer {
			p.add("node peer %q must be in its base58btc form %s", n.Peer, id)
		}
		if peers[n.Peer] {
			p.add("node peer %s listed twice", n.Peer)
		}
		peers[n.Peer] = true
		for _, a := range n.Addrs {
			if err := checkNodeAddr(a); err != nil {
				p.add("node address %q: %v", a, err)
			}
		}
	}
	for _, s := range c.Schemes {
		p.check(s.Validate(), "scheme "+s.String())
	}
	return p.err(nil)
}

// Carrier returns the entry for code, or nil.
func (r *Registry) Carrier(code string) *CarrierEntry {
	i := sort.Search(len(r.Carriers), func(i int) bool { return r.Carriers[i].Code >= code })
	if i < len(r.Carriers) && r.Carriers[i].Code == code {
		return &r.Carriers[i]
	}
	return nil
}

// CarrierKey implements KeyResolver: the key must belong to carrier and
// its window must contain at.
func (r *Registry) CarrierKey(carrier string, kid []byte, at int64) (ed25519.PublicKey, error) {
	c := r.Carrier(carrier)
	if c == nil {
		return nil, fmt.Errorf("%w: carrier %q is not in registry seq %d", ErrUnknownKey, carrier, r.Seq)
	}
	for _, k := range c.Keys {
		if !bytes.Equal(KeyID(k.Key), kid) {
			continue
		}
		// Before and after get their own codes: a key used too early is
		// most often a registry entry made after the carrier started
		// signing, which the authority fixes with --not-before.
		switch {
		case at < k.NotBefore:
			return nil, fmt.Errorf("%w: key %x of %s is valid from %s to %s, used at %s", ErrKeyNotYetValid, kid, carrier, FormatTime(k.NotBefore), FormatTime(k.NotAfter), FormatTime(at))
		case at > k.NotAfter:
			return nil, fmt.Errorf("%w: key %x of %s is valid from %s to %s, used at %s", ErrKeyExpired, kid, carrier, FormatTime(k.NotBefore), FormatTime(k.NotAfter), FormatTime(at))
		}
		return ed25519.PublicKey(k.Key), nil
	}
	for _, other := range r.Carriers {
		for _, k := range other.Keys {
			if bytes.Equal(KeyID(k.Key), kid) {
				return nil, fmt.Errorf("%w: key %x belongs to %s, not %s", ErrWrongCarrier, kid, other.Code, carrier)
			}
		}
	}
	return nil, fmt.Errorf("%w: key %x is not registered for %s", ErrUnknownKey, kid, carrier)
}

// SignRegistry encodes r canonically and signs it with the authority key.
func SignRegistry(s *Signer, r *Registry) ([]byte, error) { return s.signStatement(ContentRegistry, r) }

// OpenRegistry parses a signed registry and accepts it only if one of the
// anchors signed it and now (Unix ms) lies in its validity window.
func OpenRegistry(b []byte, anchors []ed25519.PublicKey, now int64) (*Registry, error) {
	r, err := VerifyRegistry(b, anchors)
	if err != nil {
		return nil, err
	}
	if now < r.NotBefore || now > r.NotAfter {
		return nil, fmt.Errorf("%w: registry seq %d is valid from %s to %s, now is %s", ErrExpired, r.Seq, FormatTime(r.NotBefore), FormatTime(r.NotAfter), FormatTime(now))
	}
	return r, nil
}

// VerifyRegistry is OpenRegistry without the validity window: for a node
// reloading the edition it accepted earlier, which it may keep using after
// it expires (spec §11.3) but must never accept anew from a peer.
func VerifyRegistry(b []byte, anchors []ed25519.PublicKey) (*Registry, error) {
	s, err := ParseSigned(b, ContentRegistry)
	if err != nil {
		return nil, err
	}
	var anchor ed25519.PublicKey
	for _, a := range anchors {
		if bytes.Equal(KeyID(a), s.KeyID) {
			anchor = a
			break
		}
	}
	if anchor == nil {
		return nil, fmt.Errorf("%w: the registry's key is %x", ErrUntrustedIssuer, s.KeyID)
	}
	if err := s.Verify(anchor); err != nil {
		return nil, err
	}
	var r Registry
	if err := UnmarshalCanonical(s.Payload, &r); err != nil {
		return nil, fmt.Errorf("registry payload: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// MaxNodeAddrLen bounds one NodeEntry address.
const MaxNodeAddrLen = 256

// checkNodeAddr checks a NodeEntry address by its text alone (spec 4.5):
// "/"-separated non-empty components, no spaces or control characters,
// no /p2p/ or /ipfs/. Whether its
// protocols are known is the dialler's business, so that a registry is
// valid or not the same way for every implementation, whatever its
// multiaddr table; a dialler skips an address it cannot parse.
func checkNodeAddr(a string) error {
	if a == "" || len(a) > MaxNodeAddrLen {
		return fmt.Errorf("must be 1 to %d bytes", MaxNodeAddrLen)
	}
	if a[0] != '/' {
		return errors.New("must start with /")
	}
	for i := 0; i < len(a); i++ {
		if a[i] <= ' ' || a[i] == 0x7f {
			return errors.New("must not hold spaces or control characters")
		}
	}
	for _, c := range strings.Split(a[1:], "/") {
		switch c {
		case "":
			return errors.New("has an empty component")
		case "p2p", "ipfs":
			return errors.New("must not carry /p2p/ (the peer field names the peer)")
		}
	}
	return nil
}
