package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node/platform"
	"github.com/opentrack/opentrack/protocol"
)

func watchCmd() *cobra.Command {
	var peerAddr, repoDir, cursorFile string
	var asJSON, audience bool
	cmd := &cobra.Command{
		Use:   "watch [--repo DIR] [--peer MULTIADDR] [--cursor-file FILE] [--json] (NUMBER... | --audience)",
		Short: "Subscribe to parcels and print each verified update as the carrier pushes it",
		Long: `Subscribe to tracking numbers, or with --audience to every parcel whose
ingest named this platform, and print each update as it arrives, verified
against the signed head and the event chain: a readable line per event, or
with --json one JSON object per line, {"number", "carrier", "verified",
"head", "cursor", "events": [...]} and "error" when it did not verify.
A number with no parcel to show gets one line with its result "code" at
the start: not_found (still watched: a parcel created later is printed),
wrong_carrier or invalid_number (the node never has it), rate_limited.

With --repo, the platform repo's registry resolves the numbers to their
carrier, which must be the same for all of them, and the subscription goes
to that carrier's registry nodes; every head must be signed by a key the
registry binds to the carrier. Numbers of several carriers take one watch
each. With --peer, the subscription goes to that node, for the carrier it
serves; without --repo its own keys are checked, which proves the chain but
not who signed it. --audience needs --peer, and --repo too, since the repo's
node key is the client's identity, the peer ID that ingest names.

When the stream ends or the node restarts, watch subscribes again by itself,
backing off, and resumes where it was. With --cursor-file it resumes from the
cursor in the file and keeps the file current, so that stopping and starting
watch loses no update; some may print twice, and the event CID tells them
apart. It prints the current state or the result of every watched number
first, then "watching N parcels" on stderr once every later change will be
delivered, and runs until interrupted. It exits with status 2 when no
number can be watched.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case peerAddr == "" && repoDir == "":
				return fmt.Errorf("give --repo PLATFORMDIR to find the carrier through its registry, or --peer MULTIADDR to subscribe at one node")
			case audience == (len(args) > 0):
				return fmt.Errorf("give tracking numbers or --audience, not both or neither")
			case audience && (peerAddr == "" || repoDir == ""):
				return fmt.Errorf("--audience needs --repo, the platform whose peer ID ingest names, and --peer, the carrier's node")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			p, err := openPlatform(repoDir)
			if err != nil {
				return err
			}
			defer p.Close()
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			show := func(u platform.WatchUpdate) error {
				if asJSON {
					return enc.Encode(u)
				}
				return printUpdate(out, u)
			}
			// Sync: the current state of each parcel first.
			opts := platform.WatchOptions{Numbers: args, Audience: audience, CursorFile: cursorFile, Sync: true}
			w, watched, err := startWatch(ctx, p, peerAddr, opts, show)
			if err != nil {
				return err
			}
			return printWatch(cmd.ErrOrStderr(), w, watched, audience, show)
		},
	}
	f := cmd.Flags()
	repoFlag(cmd, &repoDir, "platform repo whose registry resolves and verifies (its node key is the client's identity)")
	f.StringVar(&peerAddr, "peer", "", "subscribe at this node: a multiaddr ending in /p2p/<peer id>")
	f.StringVar(&cursorFile, "cursor-file", "", "resume from the cursor in this file, and keep it current")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per update and line")
	f.BoolVar(&audience, "audience", false, "watch every parcel whose ingest named this platform's peer ID")
	return cmd
}

// startWatch subscribes at the node of peerAddr, or, without it, at the
// carrier the registry names for opts' numbers. Each number gets its
// result: one that no carrier's scheme matches is shown and the others
// are watched; watched is how many numbers went to the node.
func startWatch(ctx context.Context, p *platform.Platform, peerAddr string, opts platform.WatchOptions, show func(platform.WatchUpdate) error) (w *platform.Watcher, watched int, err error) {
	if peerAddr != "" {
		w, err = atPeer(peerAddr, func(ai peer.AddrInfo) (*platform.Watcher, error) { return p.WatchPeer(ctx, ai, opts) })
		return w, len(opts.Numbers), err
	}
	numbers, rejected := p.Watchable(opts.Numbers)
	for _, u := range rejected {
		if err := show(u); err != nil {
			return nil, 0, err
		}
	}
	if len(numbers) == 0 {
		return nil, 0, &exitError{code: 2, err: fmt.Errorf("no number to watch: none matches a carrier in the registry")}
	}
	opts.Numbers = numbers
	w, err = p.Watch(ctx, opts)
	if errors.Is(err, platform.ErrSeveralCarriers) {
		return nil, 0, fmt.Errorf("%w; run one opentrack watch per carrier, or give --peer", err)
	}
	return w, len(numbers), err
}

// printWatch shows w's updates until it ends, and on stderr, so that
// --json output stays one object a line, what is watched once it is live.
// It exits 2 when the node has none of the watched numbers, nor ever will.
func printWatch(stderr io.Writer, w *platform.Watcher, watched int, audience bool, show func(platform.WatchUpdate) error) error {
	live := w.Live()
	never := map[string]bool{} // numbers the node says it never has
	for {
		select {
		case u, ok := <-w.Updates():
			if !ok {
				return w.Close()
			}
			if u.Code == protocol.CodeWrongCarrier || u.Code == protocol.CodeInvalidNumber {
				never[u.Number] = true
			}
			if err := show(u); err != nil {
				w.Close()
				return err
			}
		case <-live:
			live = nil
			if audience {
				fmt.Fprintln(stderr, "watching the parcels booked by this platform")
				continue
			}
			// Every status came before Live: the count is final.
			n := watched - len(never)
			if n == 0 {
				w.Close()
				return &exitError{code: 2, err: fmt.Errorf("no number to watch: the node has none of them, nor ever will")}
			}
			noun := "parcels"
			if n == 1 {
				noun = "parcel"
			}
			fmt.Fprintf(stderr, "watching %d %s\n", n, noun)
		}
	}
}

// printUpdate prints a line per event of u, its result when it has no
// parcel to show, or why u did not verify.
func printUpdate(w io.Writer, u platform.WatchUpdate) error {
	switch {
	case u.Code != "" && u.Carrier == "": // not watched: no carrier to ask
		_, err := fmt.Fprintf(w, "%s  %s: %s\n", u.Number, u.Code, u.Message)
		return err
	case u.Code != "":
		msg := u.Message
		if msg == "" && u.Code == protocol.CodeNotFound {
			msg = "no such parcel at carrier " + u.Carrier
		}
		line := fmt.Sprintf("%s  carrier %s  %s", u.Number, u.Carrier, u.Code)
		if msg != "" {
			line += ": " + msg
		}
		_, err := fmt.Fprintln(w, line)
		return err
	case !u.Verified:
		_, err := fmt.Fprintf(w, "%s  carrier %s  NOT VERIFIED  %s: %s\n", u.Number, u.Carrier, u.Error, u.Message)
		return err
	}
	for _, e := range u.Events {
		status := string(e.Status)
		if e.Reason != "" {
			status += " (" + e.Reason + ")"
		}
		place := strings.Join(nonEmpty(e.Location.Facility, e.Location.City, e.Location.Country), ", ")
		when := strings.Replace(strings.TrimSuffix(e.Time, "Z"), "T", " ", 1)
		if _, err := fmt.Fprintf(w, "%s  %s  %3d  %s  %-38s %s  %s\n", u.Number, u.Carrier, e.Seq, when, status, place, e.CID); err != nil {
			return err
		}
	}
	return nil
}
