package ingest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/ingest"
)

// TestDecodeBatch: a body splits into its events, an event that does not
// decode is kept for Ingest to reject in place, and a body that is not a
// list of events, or is too long, is refused whole.
func TestDecodeBatch(t *testing.T) {
	body := ndjson(t, event("a", s10(1)), `{"id": "b", "colour": "red"}`, event("c", s10(2)))
	events, err := ingest.DecodeBatch(ingest.TypeNDJSON, body, 3)
	require.NoError(t, err)
	require.Len(t, events, 3)
	require.Equal(t, "b", events[1].ID, "what decoded is kept")

	e := newEnv(t, nil, nil)
	res, err := e.G.Ingest(context.Background(), events)
	require.NoError(t, err)
	require.Equal(t, []string{ingest.StatusAccepted, ingest.StatusRejected, ingest.StatusAccepted}, []string{res[0].Status, res[1].Status, res[2].Status})
	require.Equal(t, `invalid event: unknown field "colour"`, res[1].Error)
	require.Equal(t, "b", res[1].ID)

	_, err = ingest.DecodeBatch(ingest.TypeNDJSON, body, 2)
	require.ErrorIs(t, err, ingest.ErrTooManyEvents)
	_, err = ingest.DecodeBatch("text/plain", body, 3)
	require.ErrorIs(t, err, ingest.ErrMediaType)
	require.False(t, ingest.IsMediaType("text/plain"))
	_, err = ingest.DecodeBatch(ingest.TypeJSON, body, 3)
	require.ErrorContains(t, err, "want a JSON array of event objects")
}
