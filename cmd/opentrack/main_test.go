package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opentrack/opentrack/node/repo"
	"github.com/stretchr/testify/require"
)

// TestDefaultRepo: without --repo, commands use $OPENTRACK_REPO, then
// ~/.opentrack; init and id print JSON with --json, and init ends with
// the next three commands.
func TestDefaultRepo(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv(repo.EnvRepo, "")
	out, err := execCmd(t, newRoot(), "init", "--carrier", "SF", "--json")
	require.NoError(t, err)
	var res initResult
	require.NoError(t, json.Unmarshal([]byte(out), &res), "init --json printed %q", out)
	want := filepath.Join(home, ".opentrack")
	require.Equal(t, want, res.Repo)
	require.Len(t, res.Next, 3)
	require.Equal(t, "opentrack node --repo "+want+" &", res.Next[0])

	out, err = execCmd(t, newRoot(), "id", "--json")
	require.NoError(t, err)
	var id repo.Identity
	require.NoError(t, json.Unmarshal([]byte(out), &id), "id --json printed %q", out)
	require.Equal(t, res.PeerID, id.ID, "id without --repo read another repo than init made")
	require.Equal(t, "SF", id.Carrier)
	require.NotEmpty(t, id.Addresses)

	env := filepath.Join(t.TempDir(), "shop")
	t.Setenv(repo.EnvRepo, env)
	out, err = execCmd(t, newRoot(), "init", "--platform", "shop")
	require.NoError(t, err)
	require.Contains(t, out, "initialized platform repo in "+env)
	require.Contains(t, out, "opentrack trust add --repo "+env, "a platform without a registry is told to trust an authority next")
	out, err = execCmd(t, newRoot(), "id")
	require.NoError(t, err)
	require.Equal(t, strings.SplitN(out, "\n", 2)[0], mustOpen(t, env).PeerID().String(), "id's first line is the peer ID of $OPENTRACK_REPO")
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, err := execCmd(t, newRoot(), args...)
		require.NoError(t, err)
		require.Regexp(t, `^opentrack \S+ commit \S+ \(go`, out, "opentrack %v", args)
	}
}

func TestInitNeedsRole(t *testing.T) {
	_, err := execCmd(t, newRoot(), "init", "--repo", filepath.Join(t.TempDir(), "x"))
	require.EqualError(t, err, "init makes a carrier repo (--carrier CODE) or a platform repo (--platform NAME): give one of them")
}

func mustOpen(t *testing.T, dir string) *repo.Repo {
	t.Helper()
	r, err := repo.Open(dir)
	require.NoError(t, err)
	return r
}
