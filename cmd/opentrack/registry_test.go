package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/authority"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

// execCmd executes a command with args and returns what it printed.
func execCmd(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	err := cmd.Execute()
	return out.String(), err
}

// TestRegistryCommands walks the authority's workflow through the CLI:
// init, add from a carrier repo, sign, show, then a platform repo that
// starts from the edition, and a node offered editions at start.
func TestRegistryCommands(t *testing.T) {
	dir := t.TempDir()
	auth, rogue := filepath.Join(dir, "auth"), filepath.Join(dir, "rogue")
	out, err := execCmd(t, registryCmd(), "init", "--dir", auth)
	require.NoError(t, err)
	require.Contains(t, out, filepath.Join(auth, "authority.pub"))
	_, err = execCmd(t, registryCmd(), "init", "--dir", auth)
	require.ErrorIs(t, err, authority.ErrExists)
	_, err = execCmd(t, registryCmd(), "init", "--dir", rogue, "--name", "rogue")
	require.NoError(t, err)

	sf := filepath.Join(dir, "sf")
	_, err = repo.Init(sf, repo.InitOptions{Carrier: "SF", Listen: []string{"/ip4/127.0.0.1/tcp/4001"}})
	require.NoError(t, err)
	_, err = execCmd(t, registryCmd(), "add", "--dir", auth, "--carrier-repo", sf, "--name", "SF Express", "--country", "CN")
	require.NoError(t, err)

	reg1, reg2 := filepath.Join(dir, "reg1.cose"), filepath.Join(dir, "reg2.cose")
	out, err = execCmd(t, registryCmd(), "sign", "--dir", auth, "--out", reg1)
	require.NoError(t, err)
	require.Contains(t, out, "seq 1, 1 carriers")
	out, err = execCmd(t, registryCmd(), "sign", "--dir", auth, "--out", reg2, "--valid", "24h")
	require.NoError(t, err)
	require.Contains(t, out, "seq 2, 1 carriers")

	out, err = execCmd(t, registryCmd(), "show", reg2, "--json", "--trust", filepath.Join(auth, "authority.pub"))
	require.NoError(t, err)
	var v authority.View
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	require.Equal(t, authority.SignatureValid, v.Signature)
	require.EqualValues(t, 2, v.Seq)
	require.Equal(t, "SF Express", v.Carriers[0].Name)
	out, err = execCmd(t, registryCmd(), "show", reg2)
	require.NoError(t, err)
	require.Contains(t, out, "signature not checked")
	_, err = execCmd(t, registryCmd(), "show", reg2, "--trust", filepath.Join(rogue, "rogue.pub"))
	require.Error(t, err, "a node trusting another authority would reject it")

	_, err = execCmd(t, initCmd(), "--repo", filepath.Join(dir, "bad"), "--platform", "shop", "--trust", filepath.Join(rogue, "rogue.pub"), "--registry", reg1)
	require.ErrorIs(t, err, protocol.ErrUntrustedIssuer)
	require.Contains(t, err.Error(), "hint:")
	shop := filepath.Join(dir, "shop")
	_, err = execCmd(t, initCmd(), "--repo", shop, "--platform", "shop", "--trust", filepath.Join(auth, "authority.pub"), "--registry", reg1)
	require.NoError(t, err)

	r, err := repo.Open(shop)
	require.NoError(t, err)
	log := slog.New(slog.DiscardHandler)
	require.NoError(t, installRegistry(r, reg2, log))
	require.NoError(t, installRegistry(r, reg1, log), "an older edition is ignored, not fatal")
	tr, err := r.Trust()
	require.NoError(t, err)
	require.EqualValues(t, 2, tr.Seq())
	rogueReg := filepath.Join(dir, "rogue.cose")
	_, err = execCmd(t, registryCmd(), "sign", "--dir", rogue, "--out", rogueReg)
	require.NoError(t, err)
	require.ErrorIs(t, installRegistry(r, rogueReg, log), protocol.ErrUntrustedIssuer)

	carrier, err := repo.Open(sf)
	require.NoError(t, err)
	require.Error(t, installRegistry(carrier, reg2, log), "a repo without anchors cannot check a registry")
}
