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

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/ingest/ingesttest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
)

// The shared test carrier, clock, key and events (ingesttest).
const testCarrier = ingesttest.Carrier

var (
	testSchemes = ingesttest.Schemes
	testKey     = ingesttest.Key
	s10         = ingesttest.S10
	ndjson      = ingesttest.NDJSON
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
	*ingesttest.Env
	api http.Handler
}

// newEnv builds the API over a fresh memstore; wrap, when not nil, sits
// between the Ingester and the store.
func newEnv(t testing.TB, opts *ingest.Options, wrap func(store.Store) store.Store) *env {
	t.Helper()
	e := &env{Env: ingesttest.NewEnv(t, memstore.New(), opts, wrap)}
	e.api = admin.API(admin.APIConfig{Ingester: e.G, Grants: e.Base, Keys: testKeys(), Carrier: testCarrier})
	return e
}

// server serves the API, without the token, on a loopback httptest server.
func (e *env) server() *httptest.Server {
	srv := httptest.NewServer(e.api)
	e.T.Cleanup(srv.Close)
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
