package service_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// TestWatchAccess: the subscription budget, a grant that fails (refused
// and audited) and closed public lookups each refuse a subscription, while
// the audience scope stays open.
func TestWatchAccess(t *testing.T) {
	servicetest.CheckLeaks(t)
	forged := func(holder string) []byte {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		s, err := protocol.NewSigner(priv)
		require.NoError(t, err)
		b, _, err := policy.IssueGrant(s, protocol.Grant{Carrier: servicetest.Carrier, Holder: holder, Audience: true,
			Fields: []string{protocol.FieldRecipientName}}, time.Now(), time.Hour)
		require.NoError(t, err)
		return b
	}
	cases := []struct {
		name   string
		policy service.Policy
		req    func(h host.Host) *protocol.WatchRequest
		code   string
		audits int
	}{
		{"budget spent", watchPolicy{refuseWatch: true}, func(host.Host) *protocol.WatchRequest {
			return &protocol.WatchRequest{Audience: true}
		}, protocol.CodeRateLimited, 0},
		{"forged grant", nil, func(h host.Host) *protocol.WatchRequest {
			return &protocol.WatchRequest{Audience: true, Grant: forged(h.ID().String())}
		}, protocol.CodeForbidden, 1},
		{"public closed", watchPolicy{closed: true}, func(host.Host) *protocol.WatchRequest {
			return &protocol.WatchRequest{Numbers: []string{servicetest.Number(0)}}
		}, protocol.CodeForbidden, 0},
		{"audience while public closed", watchPolicy{closed: true}, func(host.Host) *protocol.WatchRequest {
			return &protocol.WatchRequest{Audience: true}
		}, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws := startWatch(t, watchConfig{parcels: 1, events: 1, policy: tc.policy, opts: &service.Options{Heartbeat: 50 * time.Millisecond}})
			client := servicetest.NewHost(t, nil)
			w := openWatch(t, client, ws, tc.req(client))
			if tc.code == "" {
				require.Equal(t, protocol.WatchHeartbeat, w.next(5*time.Second).Type)
			} else {
				w.expectError(tc.code)
			}
			entries, err := ws.store.Audit(context.Background(), store.AuditQuery{})
			require.NoError(t, err)
			require.Len(t, entries, tc.audits)
			for _, e := range entries {
				require.False(t, e.Allowed)
				require.Equal(t, client.ID().String(), e.Peer)
			}
		})
	}
}

// TestWatchGrantDetails: a subscription with a valid grant gets, in the
// updates of the parcels the grant covers, the details it names and no
// others, each disclosure audited; a parcel outside its scope comes
// without details.
func TestWatchGrantDetails(t *testing.T) {
	servicetest.CheckLeaks(t)
	ws := startWatch(t, watchConfig{parcels: 2, events: 2})
	sub := servicetest.NewHost(t, nil)
	n0, n1 := servicetest.Number(0), servicetest.Number(1)
	b, g, err := policy.IssueGrant(servicetest.Signer(), protocol.Grant{Carrier: servicetest.Carrier, Holder: sub.ID().String(),
		Numbers: []string{n0}, Fields: []string{protocol.FieldRecipientName}}, time.Now(), time.Hour)
	require.NoError(t, err)
	require.NoError(t, ws.store.PutGrant(context.Background(), &store.GrantRecord{Grant: *g, Signed: b}))

	w := openWatch(t, sub, ws, &protocol.WatchRequest{Numbers: []string{n0, n1}, Grant: b})
	statuses, _ := w.opening()
	require.Equal(t, map[string]string{n0: protocol.CodeNotFound, n1: protocol.CodeNotFound}, statuses, "nothing stored yet")
	details := protocol.Details{protocol.FieldRecipientName: "Li Wei", protocol.FieldRecipientAddress: "1 Example Road"}
	batch, which := ws.batch(step{parcel: 0, events: 2}, step{parcel: 1, events: 2})
	batch.Updates[0].Details, batch.Updates[1].Details = details, details
	ws.commit(batch, which)

	got := map[string]protocol.Details{}
	for len(got) < 2 {
		m := w.nextOf(protocol.WatchUpdate, 10*time.Second)
		got[m.Number] = m.Details
	}
	require.Equal(t, protocol.Details{protocol.FieldRecipientName: "Li Wei"}, got[n0], "the field the grant names, not the address")
	require.Empty(t, got[n1], "a parcel outside the grant's numbers")

	entries, err := ws.store.Audit(context.Background(), store.AuditQuery{})
	require.NoError(t, err)
	require.Len(t, entries, 1, "one disclosure, audited")
	e := entries[0]
	require.True(t, e.Allowed)
	require.Equal(t, n0, e.Number)
	require.Equal(t, g.ID, e.GrantID)
	require.Equal(t, sub.ID().String(), e.Peer)
	require.Equal(t, []string{protocol.FieldRecipientName}, e.Fields)
	require.Contains(t, e.Reason, "watch")
}
