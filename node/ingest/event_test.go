package ingest

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/protocol"
)

// TestMayExceedSize: the bound that lets prepare skip encoding an event
// holds for an event with every field set and every string at its limit.
func TestMayExceedSize(t *testing.T) {
	lat, lon := int64(-protocol.MaxLatE6), int64(-protocol.MaxLonE6)
	ev := &protocol.Event{
		Carrier: strings.Repeat("C", protocol.MaxCarrierLen), Number: strings.Repeat("9", protocol.MaxNumberLen),
		Seq: math.MaxUint64, Time: math.MinInt64, Status: "delivery_attempted", Reason: strings.Repeat("r", protocol.MaxReasonLen),
		Location: protocol.Location{
			Country: "GB", Locode: "GBLON", City: strings.Repeat("c", protocol.MaxCityLen),
			Facility: strings.Repeat("f", protocol.MaxFacilityLen), LatE6: &lat, LonE6: &lon,
		},
		Description: strings.Repeat("d", protocol.MaxDescriptionLen), Lang: strings.Repeat("l", protocol.MaxLangLen),
		Prev: placeholderPrev, ETA: math.MinInt64,
		Handoff: &protocol.Handoff{Carrier: strings.Repeat("C", protocol.MaxCarrierLen), Number: strings.Repeat("9", protocol.MaxNumberLen)},
	}
	b, err := protocol.Marshal(ev)
	require.NoError(t, err)
	strs := len(b) - maxFixedEncoding
	for _, s := range []string{ev.Carrier, ev.Number, string(ev.Status), ev.Reason, ev.Description, ev.Lang,
		ev.Location.Country, ev.Location.Locode, ev.Location.City, ev.Location.Facility, ev.Handoff.Carrier, ev.Handoff.Number} {
		strs -= len(s)
	}
	require.Negative(t, strs, "the fixed part of %d bytes fits in maxFixedEncoding", len(b))
	require.False(t, mayExceedSize(ev))

	ev.Ext = map[string]any{"xp.n": int64(1)}
	require.True(t, mayExceedSize(ev))
	ev.Ext = nil
	ev.Description = strings.Repeat("d", protocol.MaxEventSize)
	require.True(t, mayExceedSize(ev))
}
