package bench

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRunRoundLateWorkers: a round whose deadline passed before its
// workers ran (a loaded machine) still measures a request per worker,
// rather than failing with none completed.
func TestRunRoundLateWorkers(t *testing.T) {
	var n atomic.Int64
	r, err := runRound(context.Background(), 8, 1, 100, 0, func(context.Context, int) error {
		n.Add(1)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, int64(8), r.requests, "one request per worker")
	require.Equal(t, int64(8), n.Load())
	require.Positive(t, r.rate)
}
