// Command opentrack is the OpenTrack node, client and tooling in one
// binary. Each subcommand parses its flags and calls a library package.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/version"
)

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) }

// run executes the command line args and returns the exit status. A
// failure is one line on stderr: "opentrack: " and the error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "opentrack:", err)
		return exitCode(err)
	}
	return 0
}

// newRoot builds the command tree.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:               "opentrack",
		Short:             "OpenTrack: open, verifiable parcel tracking over libp2p",
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: defaultRepo,
		Version:           version.Version,
	}
	root.SetVersionTemplate(versionLine() + "\n")
	root.AddCommand(versionCmd(), demoCmd(), initCmd(), idCmd(), nodeCmd(), ingestCmd(), trackCmd(), watchCmd(), gatewayCmd(), registryCmd(), grantCmd(), auditCmd(), testnetCmd(), benchCmd(), migrateCmd(), trustCmd())
	root.SetFlagErrorFunc(flagError)
	groupCommands(root)
	return root
}

// repoFlag adds --repo to cmd; defaultRepo fills it in when not given.
func repoFlag(cmd *cobra.Command, dir *string, what string) {
	cmd.Flags().StringVar(dir, "repo", "", what+" (default $"+repo.EnvRepo+", then ~/.opentrack)")
}

// defaultRepo gives --repo, when it is not set, the default repo: except
// beside --peer (track and watch then trust the node's own keys) and
// --store (migrate names the database itself). First it checks the
// required flags, which cobra would check after it, in its own words.
func defaultRepo(cmd *cobra.Command, _ []string) error {
	if err := requiredFlags(cmd); err != nil {
		return err
	}
	f := cmd.Flags()
	if r := f.Lookup("repo"); r == nil || r.Changed {
		return nil
	}
	for _, name := range []string{"peer", "store"} {
		if o := f.Lookup(name); o != nil && o.Changed {
			return nil
		}
	}
	return f.Set("repo", repo.DefaultDir())
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
