package loadstat

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	require.Equal(t, 51*time.Millisecond, Percentile(d, 50))
	require.Equal(t, 100*time.Millisecond, Percentile(d, 99))
	require.Equal(t, 100*time.Millisecond, Percentile(d, 100))
	require.Zero(t, Percentile(nil, 99))
}

func TestRSS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	require.Positive(t, RSS())
	stop := Peak(time.Millisecond)
	require.GreaterOrEqual(t, stop(), int64(1))
}
