package repo

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/policy"
)

// TestConfigPolicy: a new carrier config shows [policy] with its defaults
// and loads back to them; a config without the section gets the
// defaults; bad values are all reported at once.
func TestConfigPolicy(t *testing.T) {
	dir := t.TempDir()
	_, err := Init(dir, InitOptions{Carrier: "SF"})
	require.NoError(t, err)
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(b), "[policy]\n")
	require.Contains(t, string(b), "not_found_rate = 1\n")
	r, err := Open(dir)
	require.NoError(t, err)
	require.Equal(t, *(&policy.Options{}).EnsureDefaults(), r.Config.Policy)

	section := regexp.MustCompile(`(?s)\n\[policy\].*?\n\n`)
	cases := []struct {
		name    string
		section string
		rate    float64 // track_rate in force
		errs    []string
	}{
		{"absent", "\n", policy.DefaultTrackRate, nil},
		{"custom", "\n[policy]\ntrack_rate = 2.5\npublic = \"members\"\ndeny = [\"12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA\"]\n\n", 2.5, nil},
		{"bad", "\n[policy]\ntrack_rate = -1\ntrack_burst = 10\npublic = \"some\"\nallow = [\"nope\"]\n\n", 0,
			[]string{"track_rate -1", "track_burst 10", `public "some"`, `allow: "nope"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), ConfigFile)
			require.NoError(t, os.WriteFile(p, section.ReplaceAll(b, []byte(tc.section)), 0o600))
			c, err := LoadConfig(p)
			if tc.errs != nil {
				require.ErrorIs(t, err, ErrBadOptions)
				for _, e := range tc.errs {
					require.Contains(t, err.Error(), e)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.rate, c.PolicyOptions().TrackRate)
		})
	}
}
