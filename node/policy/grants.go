package policy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// VerifyGrant checks a presented grant as spec section 5.10 orders:
// signature, expiry and holder (protocol.OpenGrant), then that this node
// serves its carrier and that the carrier issued it and has not revoked
// it. The carrier records every grant it issues, so one the store does not
// hold is refused too. Every failure wraps protocol.ErrForbidden or the
// protocol error that OpenGrant found.
func VerifyGrant(ctx context.Context, st store.Access, keys protocol.KeyResolver, carrier string, b []byte, remote peer.ID, now time.Time) (*protocol.Grant, error) {
	if keys == nil {
		return nil, fmt.Errorf("%w: this node verifies no grants", protocol.ErrForbidden)
	}
	g, err := protocol.OpenGrant(b, keys, remote.String(), now.UnixMilli())
	if err != nil {
		return nil, err
	}
	if g.Carrier != carrier {
		return nil, fmt.Errorf("%w: grant %s is for carrier %s, this node serves %s", protocol.ErrForbidden, g.ID, g.Carrier, carrier)
	}
	rec, err := st.Grant(ctx, g.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: grant %s was not issued by this carrier", protocol.ErrForbidden, g.ID)
	case err != nil:
		return nil, err
	case rec.Revoked != 0:
		return nil, fmt.Errorf("%w: grant %s is revoked", protocol.ErrForbidden, g.ID)
	}
	return g, nil
}

// IssueGrant completes g and signs it with the carrier key: a fresh
// random id, the holder in base58btc form, normalized numbers, and a
// validity from now for ttl. The carrier must then record it (admin
// Client.PutGrant) before its node honours it.
func IssueGrant(s *protocol.Signer, g protocol.Grant, now time.Time, ttl time.Duration) ([]byte, *protocol.Grant, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, nil, err
	}
	g.ID = hex.EncodeToString(id[:])
	if h, err := peer.Decode(g.Holder); err == nil {
		g.Holder = h.String()
	}
	g.Numbers = slices.Clone(g.Numbers)
	for i, n := range g.Numbers {
		if norm, err := protocol.NormalizeNumber(n); err == nil {
			g.Numbers[i] = norm
		}
	}
	g.Issued = now.UnixMilli()
	g.Expires = now.Add(ttl).UnixMilli()
	b, err := protocol.SignGrant(s, &g)
	if err != nil {
		return nil, nil, err
	}
	return b, &g, nil
}

// GrantID reads the id of a grant that may not verify, for the audit log;
// empty when b does not decode.
func GrantID(b []byte) string {
	g, ok := ParseGrant(b)
	if !ok {
		return ""
	}
	return g.ID
}

// ParseGrant decodes a signed grant without verifying its signature; ok
// is false when b is not a valid grant record.
func ParseGrant(b []byte) (g protocol.Grant, ok bool) {
	s, err := protocol.ParseSigned(b, protocol.ContentGrant)
	if err != nil {
		return protocol.Grant{}, false
	}
	if err := protocol.UnmarshalCanonical(s.Payload, &g); err != nil || g.Validate() != nil {
		return protocol.Grant{}, false
	}
	return g, true
}

// GrantScope says how a grant reached a parcel, for the audit log.
func GrantScope(g *protocol.Grant) string {
	if g.Audience {
		return "grant scope audience"
	}
	return "grant scope numbers"
}
