package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

func initCmd() *cobra.Command {
	var o repo.InitOptions
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "init [--repo DIR] (--carrier CODE | --platform NAME)",
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
copied, so keep DIR2 as private as DIR.

A carrier repo holds details.keyring, the keys that seal parcel details in
the store until [retention] details passes; a replica gets a copy. Keep it
out of store backups.`,
		Example: `  opentrack init --repo ./sf --carrier SF --name "SF Express" --scheme 'SF\d{10,20}' --listen /ip4/127.0.0.1/tcp/4001
  opentrack init --repo ./shop --platform shop --trust ./auth/authority.pub --registry registry.cose
  opentrack init --repo ./sf1 --carrier SF --store 'postgres://opentrack@db:5432/sf?sslmode=verify-full'
  opentrack init --repo ./sf2 --carrier SF --store 'postgres://opentrack@db:5432/sf?sslmode=verify-full' --replica-of ./sf1 --listen /ip4/0.0.0.0/tcp/4002`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (o.Carrier == "") == (o.Platform == "") {
				return fmt.Errorf("init makes a carrier repo (--carrier CODE) or a platform repo (--platform NAME): give one of them")
			}
			r, err := repo.Init(dir, o)
			if err != nil {
				return withRegistryHint(err)
			}
			res := initResult{Repo: dir, Role: r.Config.Role, PeerID: r.PeerID().String(), Carrier: r.Config.Carrier.Code,
				Schemes: r.Config.Carrier.Schemes, TrustAnchors: len(r.Config.Trust.Anchors), Registry: o.Registry,
				Next: nextCommands(dir, r, o)}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, res)
			}
			fmt.Fprintf(out, "initialized %s repo in %s\n", res.Role, dir)
			if res.Carrier != "" {
				fmt.Fprintf(out, "carrier %s, schemes %v\n", res.Carrier, res.Schemes)
			}
			if res.TrustAnchors > 0 {
				fmt.Fprintf(out, "trust anchors: %d", res.TrustAnchors)
				if o.Registry != "" {
					fmt.Fprintf(out, ", registry from %s", o.Registry)
				}
				fmt.Fprintln(out)
			}
			fmt.Fprintf(out, "peer id %s\nnext:\n", res.PeerID)
			for _, c := range res.Next {
				fmt.Fprintf(out, "  %s\n", c)
			}
			return nil
		},
	}
	f := cmd.Flags()
	repoFlag(cmd, &dir, "repo directory to create")
	f.StringVar(&o.Carrier, "carrier", "", "carrier code (A-Z 0-9, 2-16 chars) for a carrier node")
	f.StringVar(&o.Platform, "platform", "", "platform name for a platform node")
	f.StringVar(&o.Name, "name", "", "carrier display name (default: the code)")
	f.StringVar(&o.Country, "country", "", `carrier country, ISO 3166-1 alpha-2 (default "ZZ")`)
	f.StringArrayVar(&o.Schemes, "scheme", nil, `tracking-number scheme, PATTERN[:ALGO] or s10:CC (repeatable; default: CODE\d{10,20})`)
	f.StringArrayVar(&o.Listen, "listen", nil, "libp2p listen multiaddr (repeatable; default TCP and QUIC on loopback, ports the OS picks, written to node.json)")
	f.StringArrayVar(&o.Trust, "trust", nil, "registry authority public key (PEM) to trust as an anchor; copied into the repo (repeatable)")
	f.StringVar(&o.Registry, "registry", "", "signed registry to start with; it must verify against a --trust key and be in force")
	f.StringVar(&o.Store, "store", "", "carrier store in PostgreSQL: a postgres:// URL (default: pebble, in the repo)")
	f.BoolVar(&asJSON, "json", false, "print a JSON object")
	f.StringVar(&o.ReplicaOf, "replica-of", "", "make a replica of this carrier repo on the same PostgreSQL store, sharing its signing key")
	return cmd
}

// withRegistryHint adds what to do about a registry that was not
// accepted, keyed by the protocol's reason.
func withRegistryHint(err error) error {
	var hint string
	switch {
	case errors.Is(err, protocol.ErrUntrustedIssuer):
		hint = "get an edition signed by an authority you trust, or trust this one with opentrack trust add"
	case errors.Is(err, protocol.ErrExpired):
		hint = "ask the authority for a current edition, or check this machine's clock"
	case errors.Is(err, protocol.ErrBadSignature):
		hint = "the file was altered or is corrupt; fetch it again"
	default:
		return err
	}
	return fmt.Errorf("%w (hint: %s)", err, hint)
}

// initResult is what init prints, as JSON with --json.
type initResult struct {
	Repo         string   `json:"repo"`
	Role         string   `json:"role"`
	PeerID       string   `json:"peer_id"`
	Carrier      string   `json:"carrier,omitempty"`
	Schemes      []string `json:"schemes,omitempty"`
	TrustAnchors int      `json:"trust_anchors"`
	Registry     string   `json:"registry,omitempty"`
	Next         []string `json:"next"` // the next three commands to run
}

// nextCommands are the three commands a new repo's owner runs next.
func nextCommands(dir string, r *repo.Repo, o repo.InitOptions) []string {
	d := shellQuote(dir)
	switch {
	case r.Config.Role == repo.RoleCarrier:
		return []string{
			"opentrack node --repo " + d + " &",
			"opentrack ingest --repo " + d + " docs/examples/events.ndjson",
			"opentrack registry add --dir AUTHDIR --carrier-repo " + d,
		}
	case o.Registry == "" && len(o.Trust) == 0:
		return []string{
			"opentrack trust add --repo " + d + " AUTHDIR/authority.pub",
			"opentrack registry install --repo " + d + " registry.cose",
			"opentrack track --repo " + d + " NUMBER",
		}
	case o.Registry == "":
		// It trusts an authority already: the registry is what it lacks.
		return []string{
			"opentrack registry install --repo " + d + " registry.cose",
			"opentrack track --repo " + d + " NUMBER",
			"opentrack watch --repo " + d + " NUMBER",
		}
	default:
		return []string{
			"opentrack track --repo " + d + " NUMBER",
			"opentrack watch --repo " + d + " NUMBER",
			"opentrack gateway --repo " + d,
		}
	}
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./~") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func idCmd() *cobra.Command {
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "id [--repo DIR] [--json]",
		Short: "Print the repo's peer ID, carrier signing key id and addresses",
		Long: `Print the repo's peer ID on the first line, then for a carrier its code and
signing key id, then its addresses, one a line: the running node's (from
node.json) or, when it is not running, the configured listen addresses.
With --json, an object {"id", "role", "carrier", "signing_key_id",
"addresses", "running", "agent_version"}, as ipfs id prints.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := repo.Open(dir)
			if err != nil {
				return err
			}
			id, err := r.Identity()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, id)
			}
			fmt.Fprintln(out, id.ID)
			if id.Carrier != "" {
				fmt.Fprintf(out, "carrier %s, signing key id %s\n", id.Carrier, id.SigningKeyID)
			}
			state := "not running; configured"
			if id.Running {
				state = "running at"
			}
			fmt.Fprintf(out, "addresses (%s):\n", state)
			for _, a := range id.Addresses {
				fmt.Fprintf(out, "  %s\n", a)
			}
			return nil
		},
	}
	repoFlag(cmd, &dir, "repo directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object")
	return cmd
}
