package main

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node/authority"
	"github.com/opentrack/opentrack/node/keyfile"
	"github.com/opentrack/opentrack/protocol"
)

func registryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Registry authority: keep a draft of carriers, sign editions, inspect registry files",
		Long: `The registry says which keys sign for which carrier, where its nodes are and
which tracking numbers are its. The authority keeps its key and a draft in
a directory (init), edits the draft (add, remove), and signs editions
(sign) that nodes install (opentrack init --registry, opentrack node
--registry). Keep the directory offline.`,
	}
	cmd.AddCommand(registryInitCmd(), registryAddCmd(), registryRemoveCmd(), registrySignCmd(), registryShowCmd(), registryInstallCmd())
	return cmd
}

func registryInitCmd() *cobra.Command {
	var dir, name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "init --dir AUTHDIR [--name NAME]",
		Short: "Create the authority key and an empty draft",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w, err := authority.Init(dir, name)
			if err != nil {
				return err
			}
			out, pub := cmd.OutOrStdout(), filepath.Join(dir, w.PubPath())
			if asJSON {
				return printJSON(out, map[string]string{"key_id": protocol.KeyIDString(w.Public()), "public_key_file": pub})
			}
			fmt.Fprintf(out, "authority key id %s\n", protocol.KeyIDString(w.Public()))
			fmt.Fprintln(out, pub)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "authority directory to create (required)")
	cmd.Flags().StringVar(&name, "name", authority.DefaultName, "base name of the key files, NAME.key and NAME.pub")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print a JSON object: {"key_id", "public_key_file"}`)
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

func registryAddCmd() *cobra.Command {
	var dir, repoDir, key, peerID, notBefore, notAfter string
	var in authority.CarrierInput
	var addrs, schemes []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "add --dir AUTHDIR (--carrier-repo DIR | --code C --key PUBHEX|PEMFILE ...)",
		Short: "Add a carrier to the draft, or update one; a new key is added next to the old",
		Long: `Add a carrier to the draft, or update the one with the same code. With
--carrier-repo, everything is read from the carrier's node repo (from its
running node's node.json for the addresses, if there is one); the other
flags override what was read. For a carrier already in the draft, the
fields given replace the draft's, and a key it does not have yet is added
next to its others: that is how keys rotate. Give a key it has with
--not-before or --not-after to move its window, for example to end the
old key's window after a rotation.`,
		Example: `  opentrack registry add --dir ./auth --carrier-repo ./sf
  opentrack registry add --dir ./auth --code RM --name "Royal Mail" --country GB \
      --key rm.pub --peer 12D3KooW... --addr /dns4/rm.example/tcp/4001 --scheme s10:GB`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if repoDir == "" && in.Code == "" {
				return usageError(cmd, "needs --carrier-repo DIR or --code C")
			}
			w, err := authority.Open(dir)
			if err != nil {
				return err
			}
			var warnings []string
			var base authority.CarrierInput
			if repoDir != "" {
				if base, warnings, err = authority.CarrierFromRepo(repoDir); err != nil {
					return err
				}
			}
			if err := parseCarrierFlags(&in, key, notBefore, notAfter, schemes); err != nil {
				return err
			}
			if peerID != "" || len(addrs) > 0 {
				more, err := authority.SetNode(&in, base, peerID, addrs)
				if err != nil {
					return err
				}
				warnings = append(warnings, more...)
			}
			base.Update(in)
			for _, s := range warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", s)
			}
			c, err := w.AddCarrier(base)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					*authority.DraftCarrier
					Warnings []string `json:"warnings"`
				}{c, append([]string{}, warnings...)})
			}
			printDraftCarrier(cmd.OutOrStdout(), c)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "authority directory (required)")
	f.StringVar(&repoDir, "carrier-repo", "", "read the carrier from this carrier node repo")
	f.StringVar(&in.Code, "code", "", "carrier code")
	f.StringVar(&in.Name, "name", "", "carrier display name (default for a new carrier: the code)")
	f.StringVar(&in.Country, "country", "", `carrier home country, ISO 3166-1 alpha-2 (default for a new carrier "ZZ")`)
	f.StringVar(&key, "key", "", "carrier signing public key: 64 hex digits or a PEM public key file")
	f.StringVar(&notBefore, "not-before", "", "start of the key's window, RFC 3339 (default for a new key: when the carrier repo made it, or now)")
	f.StringVar(&notAfter, "not-after", "", "end of the key's window, RFC 3339 (default for a new key: 2 years after its start)")
	f.StringVar(&peerID, "peer", "", "peer ID of the carrier's node (replaces the carrier's nodes)")
	f.StringArrayVar(&addrs, "addr", nil, "dialable multiaddr of that node (repeatable)")
	f.StringArrayVar(&schemes, "scheme", nil, `number scheme, PATTERN[:ALGO] or s10:CC[,CC][:PRODUCTS] (repeatable; replaces the carrier's; default for a new carrier: CODE\d{10,20})`)
	f.BoolVar(&asJSON, "json", false, `print the carrier as the draft now has it, a JSON object: {"code", "name", "country", "keys", "nodes", "schemes", "warnings"}`)
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

// parseCarrierFlags sets the key, its window and the schemes of in from
// registry add's flags.
func parseCarrierFlags(in *authority.CarrierInput, key, notBefore, notAfter string, schemes []string) (err error) {
	if key != "" {
		if in.Key, err = authority.ParsePublicKey(key); err != nil {
			return err
		}
	}
	if in.NotBefore, err = parseTime("--not-before", notBefore); err != nil {
		return err
	}
	if in.NotAfter, err = parseTime("--not-after", notAfter); err != nil {
		return err
	}
	for _, s := range schemes {
		sc, err := protocol.ParseScheme(s)
		if err != nil {
			return fmt.Errorf("--scheme: %w", err)
		}
		in.Schemes = append(in.Schemes, sc)
	}
	return nil
}

func registryRemoveCmd() *cobra.Command {
	var dir, code, keyID string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "remove --dir AUTHDIR --code C [--key-id KEYID]",
		Short: "Remove a key from a carrier (revocation), or the whole carrier, from the draft",
		Long: `Remove a key from a carrier, which revokes it from the next edition on:
everything it signed, earlier records included, stops verifying. Without
--key-id, remove the carrier.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w, err := authority.Open(dir)
			if err != nil {
				return err
			}
			if keyID == "" {
				err = w.RemoveCarrier(code)
			} else {
				err = w.RemoveKey(code, keyID)
			}
			switch {
			case err != nil:
				return err
			case asJSON:
				return printJSON(cmd.OutOrStdout(), map[string]string{"carrier": code, "key_id": keyID})
			case keyID == "":
				fmt.Fprintf(cmd.OutOrStdout(), "removed carrier %s from the draft\n", code)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "removed key %s from carrier %s in the draft\n", keyID, code)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "authority directory (required)")
	cmd.Flags().StringVar(&code, "code", "", "carrier code (required)")
	cmd.Flags().StringVar(&keyID, "key-id", "", "key id (hex, as registry show prints it) to remove")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print a JSON object: {"carrier", "key_id"}, key_id "" when the whole carrier was removed`)
	_ = cmd.MarkFlagRequired("dir")
	_ = cmd.MarkFlagRequired("code")
	return cmd
}

func registrySignCmd() *cobra.Command {
	var dir, out string
	var valid time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sign --dir AUTHDIR --out FILE [--valid 720h]",
		Short: "Sign the draft as the next edition, with the next sequence number",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w, err := authority.Open(dir)
			if err != nil {
				return err
			}
			r, err := w.Sign(out, valid)
			if err != nil {
				return err
			}
			until := time.UnixMilli(r.NotAfter).UTC()
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					File     string    `json:"file"`
					Seq      uint64    `json:"seq"`
					Carriers int       `json:"carriers"`
					NotAfter time.Time `json:"not_after"`
				}{out, r.Seq, len(r.Carriers), until})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed %s: seq %d, %d carriers, valid until %s\n",
				out, r.Seq, len(r.Carriers), until.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "authority directory (required)")
	cmd.Flags().StringVar(&out, "out", "", "signed registry file to write (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print a JSON object: {"file", "seq", "carriers", "not_after"}`)
	cmd.Flags().DurationVar(&valid, "valid", 0, `how long nodes accept the edition (default: the draft's "validity", 720h)`)
	_ = cmd.MarkFlagRequired("dir")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func registryShowCmd() *cobra.Command {
	var asJSON bool
	var trust []string
	cmd := &cobra.Command{
		Use:   "show FILE [--json] [--trust PUBFILE]",
		Short: "Print a signed registry; with --trust, verify it as a node would",
		Long: `Print a signed registry: its sequence and window, and for every carrier its
keys (key id and window), nodes and number schemes. Without --trust the
signature is not checked. With --trust, the edition is verified as a node
would verify it now, and the exit status is 1 if a node would reject it.`,
		Args: exactArgs(1, "FILE, the signed registry"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var anchors []ed25519.PublicKey
			for _, p := range trust {
				pub, err := keyfile.ReadPublic(p)
				if err != nil {
					return fmt.Errorf("--trust: %w", err)
				}
				anchors = append(anchors, pub)
			}
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			v, err := authority.Show(b, anchors, time.Now())
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				err = enc.Encode(v)
			} else {
				err = v.WriteText(out)
			}
			if err != nil {
				return err
			}
			if v.Signature == authority.SignatureRejected {
				return fmt.Errorf("%s would be rejected by a node trusting %s", args[0], strings.Join(trust, " and "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON document")
	cmd.Flags().StringArrayVar(&trust, "trust", nil, "authority public key (PEM) to verify against (repeatable)")
	return cmd
}

// parseTime reads an optional RFC 3339 flag value.
func parseTime(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", flag, s)
	}
	return t, nil
}

func printDraftCarrier(w io.Writer, c *authority.DraftCarrier) {
	fmt.Fprintf(w, "carrier %s (%s, %s) in the draft; sign to publish\n", c.Code, c.Name, c.Country)
	for _, k := range c.Keys {
		fmt.Fprintf(w, "  key %s  %s to %s\n", k.KeyID, k.NotBefore.Format(time.RFC3339), k.NotAfter.Format(time.RFC3339))
	}
	for _, n := range c.Nodes {
		fmt.Fprintf(w, "  node %s %v\n", n.Peer, n.Addrs)
	}
	fmt.Fprintf(w, "  schemes %v\n", c.Schemes)
}
