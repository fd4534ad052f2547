package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// needTool skips t when a tool the test runs is missing, saying so,
// except in CI (CI=true), where a check that cannot run is a failure.
func needTool(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and this check cannot run: "+format, args...)
	}
	t.Skipf("SKIPPED, not checked: "+format, args...)
}

// TestOpenAPIRedoclyLint lints openapi.json with Redocly's recommended
// rules (testdata/redocly/redocly.yaml switches none off); any error or
// warning fails. The CLI is pinned in testdata/redocly/package-lock.json.
func TestOpenAPIRedoclyLint(t *testing.T) {
	dir := filepath.Join("testdata", "redocly")
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			needTool(t, "%s is not installed (apt-get install nodejs npm)", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join("node_modules", ".bin", "redocly")
	if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
		// `make test` installs it first; go test alone does it here.
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			needTool(t, "npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	cmd := exec.CommandContext(ctx, bin, "lint", "--format", "json", "--config", "redocly.yaml", filepath.Join("..", "..", "openapi.json"))
	cmd.Dir = dir
	// No telemetry and no update check: the test talks to nobody.
	cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var report struct {
		Totals struct {
			Errors, Warnings int
		}
		Problems []struct {
			RuleID   string `json:"ruleId"`
			Severity string
			Message  string
			Location []struct {
				Pointer string
			}
		}
	}
	require.NoError(t, json.Unmarshal(out, &report), "redocly lint (%v) printed no report:\n%s%s", err, out, stderr.Bytes())
	var problems []string
	for _, p := range report.Problems {
		at := ""
		if len(p.Location) > 0 {
			at = p.Location[0].Pointer
		}
		problems = append(problems, fmt.Sprintf("%s %s at %s: %s", p.Severity, p.RuleID, at, p.Message))
	}
	require.Empty(t, problems, "redocly lint: %d errors, %d warnings", report.Totals.Errors, report.Totals.Warnings)
	require.NoError(t, err, "redocly lint:\n%s", stderr.Bytes())
}
