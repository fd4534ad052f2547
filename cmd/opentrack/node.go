package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/spf13/cobra"
)

func nodeCmd() *cobra.Command {
	var dir string
	var o node.Options
	cmd := &cobra.Command{
		Use:   "node --repo DIR",
		Short: "Run a node in the foreground until SIGINT or SIGTERM",
		Long: `Run a node in the foreground. Once it listens it writes DIR/node.json
({"peer_id", "carrier", "addrs", "admin_url"}) and removes it on a clean exit.
SIGINT and SIGTERM shut it down gracefully: in-flight ingest finishes, then
the store closes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := repo.Open(dir)
			if err != nil {
				return err
			}
			o.Logger = newLogger(r.Config.Log)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return node.Run(ctx, r, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "repo", "", "repo directory (required)")
	f.StringArrayVar(&o.Listen, "listen", nil, "libp2p listen multiaddr, replacing the config's (repeatable)")
	f.StringVar(&o.AdminAddr, "admin", "", "admin API address on loopback, replacing the config's (port 0 picks one)")
	_ = cmd.MarkFlagRequired("repo")
	return cmd
}

// newLogger builds the structured logger the config asks for, on stderr.
func newLogger(c repo.LogConfig) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
