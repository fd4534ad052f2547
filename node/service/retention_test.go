package service_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/node/store/seal"
	"github.com/opentrack/opentrack/protocol"
)

// fakeClock is the sealing layer's clock in retention tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const retention = 10 * 24 * time.Hour

// sealedStore is a memstore whose details are sealed with a 10-day
// retention on clk.
func sealedStore(tb testing.TB, clk *fakeClock) *seal.Store {
	tb.Helper()
	st, err := seal.Open(context.Background(), memstore.New(), filepath.Join(tb.TempDir(), seal.KeyringFile),
		&seal.Options{Retention: retention, Now: clk.Now})
	require.NoError(tb, err)
	return st
}

// requireExpiredAudit checks the newest audit entry: a refusal for
// number under grant g whose reason says the details passed retention.
func requireExpiredAudit(t *testing.T, st store.Store, g *protocol.Grant, number, via string) {
	t.Helper()
	a, err := st.Audit(context.Background(), store.AuditQuery{})
	require.NoError(t, err)
	require.NotEmpty(t, a)
	e := a[len(a)-1]
	require.False(t, e.Allowed, "newest audit entry %+v", e)
	require.Equal(t, g.ID, e.GrantID)
	require.Equal(t, number, e.Number)
	require.Empty(t, e.Fields, "nothing disclosed")
	require.Contains(t, e.Reason, "passed retention", "audit reason")
	require.Contains(t, e.Reason, via, "audit reason")
}

// TestTrackDetailsExpired: a valid grant gets its parcel's details until
// their retention passes, then details_error expired and the events, and
// the audit log says why.
func TestTrackDetailsExpired(t *testing.T) {
	servicetest.CheckLeaks(t)
	clk := &fakeClock{t: time.Now()}
	st := sealedStore(t, clk)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Store: st, Track: func(c *service.TrackConfig) { c.Keys = servicetest.Keys() }})
	p := servicetest.NewParcel(t, servicetest.Number(0), 3)
	u := store.ParcelUpdate{Number: p.Number, New: true, SignedHead: p.SignedHead, Details: fullDetails}
	for s, ev := range p.Events {
		u.Events = append(u.Events, store.NewEvent{Seq: uint64(s), CID: p.CIDs[s], Bytes: ev})
	}
	_, err := st.Append(context.Background(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.NoError(t, err)

	platform := servicetest.NewHost(t, nil)
	b, g, err := policy.IssueGrant(servicetest.Signer(), protocol.Grant{Carrier: servicetest.Carrier, Holder: platform.ID().String(),
		Numbers: []string{p.Number}, Fields: []string{protocol.FieldRecipientName}}, time.Now(), time.Hour)
	require.NoError(t, err)
	require.NoError(t, st.PutGrant(context.Background(), &store.GrantRecord{Grant: *g, Signed: b}))
	raw := openRaw(t, platform, srv, protocol.TrackID)
	track := func() protocol.TrackResult {
		raw.sendMsg(&protocol.TrackRequest{Queries: queries(p.Number), Grant: b})
		resp := raw.read()
		require.NoError(t, resp.Validate(1))
		require.Nil(t, resp.Error)
		return resp.Results[0]
	}

	r := track()
	require.Equal(t, protocol.Details{protocol.FieldRecipientName: fullDetails[protocol.FieldRecipientName]}, r.Details, "within retention")
	require.Empty(t, r.DetailsError)

	clk.Add(retention + 24*time.Hour)
	require.NoError(t, st.Sweep())
	r = track()
	require.Equal(t, protocol.CodeOK, r.Code)
	require.Equal(t, p.Events, r.Events, "the public view all the same")
	require.Empty(t, r.Details, "after retention")
	require.Equal(t, protocol.DetailsExpired, r.DetailsError)
	requireExpiredAudit(t, st, g, p.Number, "grant scope numbers")
}

// TestWatchDetailsExpired: an update of a covered parcel whose details
// passed retention carries details_error expired, audited as a refusal.
func TestWatchDetailsExpired(t *testing.T) {
	servicetest.CheckLeaks(t)
	clk := &fakeClock{t: time.Now()}
	ws := startWatch(t, watchConfig{parcels: 1, events: 3, open: func(tb testing.TB) store.Store { return sealedStore(tb, clk) }})
	sub := servicetest.NewHost(t, nil)
	n0 := servicetest.Number(0)
	b, g, err := policy.IssueGrant(servicetest.Signer(), protocol.Grant{Carrier: servicetest.Carrier, Holder: sub.ID().String(),
		Numbers: []string{n0}, Fields: []string{protocol.FieldRecipientName}}, time.Now(), time.Hour)
	require.NoError(t, err)
	require.NoError(t, ws.store.PutGrant(context.Background(), &store.GrantRecord{Grant: *g, Signed: b}))
	w := openWatch(t, sub, ws, &protocol.WatchRequest{Numbers: []string{n0}, Grant: b})
	st := w.next(10 * time.Second) // the parcel is not ingested yet: its status comes first
	require.Equal(t, protocol.WatchStatus, st.Type)
	require.Equal(t, protocol.CodeNotFound, st.Code)
	require.Equal(t, protocol.WatchHeartbeat, w.next(10*time.Second).Type, "the subscription is live")

	batch, which := ws.batch(step{parcel: 0, events: 1})
	batch.Updates[0].Details = protocol.Details{protocol.FieldRecipientName: "Li Wei"}
	ws.commit(batch, which)
	m := w.nextOf(protocol.WatchUpdate, 10*time.Second)
	require.Equal(t, protocol.Details{protocol.FieldRecipientName: "Li Wei"}, m.Details, "within retention")

	// Past retention and swept, the key is gone: a later event cannot
	// bring the details back.
	clk.Add(retention + 24*time.Hour)
	require.NoError(t, ws.store.(*seal.Store).Sweep())
	batch, which = ws.batch(step{parcel: 0, events: 1})
	ws.commit(batch, which)
	m = w.nextOf(protocol.WatchUpdate, 10*time.Second)
	require.NoError(t, m.Validate())
	require.Empty(t, m.Details, "after retention")
	require.Equal(t, protocol.DetailsExpired, m.DetailsError)
	requireExpiredAudit(t, ws.store, g, n0, "watch: ")
}
