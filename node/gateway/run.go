package gateway

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/opentrack/opentrack/node/platform"
)

// ErrNotPlatform means the platform cannot back a gateway: there is none
// (a node without trust anchors has none), or it holds no registry, so it
// could not verify what it would serve.
var ErrNotPlatform = errors.New("gateway: the node holds no trust anchors or no registry")

// shutdownGrace bounds how long Serve waits for lookups in flight when
// its context ends.
const shutdownGrace = 15 * time.Second

// Run serves a gateway for the platform p on ln until ctx ends, then
// shuts it down: the streams end and lookups in flight finish. The
// gateway looks up and watches through p's client, trust and router, and
// logs to p's logger; p itself is the caller's to close.
func Run(ctx context.Context, p *platform.Platform, ln net.Listener, opts *Options) error {
	if p == nil || p.Trust() == nil || p.Trust().Registry() == nil {
		return ErrNotPlatform
	}
	g, err := New(Config{Client: p.Client(), Trust: p.Trust(), Connector: p.Router(), Logger: p.Logger()}, opts)
	if err != nil {
		return err
	}
	p.Logger().Info("gateway listening", "url", "http://"+ln.Addr().String())
	return g.Serve(ctx, ln)
}
