package admin_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/ingest/ingesttest"
	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
)

// The shared test carrier, clock, key and events (ingesttest).
const testCarrier = ingesttest.Carrier

var (
	testSchemes = ingesttest.Schemes
	testNow     = ingesttest.Now
	testKey     = ingesttest.Key
	s10         = ingesttest.S10
	event       = ingesttest.Event
	base        = ingesttest.Base
	with        = ingesttest.With
)

// testSigner signs with testKey.
func testSigner(t testing.TB) *protocol.Signer {
	t.Helper()
	s, err := protocol.NewSigner(testKey)
	require.NoError(t, err)
	return s
}

// testKeys resolves testCarrier to testKey.
func testKeys() protocol.KeyResolver {
	return protocol.PublicKeyResolver{Carrier: testCarrier, Key: testKey.Public().(ed25519.PublicKey)}
}

// env is the admin API over an Ingester and a store, with the wrapper (if
// any) between the Ingester and the store.
type env struct {
	t    testing.TB
	base store.Store // the store itself, for checks
	g    *ingest.Ingester
	m    *metrics.Metrics
	api  http.Handler
}

// newEnv builds the API over a fresh memstore; wrap, when not nil, sits
// between the Ingester and the store.
func newEnv(t testing.TB, opts *ingest.Options, wrap func(store.Store) store.Store) *env {
	t.Helper()
	e := &env{t: t, base: memstore.New(), m: metrics.New()}
	st := e.base
	if wrap != nil {
		st = wrap(e.base)
	}
	var err error
	e.g, err = ingest.New(ingest.Config{
		Carrier: testCarrier, Schemes: testSchemes, Signer: testSigner(t), Store: st,
		Metrics: e.m, Now: func() time.Time { return testNow },
	}, opts)
	require.NoError(t, err)
	e.api = admin.API(admin.APIConfig{Ingester: e.g, Grants: e.base, Keys: testKeys(), Carrier: testCarrier})
	return e
}

// server serves the API, without the token, on a loopback httptest server.
func (e *env) server() *httptest.Server {
	srv := httptest.NewServer(e.api)
	e.t.Cleanup(srv.Close)
	return srv
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

// ndjson encodes events one per line; a string is a line as it is.
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
func decodeResponse(t testing.TB, b []byte) admin.EventsResponse {
	t.Helper()
	var r admin.EventsResponse
	require.NoError(t, json.Unmarshal(b, &r), string(b))
	return r
}

// appendSpy fails every batch the Ingester appends while fail is set.
type appendSpy struct {
	store.Store
	mu   sync.Mutex
	fail error
}

func (s *appendSpy) Append(ctx context.Context, b *store.Batch) (*store.AppendResult, error) {
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	return s.Store.Append(ctx, b)
}
