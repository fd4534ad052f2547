// Package ingesttest holds what the tests of node/ingest and of the admin
// API that serves it share: a carrier with two kinds of number scheme, a
// fixed clock and key, and valid events to change.
package ingesttest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// Carrier registers S10 numbers of GB and its own pattern with a Luhn
// check digit (Schemes), so both scheme kinds are exercised.
const Carrier = "XP"

var (
	// Schemes are Carrier's number schemes.
	Schemes = []protocol.Scheme{
		{Kind: protocol.SchemeS10, Countries: []string{"GB"}},
		{Kind: protocol.SchemePattern, Pattern: `XP\d{9}`, Check: protocol.CheckLuhn},
	}
	// Now is the fixed clock of every test Ingester.
	Now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	// Key is deterministic so failures reproduce byte for byte.
	Key = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
)

// S10 returns the valid GB S10 number with the given 8-digit serial.
func S10(serial int) string {
	data := fmt.Sprintf("%08d", serial)
	c, err := protocol.CheckDigit(protocol.CheckMod11, data)
	if err != nil {
		panic(err)
	}
	return "RB" + data + string(c) + "GB"
}

// Event is a valid input event, changed by the given mutators.
func Event(id, number string, mods ...func(*ingest.InputEvent)) ingest.InputEvent {
	in := ingest.InputEvent{
		ID: id, Number: number, Time: "2025-06-01T11:00:00Z", Status: "picked_up", Reason: "collected",
		Location: protocol.Location{Country: "GB", Locode: "GBLON", City: "London"},
	}
	for _, m := range mods {
		m(&in)
	}
	return in
}

// Base is a valid event as the JSON a carrier posts.
func Base(id string) map[string]any {
	return map[string]any{
		"id": id, "number": "RB123456785GB", "time": "2025-06-01T11:00:00Z",
		"status": "picked_up", "location": map[string]any{"country": "GB", "locode": "GBLON"},
	}
}

// With is a copy of m with the keys and values of kv set, or deleted
// where the value is nil.
func With(m map[string]any, kv ...any) map[string]any {
	out := maps.Clone(m)
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// Env is an Ingester over a store, with a wrapper (if any) in between.
type Env struct {
	T    testing.TB
	Base store.Store // the store itself, for checks
	St   store.Store // what the Ingester writes to
	G    *ingest.Ingester
	M    *metrics.Metrics
}

// NewEnv builds an Ingester of Carrier, on Now and signing with Key, over
// base; wrap, when not nil, sits between them.
func NewEnv(t testing.TB, base store.Store, opts *ingest.Options, wrap func(store.Store) store.Store) *Env {
	t.Helper()
	e := &Env{T: t, Base: base, St: base, M: metrics.New()}
	if wrap != nil {
		e.St = wrap(base)
	}
	signer, err := protocol.NewSigner(Key)
	require.NoError(t, err)
	e.G, err = ingest.New(ingest.Config{
		Carrier: Carrier, Schemes: Schemes, Signer: signer, Store: e.St,
		Metrics: e.M, Now: func() time.Time { return Now },
	}, opts)
	require.NoError(t, err)
	return e
}

// IngestOK ingests events and requires no batch-level error.
func (e *Env) IngestOK(events ...ingest.InputEvent) []ingest.Result {
	e.T.Helper()
	res, err := e.G.Ingest(context.Background(), events)
	require.NoError(e.T, err)
	require.Len(e.T, res, len(events))
	return res
}

// Stored reports which ids the store holds.
func (e *Env) Stored(ids ...string) map[string]store.EventRef {
	e.T.Helper()
	refs, err := e.Base.LookupEventIDs(context.Background(), ids)
	require.NoError(e.T, err)
	return refs
}

// EventCount is the number of events in the store.
func (e *Env) EventCount() uint64 {
	e.T.Helper()
	s, err := e.Base.Stats(context.Background())
	require.NoError(e.T, err)
	return s.Events
}

// NDJSON encodes events one per line; a string is a line as it is.
func NDJSON(t testing.TB, events ...any) []byte {
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
