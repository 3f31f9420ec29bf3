package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "openrouter-keycheck",
		Usage: "[--json] [--upstream <url>] [--timeout <duration>]",
		Short: "Checks an OpenRouter key and says what is wrong with it",
		Long: `
Checks an OpenRouter key as the openrouter_keycheck page does, and prints
the report as text, or with --json as the API's JSON.

The key is read from the OPENROUTER_API_KEY environment variable or, when
that is unset, from the first line of standard input; never from an
argument, which would land in shell history and the process list. A
management key in OPENROUTER_MANAGEMENT_KEY tells disabled and deleted keys
apart and shows the account's credits for keys of its account.

Exit status: 0 for a valid key, 1 for any other status, 2 for usage or
network errors.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().Bool("json", false, "print the report as JSON")
			cmd.Flags().String("upstream", DefaultUpstream, "OpenRouter API base URL")
			cmd.Flags().Duration("timeout", DefaultLookupTimeout, "longest the check may take")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdKeyCheck)
		},
	})
}

func cmdKeyCheck(fl caddycmd.Flags) (int, error) {
	return runKeyCheck(fl.Bool("json"), fl.String("upstream"), fl.Duration("timeout"), os.Stdin, os.Stdout)
}

// runKeyCheck is the subcommand, with its input and output as arguments.
func runKeyCheck(asJSON bool, upstream string, timeout time.Duration, stdin io.Reader, stdout io.Writer) (int, error) {
	key := os.Getenv("OPENROUTER_API_KEY")
	if key == "" {
		line, err := bufio.NewReader(io.LimitReader(stdin, maxCheckBody)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return exitUsage, fmt.Errorf("reading the key from standard input: %v", err)
		}
		key = strings.TrimRight(line, "\r\n")
	}
	if key == "" {
		return exitUsage, errors.New("no key: set OPENROUTER_API_KEY or pass the key on standard input")
	}
	opts := UpstreamOptions{Upstream: upstream, ManagementKey: "{env.OPENROUTER_MANAGEMENT_KEY}"}
	if err := opts.validate(); err != nil {
		return exitUsage, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	acct := newAccount(opts.settings())
	defer acct.Destruct()
	c := &checker{acct: acct, life: ctx}
	rep, err := c.check(ctx, key, time.Now())
	if err != nil {
		return exitUsage, errors.New(publicError(err))
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return exitUsage, err
		}
	} else {
		printReport(stdout, rep)
	}
	if rep.Status != statusValid {
		// Caddy's command runner turns only an error into exit status 1.
		return 1, fmt.Errorf("the key is not valid: %s", rep.Status)
	}
	return 0, nil
}

// exitUsage is the exit status for usage and network errors.
const exitUsage = 2

func printReport(w io.Writer, r *report) {
	fmt.Fprintf(w, "Status:  %s\n%s\n", r.Status, r.Message)
	if k := r.Key; k != nil {
		fmt.Fprintf(w, "\nKey:     %s\n", k.Label)
		if k.IsManagementKey != nil {
			fmt.Fprintf(w, "  management key: %v\n", *k.IsManagementKey)
		}
		if k.Limit != nil {
			fmt.Fprintf(w, "  limit: %g", *k.Limit)
			if k.LimitRemaining != nil {
				fmt.Fprintf(w, " (%g remaining)", *k.LimitRemaining)
			}
			fmt.Fprintln(w)
		}
		if k.Usage != nil {
			fmt.Fprintf(w, "  usage: total %g, today %g, this week %g, this month %g\n", k.Usage.Total, k.Usage.Daily, k.Usage.Weekly, k.Usage.Monthly)
		}
		if k.ExpiresAt != nil {
			fmt.Fprintf(w, "  expires at: %s\n", k.ExpiresAt.Format(time.RFC3339))
		}
	}
	if r.Credits != nil {
		fmt.Fprintf(w, "\nCredits: %g remaining of %g\n", r.Credits.Remaining, r.Credits.TotalCredits)
	} else {
		fmt.Fprintf(w, "\nCredits: unavailable: %s\n", r.CreditsUnavailable)
	}
	if r.Models != nil {
		fmt.Fprintf(w, "Models:  %d (%s)\n", r.Models.Count, strings.Join(r.Models.Sample, ", "))
	} else {
		fmt.Fprintf(w, "Models:  unavailable: %s\n", r.ModelsUnavailable)
	}
	fmt.Fprintln(w, "\nWhat to do:")
	for _, a := range r.Advice {
		fmt.Fprintf(w, "  - %s\n", a)
	}
}
