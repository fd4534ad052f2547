package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// TestTrackLongHistories runs `track --peer` and `track --repo` over
// parcels of 1,100 and 5,000 events, one at a time and together: every
// history is printed whole and verified, ending delivered. Before the
// client followed pages, both printed 1,000 events as verified.
func TestTrackLongHistories(t *testing.T) {
	n := testnet.New(t, testnet.Options{Carriers: 1, Platforms: 1})
	c := n.Carriers[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lengths := map[string]int{}
	var numbers []string
	for _, size := range []int{1100, 5000} {
		number, err := c.NewNumber()
		require.NoError(t, err)
		start := time.Now().Add(-time.Duration(size+1) * time.Minute)
		evs := make([]ingest.InputEvent, size)
		for i := range evs {
			s := protocol.StatusArrivedAtFacility
			if i == size-1 {
				s = protocol.StatusDelivered
			}
			evs[i] = ingest.InputEvent{ID: fmt.Sprintf("%s/%d", number, i), Number: number, Status: string(s),
				Time: start.Add(time.Duration(i) * time.Minute).UTC().Format(time.RFC3339), Location: protocol.Location{Country: "GB"}}
		}
		_, err = c.Ingest(ctx, evs)
		require.NoError(t, err)
		lengths[number] = size
		numbers = append(numbers, number)
	}

	dir := platformRepo(t, n)
	ai := c.AddrInfo()
	peerAddr := fmt.Sprintf("%s/p2p/%s", ai.Addrs[0], ai.ID)

	for _, how := range [][]string{{"--peer", peerAddr}, {"--repo", dir}} {
		for _, ask := range [][]string{numbers[:1], numbers[1:], numbers} {
			args := append(append([]string{"--json"}, how...), ask...)
			out, err := execCmd(t, trackCmd(), args...)
			require.NoError(t, err, "track %v: %s", how, out)
			var views []client.ParcelView
			require.NoError(t, json.Unmarshal([]byte(out), &views))
			require.Len(t, views, len(ask))
			for i, v := range views {
				size := lengths[ask[i]]
				require.Empty(t, v.Error, "track %v %s: %s", how, v.Number, v.Message)
				require.True(t, v.Verified, "track %v %s", how, v.Number)
				require.False(t, v.Partial)
				require.Len(t, v.Events, size, "track %v %s", how, v.Number)
				require.Equal(t, protocol.StatusDelivered, v.Events[size-1].Status)
			}
		}
	}
}

// TestTrackPartialExit prints a partial history as such and exits 1:
// partial is not verified.
func TestTrackPartialExit(t *testing.T) {
	views := []client.ParcelView{{Number: "X1", Carrier: "OT", Found: true, Partial: true, Message: "partial history, not verified: events to seq 9 of 20"}}
	err := verificationStatus(views)
	var exit *exitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 1, exit.code)
	var out strings.Builder
	printTimeline(&out, views)
	require.Contains(t, out.String(), "PARTIAL, NOT VERIFIED")
}

// platformRepo creates a platform repo that trusts n's authority and
// holds its registry, and returns its directory.
func platformRepo(t *testing.T, n *testnet.Net) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "shop")
	r, err := repo.Init(dir, repo.InitOptions{Platform: "shop", Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: []string{n.AuthorityPub}})
	require.NoError(t, err)
	trust, err := r.Trust()
	require.NoError(t, err)
	_, err = trust.Install(n.Registry)
	require.NoError(t, err)
	return dir
}
