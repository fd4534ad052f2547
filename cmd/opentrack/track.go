package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	lphost "github.com/opentrack/opentrack/node/host"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/protocol"
	"github.com/spf13/cobra"
)

func trackCmd() *cobra.Command {
	var peerAddr string
	var asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "track --peer MULTIADDR [--json] NUMBER...",
		Short: "Query a carrier node, verify the signature and the chain, and print the timeline",
		Long: `Query a carrier node for tracking numbers, verify each signed head and event
chain, and print a readable timeline (or, with --json, a JSON array with one
object per number). Without a registry, the key checked is the one the node
presents through the info protocol ("key_source": "node"): that proves the
chain and catches tampering in transit, but not who the node is. Exit
status is 1 if any record fails verification.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ai, err := peer.AddrInfoFromString(peerAddr)
			if err != nil {
				return fmt.Errorf("--peer %q: %w (want a multiaddr ending in /p2p/<peer id>)", peerAddr, err)
			}
			cl, closeAll, err := dial(ctx, *ai)
			if err != nil {
				return err
			}
			defer closeAll()
			info, err := cl.Info(ctx, ai.ID, 0)
			if err != nil {
				return fmt.Errorf("info from %s: %w", ai.ID, err)
			}
			views, err := lookup(ctx, cl, ai.ID, info, args)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(views); err != nil {
					return err
				}
			} else {
				printTimeline(out, views)
			}
			return verificationStatus(views)
		},
	}
	f := cmd.Flags()
	f.StringVar(&peerAddr, "peer", "", "carrier node multiaddr ending in /p2p/<peer id> (required)")
	f.BoolVar(&asJSON, "json", false, "print a JSON array, one object per number")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	_ = cmd.MarkFlagRequired("peer")
	return cmd
}

// dial starts a throwaway client host and connects it to ai.
func dial(ctx context.Context, ai peer.AddrInfo) (*client.Client, func(), error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	h, err := lphost.New(key, &lphost.Options{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		return nil, nil, err
	}
	if err := h.Connect(ctx, ai); err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("connect to %s: %w", ai.ID, err)
	}
	cl, err := client.New(h, nil)
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	return cl, func() { cl.Close(); h.Close() }, nil
}

// lookup normalizes the numbers, asks the node for the valid ones and
// keeps the order of args.
func lookup(ctx context.Context, cl *client.Client, p peer.ID, info *protocol.Info, args []string) ([]client.ParcelView, error) {
	views := make([]client.ParcelView, len(args))
	var ask []string
	var at []int
	for i, a := range args {
		n, err := protocol.NormalizeNumber(a)
		if err != nil {
			views[i] = client.View(a, info.Carrier, nil, nil, err)
			continue
		}
		ask, at = append(ask, n), append(at, i)
	}
	got, err := cl.Lookup(ctx, p, info.Carrier, ask, client.InfoKeys{Carrier: info.Carrier, Keys: info.Keys}, nil)
	if err != nil {
		return nil, err
	}
	for j, v := range got {
		if v.Verified {
			v.KeySource = "node"
		}
		views[at[j]] = v
	}
	return views, nil
}

// verificationStatus fails when a record came back but did not verify;
// not_found and invalid numbers are answers, not verification failures.
func verificationStatus(views []client.ParcelView) error {
	bad := 0
	for _, v := range views {
		switch v.Error {
		case "", protocol.CodeNotFound, protocol.CodeInvalidNumber, protocol.ErrCheckDigit.Code, protocol.CodeRateLimited, protocol.CodeForbidden:
		default:
			bad++
		}
	}
	if bad > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d numbers failed verification", bad, len(views))}
	}
	return nil
}

func printTimeline(w io.Writer, views []client.ParcelView) {
	for i, v := range views {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if v.Error != "" {
			fmt.Fprintf(w, "%s  %s: %s\n", v.Number, v.Error, v.Message)
			continue
		}
		fmt.Fprintf(w, "%s  carrier %s  verified against the %s key %s  head %s\n", v.Number, v.Carrier, v.KeySource, v.KeyID, v.Head)
		for _, e := range v.Events {
			place := strings.Join(nonEmpty(e.Location.Facility, e.Location.City, e.Location.Country), ", ")
			status := string(e.Status)
			if e.Reason != "" {
				status += " (" + e.Reason + ")"
			}
			fmt.Fprintf(w, "  %3d  %s  %-38s %s\n", e.Seq, strings.Replace(strings.TrimSuffix(e.Time, "Z"), "T", " ", 1), status, place)
			if e.Description != "" {
				fmt.Fprintf(w, "       %s\n", e.Description)
			}
		}
	}
}

func nonEmpty(xs ...string) []string {
	var out []string
	for _, x := range xs {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}
