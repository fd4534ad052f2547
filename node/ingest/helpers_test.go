package ingest_test

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

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
	testNow     = ingesttest.Now
	testKey     = ingesttest.Key
	s10         = ingesttest.S10
	ndjson      = ingesttest.NDJSON
	event       = ingesttest.Event
	base        = ingesttest.Base
	with        = ingesttest.With
)

// env is one Ingester over a store, with the wrapper (if any) in between.
type env struct{ *ingesttest.Env }

// newEnv builds an Ingester over a fresh memstore; wrap, when not nil,
// sits between them.
func newEnv(t testing.TB, opts *ingest.Options, wrap func(store.Store) store.Store) *env {
	t.Helper()
	return newEnvOver(t, memstore.New(), opts, wrap)
}

// newEnvOver is newEnv over base.
func newEnvOver(t testing.TB, base store.Store, opts *ingest.Options, wrap func(store.Store) store.Store) *env {
	t.Helper()
	return &env{ingesttest.NewEnv(t, base, opts, wrap)}
}

func atTime(ts string) func(*ingest.InputEvent) {
	return func(in *ingest.InputEvent) { in.Time = ts }
}

// verifyParcel checks a parcel's whole chain against its signed head and
// the head's signature, and returns the decoded events.
func (e *env) verifyParcel(number string) []*protocol.Event {
	e.T.Helper()
	ctx := context.Background()
	p, err := e.Base.Parcel(ctx, number)
	require.NoError(e.T, err)
	sh, err := protocol.ParseSignedHead(p.SignedHead)
	require.NoError(e.T, err)
	require.NoError(e.T, sh.Verify(testKey.Public().(ed25519.PublicKey)))
	require.Equal(e.T, p.Seq, sh.Seq)
	require.True(e.T, p.Head.Equals(sh.Head.Head.Cid))
	evs, err := e.Base.Events(ctx, p.ID, 0, 0)
	require.NoError(e.T, err)
	blocks := make([][]byte, len(evs))
	for i, ev := range evs {
		blocks[i] = ev.Bytes
	}
	out, err := protocol.VerifyChain(&sh.Head, blocks)
	require.NoError(e.T, err)
	return out
}

// decodeIngest decodes an NDJSON body, as the admin API does, and
// ingests its events, requiring no batch-level error.
func (e *env) decodeIngest(body []byte) []ingest.Result {
	e.T.Helper()
	events, err := ingest.DecodeBatch(ingest.TypeNDJSON, body, ingest.DefaultMaxBatchEvents)
	require.NoError(e.T, err)
	return e.IngestOK(events...)
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
