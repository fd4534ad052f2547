package testnet

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWaitUntilSays: a wait that runs out names what it awaited and what
// it last saw.
func TestWaitUntilSays(t *testing.T) {
	n := &Net{}
	polls := 0
	err := n.WaitUntil(50*time.Millisecond, "every watch subscription live", func() (bool, string) {
		polls++
		return false, "3 of 4 live; waiting for p0→SF"
	})
	require.ErrorIs(t, err, ErrTimeout)
	require.ErrorContains(t, err, "every watch subscription live")
	require.ErrorContains(t, err, "3 of 4 live; waiting for p0→SF")
	require.Positive(t, polls)
	require.NoError(t, n.WaitUntil(time.Minute, "at once", func() (bool, string) { return true, "" }))
	require.ErrorContains(t, n.WaitFor(time.Millisecond, func() bool { return false }), "condition")
}

// TestWatchWaitScales: the wait grows with the subscriptions, so that a
// large testnet on a slow machine is given time in proportion.
func TestWatchWaitScales(t *testing.T) {
	require.Equal(t, time.Minute+15*100*time.Millisecond, watchWait(15))
	require.Greater(t, watchWait(50*20), 2*watchWait(5*3))
}
