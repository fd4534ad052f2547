// Command opentrack is the OpenTrack node, client and tooling in one
// binary. Each subcommand parses its flags and calls a library package.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "opentrack",
		Short:         "OpenTrack: open, verifiable parcel tracking over libp2p",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(versionCmd(), demoCmd(), initCmd(), idCmd(), nodeCmd(), ingestCmd(), trackCmd(), watchCmd(), gatewayCmd(), registryCmd(), grantCmd(), auditCmd(), testnetCmd(), benchCmd(), migrateCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "opentrack:", err)
		os.Exit(exitCode(err))
	}
}

// exitError carries a specific exit status through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}
