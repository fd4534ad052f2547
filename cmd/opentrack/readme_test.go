package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The README is a test: TestREADME runs every ```sh block of README.md in
// order, in one shell, in a fresh directory, with bin/opentrack built from
// this tree. Two HTML comments, invisible on the rendered page, steer it:
//
//	<!-- readme-test: skip (why) -->   on the line before a block: not run
//	<!-- readme-test: expect "TEXT" --> on the lines after a block: what the
//	                                    block's output must contain
//
// A block that exits non-zero, or whose output lacks an expected text,
// fails the test. Background processes the README starts with & are
// stopped by the README itself; the test kills the shell's process group
// in case it did not get that far.

// readmeBlock is one shell block of the README.
type readmeBlock struct {
	line   int // of the opening fence, 1-based
	script string
	expect []string
}

const (
	readmeSkip   = "<!-- readme-test: skip"
	readmeExpect = "<!-- readme-test: expect "
)

// parseReadme returns the README's shell blocks that are not skipped.
func parseReadme(text string) ([]readmeBlock, error) {
	var blocks []readmeBlock
	lines := strings.Split(text, "\n")
	skip := false
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case strings.HasPrefix(l, readmeSkip):
			skip = true
		case strings.HasPrefix(l, "```"):
			lang := strings.TrimPrefix(l, "```")
			start := i
			var body []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				body = append(body, lines[i])
			}
			if i == len(lines) {
				return nil, fmt.Errorf("README.md:%d: block never closed", start+1)
			}
			b := readmeBlock{line: start + 1, script: strings.Join(body, "\n") + "\n"}
			for i+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i+1]), readmeExpect) {
				i++
				e := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(lines[i]), readmeExpect), "-->")
				want, err := strconv.Unquote(strings.TrimSpace(e))
				if err != nil {
					return nil, fmt.Errorf("README.md:%d: expect wants a quoted string: %w", i+1, err)
				}
				b.expect = append(b.expect, want)
			}
			if (lang == "sh" || lang == "bash") && !skip {
				blocks = append(blocks, b)
			} else if len(b.expect) > 0 {
				return nil, fmt.Errorf("README.md:%d: expect after a block that does not run", start+1)
			}
			skip = false
		case l != "" && skip && !strings.HasPrefix(l, "<!--"):
			return nil, fmt.Errorf("README.md:%d: skip marker not right before a block", i+1)
		}
	}
	return blocks, nil
}

func TestParseReadme(t *testing.T) {
	text := "intro\n" +
		readmeSkip + " (why) -->\n```sh\nmake run\n```\n" +
		"```sh\necho hi\n```\n" + readmeExpect + `"hi"` + " -->\n" +
		"```json\n{}\n```\n"
	blocks, err := parseReadme(text)
	require.NoError(t, err)
	require.Equal(t, []readmeBlock{{line: 6, script: "echo hi\n", expect: []string{"hi"}}}, blocks)

	_, err = parseReadme("```sh\necho\n")
	require.ErrorContains(t, err, "never closed")
	_, err = parseReadme(readmeSkip + " -->\ntext\n```sh\necho\n```\n")
	require.ErrorContains(t, err, "skip marker not right before a block")
}

func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs every walkthrough")
	}
	for _, tool := range []string{"bash", "jq", "curl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README needs %s: %v", tool, err)
		}
	}
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	text, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	blocks, err := parseReadme(string(text))
	require.NoError(t, err)
	require.NotEmpty(t, blocks)

	// A fresh directory that looks like a clone to the README: the
	// binary in bin/, the example events in docs/.
	// OPENTRACK_README_DIR keeps the run (each block's output in
	// blockN.out) for reading afterwards; it must not exist yet.
	dir := os.Getenv("OPENTRACK_README_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else {
		require.NoError(t, os.Mkdir(dir, 0o700), "OPENTRACK_README_DIR")
	}
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "docs", "examples"), 0o755))
	ex, err := os.ReadFile(filepath.Join(root, "docs", "examples", "events.ndjson"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "docs", "examples", "events.ndjson"), ex, 0o644))
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", "opentrack"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// One script: each block's output goes to its own file, so that the
	// failing block and what it printed can be named.
	var sb strings.Builder
	sb.WriteString("set -eo pipefail\n")
	for i, b := range blocks {
		fmt.Fprintf(&sb, "exec >block%d.out 2>&1\n%s", i, b.script)
	}
	sb.WriteString("exec >done.out 2>&1\necho done\n")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "readme.sh"), []byte(sb.String()), 0o644))

	// The bound is generous: it only stops a hung walkthrough, and says
	// which block hung.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sh := exec.CommandContext(ctx, "bash", "readme.sh")
	sh.Dir = dir
	sh.Env = append(os.Environ(), "HOME="+dir, "OPENTRACK_REPO=")
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sh.Cancel = func() error { return syscall.Kill(-sh.Process.Pid, syscall.SIGKILL) }
	runErr := sh.Run()
	t.Cleanup(func() { _ = syscall.Kill(-sh.Process.Pid, syscall.SIGKILL) }) // anything the README left running

	for i, b := range blocks {
		out, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("block%d.out", i)))
		if errors.Is(err, os.ErrNotExist) {
			t.Fatalf("README.md:%d never ran: an earlier block failed", b.line)
		}
		require.NoError(t, err)
		next := fmt.Sprintf("block%d.out", i+1)
		if i == len(blocks)-1 {
			next = "done.out"
		}
		if _, err := os.Stat(filepath.Join(dir, next)); errors.Is(err, os.ErrNotExist) {
			t.Fatalf("README.md:%d failed (%v, %v):\n%s\n--- output:\n%s", b.line, runErr, ctx.Err(), b.script, out)
		}
		for _, want := range b.expect {
			if !strings.Contains(string(out), want) {
				t.Errorf("README.md:%d: output lacks %q:\n%s", b.line, want, indent(out))
			}
		}
	}
	require.NoError(t, runErr)
}

func indent(b []byte) string {
	var sb strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		sb.WriteString("    " + sc.Text() + "\n")
	}
	return sb.String()
}
