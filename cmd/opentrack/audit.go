package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node/admin"
)

func auditCmd() *cobra.Command {
	var dir, since, peerID string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "audit [--repo CARRIERDIR] [--since TIME] [--peer ID] [--json]",
		Short: "Read the audit log of detail disclosures and refused grants",
		Long: `Print the running carrier node's audit log, oldest first: every response that
disclosed details (time, peer, grant id, number, fields) and every refused
grant (with the reason). --since takes an RFC 3339 time or a duration back
from now, such as 24h.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := admin.AuditQuery{Peer: peerID}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				q.Since = t.UnixMilli()
			}
			_, c, err := adminClient(dir)
			if err != nil {
				return err
			}
			entries, err := c.Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, entries)
			}
			for _, e := range entries {
				if e.Allowed {
					fmt.Fprintf(out, "%s  %s  grant %s  %s  disclosed %s\n", e.Time.Format(time.RFC3339Nano), e.Peer, e.GrantID, e.Number, strings.Join(e.Fields, ","))
				} else {
					fmt.Fprintf(out, "%s  %s  grant %s  %s  refused: %s\n", e.Time.Format(time.RFC3339Nano), e.Peer, e.GrantID, e.Number, e.Reason)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	repoFlag(cmd, &dir, "carrier repo of the running node")
	f.StringVar(&since, "since", "", "only entries at or after this RFC 3339 time, or this long ago (24h)")
	f.StringVar(&peerID, "peer", "", "only entries of this peer ID")
	f.BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

// parseSince reads an RFC 3339 time or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time or a duration such as 24h", s)
	}
	return now.Add(-d), nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
