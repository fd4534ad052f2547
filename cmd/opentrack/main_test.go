package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
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

// TestInitNext: init's next three commands are what the new repo lacks:
// a platform that trusts an authority already is not told to trust one.
func TestInitNext(t *testing.T) {
	dir := t.TempDir()
	auth, reg := filepath.Join(dir, "auth"), filepath.Join(dir, "registry.cose")
	pub := filepath.Join(auth, "authority.pub")
	_, err := execCmd(t, newRoot(), "registry", "init", "--dir", auth)
	require.NoError(t, err)
	_, err = execCmd(t, newRoot(), "registry", "sign", "--dir", auth, "--out", reg)
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		flags []string
		first string // the first next command, REPO for the repo
	}{
		{"carrier", []string{"--carrier", "SF"}, "opentrack node --repo REPO &"},
		{"platform alone", []string{"--platform", "p"}, "opentrack trust add --repo REPO AUTHDIR/authority.pub"},
		{"platform that trusts", []string{"--platform", "p", "--trust", pub}, "opentrack registry install --repo REPO registry.cose"},
		{"platform with a registry", []string{"--platform", "p", "--trust", pub, "--registry", reg}, "opentrack track --repo REPO NUMBER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repoDir := filepath.Join(t.TempDir(), "r")
			out, err := execCmd(t, newRoot(), append([]string{"init", "--repo", repoDir, "--json"}, tc.flags...)...)
			require.NoError(t, err)
			var res initResult
			require.NoError(t, json.Unmarshal([]byte(out), &res), "init --json printed %q", out)
			require.Len(t, res.Next, 3)
			require.Equal(t, strings.ReplaceAll(tc.first, "REPO", repoDir), res.Next[0])
		})
	}
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

// TestTrustAddRegistryInstall: a platform made before its registry trusts
// the authority and installs an edition with no node run.
func TestTrustAddRegistryInstall(t *testing.T) {
	dir := t.TempDir()
	auth, sf, shop, reg := filepath.Join(dir, "auth"), filepath.Join(dir, "sf"), filepath.Join(dir, "shop"), filepath.Join(dir, "registry.cose")
	for _, args := range [][]string{
		{"registry", "init", "--dir", auth},
		{"init", "--repo", sf, "--carrier", "SF", "--listen", "/ip4/127.0.0.1/tcp/4001"},
		{"registry", "add", "--dir", auth, "--carrier-repo", sf},
		{"registry", "sign", "--dir", auth, "--out", reg},
		{"init", "--repo", shop, "--platform", "shop"},
	} {
		_, err := execCmd(t, newRoot(), args...)
		require.NoError(t, err, "opentrack %v", args)
	}
	_, err := execCmd(t, newRoot(), "registry", "install", "--repo", shop, reg)
	require.ErrorIs(t, err, repo.ErrNoAnchors)
	require.ErrorContains(t, err, "opentrack trust add --repo "+shop, "the error says how to trust an authority")

	out, err := execCmd(t, newRoot(), "trust", "add", "--repo", shop, filepath.Join(auth, "authority.pub"))
	require.NoError(t, err)
	require.Contains(t, out, "now trusts authority key")
	out, err = execCmd(t, newRoot(), "registry", "install", "--repo", shop, reg)
	require.NoError(t, err)
	require.Contains(t, out, "registry seq 1 (was 0)")
	_, err = execCmd(t, newRoot(), "registry", "install", "--repo", shop, reg)
	require.ErrorIs(t, err, protocol.ErrStaleRegistry, "the same edition again is not newer")
	_, err = execCmd(t, newRoot(), "registry", "install", "--repo", shop)
	require.EqualError(t, err, "registry install needs FILE, the signed registry (usage: opentrack registry install [--repo DIR] FILE)")
}

func TestTrackNeedsNumbers(t *testing.T) {
	_, err := execCmd(t, newRoot(), "track", "--repo", t.TempDir())
	require.EqualError(t, err, "track needs one or more tracking numbers (usage: opentrack track [--repo PLATFORMDIR | --peer MULTIADDR] [--grant FILE] [--json] NUMBER...)")
}

// TestTrackExitStatus: 1 for a record that did not verify or came from
// a node that is not the carrier's, told apart; 2 when only answers were
// missing, a node's own wrong_carrier ("not a number I issue") among
// them; 0 when everything verified.
func TestTrackExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		errors  []string
		partial bool
		code    int
		msg     string
		// answered: each error is the node's answer, not a verdict
		answered bool
	}{
		{"all verified", []string{"", ""}, false, 0, "", false},
		{"not found", []string{"", "not_found"}, false, 2, "of 2 numbers, 1 was not answered", false},
		{"bad signature", []string{"bad_signature", "not_found", "not_found"}, false, 1, "of 3 numbers, 1 failed verification, 2 were not answered", false},
		{"wrong carrier", []string{"wrong_carrier"}, false, 1, "of 1 number, 1 came from a node that does not sign for the carrier", false},
		{"partial", []string{""}, true, 1, "of 1 number, 1 is partial (verified in part only)", false},
		{"not the node's number", []string{"wrong_carrier"}, false, 2, "of 1 number, 1 was not answered", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var views []client.ParcelView
			for _, e := range tc.errors {
				views = append(views, client.ParcelView{Error: e, Partial: tc.partial, Answered: tc.answered})
			}
			err := verificationStatus(views)
			if tc.code == 0 {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tc.msg)
			require.Equal(t, tc.code, exitCode(err))
		})
	}
}
