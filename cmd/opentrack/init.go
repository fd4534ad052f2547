package main

import (
	"errors"
	"fmt"

	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
	"github.com/spf13/cobra"
)

func initCmd() *cobra.Command {
	var o repo.InitOptions
	var dir string
	cmd := &cobra.Command{
		Use:   "init --repo DIR (--carrier CODE | --platform NAME)",
		Short: "Create a node repo: keys, admin token and a documented config",
		Long: `Create a node repo: keys, admin token and a documented config.

A carrier's store is pebble, in the repo, unless --store names a PostgreSQL
database (postgres://...). A carrier on PostgreSQL can run several nodes:
--replica-of DIR makes a replica of the carrier node repo DIR, with its own
node key (peer ID) but the same carrier, database and carrier signing key.
Replicas share the signing key because they share everything it vouches
for: each replica may extend any parcel's chain in the shared database, so
a key of its own would isolate nothing, and revoking one replica's key
would break the heads it had signed for every replica. One key also keeps
the registry's keys unchanged as replicas come and go; only its node list
changes (opentrack registry add --carrier-repo DIR2). The key file is
copied, so keep DIR2 as private as DIR.`,
		Example: `  opentrack init --repo ./sf --carrier SF --name "SF Express" --scheme 'SF\d{10,20}' --listen /ip4/127.0.0.1/tcp/4001
  opentrack init --repo ./shop --platform shop --trust ./auth/authority.pub --registry registry.cose
  opentrack init --repo ./sf1 --carrier SF --store 'postgres://opentrack@db:5432/sf?sslmode=verify-full'
  opentrack init --repo ./sf2 --carrier SF --store 'postgres://opentrack@db:5432/sf?sslmode=verify-full' --replica-of ./sf1 --listen /ip4/0.0.0.0/tcp/4002`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := repo.Init(dir, o)
			if err != nil {
				return withRegistryHint(err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "initialized %s repo in %s\n", r.Config.Role, dir)
			if r.CarrierKey != nil {
				fmt.Fprintf(out, "carrier %s, schemes %v\n", r.Config.Carrier.Code, r.Config.Carrier.Schemes)
			}
			if n := len(r.Config.Trust.Anchors); n > 0 {
				fmt.Fprintf(out, "trust anchors: %d", n)
				if o.Registry != "" {
					fmt.Fprintf(out, ", registry from %s", o.Registry)
				}
				fmt.Fprintln(out)
			}
			fmt.Fprintln(out, r.PeerID())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "repo", "", "repo directory to create (required)")
	f.StringVar(&o.Carrier, "carrier", "", "carrier code (A-Z 0-9, 2-16 chars) for a carrier node")
	f.StringVar(&o.Platform, "platform", "", "platform name for a platform node")
	f.StringVar(&o.Name, "name", "", "carrier display name (default: the code)")
	f.StringVar(&o.Country, "country", "", `carrier country, ISO 3166-1 alpha-2 (default "ZZ")`)
	f.StringArrayVar(&o.Schemes, "scheme", nil, `tracking-number scheme, PATTERN[:ALGO] or s10:CC (repeatable; default: CODE\d{10,20})`)
	f.StringArrayVar(&o.Listen, "listen", nil, "libp2p listen multiaddr (repeatable; default TCP and QUIC on loopback, ports the OS picks, written to node.json)")
	f.StringArrayVar(&o.Trust, "trust", nil, "registry authority public key (PEM) to trust as an anchor; copied into the repo (repeatable)")
	f.StringVar(&o.Registry, "registry", "", "signed registry to start with; it must verify against a --trust key and be in force")
	f.StringVar(&o.Store, "store", "", "carrier store in PostgreSQL: a postgres:// URL (default: pebble, in the repo)")
	f.StringVar(&o.ReplicaOf, "replica-of", "", "make a replica of this carrier repo on the same PostgreSQL store, sharing its signing key")
	_ = cmd.MarkFlagRequired("repo")
	return cmd
}

// withRegistryHint adds what to do about a registry that was not
// accepted, keyed by the protocol's reason.
func withRegistryHint(err error) error {
	var hint string
	switch {
	case errors.Is(err, protocol.ErrUntrustedIssuer):
		hint = "its signing key (opentrack registry show FILE prints it) is not a trust anchor; get an edition signed by the authority you trust, or trust that authority's .pub"
	case errors.Is(err, protocol.ErrExpired):
		hint = "the registry is outside its validity window; ask the authority for a current edition (or check this machine's clock)"
	case errors.Is(err, protocol.ErrBadSignature):
		hint = "the registry file was altered or is corrupt; fetch it again"
	default:
		return err
	}
	return fmt.Errorf("%w\nhint: %s", err, hint)
}

func idCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "id --repo DIR",
		Short: "Print the repo's peer ID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := repo.Open(dir)
			if err != nil {
				return err
			}
			if r.Config.Role == repo.RoleCarrier {
				s, err := r.Signer()
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "carrier %s, signing key id %x\n", r.Config.Carrier.Code, s.KeyID())
			}
			fmt.Fprintln(cmd.OutOrStdout(), r.PeerID())
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "repo", "", "repo directory (required)")
	_ = cmd.MarkFlagRequired("repo")
	return cmd
}
