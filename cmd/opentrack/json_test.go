package main

import (
	"encoding/json"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/protocol"
)

// noJSON are the commands that print and have no --json, with why.
var noJSON = map[string]string{
	"opentrack node":           "a daemon: its output is its log, JSON with [log] format = \"json\"",
	"opentrack gateway":        "a daemon: its output is its log, JSON with [log] format = \"json\"",
	"opentrack bench":          "writes its results as JSON to --out (results.json)",
	"opentrack bench baseline": "a server for the benchmark's baseline; it prints only its address",
	"opentrack demo":           "a guided walk-through for people, which runs the other commands",
	"opentrack":                "a group of subcommands: it prints its help, or an unknown subcommand's error",
	"opentrack registry":       "a group of subcommands: it prints its help, or an unknown subcommand's error",
	"opentrack grant":          "a group of subcommands: it prints its help, or an unknown subcommand's error",
	"opentrack trust":          "a group of subcommands: it prints its help, or an unknown subcommand's error",
}

// TestEveryCommandHasJSON fails when a command is added without --json
// and without a reason in noJSON.
func TestEveryCommandHasJSON(t *testing.T) {
	var missing []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			walk(s)
		}
		if c.Runnable() && !c.Hidden && c.Name() != "help" && c.Flags().Lookup("json") == nil {
			if _, ok := noJSON[c.CommandPath()]; !ok {
				missing = append(missing, c.CommandPath())
			}
		}
	}
	walk(newRoot())
	require.Empty(t, missing, "commands without --json and without a reason in noJSON")
}

// TestJSONOutput runs each command with --json and checks that it prints
// one JSON object with exactly the keys its help promises.
func TestJSONOutput(t *testing.T) {
	dir := t.TempDir()
	auth, sf, shop := filepath.Join(dir, "auth"), filepath.Join(dir, "sf"), filepath.Join(dir, "shop")
	reg, grant := filepath.Join(dir, "registry.cose"), filepath.Join(dir, "shop.grant")
	for _, args := range [][]string{
		{"init", "--repo", sf, "--carrier", "SF", "--listen", "/ip4/127.0.0.1/tcp/4001"},
		{"init", "--repo", shop, "--platform", "shop"},
	} {
		_, err := execCmd(t, newRoot(), args...)
		require.NoError(t, err, "opentrack %v", args)
	}
	// The grant commands talk to the carrier node's admin API; its grants
	// handler over a memory store stands in for the running node.
	carrier, err := repo.Open(sf)
	require.NoError(t, err)
	signer, err := carrier.Signer()
	require.NoError(t, err)
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewServer(admin.API(admin.APIConfig{Grants: st, Keys: protocol.PublicKeyResolver{Carrier: "SF", Key: signer.Public()}, Carrier: "SF"}))
	t.Cleanup(srv.Close)
	require.NoError(t, carrier.WriteNodeInfo(&repo.NodeInfo{PeerID: carrier.PeerID().String(), Carrier: "SF", AdminURL: srv.URL}))
	shopRepo, err := repo.Open(shop)
	require.NoError(t, err)

	grantKeys := []string{"audience", "carrier", "expires", "fields", "holder", "id", "issued"}
	for _, tc := range []struct {
		args []string
		keys []string
	}{
		{[]string{"registry", "init", "--dir", auth}, []string{"key_id", "public_key_file"}},
		{[]string{"registry", "add", "--dir", auth, "--carrier-repo", sf}, []string{"code", "country", "keys", "name", "nodes", "schemes", "warnings"}},
		{[]string{"registry", "sign", "--dir", auth, "--out", reg}, []string{"carriers", "file", "not_after", "seq"}},
		{[]string{"trust", "add", "--repo", shop, filepath.Join(auth, "authority.pub")}, []string{"added", "file", "key_id", "repo"}},
		{[]string{"registry", "install", "--repo", shop, reg}, []string{"file", "previous_seq", "repo", "seq"}},
		{[]string{"grant", "issue", "--repo", sf, "--to", shopRepo.PeerID().String(), "--audience", "--fields", protocol.FieldPOD, "--ttl", "1h", "--out", grant},
			append(slices.Clone(grantKeys), "file")},
		{[]string{"grant", "revoke", "--repo", sf, grant}, append(slices.Clone(grantKeys), "revoked")},
		{[]string{"registry", "remove", "--dir", auth, "--code", "SF"}, []string{"carrier", "key_id"}},
	} {
		t.Run(strings.Join(tc.args[:2], " "), func(t *testing.T) {
			out, err := execCmd(t, newRoot(), append(tc.args, "--json")...)
			require.NoError(t, err, "opentrack %v --json", tc.args)
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(out), &m), "opentrack %v --json printed %q", tc.args, out)
			slices.Sort(tc.keys)
			require.Equal(t, tc.keys, slices.Sorted(maps.Keys(m)), "the keys of opentrack %v --json", tc.args)
			if f, ok := m["file"].(string); ok {
				_, err := os.Stat(f)
				require.NoError(t, err, "the file it names exists")
			}
		})
	}
}
