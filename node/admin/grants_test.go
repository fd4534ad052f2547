package admin_test

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
)

func TestGrantsHTTP(t *testing.T) {
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewServer(admin.API(admin.APIConfig{Grants: st, Keys: testKeys(), Carrier: testCarrier}))
	t.Cleanup(srv.Close)
	c := &admin.Client{URL: srv.URL}
	ctx := context.Background()
	holder := servicetest.RandomPeer(t)
	b, g, err := policy.IssueGrant(testSigner(t), protocol.Grant{Carrier: testCarrier, Holder: holder, Audience: true,
		Fields: []string{protocol.FieldPOD}}, time.Now(), time.Hour)
	require.NoError(t, err)
	got, err := c.PutGrant(ctx, b)
	require.NoError(t, err)
	require.Equal(t, g.ID, got.ID)
	_, err = c.PutGrant(ctx, b)
	require.ErrorContains(t, err, "409")
	forged, _, err := policy.IssueGrant(servicetest.OtherSigner(t), protocol.Grant{Carrier: testCarrier, Holder: holder, Audience: true,
		Fields: []string{protocol.FieldPOD}}, time.Now(), time.Hour)
	require.NoError(t, err)
	_, err = c.PutGrant(ctx, forged)
	require.ErrorContains(t, err, "400")

	list, err := c.ListGrants(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Nil(t, list[0].Revoked)
	rev, err := c.RevokeGrant(ctx, g.ID)
	require.NoError(t, err)
	require.NotNil(t, rev.Revoked)
	_, err = c.RevokeGrant(ctx, hex.EncodeToString(make([]byte, 16)))
	require.ErrorContains(t, err, "404")

	require.NoError(t, st.AppendAudit(ctx, []store.AuditEntry{
		{Time: 1000, Peer: "a", Number: "1"}, {Time: 2000, Peer: "b", Number: "2", Allowed: true, Fields: []string{"pod"}}, {Time: 3000, Peer: "a", Number: "3"},
	}))
	a, err := c.Audit(ctx, store.AuditQuery{Since: 2000})
	require.NoError(t, err)
	require.Len(t, a, 2)
	a, err = c.Audit(ctx, store.AuditQuery{Peer: "a"})
	require.NoError(t, err)
	require.Equal(t, []string{"1", "3"}, []string{a[0].Number, a[1].Number})
	resp, err := http.Get(srv.URL + "/v1/audit?since=x")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}
