package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/testnet"
)

// TestTestnetCommand runs a tiny testnet through the CLI and checks the
// report's JSON keys, which scripts rely on.
func TestTestnetCommand(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "report.json")
	out, err := execCmd(t, testnetCmd(), "--carriers", "2", "--platforms", "2", "--parcels", "20", "--rate", "40",
		"--duration", "2s", "--seed", "3", "--scenario", "rogue", "--dir", filepath.Join(dir, "net"), "--json", report)
	require.NoError(t, err, out)
	require.Contains(t, out, "PASS")
	require.Contains(t, out, "events ingested")
	require.Regexp(t, `following \S+ of carrier \S+, each event as platform1 verifies it:\n\s+0  `, out, "one parcel's timeline, from its first event")
	require.Regexp(t, `followed \S+ \(carrier \S+\): \d+ verified events`, out)
	b, err := os.ReadFile(report)
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal(b, &got))

	// The followed parcel is in the report, with the kept repos to look
	// it up from, and the output says how (the README runs the lookup).
	var rep testnet.Report
	require.NoError(t, json.Unmarshal(b, &rep))
	require.NotNil(t, rep.Followed, "report names the followed parcel")
	f := rep.Followed
	require.Equal(t, "platform1", f.Platform)
	require.Positive(t, f.Events)
	require.DirExists(t, f.CarrierRepo)
	require.Equal(t, filepath.Join(dir, "net", "carriers", f.Carrier), f.CarrierRepo)
	require.Equal(t, filepath.Join(dir, "net", "platforms", "platform1"), f.PlatformRepo)
	require.Contains(t, out, "opentrack node --repo "+f.CarrierRepo+" &\n")
	require.Contains(t, out, "opentrack track --repo "+f.PlatformRepo+" "+f.Number+"\n")
	for _, k := range []string{"carriers", "platforms", "parcels", "events_ingested", "updates_delivered", "queries",
		"query_p50_ms", "query_p99_ms", "watch_lag_p99_ms", "verification_failures", "lost_updates",
		"duplicates_after_dedupe", "rejected_forgeries", "details_leaked", "startup_s", "errors"} {
		require.Contains(t, got, k)
	}
	require.EqualValues(t, 2, got["carriers"])
	require.EqualValues(t, 0, got["lost_updates"])
	require.Positive(t, got["rejected_forgeries"])
	require.FileExists(t, filepath.Join(dir, "net", "testnet.log"))

	_, err = execCmd(t, testnetCmd(), "--scenario", "flood")
	require.ErrorContains(t, err, `scenario "flood"`)
}

// TestTestnetVerdicts plants one fault per verdict and checks that the
// run prints FAIL naming the invariant and exits 1.
func TestTestnetVerdicts(t *testing.T) {
	cases := []struct {
		fault     testnet.Fault
		scenario  string
		invariant string
	}{
		{testnet.FaultAudience, "", "audience_leaked"},
		{testnet.FaultRestart, testnet.ScenarioCrash, "scenario_failures"},
		{testnet.FaultRejectEvent, "", "rejected_events"},
		{testnet.FaultStaleLookup, "", "stale_lookups"},
		{testnet.FaultNotFound, "", "lookups_refused"},
		{testnet.FaultSilentRogue, testnet.ScenarioRogue, "forged_records_rejected"},
	}
	for _, tc := range cases {
		t.Run(string(tc.fault), func(t *testing.T) {
			plantedFault = tc.fault
			t.Cleanup(func() { plantedFault = testnet.FaultNone })
			dir := t.TempDir()
			report := filepath.Join(dir, "report.json")
			args := []string{"--carriers", "2", "--platforms", "2", "--parcels", "20", "--rate", "40", "--query-rate", "40",
				"--duration", "3s", "--seed", "5", "--dir", filepath.Join(dir, "net"), "--json", report}
			if tc.scenario != "" {
				args = append(args, "--scenario", tc.scenario)
			}
			out, err := execCmd(t, testnetCmd(), args...)
			require.Error(t, err, out)
			require.Equal(t, 1, exitCode(err), "exit status; output:\n%s", out)
			require.Contains(t, out, "FAIL: "+tc.invariant+" ", "the failed invariant is named")
			require.NotContains(t, out, "PASS")
			b, err := os.ReadFile(report)
			require.NoError(t, err)
			var got struct {
				Failed []string `json:"failed_invariants"`
				Passed bool     `json:"passed"`
			}
			require.NoError(t, json.Unmarshal(b, &got))
			require.False(t, got.Passed)
			require.Contains(t, got.Failed, tc.invariant)
		})
	}
}
