package node_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/store/seal"
	"github.com/opentrack/opentrack/protocol"
)

// TestNodeDetailsAtRest: a carrier node keeps the details it ingests
// sealed in its pebble store, in no file in plain text, and readable after
// a restart with its keyring; without the keyring, or with a damaged one,
// it refuses to start and names the file.
func TestNodeDetailsAtRest(t *testing.T) {
	c := launchCarrier(t, nil, "SF")
	number := "SF1234567890"
	details := map[string]string{protocol.FieldRecipientName: "Zelda Quux-Sealed", protocol.FieldRecipientAddress: "7 Plaintext Row, Nowhere"}
	res, err := c.node.Ingester.Ingest(context.Background(), []ingest.InputEvent{{
		ID: "e1", Number: number, Time: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), Status: "picked_up",
		Location: protocol.Location{Country: "CN", City: "Shenzhen"}, Details: details,
	}})
	require.NoError(t, err)
	require.Equal(t, ingest.StatusAccepted, res[0].Status, res[0].Error)

	c.restart(t)
	p, err := c.node.Store.Parcel(context.Background(), number)
	require.NoError(t, err)
	d, err := c.node.Store.Details(context.Background(), p.ID)
	require.NoError(t, err, "details after a restart")
	require.Equal(t, protocol.Details(details), d)
	require.NoError(t, c.node.Close())

	dir := c.repo.Path(c.repo.Config.Store.Path)
	err = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		for _, v := range details {
			require.False(t, bytes.Contains(b, []byte(v)), "detail %q in plain text in %s", v, path)
		}
		return err
	})
	require.NoError(t, err)

	keyring := c.repo.Path(seal.KeyringFile)
	good, err := os.ReadFile(keyring)
	require.NoError(t, err)
	require.NoError(t, os.Remove(keyring))
	_, err = node.Start(c.repo, node.Options{AdminAddr: "127.0.0.1:0", Logger: quiet(), Router: &testRouter})
	require.ErrorIs(t, err, seal.ErrNoKeyring, "start without the keyring")
	require.ErrorContains(t, err, keyring)
	require.NoError(t, os.WriteFile(keyring, good[:10], 0o600))
	_, err = node.Start(c.repo, node.Options{AdminAddr: "127.0.0.1:0", Logger: quiet(), Router: &testRouter})
	require.ErrorIs(t, err, seal.ErrBadKeyring, "start with a damaged keyring")
	require.ErrorContains(t, err, keyring)
	require.NoError(t, os.WriteFile(keyring, good, 0o600))
	c.start(t)
}
