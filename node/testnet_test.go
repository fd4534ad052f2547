package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// TestPlatformGoneOthersUnaffected is the 2017 cut-off on a testnet: a
// platform that every parcel's carrier also serves disappears mid-watch,
// and the carrier keeps ingesting and serving every other platform, with
// no hub in between to take them down with it.
func TestPlatformGoneOthersUnaffected(t *testing.T) {
	servicetest.CheckLeaks(t)
	n := testnet.New(t, testnet.Options{Carriers: 2, Platforms: 3})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := n.Carriers[0]
	gone, stay := n.Platforms[2], n.Platforms[:2]

	number, err := c.NewNumber()
	require.NoError(t, err)
	audience := []string{gone.ID.String()}
	for _, p := range stay {
		audience = append(audience, p.ID.String())
	}
	var watchers []*client.Watcher
	for _, p := range n.Platforms {
		w, err := p.WatchAudience(ctx, c)
		require.NoError(t, err)
		defer w.Close() // before the testnet closes its client, as the package asks
		watchers = append(watchers, w)
	}
	require.NoError(t, n.WaitFor(10*time.Second, func() bool {
		for _, w := range watchers {
			if w.Cursor() == "" {
				return false
			}
		}
		return true
	}))
	ingestScan := func(i int) {
		res, err := c.Ingest(ctx, []ingest.InputEvent{{
			ID: fmt.Sprintf("%s-%d", number, i), Number: number, Time: time.Now().UTC().Format(time.RFC3339Nano),
			Status: string(protocol.StatusInTransit), Location: protocol.Location{Country: "CN"}, Audience: audience,
		}})
		require.NoError(t, err)
		require.Equal(t, ingest.StatusAccepted, res[0].Status, res[0].Error)
	}
	ingestScan(0)
	require.NoError(t, gone.Node.Host.Close()) // the platform's node vanishes
	for i := 1; i <= 3; i++ {
		ingestScan(i)
	}
	for _, p := range stay {
		views, err := p.Track(ctx, nil, number)
		require.NoError(t, err)
		require.True(t, views[0].Verified, views[0].Message)
		require.Len(t, views[0].Events, 4)
	}
}
