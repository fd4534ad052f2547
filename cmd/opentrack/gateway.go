package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/gateway"
	"github.com/opentrack/opentrack/node/repo"
)

func gatewayCmd() *cobra.Command {
	var dir, addr string
	var listen []string
	var o gateway.Options
	cmd := &cobra.Command{
		Use:   "gateway [--repo PLATFORMDIR] [--http 127.0.0.1:8080]",
		Short: "Run a platform node with an HTTP/JSON API, live updates over SSE and a tracking web page",
		Long: `Run a platform node and serve, on --http (port 0 picks a free one; the
running gateway writes DIR/node.json with "http_url"):

  GET  /v1/track/{number}   one parcel, verified, as one element of track --json
  POST /v1/track            {"numbers": [...]}, up to 100, as track --json
  GET  /v1/watch?number=N   verified updates as Server-Sent Events (or ?audience)
  GET  /openapi.json        the OpenAPI 3.1 document
  GET  /metrics             the gateway's Prometheus metrics
  GET  /debug/pprof/        Go profiles, only with --pprof
  GET  /                    the tracking web page

Every record is verified against the carrier key the repo's signed registry
names. Errors are application/problem+json with the protocol's code. Each
client IP has a token bucket (--rate, --burst) and at most a few open
streams. Cross-origin pages are refused unless --cors-origin allows them.
SIGINT and SIGTERM end the streams, finish the lookups in flight and stop.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := repo.Open(dir)
			if err != nil {
				return err
			}
			if err := wantRole(r, dir, repo.RolePlatform); err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("--http: %w", err)
			}
			log := newLogger(r.Config.Log)
			n, err := node.Start(r, node.Options{Listen: listen, Logger: log})
			if err != nil {
				ln.Close()
				return err
			}
			// node.json says where it listens, --http port 0 included.
			info := n.NodeInfo()
			info.HTTPURL = "http://" + ln.Addr().String()
			if err := r.WriteNodeInfo(info); err != nil {
				ln.Close()
				return errors.Join(err, n.Close())
			}
			defer r.RemoveNodeInfo()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = gateway.Run(ctx, n.Platform, ln, &o)
			if errors.Is(err, gateway.ErrNotPlatform) {
				err = fmt.Errorf("--repo %s: %w: create it with opentrack init --trust PUBFILE --registry FILE", dir, err)
			}
			ln.Close()
			return errors.Join(err, n.Close())
		},
	}
	f := cmd.Flags()
	repoFlag(cmd, &dir, "platform repo directory")
	f.StringVar(&addr, "http", gateway.DefaultAddr, "HTTP listen address (port 0: a free one, in node.json's http_url)")
	f.StringArrayVar(&listen, "listen", nil, "libp2p listen multiaddr, replacing the config's (repeatable)")
	f.StringArrayVar(&o.CORSOrigins, "cors-origin", nil, `origin allowed to call the API from a browser, scheme://host[:port], or "*" (repeatable; default: same origin only)`)
	f.Float64Var(&o.Rate, "rate", gateway.DefaultRate, "per-client requests a second (a batch costs one per number)")
	f.IntVar(&o.Burst, "burst", gateway.DefaultBurst, "per-client bucket size, at least 100")
	f.DurationVar(&o.CacheMaxAge, "cache-max-age", gateway.DefaultCacheMaxAge, "Cache-Control max-age of a found record")
	f.DurationVar(&o.TrackTimeout, "track-timeout", gateway.DefaultTrackTimeout, "bound on one lookup")
	f.IntVar(&o.MaxStreamsPerClient, "max-streams-per-client", gateway.DefaultMaxStreamsPerClient, "open SSE streams per client IP")
	f.IntVar(&o.MaxStreams, "max-streams", gateway.DefaultMaxStreams, "open SSE streams in total")
	f.BoolVar(&o.LogRequests, "log-requests", true, "log every request")
	f.BoolVar(&o.Pprof, "pprof", false, "serve Go profiles under /debug/pprof/ (for debugging; they show internals)")
	return cmd
}
