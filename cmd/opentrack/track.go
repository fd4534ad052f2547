package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node/platform"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

// trackHelp is track's --help, which says what the exit status means.
const trackHelp = `Look up tracking numbers, verify each signed head and event chain, and print
a readable timeline (or, with --json, a JSON array with one object per parcel,
with its "carrier", "key_id" and "key_source").

With --repo, the platform repo's registry resolves each number to its
carriers, every candidate carrier is asked at once through its registry nodes
(found again through the DHT if they moved), and each record must be signed
by a key the registry binds to that carrier ("key_source": "registry"). A
number that several carriers hold prints once per carrier.

With --peer, only that node is asked. If --repo is given too, its records are
still checked against the registry, so a node that is not the carrier's
fails. Without a registry, the key checked is the one the node presents
through the info protocol ("key_source": "node"): that proves the chain and
catches tampering in transit, but not who the node is.

With --grant, the signed grant in FILE (from opentrack grant issue) is
presented, and the parcels and fields it names come back as details (under
"details" with --json). Only the holder the grant names may present it, so
use the platform repo it was issued to. A refused grant (revoked, expired,
another holder's) costs only the details: the public events come back with
"details_error": "forbidden" and the node's reason in "details_message".
Details are shown only from a node the registry lists for the carrier.

A history longer than the client's bound (10000 events) is printed as
partial and not verified ("partial": true, "verified": false).

Exit status: 0 when every number was answered and verified; 1 when a
record failed verification or is partial, or came from a node that does
not sign for the number's carrier (wrong_carrier); 2 when everything that
came back verified but some number was not answered (not_found,
invalid_number, forbidden, rate_limited, unavailable, or the node's own
wrong_carrier: not a number it issues) or its details were refused.`

func trackCmd() *cobra.Command {
	var peerAddr, repoDir, grantFile string
	var asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "track [--repo PLATFORMDIR | --peer MULTIADDR] [--grant FILE] [--json] NUMBER...",
		Short: "Find the carrier of tracking numbers, verify the signature and the chain, and print the timeline",
		Long:  trackHelp,
		Args:  minArgs(1, "one or more tracking numbers"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if peerAddr == "" && repoDir == "" {
				return fmt.Errorf("give --repo PLATFORMDIR to resolve numbers through its registry, or --peer MULTIADDR to ask one node")
			}
			grant, err := readGrantFile(grantFile)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			p, err := openPlatform(repoDir)
			if err != nil {
				return err
			}
			defer p.Close()
			var views []platform.ParcelView
			if peerAddr != "" {
				views, err = atPeer(peerAddr, func(ai peer.AddrInfo) ([]platform.ParcelView, error) { return p.TrackPeer(ctx, ai, args, grant) })
			} else {
				views, err = p.Track(ctx, args, grant)
			}
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
	repoFlag(cmd, &repoDir, "platform repo whose trust anchors and registry resolve and verify (its node key is the client's identity)")
	f.StringVar(&peerAddr, "peer", "", "ask only this node: a multiaddr ending in /p2p/<peer id>")
	f.BoolVar(&asJSON, "json", false, "print a JSON array, one object per parcel")
	f.StringVar(&grantFile, "grant", "", "present the signed grant in this file to receive details")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

// openPlatform opens the platform track and watch run on. With a repo
// it has the repo's trust and node key, so that carriers see the
// platform's registered identity (grants name it), on loopback ports of
// its own so as not to collide with the repo's running node; without, a
// fresh identity and no registry.
func openPlatform(dir string) (*platform.Platform, error) {
	if dir == "" {
		return platform.Open(platform.Config{}, nil)
	}
	r, err := repo.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := wantRole(r, dir, repo.RolePlatform); err != nil {
		return nil, err
	}
	p, err := platform.Open(platform.Config{Repo: r, Key: r.NodeKey}, &platform.Options{DisableQUIC: r.Config.Network.DisableQUIC})
	switch {
	case errors.Is(err, platform.ErrNoAnchors):
		return nil, fmt.Errorf("--repo %s trusts no registry authority yet (add one with opentrack trust add --repo %s PUBFILE, then opentrack registry install --repo %s FILE)", dir, dir, dir)
	case errors.Is(err, platform.ErrNoRegistry):
		return nil, fmt.Errorf("--repo %s holds no registry yet (install one with opentrack registry install --repo %s FILE)", dir, dir)
	case err != nil:
		return nil, fmt.Errorf("--repo %s: %w", dir, err)
	}
	return p, nil
}

// atPeer calls f with the node --peer names, and words a node that could
// not be dialed with what to check.
func atPeer[T any](addr string, f func(peer.AddrInfo) (T, error)) (T, error) {
	ai, err := peer.AddrInfoFromString(addr)
	if err != nil {
		var none T
		return none, fmt.Errorf("--peer %q: %w (want a multiaddr ending in /p2p/<peer id>)", addr, err)
	}
	v, err := f(*ai)
	var ue *platform.UnreachableError
	if errors.As(err, &ue) {
		err = fmt.Errorf("cannot reach node %s: %w; is it running, and is --peer its current address?", ue.Peer, ue.Err)
	}
	return v, err
}

// verificationStatus sets the exit status: 1 when a record came back but
// did not verify or only in part, or came from a node that does not sign
// for the number's carrier; 2 when all that came back verified but some
// number asked for was not answered (not_found, invalid_number,
// forbidden, unreachable, a node saying it does not issue the number...).
func verificationStatus(views []platform.ParcelView) error {
	var bad, partial, foreign, unanswered, refused int
	for _, v := range views {
		if v.Partial {
			partial++
			continue
		}
		switch {
		case v.Error == "":
			if v.DetailsError != "" {
				refused++
			}
		case v.Answered:
			// The node's answer, wrong_carrier included ("not a number I
			// issue"): nothing came back to verify.
			unanswered++
		case v.Error == protocol.ErrWrongCarrier.Code:
			foreign++
		case slices.Contains([]string{protocol.CodeNotFound, protocol.CodeInvalidNumber, protocol.ErrCheckDigit.Code, protocol.CodeRateLimited,
			protocol.CodeForbidden, protocol.CodeUnavailable, protocol.CodeInternal}, v.Error):
			unanswered++
		default:
			bad++
		}
	}
	var parts []string
	if bad > 0 {
		parts = append(parts, fmt.Sprintf("%d failed verification", bad))
	}
	if partial > 0 {
		parts = append(parts, fmt.Sprintf("%d %s partial (verified in part only)", partial, plural(partial, "is", "are")))
	}
	if foreign > 0 {
		parts = append(parts, fmt.Sprintf("%d came from a node that does not sign for the carrier", foreign))
	}
	if unanswered > 0 {
		parts = append(parts, fmt.Sprintf("%d %s not answered", unanswered, plural(unanswered, "was", "were")))
	}
	if refused > 0 {
		parts = append(parts, fmt.Sprintf("%d had %s details refused", refused, plural(refused, "its", "their")))
	}
	if len(parts) == 0 {
		return nil
	}
	code := 2
	if bad+partial+foreign > 0 {
		code = 1
	}
	return &exitError{code: code, err: fmt.Errorf("of %d %s, %s", len(views), plural(len(views), "number", "numbers"), strings.Join(parts, ", "))}
}

// plural picks the word for n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func printTimeline(w io.Writer, views []platform.ParcelView) {
	for i, v := range views {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if v.Error != "" {
			if v.Carrier != "" {
				fmt.Fprintf(w, "%s  carrier %s  %s: %s\n", v.Number, v.Carrier, v.Error, v.Message)
			} else {
				fmt.Fprintf(w, "%s  %s: %s\n", v.Number, v.Error, v.Message)
			}
			continue
		}
		if v.Partial {
			fmt.Fprintf(w, "%s  carrier %s  PARTIAL, NOT VERIFIED: %s  head %s\n", v.Number, v.Carrier, v.Message, v.Head)
		} else {
			fmt.Fprintf(w, "%s  carrier %s  verified against the %s key %s  head %s\n", v.Number, v.Carrier, v.KeySource, v.KeyID, v.Head)
		}
		for _, e := range v.Events {
			fmt.Fprintf(w, "  %s\n", eventLine(e))
			if e.Description != "" {
				fmt.Fprintf(w, "       %s\n", e.Description)
			}
		}
		if v.DetailsError != "" {
			fmt.Fprintf(w, "  details  %s: %s\n", v.DetailsError, v.DetailsMessage)
		}
		for _, f := range protocol.DetailFields {
			if d, ok := v.Details[f]; ok {
				fmt.Fprintf(w, "  details  %s: %s\n", f, d)
			}
		}
	}
}

// eventLine is one event of a timeline: seq, time, status and place.
func eventLine(e platform.EventView) string {
	place := strings.Join(nonEmpty(e.Location.Facility, e.Location.City, e.Location.Country), ", ")
	status := string(e.Status)
	if e.Reason != "" {
		status += " (" + e.Reason + ")"
	}
	return fmt.Sprintf("%3d  %s  %-38s %s", e.Seq, strings.Replace(strings.TrimSuffix(e.Time, "Z"), "T", " ", 1), status, place)
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
