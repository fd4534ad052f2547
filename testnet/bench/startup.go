package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// testnetStartup starts a testnet in this process and times two moments:
// every node up (registry signed and installed, every host listening),
// and every platform answered by every carrier: each platform looks up
// a number each carrier has not issued, which takes resolving it in the
// registry, dialing the carrier and verifying its signed not_found.
func testnetStartup(ctx context.Context, o *Options) (nodesUp, ready time.Duration, err error) {
	// Its own directory, anew each run (an earlier run's repos are not
	// overwritten), since its nodes' logs would bury the harness's.
	dir := filepath.Join(o.Dir, "testnet")
	if err := os.RemoveAll(dir); err != nil {
		return 0, 0, err
	}
	began := time.Now()
	n, err := testnet.Start(ctx, testnet.Options{Carriers: o.TestnetCarriers, Platforms: o.TestnetPlatforms, Dir: dir})
	if err != nil {
		return 0, 0, err
	}
	defer n.Close()
	nodesUp = time.Since(began)
	g, gctx := errgroup.WithContext(ctx)
	// 64 lookups at a time: 1000 first dials at once on two cores time
	// out in the handshake, which measures the dial storm, not start-up.
	g.SetLimit(64)
	for _, c := range n.Carriers {
		num, err := c.NewNumber()
		if err != nil {
			return 0, 0, err
		}
		for _, p := range n.Platforms {
			g.Go(func() error {
				views, err := p.Track(gctx, nil, num)
				if err != nil {
					return fmt.Errorf("bench: testnet: %s -> %s: %w", p.Name, c.Code, err)
				}
				if len(views) != 1 || views[0].Error != protocol.CodeNotFound {
					return fmt.Errorf("bench: testnet: %s -> %s: %+v", p.Name, c.Code, views)
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	return nodesUp, time.Since(began), nil
}
