package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/store/postgres"
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
			opts := &postgres.Options{URL: url}
			if dir != "" {
				r, err := repo.Open(dir)
				if err != nil {
					return err
				}
				if r.Config.Store.Backend != repo.BackendPostgres {
					return fmt.Errorf("%s keeps its store in %s, which has no migrations", dir, r.Config.Store.Backend)
				}
				opts = node.PostgresOptions(r.Config.Store)
			}
			from, to, err := postgres.Migrate(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					Store string `json:"store"`
					From  int    `json:"from_version"`
					To    int    `json:"version"`
				}{postgres.Redact(opts.URL), from, to})
			}
			if from == to {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: schema version %d, up to date\n", postgres.Redact(opts.URL), to)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: schema migrated from version %d to %d\n", postgres.Redact(opts.URL), from, to)
			return nil
		},
	}
	repoFlag(cmd, &dir, "carrier repo whose [store] names the database")
	cmd.Flags().StringVar(&url, "store", "", "the database's postgres:// URL")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print a JSON object: {"store" (password redacted), "from_version", "version"}`)
	return cmd
}
