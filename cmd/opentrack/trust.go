package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node/keyfile"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

func trustCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trust",
		Short: "Manage the registry authorities a repo trusts",
	}
	var dir string
	var asJSON bool
	add := &cobra.Command{
		Use:   "add [--repo DIR] PUBFILE",
		Short: "Trust a registry authority's public key (PEM, e.g. authority/authority.pub)",
		Long: `Trust a registry authority's public key in an existing repo: the key is
copied into DIR/trust and listed in config.toml's [trust] anchors, so that
registries it signs can be installed (opentrack registry install, or
opentrack node --registry). config.toml is rewritten with every option and
its comment; comments of your own in it are not kept.`,
		Args: exactArgs(1, "PUBFILE, the authority's public key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := keyfile.ReadPublic(args[0])
			if err != nil {
				return err
			}
			r, err := repo.Open(dir)
			if err != nil {
				return err
			}
			path, added, err := r.AddAnchor(pub)
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				return printJSON(cmd.OutOrStdout(), struct {
					Repo  string `json:"repo"`
					KeyID string `json:"key_id"`
					File  string `json:"file"`
					Added bool   `json:"added"`
				}{r.Dir, protocol.KeyIDString(pub), r.Path(path), added})
			case !added:
				fmt.Fprintf(cmd.OutOrStdout(), "%s already trusts authority key %s (%s)\n", dir, protocol.KeyIDString(pub), path)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "%s now trusts authority key %s (%s)\n", dir, protocol.KeyIDString(pub), path)
			}
			return nil
		},
	}
	repoFlag(add, &dir, "repo directory")
	add.Flags().BoolVar(&asJSON, "json", false, `print a JSON object: {"repo", "key_id", "file", "added"}, added false when the repo trusted the key already`)
	cmd.AddCommand(add)
	return cmd
}

func registryInstallCmd() *cobra.Command {
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "install [--repo DIR] FILE",
		Short: "Install a signed registry into a repo, checked as the node checks it",
		Long: `Install a signed registry into a repo, checked as the node checks it: it
must be signed by one of the repo's trust anchors, be within its validity
window and be newer than the edition the repo holds. A running node picks
up editions from its peers; a stopped one reads the installed edition when
it starts. Exit status 1 when the edition is not installed.`,
		Args: exactArgs(1, "FILE, the signed registry"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := repo.Open(dir)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			from, to, err := r.InstallRegistry(b)
			if err != nil {
				return withRegistryHint(fmt.Errorf("%s not installed: %w", args[0], err))
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					File        string `json:"file"`
					Repo        string `json:"repo"`
					Seq         uint64 `json:"seq"`
					PreviousSeq uint64 `json:"previous_seq"`
				}{args[0], dir, to, from})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s in %s: registry seq %d (was %d)\n", args[0], dir, to, from)
			return nil
		},
	}
	repoFlag(cmd, &dir, "repo directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print a JSON object: {"file", "repo", "seq", "previous_seq"}`)
	return cmd
}
