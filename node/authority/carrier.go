package authority

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/opentrack/opentrack/node/keyfile"
	"github.com/opentrack/opentrack/protocol"
)

// CarrierInput is what AddCarrier merges into the draft. A zero field is
// "not given": it leaves the draft's value alone, or takes the default
// for a carrier that is new.
type CarrierInput struct {
	// Code is the carrier code. Required.
	Code string
	// Name is the display name. Default for a new carrier: Code.
	Name string
	// Country is the ISO 3166-1 alpha-2 home country. Default for a new
	// carrier: DefaultCountry.
	Country string
	// Key is a signing public key. Required for a new carrier. A key the
	// carrier does not have yet is added next to its others, which is how
	// keys rotate; for a key it has, only the window bounds given change.
	Key ed25519.PublicKey
	// NotBefore and NotAfter bound the key's window. Defaults for a new
	// key: KeyMade, or now without it, and NotBefore + DefaultKeyValidity.
	// They need Key.
	NotBefore, NotAfter time.Time
	// KeyMade is when Key was made, if known (a carrier repo records it):
	// the default start of a new key's window, so that heads the carrier
	// signed before it was registered verify. It is ignored for a key the
	// carrier already has, whose window only moves when told to.
	KeyMade time.Time
	// Nodes, when not empty, replace the carrier's nodes.
	Nodes []protocol.NodeEntry
	// AddNodes are added to the carrier's nodes after Nodes, each
	// replacing the node with its peer ID if the carrier has one: how the
	// replicas of a carrier on a shared database are listed one by one.
	AddNodes []protocol.NodeEntry
	// Schemes, when not empty, replace the carrier's number schemes.
	// Default for a new carrier: protocol.DefaultScheme(Code), written
	// out so that the registry says what it means.
	Schemes []protocol.Scheme
}

// Update sets the fields that o gives, so that flags can override what
// was read from a carrier repo.
func (in *CarrierInput) Update(o CarrierInput) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&in.Code, o.Code)
	set(&in.Name, o.Name)
	set(&in.Country, o.Country)
	if o.Key != nil {
		if !in.Key.Equal(o.Key) {
			in.KeyMade = o.KeyMade // the repo's time is its own key's
		}
		in.Key = o.Key
	}
	if !o.NotBefore.IsZero() {
		in.NotBefore = o.NotBefore
	}
	if !o.NotAfter.IsZero() {
		in.NotAfter = o.NotAfter
	}
	if len(o.Nodes) > 0 {
		in.Nodes, in.AddNodes = o.Nodes, nil
	}
	in.AddNodes = append(in.AddNodes, o.AddNodes...)
	if len(o.Schemes) > 0 {
		in.Schemes = o.Schemes
	}
}

// AddCarrier merges in into the draft by carrier code and saves the
// draft. It returns the carrier as it now stands. The draft is unchanged
// on error, and a key bound to another carrier is refused with
// ErrKeyInUse: it would verify the records of both.
func (w *Workspace) AddCarrier(in CarrierInput) (*DraftCarrier, error) {
	if err := protocol.ValidCarrierCode(in.Code); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	if in.Key == nil && (!in.NotBefore.IsZero() || !in.NotAfter.IsZero()) {
		return nil, fmt.Errorf("%w: a key window needs the key it applies to", ErrBadInput)
	}
	if in.Key != nil && len(in.Key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: key of %d bytes, want %d", ErrBadInput, len(in.Key), ed25519.PublicKeySize)
	}
	d := w.Draft.clone()
	i, found := slices.BinarySearchFunc(d.Carriers, in.Code, func(c DraftCarrier, code string) int { return strings.Compare(c.Code, code) })
	if !found {
		if in.Key == nil {
			return nil, fmt.Errorf("%w: new carrier %s needs a signing key", ErrBadInput, in.Code)
		}
		c := DraftCarrier{Code: in.Code, Name: in.Code, Country: DefaultCountry, Keys: []DraftKey{}, Nodes: []DraftNode{},
			Schemes: []string{protocol.DefaultScheme(in.Code).String()}}
		d.Carriers = slices.Insert(d.Carriers, i, c)
	}
	c := &d.Carriers[i]
	if in.Name != "" {
		c.Name = in.Name
	}
	if in.Country != "" {
		c.Country = in.Country
	}
	if len(in.Schemes) > 0 {
		c.Schemes = c.Schemes[:0]
		for _, s := range in.Schemes {
			c.Schemes = append(c.Schemes, s.String())
		}
	}
	if len(in.Nodes) > 0 {
		c.Nodes = c.Nodes[:0]
		for _, n := range in.Nodes {
			c.Nodes = append(c.Nodes, DraftNode{Peer: n.Peer, Addrs: append([]string{}, n.Addrs...)})
		}
	}
	for _, n := range in.AddNodes {
		dn := DraftNode{Peer: n.Peer, Addrs: append([]string{}, n.Addrs...)}
		if j := slices.IndexFunc(c.Nodes, func(d DraftNode) bool { return d.Peer == n.Peer }); j >= 0 {
			c.Nodes[j] = dn
		} else {
			c.Nodes = append(c.Nodes, dn)
		}
	}
	if in.Key != nil {
		if err := d.mergeKey(c, in, w.now()); err != nil {
			return nil, err
		}
	}
	if _, err := d.registry(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	if err := w.save(d); err != nil {
		return nil, err
	}
	out := d.Carriers[i].clone()
	return &out, nil
}

// mergeKey adds in.Key to c, or moves the bounds of the window it has.
func (d *Draft) mergeKey(c *DraftCarrier, in CarrierInput, now time.Time) error {
	keyHex := hex.EncodeToString(in.Key)
	for _, other := range d.Carriers {
		if other.Code == c.Code {
			continue
		}
		for _, k := range other.Keys {
			if k.Key == keyHex {
				return fmt.Errorf("%w: key %s is %s's", ErrKeyInUse, protocol.KeyIDString(in.Key), other.Code)
			}
		}
	}
	j := slices.IndexFunc(c.Keys, func(k DraftKey) bool { return k.Key == keyHex })
	if j < 0 {
		start := now
		if !in.KeyMade.IsZero() {
			start = in.KeyMade
		}
		c.Keys = append(c.Keys, DraftKey{Key: keyHex, NotBefore: start.UTC().Truncate(time.Second)})
		j = len(c.Keys) - 1
	}
	k := &c.Keys[j]
	if !in.NotBefore.IsZero() {
		k.NotBefore = in.NotBefore.UTC().Truncate(time.Millisecond)
	}
	switch {
	case !in.NotAfter.IsZero():
		k.NotAfter = in.NotAfter.UTC().Truncate(time.Millisecond)
	case k.NotAfter.IsZero():
		k.NotAfter = k.NotBefore.Add(DefaultKeyValidity)
	}
	if !k.NotAfter.After(k.NotBefore) {
		return fmt.Errorf("%w: key %s: not_after %s must be after not_before %s", ErrBadInput,
			protocol.KeyIDString(in.Key), k.NotAfter.Format(time.RFC3339), k.NotBefore.Format(time.RFC3339))
	}
	return nil
}

// RemoveKey takes a key out of a carrier's entry: that revokes it from the
// next edition on, including what it signed before (spec section 5.11).
// keyID is the hex key id, as `registry show` prints it. A carrier's last
// key cannot be removed; remove the carrier instead.
func (w *Workspace) RemoveKey(code, keyID string) error {
	d := w.Draft.clone()
	c := d.carrier(code)
	if c == nil {
		return fmt.Errorf("%w: %s", ErrUnknownCarrier, code)
	}
	kid := strings.ToLower(keyID)
	j := slices.IndexFunc(c.Keys, func(k DraftKey) bool {
		pub, err := hex.DecodeString(k.Key)
		return err == nil && protocol.KeyIDString(pub) == kid
	})
	if j < 0 {
		return fmt.Errorf("%w: carrier %s has no key with id %s", ErrUnknownKey, code, keyID)
	}
	if len(c.Keys) == 1 {
		return fmt.Errorf("%w: %s is carrier %s's only key; remove the carrier instead", ErrLastKey, keyID, code)
	}
	c.Keys = slices.Delete(c.Keys, j, j+1)
	return w.save(d)
}

// RemoveCarrier takes a carrier out of the draft, keys and all.
func (w *Workspace) RemoveCarrier(code string) error {
	d := w.Draft.clone()
	i := slices.IndexFunc(d.Carriers, func(c DraftCarrier) bool { return c.Code == code })
	if i < 0 {
		return fmt.Errorf("%w: %s", ErrUnknownCarrier, code)
	}
	d.Carriers = slices.Delete(d.Carriers, i, i+1)
	return w.save(d)
}

func (d *Draft) carrier(code string) *DraftCarrier {
	for i := range d.Carriers {
		if d.Carriers[i].Code == code {
			return &d.Carriers[i]
		}
	}
	return nil
}

// ParsePublicKey reads a carrier's public key given either as 64 hex
// digits (the raw Ed25519 key) or as the path of a PEM "PUBLIC KEY" file.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	if len(s) == 2*ed25519.PublicKeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	pub, err := keyfile.ReadPublic(s)
	if err != nil {
		return nil, fmt.Errorf("%w: key %q is neither 64 hex digits nor a PEM public key file: %w", ErrBadInput, s, err)
	}
	return pub, nil
}

// NewNodeEntry builds a registry node from a peer ID in any text form and
// its addresses. An address may end in /p2p/ of the same peer, which is
// stripped; peerID may be "" when an address names the peer that way.
// Addresses that no one can dial (unspecified IP, port 0) are left out
// with a warning each, since the registry is where others look them up.
func NewNodeEntry(peerID string, addrs []string) (protocol.NodeEntry, []string, error) {
	var id peer.ID
	if peerID != "" {
		var err error
		if id, err = peer.Decode(peerID); err != nil {
			return protocol.NodeEntry{}, nil, fmt.Errorf("%w: peer %q: %w", ErrBadInput, peerID, err)
		}
	}
	var warnings []string
	out := []string{}
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return protocol.NodeEntry{}, nil, fmt.Errorf("%w: address %q: %w", ErrBadInput, s, err)
		}
		transport, p2p := peer.SplitAddr(m)
		if p2p != "" {
			if id == "" {
				id = p2p
			} else if p2p != id {
				return protocol.NodeEntry{}, nil, fmt.Errorf("%w: address %q names peer %s, not %s", ErrBadInput, s, p2p, id)
			}
		}
		if len(transport) == 0 {
			return protocol.NodeEntry{}, nil, fmt.Errorf("%w: address %q has no transport part", ErrBadInput, s)
		}
		if why := undialable(transport); why != "" {
			warnings = append(warnings, fmt.Sprintf("address %s left out: %s", transport, why))
			continue
		}
		if a := transport.String(); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if id == "" {
		return protocol.NodeEntry{}, nil, fmt.Errorf("%w: a node needs a peer ID", ErrBadInput)
	}
	if len(out) == 0 {
		warnings = append(warnings, fmt.Sprintf("node %s has no dialable address; peers can find it only through peer routing", id))
	}
	return protocol.NodeEntry{Peer: id.String(), Addrs: out}, warnings, nil
}

// undialable says why no peer could dial m, or "" if one could.
func undialable(m ma.Multiaddr) string {
	if manet.IsIPUnspecified(m) {
		return "unspecified IP (a listen address, not one to dial)"
	}
	for _, p := range []int{ma.P_TCP, ma.P_UDP} {
		if v, err := m.ValueForProtocol(p); err == nil && v == "0" {
			return "port 0 (picked at start, so it changes)"
		}
	}
	return ""
}

// SetNode adds to in the node that --peer and --addr describe, against
// base, the carrier read from a repo: with only addresses, they move
// base's one node, or its replica's when base lists a replica to add
// (AddNodes) next to the carrier's others. A replica's node goes to
// in.AddNodes, any other to in.Nodes, which replaces the carrier's.
func SetNode(in *CarrierInput, base CarrierInput, peerID string, addrs []string) (warnings []string, err error) {
	replica := len(base.AddNodes) == 1
	switch {
	case peerID == "" && len(base.Nodes) == 1:
		peerID = base.Nodes[0].Peer
	case peerID == "" && replica:
		peerID = base.AddNodes[0].Peer
	}
	node, warnings, err := NewNodeEntry(peerID, addrs)
	if err != nil {
		return nil, err
	}
	if replica && peerID == base.AddNodes[0].Peer {
		in.AddNodes = append(in.AddNodes, node)
	} else {
		in.Nodes = append(in.Nodes, node)
	}
	return warnings, nil
}
