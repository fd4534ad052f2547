package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReporter: a finished package gets its line, a failed test its
// output, a skipped test its reason, and the summary counts failures.
func TestReporter(t *testing.T) {
	var out bytes.Buffer
	r := &reporter{out: &out, start: time.Now(), pkgs: map[string]*pkgState{}}
	const pkg = "github.com/opentrack/opentrack/node/x"
	for _, line := range []string{
		`{"Action":"start","Package":"` + pkg + `"}`,
		`{"Action":"run","Package":"` + pkg + `","Test":"TestA"}`,
		`{"Action":"run","Package":"` + pkg + `","Test":"TestB"}`,
		`{"Action":"run","Package":"` + pkg + `","Test":"TestC"}`,
		`{"Action":"output","Package":"` + pkg + `","Test":"TestA","Output":"quiet on pass\n"}`,
		`{"Action":"pass","Package":"` + pkg + `","Test":"TestA","Elapsed":1.5}`,
		`{"Action":"output","Package":"` + pkg + `","Test":"TestC","Output":"    x_test.go:9: SKIPPED, not checked: npm missing\n"}`,
		`{"Action":"skip","Package":"` + pkg + `","Test":"TestC"}`,
		`{"Action":"output","Package":"` + pkg + `","Test":"TestB","Output":"    x_test.go:3: want 2, got 3\n"}`,
		`{"Action":"fail","Package":"` + pkg + `","Test":"TestB","Elapsed":0.25}`,
		`{"Action":"fail","Package":"` + pkg + `","Elapsed":2}`,
	} {
		var e event
		require.NoError(t, json.Unmarshal([]byte(line), &e))
		r.handle(e)
	}
	r.summary(3)
	got := out.String()
	require.Contains(t, got, "FAIL node/x")
	require.Contains(t, got, "--- TestB output:\n    x_test.go:3: want 2, got 3\n")
	require.Contains(t, got, "SKIP node/x TestC: x_test.go:9: SKIPPED, not checked: npm missing")
	require.NotContains(t, got, "quiet on pass")
	require.Contains(t, got, "slowest tests: node/x TestA 1.5s; node/x TestB 0.2s;")
	require.Contains(t, got, "FAIL (1 failed): 1 packages")
	require.Equal(t, 1, r.failures)
}
