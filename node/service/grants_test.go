package service_test

import (
	"bytes"
	"context"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/protocol"
)

var fullDetails = protocol.Details{
	protocol.FieldRecipientName:    "Erika Mustermann",
	protocol.FieldRecipientPhone:   "+49 30 1234567",
	protocol.FieldRecipientAddress: "Heidestrasse 17, 51147 Koeln",
	protocol.FieldCourierName:      "Max Bote",
	protocol.FieldPOD:              "pod-4711",
}

// grantEnv is a carrier serving parcels with details: parcel 0 with
// audience, parcel 1 without, parcel 2 with no details at all.
type grantEnv struct {
	srv      *servicetest.Server
	m        *metrics.Metrics
	platform host.Host // outside every audience unless audience is set
	parcels  []*servicetest.Parcel
}

func newGrantEnv(t *testing.T, audience bool, policy service.Policy) *grantEnv {
	t.Helper()
	e := &grantEnv{m: metrics.New(), platform: servicetest.NewHost(t, nil)}
	e.srv = servicetest.StartServer(t, servicetest.ServerConfig{Track: func(c *service.TrackConfig) {
		c.Keys, c.Metrics, c.Policy = servicetest.Keys(), e.m, policy
	}})
	var b store.Batch
	for i := range 3 {
		p := servicetest.NewParcel(t, servicetest.Number(i), 3)
		e.parcels = append(e.parcels, p)
		u := store.ParcelUpdate{Number: p.Number, New: true, SignedHead: p.SignedHead}
		for s, ev := range p.Events {
			u.Events = append(u.Events, store.NewEvent{Seq: uint64(s), CID: p.CIDs[s], Bytes: ev})
		}
		if i < 2 {
			u.Details = fullDetails
		}
		if i == 0 && audience {
			u.Audience = []string{e.platform.ID().String()}
		}
		b.Updates = append(b.Updates, u)
	}
	_, err := e.srv.Store.Append(context.Background(), &b)
	require.NoError(t, err)
	return e
}

// issue signs a grant with s (the carrier key for nil) and records it.
func (e *grantEnv) issue(t *testing.T, s *protocol.Signer, g protocol.Grant, from time.Time, ttl time.Duration) ([]byte, *protocol.Grant) {
	t.Helper()
	if s == nil {
		s = servicetest.Signer()
	}
	g.Carrier = servicetest.Carrier
	if g.Holder == "" {
		g.Holder = e.platform.ID().String()
	}
	b, gr, err := policy.IssueGrant(s, g, from, ttl)
	require.NoError(t, err)
	require.NoError(t, e.srv.Store.PutGrant(context.Background(), &store.GrantRecord{Grant: *gr, Signed: b}))
	return b, gr
}

func (e *grantEnv) track(t *testing.T, grant []byte, numbers ...string) *protocol.TrackResponse {
	t.Helper()
	raw := openRaw(t, e.platform, e.srv, protocol.TrackID)
	raw.sendMsg(&protocol.TrackRequest{Queries: queries(numbers...), Grant: grant})
	resp := raw.read()
	require.NoError(t, resp.Validate(len(numbers)))
	return resp
}

func queries(ns ...string) []protocol.TrackQuery {
	q := make([]protocol.TrackQuery, len(ns))
	for i, n := range ns {
		q[i] = protocol.TrackQuery{Number: n}
	}
	return q
}

func (e *grantEnv) audit(t *testing.T) []store.AuditEntry {
	t.Helper()
	a, err := e.srv.Store.Audit(context.Background(), store.AuditQuery{})
	require.NoError(t, err)
	return a
}

func TestGrantNoGrantPublicOnly(t *testing.T) {
	servicetest.CheckLeaks(t)
	e := newGrantEnv(t, false, nil)
	resp := e.track(t, nil, e.parcels[0].Number, e.parcels[1].Number)
	require.Nil(t, resp.Error)
	for i, r := range resp.Results {
		require.Equal(t, protocol.CodeOK, r.Code)
		require.Equal(t, e.parcels[i].Events, r.Events)
		require.Empty(t, r.Details)
	}
	require.Empty(t, e.audit(t))
}

func TestGrantValid(t *testing.T) {
	servicetest.CheckLeaks(t)
	e := newGrantEnv(t, true, nil)
	fields := []string{protocol.FieldRecipientName, protocol.FieldPOD, protocol.FieldCourierPhone} // no courier phone stored
	g, gr := e.issue(t, nil, protocol.Grant{Numbers: []string{e.parcels[1].Number, e.parcels[2].Number}, Fields: fields}, time.Now(), time.Hour)
	resp := e.track(t, g, e.parcels[0].Number, e.parcels[1].Number, e.parcels[2].Number)
	require.Nil(t, resp.Error)
	require.Empty(t, resp.Results[0].Details, "not in the grant's numbers")
	require.Equal(t, protocol.Details{
		protocol.FieldRecipientName: fullDetails[protocol.FieldRecipientName],
		protocol.FieldPOD:           fullDetails[protocol.FieldPOD],
	}, resp.Results[1].Details)
	require.Empty(t, resp.Results[2].Details, "no details stored")
	for i, r := range resp.Results {
		require.Equal(t, e.parcels[i].Events, r.Events)
	}
	a := e.audit(t)
	require.Len(t, a, 1)
	require.True(t, a[0].Allowed)
	require.Equal(t, gr.ID, a[0].GrantID)
	require.Equal(t, e.platform.ID().String(), a[0].Peer)
	require.Equal(t, e.parcels[1].Number, a[0].Number)
	require.Equal(t, []string{protocol.FieldPOD, protocol.FieldRecipientName}, a[0].Fields)
	require.Equal(t, 1.0, counter(t, e.m.Disclosures.WithLabelValues("allowed")))

	// An audience grant reaches exactly the holder's own parcels.
	g, _ = e.issue(t, nil, protocol.Grant{Audience: true, Fields: []string{protocol.FieldRecipientAddress}}, time.Now(), time.Hour)
	resp = e.track(t, g, e.parcels[0].Number, e.parcels[1].Number)
	require.Equal(t, protocol.Details{protocol.FieldRecipientAddress: fullDetails[protocol.FieldRecipientAddress]}, resp.Results[0].Details)
	require.Empty(t, resp.Results[1].Details)
	require.Len(t, e.audit(t), 2)
}

func TestGrantRefused(t *testing.T) {
	servicetest.CheckLeaks(t)
	e := newGrantEnv(t, true, nil)
	n := e.parcels[1].Number
	scope := protocol.Grant{Numbers: []string{n}, Fields: []string{protocol.FieldRecipientName}}
	unrecorded, _, err := policy.IssueGrant(servicetest.Signer(), protocol.Grant{Carrier: servicetest.Carrier, Holder: e.platform.ID().String(),
		Numbers: []string{n}, Fields: []string{protocol.FieldPOD}}, time.Now(), time.Hour)
	require.NoError(t, err)
	tests := []struct {
		name  string
		grant func() []byte
	}{
		{"expired", func() []byte { g, _ := e.issue(t, nil, scope, time.Now().Add(-2*time.Hour), time.Hour); return g }},
		{"revoked", func() []byte {
			g, gr := e.issue(t, nil, scope, time.Now(), time.Hour)
			require.NoError(t, e.srv.Store.RevokeGrant(context.Background(), gr.ID, time.Now().UnixMilli()))
			return g
		}},
		{"forged", func() []byte { g, _ := e.issue(t, servicetest.OtherSigner(t), scope, time.Now(), time.Hour); return g }},
		{"other holder", func() []byte {
			s := scope
			s.Holder = servicetest.RandomPeer(t)
			g, _ := e.issue(t, nil, s, time.Now(), time.Hour)
			return g
		}},
		{"not recorded", func() []byte { return unrecorded }},
		{"garbage", func() []byte { return []byte{0xd2, 0x84, 0x40} }},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := tc.grant()
			resp := e.track(t, g, n, e.parcels[0].Number)
			require.NotNil(t, resp.Error)
			require.Equal(t, protocol.CodeForbidden, resp.Error.Code, resp.Error.Message)
			require.Empty(t, resp.Results)
			a := e.audit(t)
			require.Len(t, a, 2*(i+1))
			for _, entry := range a[2*i:] {
				require.False(t, entry.Allowed)
				require.Equal(t, e.platform.ID().String(), entry.Peer)
				require.NotEmpty(t, entry.Reason)
				require.Empty(t, entry.Fields)
			}
			require.Equal(t, []string{n, e.parcels[0].Number}, []string{a[2*i].Number, a[2*i+1].Number})
		})
	}
	require.Equal(t, float64(2*len(tests)), counter(t, e.m.Disclosures.WithLabelValues("refused")))
	require.Equal(t, 0.0, counter(t, e.m.Disclosures.WithLabelValues("allowed")))
}

// closedPolicy admits everything but public lookups.
type closedPolicy struct{ notFound chan int }

func (closedPolicy) AdmitTrack(peer.ID, ma.Multiaddr, int) (bool, time.Duration) { return true, 0 }
func (p closedPolicy) ObserveNotFound(_ peer.ID, _ ma.Multiaddr, n int)          { p.notFound <- n }
func (closedPolicy) AdmitWatch(peer.ID) (bool, time.Duration)                    { return true, 0 }
func (closedPolicy) AdmitNotFound(peer.ID, ma.Multiaddr) (bool, time.Duration)   { return true, 0 }
func (closedPolicy) AllowPublic(peer.ID) bool                                    { return false }

func TestGrantPublicClosed(t *testing.T) {
	servicetest.CheckLeaks(t)
	pol := closedPolicy{notFound: make(chan int, 10)}
	e := newGrantEnv(t, true, pol)
	resp := e.track(t, nil, e.parcels[0].Number, e.parcels[1].Number, servicetest.Number(50))
	require.Equal(t, protocol.CodeOK, resp.Results[0].Code, "the audience sees its parcel")
	require.Empty(t, resp.Results[0].Details)
	require.Equal(t, protocol.CodeForbidden, resp.Results[1].Code)
	require.Empty(t, resp.Results[1].Events)
	require.Equal(t, protocol.CodeNotFound, resp.Results[2].Code)
	require.Equal(t, 1, <-pol.notFound)

	g, _ := e.issue(t, nil, protocol.Grant{Numbers: []string{e.parcels[1].Number}, Fields: []string{protocol.FieldPOD}}, time.Now(), time.Hour)
	resp = e.track(t, g, e.parcels[1].Number, e.parcels[2].Number)
	require.Equal(t, protocol.CodeOK, resp.Results[0].Code, "a grant holder sees the granted parcel")
	require.Equal(t, protocol.Details{protocol.FieldPOD: fullDetails[protocol.FieldPOD]}, resp.Results[0].Details)
	require.Equal(t, protocol.CodeForbidden, resp.Results[1].Code)
	require.Equal(t, 0, <-pol.notFound)
}

// TestAuditSurvivesRestart serves a disclosure and a refusal from a pebble
// store, reopens it, and finds both entries.
func TestAuditSurvivesRestart(t *testing.T) {
	servicetest.CheckLeaks(t)
	dir := t.TempDir()
	st, err := pebble.Open(dir, nil)
	require.NoError(t, err)
	p := servicetest.NewParcel(t, servicetest.Number(1), 2)
	u := store.ParcelUpdate{Number: p.Number, New: true, SignedHead: p.SignedHead, Details: fullDetails}
	for s, ev := range p.Events {
		u.Events = append(u.Events, store.NewEvent{Seq: uint64(s), CID: p.CIDs[s], Bytes: ev})
	}
	_, err = st.Append(context.Background(), &store.Batch{Updates: []store.ParcelUpdate{u}})
	require.NoError(t, err)

	h := servicetest.NewHost(t, nil)
	tr, err := service.NewTrack(service.TrackConfig{Carrier: servicetest.Carrier, Schemes: []protocol.Scheme{servicetest.Scheme}, Store: st, Keys: servicetest.Keys()}, nil)
	require.NoError(t, err)
	tr.Register(h)
	srv := &servicetest.Server{Host: h, Store: st, Track: tr}
	client := servicetest.NewHost(t, nil)
	b, g, err := policy.IssueGrant(servicetest.Signer(), protocol.Grant{Carrier: servicetest.Carrier, Holder: client.ID().String(),
		Numbers: []string{p.Number}, Fields: []string{protocol.FieldPOD}}, time.Now(), time.Hour)
	require.NoError(t, err)
	require.NoError(t, st.PutGrant(context.Background(), &store.GrantRecord{Grant: *g, Signed: b}))
	raw := openRaw(t, client, srv, protocol.TrackID)
	raw.sendMsg(&protocol.TrackRequest{Queries: queries(p.Number), Grant: b})
	require.Equal(t, protocol.Details{protocol.FieldPOD: fullDetails[protocol.FieldPOD]}, raw.read().Results[0].Details)
	require.NoError(t, st.RevokeGrant(context.Background(), g.ID, time.Now().UnixMilli()))
	raw.sendMsg(&protocol.TrackRequest{Queries: queries(p.Number), Grant: b})
	require.Equal(t, protocol.CodeForbidden, raw.read().Error.Code)
	raw.s.Close()
	tr.Unregister()
	require.NoError(t, st.Close())

	st, err = pebble.Open(dir, nil)
	require.NoError(t, err)
	defer st.Close()
	a, err := st.Audit(context.Background(), store.AuditQuery{})
	require.NoError(t, err)
	require.Len(t, a, 2)
	require.True(t, a[0].Allowed)
	require.Equal(t, []string{protocol.FieldPOD}, a[0].Fields)
	require.False(t, a[1].Allowed)
	require.Equal(t, g.ID, a[1].GrantID)
	rec, err := st.Grant(context.Background(), g.ID)
	require.NoError(t, err)
	require.NotZero(t, rec.Revoked)
}

// TestNoDetailsInPublicData ingests random parcels with random details on
// every event and checks that no detail value appears in any event block,
// signed head, or public track response.
//
// long: the random parcels, the blocks and the responses share one
// search for the detail values.
func TestNoDetailsInPublicData(t *testing.T) {
	servicetest.CheckLeaks(t)
	st := memstore.New()
	ing, err := ingest.New(ingest.Config{Carrier: servicetest.Carrier, Schemes: []protocol.Scheme{servicetest.Scheme}, Signer: servicetest.Signer(), Store: st}, nil)
	require.NoError(t, err)
	h := servicetest.NewHost(t, nil)
	tr, err := service.NewTrack(service.TrackConfig{Carrier: servicetest.Carrier, Schemes: []protocol.Scheme{servicetest.Scheme}, Store: st, Keys: servicetest.Keys()}, nil)
	require.NoError(t, err)
	tr.Register(h)
	t.Cleanup(func() { st.Close() })
	t.Cleanup(tr.Unregister)
	srv := &servicetest.Server{Host: h, Store: st, Track: tr}
	raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.TrackID)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	word := func() string {
		b := make([]byte, 10)
		for i := range b {
			b[i] = "abcdefghijklmnopqrstuvwxyz"[rng.IntN(26)]
		}
		return string(b)
	}
	var secrets []string
	numbers := map[string]bool{}
	for round := range 20 {
		var batch []ingest.InputEvent
		for i := range 1 + rng.IntN(20) {
			n := servicetest.Number(rng.IntN(15))
			numbers[n] = true
			d := map[string]string{}
			for _, f := range protocol.DetailFields {
				if rng.IntN(2) == 0 {
					v := "PII-" + word()
					d[f] = v
					secrets = append(secrets, v)
				}
			}
			statuses := []string{"picked_up", "in_transit", "out_for_delivery"}
			batch = append(batch, ingest.InputEvent{
				ID: "ev-" + word(), Number: n, Status: statuses[rng.IntN(len(statuses))],
				Time:     time.Date(2026, 1, 1, 0, round, i, 0, time.UTC).Format(time.RFC3339),
				Location: protocol.Location{Country: "DE", Locode: "DEFRA", City: "Frankfurt am Main"},
				Details:  d, Audience: []string{servicetest.RandomPeer(t)},
			})
		}
		res, err := ing.Ingest(context.Background(), batch)
		require.NoError(t, err)
		for _, r := range res {
			require.Empty(t, r.Error, "ingest rejected an event")
		}
	}
	require.NotEmpty(t, secrets)
	check := func(what string, b []byte) {
		t.Helper()
		for _, s := range secrets {
			require.False(t, bytes.Contains(b, []byte(s)), "%s holds detail %q", what, s)
		}
	}
	ctx := context.Background()
	var ns []string
	for n := range numbers {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	for _, n := range ns {
		p, err := st.Parcel(ctx, n)
		require.NoError(t, err)
		check("signed head", p.SignedHead)
		s, err := protocol.ParseSigned(p.SignedHead, protocol.ContentHead)
		require.NoError(t, err)
		check("head payload", s.Payload)
		evs, err := st.Events(ctx, p.ID, 0, int(p.Seq)+1)
		require.NoError(t, err)
		for _, ev := range evs {
			check("event", ev.Bytes) // the event block is its CID's preimage
		}
		require.True(t, protocol.CIDOf(evs[len(evs)-1].Bytes).Equals(p.Head), "the head is the CID of the last block")
		d, err := st.Details(ctx, p.ID)
		require.NoError(t, err, "details are stored")
		require.NotEmpty(t, d)
	}
	raw.sendMsg(&protocol.TrackRequest{Queries: queries(ns...)})
	require.NoError(t, raw.s.SetReadDeadline(time.Now().Add(5*time.Second)))
	body, err := raw.frames.Next()
	require.NoError(t, err)
	check("public response", body)
	var resp protocol.TrackResponse
	require.NoError(t, protocol.Unmarshal(body, &resp))
	for _, r := range resp.Results {
		require.Equal(t, protocol.CodeOK, r.Code)
		require.Empty(t, r.Details)
	}
}
