package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node/version"
)

// versionLine is what both `opentrack version` and `opentrack --version`
// print.
func versionLine() string {
	return fmt.Sprintf("opentrack %s commit %s (%s %s/%s)", version.Version, version.Commit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version [--json]",
		Short: "Print the software version and the commit it was built from",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]string{"version": version.Version, "commit": version.Commit(),
					"go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH})
			}
			fmt.Fprintln(cmd.OutOrStdout(), versionLine())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object")
	return cmd
}
