package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/authority"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/store/postgres"
	"github.com/opentrack/opentrack/node/store/postgres/pgtest"
)

// TestReplicaCommands: init a carrier on PostgreSQL and a replica of it,
// then put both in the registry. Nothing here connects to the database.
func TestReplicaCommands(t *testing.T) {
	dir := t.TempDir()
	const url = "postgres://opentrack@db.invalid:5432/sf?sslmode=verify-full"
	sf1, sf2, auth := filepath.Join(dir, "sf1"), filepath.Join(dir, "sf2"), filepath.Join(dir, "auth")
	_, err := execCmd(t, initCmd(), "--repo", sf1, "--carrier", "SF", "--store", url, "--listen", "/ip4/127.0.0.1/tcp/4101")
	require.NoError(t, err)
	_, err = execCmd(t, initCmd(), "--repo", sf2, "--carrier", "SF", "--store", url, "--replica-of", sf1, "--listen", "/ip4/127.0.0.1/tcp/4102")
	require.NoError(t, err)

	r1, err := repo.Open(sf1)
	require.NoError(t, err)
	r2, err := repo.Open(sf2)
	require.NoError(t, err)
	require.Equal(t, repo.BackendPostgres, r2.Config.Store.Backend)
	require.Equal(t, url, r2.Config.Store.URL)
	require.Equal(t, r1.Config.Carrier.Schemes, r2.Config.Carrier.Schemes)
	require.True(t, r1.CarrierKey.Equal(r2.CarrierKey), "replicas share the carrier signing key")
	require.NotEqual(t, r1.PeerID(), r2.PeerID(), "each replica is its own node")
	k1, err := os.ReadFile(filepath.Join(sf1, repo.CarrierKeyFile))
	require.NoError(t, err)
	k2, err := os.ReadFile(filepath.Join(sf2, repo.CarrierKeyFile))
	require.NoError(t, err)
	require.True(t, bytes.Equal(k1, k2))

	// Refused: another carrier, a pebble carrier, a non-postgres URL.
	_, err = execCmd(t, initCmd(), "--repo", filepath.Join(dir, "x"), "--carrier", "YT", "--replica-of", sf1)
	require.ErrorIs(t, err, repo.ErrNotReplicable)
	peb := filepath.Join(dir, "peb")
	_, err = execCmd(t, initCmd(), "--repo", peb, "--carrier", "SF")
	require.NoError(t, err)
	_, err = execCmd(t, initCmd(), "--repo", filepath.Join(dir, "y"), "--carrier", "SF", "--replica-of", peb)
	require.ErrorIs(t, err, repo.ErrNotReplicable)
	_, err = execCmd(t, initCmd(), "--repo", filepath.Join(dir, "z"), "--carrier", "SF", "--store", "mysql://db/sf")
	require.ErrorIs(t, err, repo.ErrBadOptions)

	_, err = execCmd(t, registryCmd(), "init", "--dir", auth)
	require.NoError(t, err)
	for range 2 { // adding again changes nothing
		for _, r := range []string{sf1, sf2} {
			_, err = execCmd(t, registryCmd(), "add", "--dir", auth, "--carrier-repo", r)
			require.NoError(t, err)
		}
	}
	_, err = execCmd(t, registryCmd(), "add", "--dir", auth, "--carrier-repo", sf2, "--addr", "/ip4/127.0.0.1/tcp/4202")
	require.NoError(t, err)
	w, err := authority.Open(auth)
	require.NoError(t, err)
	require.Len(t, w.Draft.Carriers, 1)
	c := w.Draft.Carriers[0]
	require.Len(t, c.Keys, 1, "one shared key")
	require.Len(t, c.Nodes, 2)
	require.Equal(t, r1.PeerID().String(), c.Nodes[0].Peer)
	require.Equal(t, []string{"/ip4/127.0.0.1/tcp/4101"}, c.Nodes[0].Addrs)
	require.Equal(t, r2.PeerID().String(), c.Nodes[1].Peer)
	require.Equal(t, []string{"/ip4/127.0.0.1/tcp/4202"}, c.Nodes[1].Addrs, "--addr moved the replica's node only")
}

// TestMigrateCommand migrates a new database by URL and by repo.
func TestMigrateCommand(t *testing.T) {
	url := pgtest.URL(t)
	out, err := execCmd(t, migrateCmd(), "--store", url)
	require.NoError(t, err)
	require.Contains(t, out, fmt.Sprintf("schema migrated from version 0 to %d", postgres.SchemaVersion))
	sf := filepath.Join(t.TempDir(), "sf")
	_, err = execCmd(t, initCmd(), "--repo", sf, "--carrier", "SF", "--store", url)
	require.NoError(t, err)
	out, err = execCmd(t, migrateCmd(), "--repo", sf)
	require.NoError(t, err)
	require.Contains(t, out, "up to date")
	out, err = execCmd(t, migrateCmd(), "--repo", sf, "--json")
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &m), "migrate --json printed %q", out)
	require.Equal(t, map[string]any{"store": postgres.Redact(url), "from_version": float64(postgres.SchemaVersion), "version": float64(postgres.SchemaVersion)}, m)
	peb := filepath.Join(t.TempDir(), "peb")
	_, err = execCmd(t, initCmd(), "--repo", peb, "--carrier", "SF")
	require.NoError(t, err)
	_, err = execCmd(t, migrateCmd(), "--repo", peb)
	require.ErrorContains(t, err, "no migrations")
}
