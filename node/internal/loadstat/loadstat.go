// Package loadstat holds what the hostile-load measurements report: a
// latency percentile and the peak resident memory of the process.
package loadstat

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Percentile is the p-th percentile of sorted, rounded to microseconds;
// 0 for none.
func Percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)].Round(time.Microsecond)
}

// RSS is the process's resident set in bytes (VmRSS), 0 where /proc
// does not say.
func RSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Peak samples RSS every interval until the returned function is
// called, which gives the highest seen.
func Peak(interval time.Duration) (stop func() int64) {
	done, peak := make(chan struct{}), make(chan int64)
	go func() {
		var hi int64
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			hi = max(hi, RSS())
			select {
			case <-done:
				peak <- hi
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 { close(done); return <-peak }
}

// Env names: a measurement runs only when EnvRun is set, with EnvLookups
// honest lookups a phase when that is set.
const (
	EnvRun     = "OPENTRACK_HOSTILE_LOAD"
	EnvLookups = "OPENTRACK_HOSTILE_LOOKUPS"
)

// Lookups skips tb unless EnvRun is set, and returns EnvLookups, or def.
func Lookups(tb testing.TB, def int) int {
	tb.Helper()
	if os.Getenv(EnvRun) == "" {
		tb.Skip("a measurement: set " + EnvRun + "=1")
	}
	s := os.Getenv(EnvLookups)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive count", EnvLookups, s)
	}
	return n
}
