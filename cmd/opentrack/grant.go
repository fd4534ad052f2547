package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

func grantCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "grant",
		Short: "Issue, revoke and list the grants that disclose parcel details",
	}
	cmd.AddCommand(grantIssueCmd(), grantRevokeCmd(), grantListCmd())
	return cmd
}

// adminClient opens the carrier repo and returns a client for its running
// node's admin API: the node holds the store, so grants go through it.
func adminClient(dir string) (*repo.Repo, *admin.Client, error) {
	r, err := repo.Open(dir)
	if err != nil {
		return nil, nil, err
	}
	if err := wantRole(r, dir, repo.RoleCarrier); err != nil {
		return nil, nil, err
	}
	info, err := repo.ReadNodeInfo(dir)
	if err != nil {
		return nil, nil, err
	}
	if info.AdminURL == "" {
		return nil, nil, fmt.Errorf("the node running from %s has no admin API: is it a carrier node?", dir)
	}
	return r, &admin.Client{URL: info.AdminURL, Token: r.AdminToken}, nil
}

func grantIssueCmd() *cobra.Command {
	var dir, to, out string
	var numbers, fields []string
	var audience, asJSON bool
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "issue [--repo CARRIERDIR] --to PEERID (--number N... | --audience) --fields F[,F...] --ttl DURATION --out FILE",
		Short: "Sign a grant with the carrier key, record it in the running node and write it to FILE",
		Long: `Sign a grant that lets the platform PEERID read the named detail fields of
the listed parcels (--number, repeatable) or of its own bookings (--audience)
until the TTL runs out. The grant is recorded through the admin API of the
node running from CARRIERDIR, which refuses grants it does not hold, and
written to FILE for the platform to present with opentrack track --grant.

Fields: ` + strings.Join(protocol.DetailFields, ", ") + `.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if audience == (len(numbers) > 0) {
				return errors.New("give --number N (repeatable) or --audience, not both")
			}
			r, c, err := adminClient(dir)
			if err != nil {
				return err
			}
			signed, g, err := node.IssueGrant(r, protocol.Grant{Holder: to, Numbers: numbers, Audience: audience, Fields: fields}, ttl)
			if err != nil {
				return fmt.Errorf("grant not issued: %w", err)
			}
			info, err := c.PutGrant(cmd.Context(), signed)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, signed, 0o600); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					*admin.GrantInfo
					File string `json:"file"`
				}{info, out})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "grant %s to %s, fields %s, expires %s, written to %s\n",
				g.ID, g.Holder, strings.Join(g.Fields, ","), time.UnixMilli(g.Expires).UTC().Format(time.RFC3339), out)
			return nil
		},
	}
	f := cmd.Flags()
	repoFlag(cmd, &dir, "carrier repo of the running node")
	f.StringVar(&to, "to", "", "peer ID of the platform that may present the grant (required)")
	f.StringArrayVar(&numbers, "number", nil, "tracking number in scope (repeatable)")
	f.BoolVar(&audience, "audience", false, "scope: the parcels whose ingest names the holder in their audience")
	f.StringSliceVar(&fields, "fields", nil, "detail fields to disclose, comma-separated (required)")
	f.DurationVar(&ttl, "ttl", 0, "how long the grant is valid, such as 720h (required)")
	f.StringVar(&out, "out", "", "file to write the signed grant to (required)")
	f.BoolVar(&asJSON, "json", false, `print the grant as the node recorded it, a JSON object: {"id", "carrier", "holder", "numbers", "audience", "fields", "issued", "expires", "file"}`)
	for _, name := range []string{"to", "fields", "ttl", "out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func grantRevokeCmd() *cobra.Command {
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "revoke [--repo CARRIERDIR] GRANTFILE|ID",
		Short: "Revoke a grant in the running node; it is refused from then on",
		Args:  exactArgs(1, "GRANTFILE or ID, the grant to revoke"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, err := adminClient(dir)
			if err != nil {
				return err
			}
			id, err := grantArgID(args[0])
			if err != nil {
				return err
			}
			g, err := c.RevokeGrant(cmd.Context(), id)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), g)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "grant %s revoked at %s\n", g.ID, g.Revoked.Format(time.RFC3339))
			return nil
		},
	}
	repoFlag(cmd, &dir, "carrier repo of the running node")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print the revoked grant, a JSON object: {"id", "carrier", "holder", "numbers", "audience", "fields", "issued", "expires", "revoked"}`)
	return cmd
}

// grantArgID reads a grant file's id, or takes arg as the id when no such
// file exists.
func grantArgID(arg string) (string, error) {
	b, err := os.ReadFile(arg)
	if errors.Is(err, os.ErrNotExist) {
		return arg, nil
	}
	if err != nil {
		return "", err
	}
	s, err := protocol.ParseSigned(b, protocol.ContentGrant)
	if err != nil {
		return "", fmt.Errorf("%s: %w", arg, err)
	}
	var g protocol.Grant
	if err := protocol.UnmarshalCanonical(s.Payload, &g); err != nil {
		return "", fmt.Errorf("%s: %w", arg, err)
	}
	return g.ID, nil
}

func grantListCmd() *cobra.Command {
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--repo CARRIERDIR] [--json]",
		Short: "List the grants the running node holds",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := adminClient(dir)
			if err != nil {
				return err
			}
			gs, err := c.ListGrants(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), gs)
			}
			printGrants(cmd.OutOrStdout(), gs, time.Now())
			return nil
		},
	}
	repoFlag(cmd, &dir, "carrier repo of the running node")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

func printGrants(w io.Writer, gs []admin.GrantInfo, now time.Time) {
	for _, g := range gs {
		state := "valid"
		switch {
		case g.Revoked != nil:
			state = "revoked " + g.Revoked.Format(time.RFC3339)
		case now.After(g.Expires):
			state = "expired"
		}
		scope := "audience"
		if !g.Audience {
			scope = strings.Join(g.Numbers, ",")
		}
		fmt.Fprintf(w, "%s  to %s  fields %s  scope %s  expires %s  %s\n",
			g.ID, g.Holder, strings.Join(g.Fields, ","), scope, g.Expires.Format(time.RFC3339), state)
	}
}

// readGrantFile reads a signed grant for track --grant.
func readGrantFile(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--grant: %w", err)
	}
	if _, err := protocol.ParseSigned(b, protocol.ContentGrant); err != nil {
		return nil, fmt.Errorf("--grant %s: %w", path, err)
	}
	return b, nil
}
