package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/opentrack/opentrack/node/repo"
)

// The messages here replace cobra's generic ones ("accepts 1 arg(s),
// received 0", "unknown command", "required flag(s) ... not set"): each
// says what the command needs in one sentence and ends with its usage.
// main prints "opentrack: " before them, so they start with the command
// path without "opentrack".

// exactArgs is cobra.ExactArgs with a message that says what is missing.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < n:
			return usageError(cmd, "needs %s", what)
		case len(args) > n:
			return usageError(cmd, "takes only %s; %s", what, extra(args[n:]))
		}
		return nil
	}
}

// minArgs is cobra.MinimumNArgs with a message that says what is missing.
func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError(cmd, "needs %s", what)
		}
		return nil
	}
}

// maxArgs is cobra.MaximumNArgs with a message that says what it takes.
func maxArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usageError(cmd, "takes at most %s; %s", what, extra(args[n:]))
		}
		return nil
	}
}

// noArgs is cobra.NoArgs, whose message ("unknown command") is wrong for
// a command that has no subcommands.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError(cmd, "takes no arguments; %s", extra(args))
	}
	return nil
}

// extra names the arguments a command did not expect.
func extra(args []string) string {
	if len(args) == 1 {
		return fmt.Sprintf("%q is one too many", args[0])
	}
	return fmt.Sprintf("%q are %d too many", strings.Join(args, " "), len(args))
}

// usageError is a sentence about cmd's command line, then its usage.
func usageError(cmd *cobra.Command, format string, args ...any) error {
	return fmt.Errorf("%s %s (usage: %s)", commandName(cmd), fmt.Sprintf(format, args...), usage(cmd))
}

// commandName is cmd's path without the program's name, which main
// prints before every error.
func commandName(cmd *cobra.Command) string {
	if !cmd.HasParent() {
		return cmd.Name()
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// usage is the command's synopsis, without cobra's "[flags]".
func usage(cmd *cobra.Command) string {
	if cmd.HasParent() {
		return cmd.Parent().CommandPath() + " " + cmd.Use
	}
	return cmd.Use
}

// groupCommands makes every command that only holds subcommands (the
// root, registry, grant, trust) say so of an unknown subcommand, with the
// nearest ones, and print its help without one. Cobra would print the
// help and exit 0 for "opentrack registry bogus", and a message over
// several lines for "opentrack trak".
func groupCommands(c *cobra.Command) {
	for _, s := range c.Commands() {
		groupCommands(s)
	}
	if !c.HasSubCommands() || c.Runnable() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		hint := "see " + cmd.CommandPath() + " --help"
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2 // cobra's default, which only its own message sets
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			hint = "did you mean " + cmd.CommandPath() + " " + strings.Join(s, " or ") + "?"
		}
		return fmt.Errorf("unknown command %q for %s (%s)", args[0], cmd.CommandPath(), hint)
	}
}

// flagError is cobra's FlagErrorFunc: pflag's message ("unknown flag:
// --bogus") and where to look.
func flagError(cmd *cobra.Command, err error) error {
	return fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())
}

// requiredFlags checks the flags cmd marks required, before cobra does,
// so that the message names them all in one sentence with the usage.
func requiredFlags(cmd *cobra.Command) error {
	var missing []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if req := f.Annotations[cobra.BashCompOneRequiredFlag]; len(req) > 0 && req[0] == "true" && !f.Changed {
			missing = append(missing, "--"+f.Name)
		}
	})
	if len(missing) == 0 {
		return nil
	}
	return usageError(cmd, "needs %s", strings.Join(missing, " and "))
}

// wantRole returns an error unless r, opened from --repo dir, has role:
// a platform repo given to a carrier command (or the reverse) would
// otherwise fail later, on something it lacks.
func wantRole(r *repo.Repo, dir, role string) error {
	if r.Config.Role == role {
		return nil
	}
	flags := "--carrier CODE"
	if role == repo.RolePlatform {
		flags = "--platform NAME --trust PUBFILE --registry FILE"
	}
	return fmt.Errorf("--repo %s is a %s repo, and this command needs a %s repo (create one with opentrack init --repo DIR %s)", dir, r.Config.Role, role, flags)
}
