package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/repo"
)

func ingestCmd() *cobra.Command {
	var dir string
	var batch int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ingest [--repo DIR] [FILE|-]",
		Short: "Post NDJSON events to the running carrier node's admin API",
		Long: `Read NDJSON events (one JSON object per line) from FILE or standard input and
post them in batches to the node running from DIR (its node.json gives the
admin URL, admin.token the credentials). Prints accepted and rejected counts
and every rejection with its reason; exits 1 if anything was rejected.`,
		Args: maxArgs(1, "one FILE of events (- or none for standard input)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := repo.Open(dir)
			if err != nil {
				return err
			}
			if err := wantRole(r, dir, repo.RoleCarrier); err != nil {
				return err
			}
			info, err := repo.ReadNodeInfo(dir)
			if err != nil {
				return err
			}
			in, size, err := openInput(args)
			if err != nil {
				return err
			}
			defer in.Close()

			out := cmd.OutOrStdout()
			var reader io.Reader = in
			var bar *progressbar.ProgressBar
			if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				bar = progressbar.DefaultBytes(size, "ingesting")
				pr := progressbar.NewReader(in, bar)
				reader = &pr
			}
			c := &admin.Client{URL: info.AdminURL, Token: r.AdminToken}
			sum, err := c.Events(cmd.Context(), reader, batch, nil)
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(out)
			}
			switch {
			case sum != nil && asJSON:
				if jerr := printJSON(out, sum); jerr != nil {
					return jerr
				}
			case sum != nil:
				for _, rej := range sum.Rejections {
					fmt.Fprintf(out, "rejected line %d id %q: %s\n", rej.Line, rej.ID, rej.Reason)
				}
				fmt.Fprintf(out, "accepted %d, duplicates %d, rejected %d\n", sum.Accepted, sum.Duplicates, sum.Rejected)
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				// node.json outlives a node that was killed.
				return fmt.Errorf("%w (is the node running? %s names a node that no longer listens)", err, filepath.Join(dir, repo.NodeInfoFile))
			}
			if err != nil {
				return err
			}
			if sum.Rejected > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d events rejected", sum.Rejected)}
			}
			return nil
		},
	}
	repoFlag(cmd, &dir, "carrier repo directory of the running node")
	cmd.Flags().IntVar(&batch, "batch", admin.DefaultBatch, "events per request")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print the summary as JSON: {"accepted", "duplicates", "rejected", ...}`)
	return cmd
}

// openInput opens FILE, or standard input for none or "-". size is -1 when
// unknown, which the progress bar shows as a spinner.
func openInput(args []string) (io.ReadCloser, int64, error) {
	if len(args) == 0 || args[0] == "-" {
		return io.NopCloser(os.Stdin), -1, nil
	}
	f, err := os.Open(args[0])
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}
