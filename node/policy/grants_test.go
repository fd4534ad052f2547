package policy_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
)

// TestGrantLifecycle issues a grant and verifies it as its holder before
// it is recorded, once recorded, for another carrier, for another peer
// and once revoked.
func TestGrantLifecycle(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))
	signer, err := protocol.NewSigner(key)
	require.NoError(t, err)
	keys := protocol.PublicKeyResolver{Carrier: "XP", Key: key.Public().(ed25519.PublicKey)}
	holder, other := newPeer(t), newPeer(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	b, g, err := policy.IssueGrant(signer, protocol.Grant{Carrier: "XP", Holder: holder.String(), Numbers: []string{"rb 1234 5678 5gb"},
		Fields: []string{protocol.FieldPOD}}, now, time.Hour)
	require.NoError(t, err)
	require.Len(t, g.ID, 32)
	require.Equal(t, []string{"RB123456785GB"}, g.Numbers, "numbers normalized")
	require.Equal(t, now.Add(time.Hour).UnixMilli(), g.Expires)
	require.Equal(t, g.ID, policy.GrantID(b))
	require.Empty(t, policy.GrantID([]byte("not a grant")))
	require.Equal(t, "grant scope numbers", policy.GrantScope(g))

	ctx := context.Background()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	verify := func(carrier string, remote peer.ID) error {
		_, err := policy.VerifyGrant(ctx, st, keys, carrier, b, remote, now.Add(time.Minute))
		return err
	}
	require.ErrorIs(t, verify("XP", holder), protocol.ErrForbidden, "not recorded")
	require.NoError(t, st.PutGrant(ctx, &store.GrantRecord{Grant: *g, Signed: b}))
	require.NoError(t, verify("XP", holder))
	require.ErrorIs(t, verify("YP", holder), protocol.ErrForbidden, "another carrier")
	require.Error(t, verify("XP", other), "another holder")
	_, err = policy.VerifyGrant(ctx, st, nil, "XP", b, holder, now)
	require.ErrorIs(t, err, protocol.ErrForbidden, "no keys")
	require.NoError(t, st.RevokeGrant(ctx, g.ID, now.UnixMilli()))
	require.ErrorIs(t, verify("XP", holder), protocol.ErrForbidden, "revoked")
}

// TestAppendAudit stores entries and counts them by result.
func TestAppendAudit(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	m := metrics.New()
	g := &protocol.Grant{ID: "g1", Audience: true}
	d := protocol.Details{protocol.FieldPOD: "x", protocol.FieldRecipientName: "A"}
	require.Equal(t, []string{protocol.FieldPOD, protocol.FieldRecipientName}, policy.DetailFields(d), "in DetailFields order")
	entries := []store.AuditEntry{
		{Peer: "p", GrantID: g.ID, Number: "1", Fields: policy.DetailFields(d), Allowed: true, Reason: policy.GrantScope(g)},
		policy.ExpiredEntry("p", "watch: ", g, "2"),
	}
	require.NoError(t, policy.AppendAudit(ctx, st, m, entries))
	require.NoError(t, policy.AppendAudit(ctx, st, nil, nil))
	got, err := st.Audit(ctx, store.AuditQuery{})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "watch: details passed retention and were erased (grant scope audience)", got[1].Reason)
	for _, res := range []string{"allowed", "refused"} {
		var pb dto.Metric
		require.NoError(t, m.Disclosures.WithLabelValues(res).Write(&pb))
		require.Equal(t, 1.0, pb.GetCounter().GetValue(), res)
	}
}
