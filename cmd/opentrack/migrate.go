package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/repo"
)

func migrateCmd() *cobra.Command {
	var dir, url string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate (--repo DIR | --store URL)",
		Short: "Bring a PostgreSQL store's schema up to this build's version",
		Long: `Apply the schema migrations a PostgreSQL store lacks. A node applies
them when it starts, too; run this to migrate ahead of a rollout. A
database whose schema is newer than this build's is left alone.`,
		Example: `  opentrack migrate --repo ./sf1
  opentrack migrate --store 'postgres://opentrack@db:5432/sf?sslmode=verify-full'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url != "" && cmd.Flags().Changed("repo") { // defaultRepo leaves --repo alone beside --store
				return usageError(cmd, "takes --repo or --store, not both")
			}
			var r *repo.Repo
			if dir != "" {
				var err error
				if r, err = repo.Open(dir); err != nil {
					return err
				}
			}
			m, err := node.Migrate(cmd.Context(), r, url)
			if errors.Is(err, node.ErrNoMigrations) {
				return fmt.Errorf("%s keeps its store in %s, which has no migrations", dir, r.Config.Store.Backend)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), m)
			}
			if m.From == m.To {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: schema version %d, up to date\n", m.Store, m.To)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: schema migrated from version %d to %d\n", m.Store, m.From, m.To)
			return nil
		},
	}
	repoFlag(cmd, &dir, "carrier repo whose [store] names the database")
	cmd.Flags().StringVar(&url, "store", "", "the database's postgres:// URL")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print a JSON object: {"store" (password redacted), "from_version", "version"}`)
	return cmd
}
