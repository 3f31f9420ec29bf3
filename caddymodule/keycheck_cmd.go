package caddymodule

// keycheck_cmd.go owns `caddy openrouter-keycheck`, the key check from a
// terminal: the key from the environment or standard input, never an
// argument.

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
	"golang.org/x/term"
)

// Exit statuses of caddy openrouter-keycheck.
const (
	exitValid    = 0
	exitNotValid = 1 // the key was checked and does not work
	exitUsage    = 2 // usage errors, and no answer from OpenRouter
)

const keyCheckCommandName = "openrouter-keycheck"

const keyCheckLong = `Checks an OpenRouter key as the openrouter_keycheck page does, and says
whether it works and, if it does not, why: expired, disabled, deleted,
malformed, a management key, another provider's key.

The key is read from the OPENROUTER_API_KEY environment variable or, when
that is empty, from the first line of standard input (at a terminal, you
are asked for it and it is not shown). A key given as an argument is
refused: it would land in shell history and in the process list.

With a management key of the key's account in OPENROUTER_MANAGEMENT_KEY,
the check tells disabled and deleted keys apart and shows the account's
credits.

Exit status:
  0  the key works
  1  the key was checked and does not work (any other status)
  2  usage error, or OpenRouter could not be asked`

const keyCheckExamples = `  # Type or paste the key when asked; it is not shown
  caddy openrouter-keycheck

  # The key from the environment
  OPENROUTER_API_KEY=... caddy openrouter-keycheck

  # The key from standard input: a file, a password manager
  caddy openrouter-keycheck < key.txt
  pass show openrouter/api-key | caddy openrouter-keycheck

  # The report as JSON, as the key check's API answers it
  caddy openrouter-keycheck --json < key.txt

  # Against another upstream, such as an OpenRouter emulator for offline tests
  caddy openrouter-keycheck --upstream http://127.0.0.1:8080/api/v1 < key.txt`

// keyCheckHelp is cobra's help layout without Caddy's footer, which points
// at Caddy's own commands.
const keyCheckHelp = `{{.Long | trimTrailingWhitespaces}}

{{.UsageString}}`

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:      keyCheckCommandName,
		Usage:     "[--json] [--upstream <url>] [--timeout <duration>]",
		Short:     "Checks an OpenRouter key and says what is wrong with it",
		Long:      keyCheckLong,
		CobraFunc: setupKeyCheckCommand,
	})
}

// setupKeyCheckCommand sets up the subcommand. It prints its own errors,
// on stderr and in plain words, and exits with its own statuses: Caddy's
// runner would log an error as a structured line and exits 1 for it
// whatever happened.
func setupKeyCheckCommand(cmd *cobra.Command) {
	cmd.Flags().Bool("json", false, "print the report as JSON")
	cmd.Flags().String("upstream", DefaultUpstream, "OpenRouter API base URL")
	cmd.Flags().Duration("timeout", DefaultLookupTimeout, "longest the check may take")
	cmd.Example = keyCheckExamples
	cmd.DisableFlagsInUseLine = true // the usage line names them already
	cmd.SetHelpTemplate(keyCheckHelp)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		fmt.Fprintf(c.ErrOrStderr(), "%s: %v\nSee: caddy %s --help\n", keyCheckCommandName, err, keyCheckCommandName)
		return exitWith(c, exitUsage)
	})
	cmd.RunE = func(c *cobra.Command, args []string) error {
		fl := c.Flags()
		asJSON, _ := fl.GetBool("json")
		upstream, _ := fl.GetString("upstream")
		timeout, _ := fl.GetDuration("timeout")
		run := keyCheckRun{args: args, asJSON: asJSON, upstream: upstream, timeout: timeout,
			stdin: c.InOrStdin(), stdout: c.OutOrStdout(), stderr: c.ErrOrStderr()}
		if f, ok := run.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			run.readSecret = func() (string, error) {
				fmt.Fprint(run.stderr, "OpenRouter key (not shown): ")
				b, err := term.ReadPassword(int(f.Fd()))
				fmt.Fprintln(run.stderr)
				return string(b), err
			}
		}
		return exitWith(c, run.run())
	}
}

// errNotValid makes Caddy's main exit with status 1; the command is
// silenced, so nothing is printed for it.
var errNotValid = errors.New("the key does not work")

// exitWith is the error that makes Caddy's main exit with status, without
// printing anything. caddycmd turns a status above 1 that a command
// function returns into its exit error, and that is the only way to one.
func exitWith(cmd *cobra.Command, status int) error {
	switch status {
	case exitValid:
		return nil
	case exitNotValid:
		return errNotValid
	}
	return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return status, nil })(cmd, nil)
}

// keyCheckRun is one run of the subcommand, with its input and output.
type keyCheckRun struct {
	args     []string
	asJSON   bool
	upstream string
	timeout  time.Duration
	stdin    io.Reader
	// readSecret reads the key from a terminal without showing it; nil when
	// standard input is not a terminal.
	readSecret     func() (string, error)
	stdout, stderr io.Writer
}

// run checks the key and returns the exit status.
func (k keyCheckRun) run() int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(k.stderr, keyCheckCommandName+": "+format+"\n", a...)
		return exitUsage
	}
	if len(k.args) > 0 {
		if textCarriesSecret(strings.Join(k.args, " ")) {
			return fail("refusing a key given as an argument: it lands in shell history and in the process list, where others can read it." +
				" Remove it from your shell history, and pass the key in OPENROUTER_API_KEY or on standard input instead (see --help).")
		}
		return fail("takes no arguments; the key comes from OPENROUTER_API_KEY or standard input (see --help)")
	}
	key := os.Getenv("OPENROUTER_API_KEY")
	if key == "" {
		var err error
		if key, err = k.readKey(); err != nil {
			return fail("reading the key from standard input: %v", err)
		}
	}
	if key == "" {
		return fail("no key: set OPENROUTER_API_KEY or pass the key on standard input (see --help)")
	}
	opts := UpstreamOptions{Upstream: k.upstream, ManagementKey: "{env.OPENROUTER_MANAGEMENT_KEY}"}
	if err := opts.validate(); err != nil {
		return fail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
	defer cancel()
	acct := newAccount(opts.settings())
	defer acct.Destruct()
	c := &checker{acct: acct, life: ctx}
	now := acct.clock.now()
	rep, err := c.check(ctx, key, now)
	if err != nil {
		// The person running this owns the upstream: the scrubbed detail
		// (which never holds a key) helps them more than it could anyone
		// else.
		return fail("the key could not be checked: %s.\n  (%v)", publicError(err), err)
	}
	if k.asJSON {
		enc := json.NewEncoder(k.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail("%v", err)
		}
	} else {
		printReport(k.stdout, viewOf(rep, now))
	}
	if rep.Status != statusValid {
		return exitNotValid
	}
	return exitValid
}

// readKey reads the first line of standard input, or asks at a terminal.
func (k keyCheckRun) readKey() (string, error) {
	if k.readSecret != nil {
		return k.readSecret()
	}
	line, err := bufio.NewReader(io.LimitReader(k.stdin, maxCheckBody)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// printReport prints a report in the page's words.
func printReport(w io.Writer, v *reportView) {
	fmt.Fprintf(w, "%s (%s)\n%s\n", v.Headline, v.Status, v.Message)
	if len(v.Advice) > 0 {
		fmt.Fprintln(w, "\nWhat to do:")
		for i, a := range v.Advice {
			fmt.Fprintf(w, "  %d. %s\n", i+1, a)
		}
	}
	for _, section := range []struct {
		name  string
		facts []fact
	}{{"Key", v.Key}, {"Account and models", v.Account}} {
		if len(section.facts) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", section.name)
		for _, f := range section.facts {
			fmt.Fprintf(w, "  %-15s %s\n", f.Name, f.text())
		}
	}
}
