package storetest

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// RunAccess runs the suite of the store.Access role: details, grants
// and the audit log, and the bulk details reads of a store.DetailsScanner.
// open must return a new, empty store each time it is called.
func RunAccess(t *testing.T, open func(t *testing.T) store.Store) {
	run(t, open, []test{
		{"Details", testDetails},
		{"DetailsScanner", testDetailsScanner},
		{"Grants", testGrants},
		{"Audit", testAudit},
	})
}

func testDetails(t *testing.T, s store.Store) {
	ctx := t.Context()
	secret := "Ms Unique-Recipient-7f3a"
	address := "12 Secret Lane, Hidden Town"
	u, c := NewChain(Number(1)).Update(t, 0, 2)
	u.Details = protocol.Details{protocol.FieldRecipientName: secret, protocol.FieldRecipientAddress: "old address"}
	id := commit(t, s, u).ParcelIDs[0]
	plain := create(t, s, Number(2), 1)

	d, err := s.Details(ctx, id)
	require.NoError(t, err)
	require.Equal(t, u.Details, d)
	_, err = s.Details(ctx, plain.id)
	require.ErrorIs(t, err, store.ErrNotFound)

	// A later update merges field by field; one without details keeps them.
	u2, c := c.Update(t, id, 1)
	u2.Details = protocol.Details{protocol.FieldRecipientAddress: address, protocol.FieldPOD: "photo:abc"}
	commit(t, s, u2)
	u3, _ := c.Update(t, id, 1)
	commit(t, s, u3)
	d, err = s.Details(ctx, id)
	require.NoError(t, err)
	require.Equal(t, protocol.Details{
		protocol.FieldRecipientName:    secret,
		protocol.FieldRecipientAddress: address,
		protocol.FieldPOD:              "photo:abc",
	}, d)

	// Never part of the public view.
	p, err := s.Parcel(ctx, Number(1))
	require.NoError(t, err)
	evs, err := s.Events(ctx, id, 0, 0)
	require.NoError(t, err)
	feed, err := s.Feed(ctx, 0, 0)
	require.NoError(t, err)
	public := [][]byte{p.SignedHead, []byte(p.Number), []byte(fmt.Sprint(p.Audience))}
	for _, e := range evs {
		public = append(public, e.Bytes)
	}
	public = append(public, []byte(fmt.Sprint(feed)))
	for _, b := range public {
		for _, v := range []string{secret, address, "photo:abc"} {
			require.False(t, bytes.Contains(b, []byte(v)), "detail %q readable in public data", v)
		}
	}
}

// testDetailsScanner checks the bulk reads of a backend that offers them
// against Details.
func testDetailsScanner(t *testing.T, s store.Store) {
	ds, ok := s.(store.DetailsScanner)
	if !ok {
		t.Skip("not a store.DetailsScanner")
	}
	ctx := t.Context()
	var ids []uint64
	want := map[uint64]protocol.Details{}
	for i := range 4 {
		u, _ := NewChain(Number(i+1)).Update(t, 0, 1)
		if i%2 == 0 {
			u.Details = protocol.Details{protocol.FieldRecipientName: fmt.Sprintf("name %d", i)}
		}
		id := commit(t, s, u).ParcelIDs[0]
		ids = append(ids, id)
		if u.Details != nil {
			want[id] = u.Details
		}
	}
	got, err := ds.DetailsOf(ctx, append(ids, 1<<40))
	require.NoError(t, err)
	require.Equal(t, want, got, "DetailsOf of every id and one never stored")
	got, err = ds.DetailsOf(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, got)

	var seen []uint64
	err = ds.EachDetails(ctx, func(id uint64, d protocol.Details) (bool, error) {
		require.Equal(t, want[id], d, "EachDetails of parcel %d", id)
		seen = append(seen, id)
		return true, nil
	})
	require.NoError(t, err)
	require.Equal(t, []uint64{ids[0], ids[2]}, seen, "EachDetails visits the parcels with details in id order")
	seen = nil
	err = ds.EachDetails(ctx, func(id uint64, _ protocol.Details) (bool, error) {
		seen = append(seen, id)
		return false, nil
	})
	require.NoError(t, err)
	require.Equal(t, []uint64{ids[0]}, seen, "EachDetails stops when fn returns false")
}

// testGrant returns a grant record; the store does not validate grants.
func testGrant(id string, issued int64) *store.GrantRecord {
	return &store.GrantRecord{
		Grant: protocol.Grant{
			ID: id, Carrier: Carrier, Holder: "12D3KooWGRUVh2QFt8gKPjTwmmf4TvmgmUvbwwvdJQTczH6ZuQmb",
			Audience: true, Fields: []string{protocol.FieldPOD, protocol.FieldRecipientName},
			Issued: issued, Expires: issued + 86_400_000,
		},
		Signed: []byte("cose-" + id),
	}
}

func testGrants(t *testing.T, s store.Store) {
	ctx := t.Context()
	g1 := testGrant("11111111111111111111111111111111", baseTime+2000)
	g2 := testGrant("22222222222222222222222222222222", baseTime+1000)
	g3 := testGrant("33333333333333333333333333333333", baseTime+3000)
	g3.Grant.Audience, g3.Grant.Numbers = false, []string{Number(1), Number(2)}
	list, err := s.Grants(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	for _, g := range []*store.GrantRecord{g1, g2, g3} {
		require.NoError(t, s.PutGrant(ctx, g))
	}
	got, err := s.Grant(ctx, g3.Grant.ID)
	require.NoError(t, err)
	require.Equal(t, g3, got)

	require.NoError(t, s.RevokeGrant(ctx, g1.Grant.ID, baseTime+5000))
	got, err = s.Grant(ctx, g1.Grant.ID)
	require.NoError(t, err)
	require.Equal(t, baseTime+5000, got.Revoked)
	require.Equal(t, g1.Grant, got.Grant)

	list, err = s.Grants(ctx)
	require.NoError(t, err)
	revoked := *g1
	revoked.Revoked = baseTime + 5000
	require.Equal(t, []*store.GrantRecord{g2, &revoked, g3}, list, "oldest issued first")

	// Put replaces a grant of the same id.
	g2.Signed = []byte("reissued")
	require.NoError(t, s.PutGrant(ctx, g2))
	got, err = s.Grant(ctx, g2.Grant.ID)
	require.NoError(t, err)
	require.Equal(t, []byte("reissued"), got.Signed)
	list, err = s.Grants(ctx)
	require.NoError(t, err)
	require.Len(t, list, 3)
}

func testAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	entry := func(time int64, peer string, allowed bool) store.AuditEntry {
		return store.AuditEntry{
			Time: time, Peer: peer, GrantID: "11111111111111111111111111111111", Number: Number(1),
			Fields: []string{protocol.FieldPOD}, Allowed: allowed, Reason: fmt.Sprintf("r%d", time),
		}
	}
	in := []store.AuditEntry{entry(100, "peerA", true), entry(200, "peerB", false), entry(300, "peerA", true)}
	require.NoError(t, s.AppendAudit(ctx, in[:2]))
	require.NoError(t, s.AppendAudit(ctx, nil))
	require.NoError(t, s.AppendAudit(ctx, in[2:]))
	in = append(in, entry(250, "peerB", true)) // clocks may step back
	require.NoError(t, s.AppendAudit(ctx, in[3:]))

	all, err := s.Audit(ctx, store.AuditQuery{})
	require.NoError(t, err)
	require.Len(t, all, 4)
	for i := range all {
		require.NotZero(t, all[i].Seq)
		if i > 0 {
			require.Greater(t, all[i].Seq, all[i-1].Seq)
		}
		want := in[i]
		want.Seq = all[i].Seq
		require.Equal(t, want, all[i])
	}
	times := func(es []store.AuditEntry) []int64 {
		var out []int64
		for _, e := range es {
			out = append(out, e.Time)
		}
		return out
	}
	cases := []struct {
		name string
		q    store.AuditQuery
		want []int64 // entry times, which are distinct here
	}{
		{"since", store.AuditQuery{Since: 200}, []int64{200, 300, 250}},
		{"peer", store.AuditQuery{Peer: "peerA"}, []int64{100, 300}},
		{"limit", store.AuditQuery{Limit: 2}, []int64{100, 200}},
		{"since and peer", store.AuditQuery{Since: 150, Peer: "peerB"}, []int64{200, 250}},
		{"all filters", store.AuditQuery{Since: 150, Peer: "peerB", Limit: 1}, []int64{200}},
		{"none match", store.AuditQuery{Peer: "peerZ"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Audit(ctx, tc.q)
			require.NoError(t, err)
			require.Equal(t, tc.want, times(got))
		})
	}
}
