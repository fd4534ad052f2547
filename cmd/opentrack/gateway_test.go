package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// TestGatewayCommand runs `opentrack gateway` on a new platform repo
// that trusts a testnet's authority, looks a parcel up through it, and
// stops it as SIGINT would.
func TestGatewayCommand(t *testing.T) {
	n := testnet.New(t, testnet.Options{Carriers: 1, Platforms: 1})
	c := n.Carriers[0]
	number, err := c.NewNumber()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = c.Ingest(ctx, []ingest.InputEvent{{ID: "e1", Number: number, Time: time.Now().UTC().Format(time.RFC3339),
		Status: string(protocol.StatusPickedUp), Location: protocol.Location{Country: "GB"}}})
	require.NoError(t, err)

	dir := platformRepo(t, n)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()

	_, err = execCmd(t, gatewayCmd(), "--repo", c.Repo.Dir, "--http", addr)
	require.ErrorContains(t, err, "platform")

	run, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		cmd := gatewayCmd()
		cmd.SetArgs([]string{"--repo", dir, "--http", addr, "--log-requests=false"})
		cmd.SetOut(io.Discard)
		done <- cmd.ExecuteContext(run)
	}()
	url := fmt.Sprintf("http://%s/v1/track/%s", addr, number)
	var view client.ParcelView
	require.Eventually(t, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&view) == nil
	}, 30*time.Second, 100*time.Millisecond)
	require.True(t, view.Verified)
	require.Equal(t, client.KeySourceRegistry, view.KeySource)
	require.Equal(t, c.Code, view.Carrier)
	stop()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway did not stop")
	}
}
