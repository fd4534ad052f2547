package gateway

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/client"
)

// ErrNotPlatform means the node cannot back a gateway: it has no trust
// anchors or no registry, so it could not verify what it would serve.
var ErrNotPlatform = errors.New("gateway: the node holds no trust anchors or no registry")

// shutdownGrace bounds how long Serve waits for lookups in flight when
// its context ends.
const shutdownGrace = 15 * time.Second

// Run serves a gateway for the platform node n on ln until ctx ends, then
// shuts it down: the streams end, lookups in flight finish, and the
// gateway's client closes. The node itself is the caller's to close.
func Run(ctx context.Context, n *node.Node, ln net.Listener, opts *Options) error {
	if n.Trust == nil || n.Trust.Registry() == nil {
		return ErrNotPlatform
	}
	cl, err := client.New(n.Host, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	g, err := New(Config{Client: cl, Trust: n.Trust, Connector: n.Router(), Logger: n.Log}, opts)
	if err != nil {
		return err
	}
	n.Log.Info("gateway listening", "url", "http://"+ln.Addr().String())
	return g.Serve(ctx, ln)
}
