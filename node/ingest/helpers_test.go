package ingest_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
)

// testCarrier registers S10 numbers of GB and its own pattern with a Luhn
// check digit, so both scheme kinds are exercised.
const testCarrier = "XP"

var (
	testSchemes = []protocol.Scheme{
		{Kind: protocol.SchemeS10, Countries: []string{"GB"}},
		{Kind: protocol.SchemePattern, Pattern: `XP\d{9}`, Check: protocol.CheckLuhn},
	}
	// testNow is the fixed clock of every test Ingester.
	testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	// testKey is deterministic so failures reproduce byte for byte.
	testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
)

// s10 returns the valid GB S10 number with the given 8-digit serial.
func s10(serial int) string {
	data := fmt.Sprintf("%08d", serial)
	c, err := protocol.CheckDigit(protocol.CheckMod11, data)
	if err != nil {
		panic(err)
	}
	return "RB" + data + string(c) + "GB"
}

// env is one Ingester over a store, with the wrapper (if any) in between.
type env struct {
	t    testing.TB
	base store.Store // the store itself, for checks
	st   store.Store // what the Ingester writes to
	g    *ingest.Ingester
	m    *metrics.Metrics
}

// newEnv builds an Ingester over a fresh memstore; wrap, when not nil,
// sits between them.
func newEnv(t testing.TB, opts *ingest.Options, wrap func(store.Store) store.Store) *env {
	t.Helper()
	return newEnvOver(t, memstore.New(), opts, wrap)
}

// newEnvOver is newEnv over base.
func newEnvOver(t testing.TB, base store.Store, opts *ingest.Options, wrap func(store.Store) store.Store) *env {
	t.Helper()
	e := &env{t: t, base: base, m: metrics.New()}
	e.st = e.base
	if wrap != nil {
		e.st = wrap(e.base)
	}
	signer, err := protocol.NewSigner(testKey)
	require.NoError(t, err)
	e.g, err = ingest.New(ingest.Config{
		Carrier: testCarrier, Schemes: testSchemes, Signer: signer, Store: e.st,
		Metrics: e.m, Now: func() time.Time { return testNow },
	}, opts)
	require.NoError(t, err)
	return e
}

// event is a valid input event, changed by the given mutators.
func event(id, number string, mods ...func(*ingest.InputEvent)) ingest.InputEvent {
	in := ingest.InputEvent{
		ID: id, Number: number, Time: "2025-06-01T11:00:00Z", Status: "picked_up", Reason: "collected",
		Location: protocol.Location{Country: "GB", Locode: "GBLON", City: "London"},
	}
	for _, m := range mods {
		m(&in)
	}
	return in
}

func atTime(ts string) func(*ingest.InputEvent) {
	return func(in *ingest.InputEvent) { in.Time = ts }
}

// ingestOK ingests events and requires no batch-level error.
func (e *env) ingestOK(events ...ingest.InputEvent) []ingest.Result {
	e.t.Helper()
	res, err := e.g.Ingest(context.Background(), events)
	require.NoError(e.t, err)
	require.Len(e.t, res, len(events))
	return res
}

// stored reports which ids the store holds.
func (e *env) stored(ids ...string) map[string]store.EventRef {
	e.t.Helper()
	refs, err := e.base.LookupEventIDs(context.Background(), ids)
	require.NoError(e.t, err)
	return refs
}

// eventCount is the number of events in the store.
func (e *env) eventCount() uint64 {
	e.t.Helper()
	s, err := e.base.Stats(context.Background())
	require.NoError(e.t, err)
	return s.Events
}

// verifyParcel checks a parcel's whole chain against its signed head and
// the head's signature, and returns the decoded events.
func (e *env) verifyParcel(number string) []*protocol.Event {
	e.t.Helper()
	ctx := context.Background()
	p, err := e.base.Parcel(ctx, number)
	require.NoError(e.t, err)
	sh, err := protocol.ParseSignedHead(p.SignedHead)
	require.NoError(e.t, err)
	require.NoError(e.t, sh.Verify(testKey.Public().(ed25519.PublicKey)))
	require.Equal(e.t, p.Seq, sh.Seq)
	require.True(e.t, p.Head.Equals(sh.Head.Head.Cid))
	evs, err := e.base.Events(ctx, p.ID, 0, 0)
	require.NoError(e.t, err)
	blocks := make([][]byte, len(evs))
	for i, ev := range evs {
		blocks[i] = ev.Bytes
	}
	out, err := protocol.VerifyChain(&sh.Head, blocks)
	require.NoError(e.t, err)
	return out
}

// server serves the Ingester's handler on a loopback httptest server.
func (e *env) server() *httptest.Server {
	srv := httptest.NewServer(e.g.Handler())
	e.t.Cleanup(srv.Close)
	return srv
}

// post sends body with the content type and returns the status and body.
func post(t *testing.T, url, contentType string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, buf.Bytes()
}

// ndjson encodes events one per line.
func ndjson(t testing.TB, events ...any) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, ev := range events {
		if s, ok := ev.(string); ok {
			buf.WriteString(s)
		} else {
			b, err := json.Marshal(ev)
			require.NoError(t, err)
			buf.Write(b)
		}
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// decodeResponse parses a 200 answer.
func decodeResponse(t testing.TB, b []byte) ingest.Response {
	t.Helper()
	var r ingest.Response
	require.NoError(t, json.Unmarshal(b, &r), string(b))
	return r
}

// appendSpy records every batch the Ingester appends, and can fail them.
type appendSpy struct {
	store.Store
	mu      sync.Mutex
	batches []*store.Batch
	fail    error
}

func (s *appendSpy) Append(ctx context.Context, b *store.Batch) (*store.AppendResult, error) {
	s.mu.Lock()
	fail := s.fail
	s.batches = append(s.batches, b)
	s.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	return s.Store.Append(ctx, b)
}

// netListen listens on a free loopback port.
func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
