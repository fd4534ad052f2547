package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

func nodeCmd() *cobra.Command {
	var dir, registry string
	var o node.Options
	cmd := &cobra.Command{
		Use:   "node [--repo DIR]",
		Short: "Run a node in the foreground until SIGINT or SIGTERM",
		Long: `Run a node in the foreground. Once it listens it writes DIR/node.json
({"peer_id", "carrier", "addrs", "admin_url"}) and removes it on a clean exit.
SIGINT and SIGTERM shut it down gracefully: in-flight ingest finishes, then
the store closes.

--registry installs a signed registry before the node starts, if it is
newer than the one the repo holds; an older or equal edition is ignored.
One that no trust anchor signed, or that is out of its window, stops the
node from starting.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := repo.Open(dir)
			if err != nil {
				return err
			}
			o.Logger = newLogger(r.Config.Log)
			if registry != "" {
				if err := installRegistry(r, registry, o.Logger); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return node.Run(ctx, r, o)
		},
	}
	f := cmd.Flags()
	repoFlag(cmd, &dir, "repo directory")
	f.StringArrayVar(&o.Listen, "listen", nil, "libp2p listen multiaddr, replacing the config's (repeatable)")
	f.StringVar(&o.AdminAddr, "admin", "", "admin API address on loopback, replacing the config's (port 0 picks one)")
	f.BoolVar(&o.MDNS, "mdns", false, "find peers on the local network with mDNS (for LAN testnets)")
	f.StringVar(&registry, "registry", "", "signed registry file to install before starting, if newer than the repo's")
	return cmd
}

// installRegistry offers a registry file to the repo's trust state, which
// keeps it if it is newer. A stale edition is only logged: handing a node
// the file it already has must not stop it.
func installRegistry(r *repo.Repo, path string, log *slog.Logger) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--registry: %w", err)
	}
	switch from, to, err := r.InstallRegistry(b); {
	case errors.Is(err, protocol.ErrStaleRegistry):
		log.Warn("registry file ignored: not newer than the one held", "file", path, "held_seq", from, "err", err)
	case err != nil:
		return withRegistryHint(fmt.Errorf("--registry %s not accepted: %w", path, err))
	default:
		log.Info("registry installed", "file", path, "seq", to, "previous_seq", from)
	}
	return nil
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
