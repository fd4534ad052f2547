package ingest_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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

// decodeIngest decodes an NDJSON body, as the admin API does, and
// ingests its events, requiring no batch-level error.
func (e *env) decodeIngest(body []byte) []ingest.Result {
	e.t.Helper()
	events, err := ingest.DecodeBatch(ingest.TypeNDJSON, body, ingest.DefaultMaxBatchEvents)
	require.NoError(e.t, err)
	return e.ingestOK(events...)
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
