package client

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// TestVerifyResult checks VerifyResult's verdict on a result edited in
// each way a node or the path could get it wrong.
//
// long: a table, one row per edit.
func TestVerifyResult(t *testing.T) {
	p := servicetest.NewParcel(t, servicetest.Number(1), 8)
	other := servicetest.NewParcel(t, servicetest.Number(2), 8)
	headTime := time.UnixMilli(1767225600000 + 8*3_600_000) // servicetest's head time for 8 events
	otherKey := protocol.PublicKeyResolver{Carrier: servicetest.Carrier, Key: ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)}
	tamper := func(b []byte) []byte { return bytes.Replace(b, []byte("Frankfurt"), []byte("Frankfurz"), 1) }
	without := func(evs [][]byte, i int) [][]byte {
		return append(append([][]byte{}, evs[:i]...), evs[i+1:]...)
	}

	tests := []struct {
		name     string
		edit     func(r *protocol.TrackResult)
		carrier  string
		keys     protocol.KeyResolver
		known    protocol.Link
		knownSeq uint64
		now      time.Time
		want     string // protocol error code; "" for success
		wantSeqs []uint64
		full     bool
	}{
		{name: "full history", wantSeqs: []uint64{0, 1, 2, 3, 4, 5, 6, 7}, full: true},
		{name: "suffix", edit: func(r *protocol.TrackResult) { r.Events = r.Events[5:] }, known: protocol.LinkTo(p.CIDs[4]), knownSeq: 4, wantSeqs: []uint64{5, 6, 7}},
		{name: "up to date", edit: func(r *protocol.TrackResult) { r.Events = nil }, known: p.Head(), knownSeq: 7},
		{name: "full history although known", known: other.Head(), knownSeq: 7, wantSeqs: []uint64{0, 1, 2, 3, 4, 5, 6, 7}, full: true},
		{name: "first page", edit: func(r *protocol.TrackResult) { r.Events, r.More = r.Events[:3], true }, wantSeqs: []uint64{0, 1, 2}, full: true},
		{name: "middle page", edit: func(r *protocol.TrackResult) { r.Events, r.More = r.Events[3:6], true }, known: protocol.LinkTo(p.CIDs[2]), knownSeq: 2, wantSeqs: []uint64{3, 4, 5}},
		{name: "head just within the clock skew", now: headTime.Add(-MaxClockSkew), wantSeqs: []uint64{0, 1, 2, 3, 4, 5, 6, 7}, full: true},

		{name: "error result", edit: func(r *protocol.TrackResult) {
			*r = protocol.TrackResult{Number: r.Number, Code: protocol.CodeNotFound}
		}, want: protocol.CodeNotFound},
		{name: "unknown result code", edit: func(r *protocol.TrackResult) { *r = protocol.TrackResult{Number: r.Number, Code: "on_fire"} }, want: "on_fire"},
		{name: "no code", edit: func(r *protocol.TrackResult) { r.Code = "" }, want: "invalid_record"},
		{name: "garbage head", edit: func(r *protocol.TrackResult) { r.Head = []byte{0x01, 0x02} }, want: "malformed"},
		{name: "another number's head", edit: func(r *protocol.TrackResult) { r.Head = other.SignedHead }, want: "head_mismatch"},
		{name: "another carrier asked", carrier: "XX", want: "wrong_carrier"},
		{name: "key not the carrier's", keys: otherKey, want: "unknown_key"},
		{name: "keys of another carrier", keys: protocol.PublicKeyResolver{Carrier: "XX", Key: servicetest.Signer().Public()}, want: "wrong_carrier"},
		{name: "head from the future", now: headTime.Add(-MaxClockSkew - time.Millisecond), want: "expired"},
		{name: "tampered event", edit: func(r *protocol.TrackResult) { r.Events[3] = tamper(r.Events[3]) }, want: "broken_chain"},
		{name: "tampered last event", edit: func(r *protocol.TrackResult) { r.Events[7] = tamper(r.Events[7]) }, want: "head_mismatch"},
		{name: "missing event", edit: func(r *protocol.TrackResult) { r.Events = without(r.Events, 3) }, want: "broken_chain"},
		{name: "history cut short", edit: func(r *protocol.TrackResult) { r.Events = r.Events[:7] }, want: "head_mismatch"},
		{name: "no events, nothing known", edit: func(r *protocol.TrackResult) { r.Events = nil }, want: "head_mismatch"},
		{name: "suffix from the wrong seq", edit: func(r *protocol.TrackResult) { r.Events = r.Events[5:] }, known: protocol.LinkTo(p.CIDs[4]), knownSeq: 3, want: "broken_chain"},
		{name: "suffix of another chain", edit: func(r *protocol.TrackResult) { r.Events = r.Events[5:] }, known: protocol.LinkTo(other.CIDs[4]), knownSeq: 4, want: "broken_chain"},
		{name: "page reaching the head", edit: func(r *protocol.TrackResult) { r.More = true }, want: "head_mismatch"},
		{name: "empty page", edit: func(r *protocol.TrackResult) { r.Events, r.More = nil, true }, want: "head_mismatch"},
		{name: "undecodable event", edit: func(r *protocol.TrackResult) { r.Events[0] = []byte{0xff} }, known: protocol.LinkTo(p.CIDs[0]), want: "indefinite_length"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := protocol.TrackResult{Number: p.Number, Code: protocol.CodeOK, Head: p.SignedHead, Events: append([][]byte{}, p.Events...)}
			if tc.edit != nil {
				tc.edit(&res)
			}
			carrier, keys, now := servicetest.Carrier, servicetest.Keys(), time.Now()
			if tc.carrier != "" {
				carrier = tc.carrier
			}
			if tc.keys != nil {
				keys = tc.keys
			}
			if !tc.now.IsZero() {
				now = tc.now
			}
			v, err := verifyResult(&res, carrier, keys, tc.known, tc.knownSeq, now, nil)
			if tc.want != "" {
				require.Error(t, err)
				require.Equal(t, tc.want, protocol.CodeOf(err), err.Error())
				return
			}
			require.NoError(t, err)
			require.Equal(t, res.More, v.More)
			require.Equal(t, tc.full, v.Full)
			require.Len(t, v.Events, len(tc.wantSeqs))
			require.Len(t, v.CIDs, len(tc.wantSeqs))
			for i, seq := range tc.wantSeqs {
				require.Equal(t, seq, v.Events[i].Seq)
				require.Equal(t, p.CIDs[seq], v.CIDs[i])
			}
		})
	}
}

// TestViewAnswered: a view says whether its error is the node's own
// answer for the number or a verdict on a record that came back, which
// wrong_carrier alone cannot tell.
func TestViewAnswered(t *testing.T) {
	for _, tc := range []struct {
		name     string
		res      *protocol.TrackResult
		verr     error
		answered bool
	}{
		{"node does not issue it", &protocol.TrackResult{Number: "SF1", Code: protocol.CodeWrongCarrier, Message: "not a number SF issues"},
			&protocol.Error{Code: protocol.CodeWrongCarrier, Msg: "not a number SF issues"}, true},
		{"node has none", &protocol.TrackResult{Number: "SF1", Code: protocol.CodeNotFound}, &protocol.Error{Code: protocol.CodeNotFound, Msg: "none"}, true},
		{"head of another carrier", &protocol.TrackResult{Number: "SF1", Code: protocol.CodeOK},
			fmt.Errorf("%w: signed head is RM's, asked SF", protocol.ErrWrongCarrier), false},
		{"request refused", nil, &protocol.Error{Code: protocol.CodeRateLimited, Msg: "node P: slow down"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pv := View("SF1", "SF", tc.res, nil, tc.verr)
			require.Equal(t, protocol.CodeOf(tc.verr), pv.Error)
			require.Equal(t, tc.answered, pv.Answered)
		})
	}
}
