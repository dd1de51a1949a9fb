package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// Exit statuses.
const (
	exitOK    = 0  // every recipient accepted; check: the path is protected
	exitFail  = 1  // some recipient not accepted for good, or the message refused as invalid; check: the path is weak or broken
	exitUsage = 2  // the command line cannot be used
	exitCheck = 3  // check: the check itself could not run (resolver or network down)
	exitTemp  = 75 // every failure is one a retry can help (sendmail's EX_TEMPFAIL)
)

// env is what a command may touch of the outside world besides the
// network and the files named on its command line.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand. To add one, write its run and usage
// functions and add it to commands; "mailsec -h", "mailsec help NAME",
// "mailsec NAME -h" and the usage error hints follow from the table.
type command struct {
	name    string
	summary string // one line for the command list
	// usage writes the command's help: synopsis, description, examples,
	// flags grouped by purpose, environment and exit status.
	usage func(w io.Writer)
	run   func(ctx context.Context, e *env, args []string) int
}

// commands lists the subcommands in the order help shows them.
func commands() []command {
	return []command{
		{name: "send", summary: "send a message through a submission server, or to MX hosts, over verified TLS",
			usage: sendUsage, run: runSend},
		{name: "check", summary: "report how well mail to a domain is protected in transit",
			usage: checkUsage, run: runCheck},
		{name: "dkim", summary: "make a DKIM signing key and print the DNS record to publish (dkim keygen)",
			usage: dkimUsage, run: runDKIM},
		{name: "queue", summary: "deliver, list, show, retry or cancel messages queued with send -queue",
			usage: queueUsage, run: runQueue},
		{name: "bounce", summary: "explain a bounce (a delivery status notification) in plain words, or record it in an outbox",
			usage: bounceUsage, run: runBounce},
		{name: "version", summary: "print the module version and the Go version mailsec was built with",
			usage: versionUsage, run: runVersion},
		{name: "keys", summary: "check OpenPGP keys and S/MIME certificates as sending would (keys check)",
			usage: keysUsage, run: runKeys},
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// run runs the command line args (without the program name) and returns
// the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	// Nothing a command writes shows an outbox key typed on the command
	// line, or the key variable's value.
	secrets := secretsIn(args, getenv(outboxKeyEnv))
	stdout, stderr = redacting(stdout, secrets), redacting(stderr, secrets)
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 {
		fmt.Fprintln(stderr, "mailsec: no command given")
		shortUsage(stderr)
		return exitUsage
	}
	if isHelp(args[0]) {
		return help(e, args[1:])
	}
	if args[0] == "--version" || args[0] == "-version" {
		return runVersion(ctx, e, nil)
	}
	c, ok := lookup(args[0])
	if !ok {
		if strings.HasPrefix(args[0], "-") {
			fmt.Fprintf(stderr, "mailsec: flags go after the command, found %q first\n", args[0])
		} else {
			fmt.Fprintf(stderr, "mailsec: unknown command %q\n", args[0])
		}
		fmt.Fprintln(stderr, "run 'mailsec -h' for the commands")
		return exitUsage
	}
	if len(args) == 2 && isHelp(args[1]) {
		// "mailsec queue -h" as well as "mailsec send -h".
		c.usage(stdout)
		return exitOK
	}
	return c.run(ctx, e, args[1:])
}

// help prints the overview, or the usage of the command named, on
// standard output.
func help(e *env, args []string) int {
	switch len(args) {
	case 0:
		overview(e.stdout)
		return exitOK
	case 1:
		if c, ok := lookup(args[0]); ok {
			c.usage(e.stdout)
			return exitOK
		}
		fmt.Fprintf(e.stderr, "mailsec help: unknown command %q\n", args[0])
	default:
		fmt.Fprintln(e.stderr, "mailsec help: at most one command")
	}
	fmt.Fprintln(e.stderr, "run 'mailsec -h' for the commands")
	return exitUsage
}

func shortUsage(w io.Writer) {
	fmt.Fprint(w, `usage: mailsec <command> [flags]
       mailsec <command> -h

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
}

// overview is "mailsec -h": the synopsis, the commands and examples.
func overview(w io.Writer) {
	shortUsage(w)
	fmt.Fprint(w, `
Examples:
  # a test message through your provider's submission server (STARTTLS, port 587)
  MAILSEC_PASSWORD=... mailsec send -server smtp.example.com:587 -user app \
      -from app@example.com -to you@example.org -subject test -body msg.txt

  # to a development server on this machine (Mailpit, MailHog): no TLS
  mailsec send -server 127.0.0.1:1025 -tls none -from a@example.com -to b@example.org

  # straight to the recipient domain's MX hosts (DANE, MTA-STS)
  mailsec send -mx -from app@example.com -to you@example.org -subject test

  # how well is mail to a domain protected? (exit 0 protected, 1 weak, 3 could not check)
  mailsec check example.org

Run 'mailsec <command> -h' for a command's flags and exit status.
`)
}

// usageError reports a command line that cannot be used (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// parseFlags parses args into fs for command c. It returns ok=false with
// the exit status when the command should stop: help was asked for (the
// usage goes to standard output, status 0) or the flags were bad (one
// line on standard error, status 2).
func parseFlags(e *env, c string, fs *flag.FlagSet, usage func(io.Writer), args []string) (code int, ok bool) {
	return parseFlagsArgs(e, c, fs, usage, args, 0)
}

// parseFlagsArgs is parseFlags for a command that takes up to maxArgs
// arguments after its flags.
func parseFlagsArgs(e *env, c string, fs *flag.FlagSet, usage func(io.Writer), args []string, maxArgs int) (code int, ok bool) {
	// Errors and usage are printed below, to the right stream.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage(e.stdout)
		return exitOK, false
	case err != nil:
		return reportUsage(e, c, flagError(err)), false
	case fs.NArg() > maxArgs:
		return reportUsage(e, c, usagef("unexpected argument %q (every value needs a flag)", fs.Arg(maxArgs))), false
	}
	return 0, true
}

// undefinedPrefix starts the flag package's error for an unknown flag.
const undefinedPrefix = "flag provided but not defined: -"

// flagHint answers a flag people reach for that mailsec deliberately
// lacks, or returns "".
func flagHint(name string) string {
	switch name {
	case "password", "pass", "passwd":
		return "there is no password flag, so that it never shows in a process list or a shell history: set " + passwordEnv + " in the environment"
	case "passphrase":
		return "there is no passphrase flag: set " + pgpPassphraseEnv + " in the environment"
	case "port":
		return "the port goes in -server HOST:PORT (or -mx-port with -mx)"
	}
	return ""
}

// flagError rewrites the flag package's error as one line that says what
// to do.
func flagError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, undefinedPrefix); ok {
		name = strings.TrimLeft(name, "-")
		if hint := flagHint(name); hint != "" {
			return usagef("unknown flag -%s: %s", name, hint)
		}
		return usagef("unknown flag -%s", name)
	}
	return usagef("%s", msg)
}

// reportUsage prints a usage error for command c, as one line and a
// pointer to the help, and returns exit status 2.
func reportUsage(e *env, c string, err error) int {
	fmt.Fprintf(e.stderr, "mailsec %s: %s\n", c, printable(err.Error()))
	fmt.Fprintf(e.stderr, "run 'mailsec %s -h' for usage\n", c)
	return exitUsage
}

// printable makes text that came from the network (server replies inside
// error messages) safe to print on a terminal: control characters, which
// could drive the terminal, become '?'.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// flagGroup is a heading in a command's help and the flags under it.
type flagGroup struct {
	title string
	names []string
}

// printFlags writes the flags of fs under the headings of groups, in the
// groups' order; a flag no group names is listed under "Other flags", so
// that none is ever left out.
func printFlags(w io.Writer, fs *flag.FlagSet, groups []flagGroup) {
	listed := map[string]bool{}
	for _, g := range groups {
		var fl []*flag.Flag
		for _, n := range g.names {
			if f := fs.Lookup(n); f != nil {
				fl = append(fl, f)
				listed[n] = true
			}
		}
		printGroup(w, g.title, fl)
	}
	var rest []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if !listed[f.Name] {
			rest = append(rest, f)
		}
	})
	printGroup(w, "Other flags", rest)
}

func printGroup(w io.Writer, title string, fl []*flag.Flag) {
	if len(fl) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s:\n", title)
	for _, f := range fl {
		name, usage := flag.UnquoteUsage(f)
		head := "  -" + f.Name
		if name != "" {
			head += " " + name
		}
		switch f.DefValue {
		case "", "0", "false", "0s":
		default:
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintln(w, head)
		for _, l := range wrap(usage, 72) {
			fmt.Fprintln(w, "        "+l)
		}
	}
}

// wrap breaks s into lines of at most width columns, at spaces.
func wrap(s string, width int) []string {
	var out []string
	line := ""
	for _, word := range strings.Fields(s) {
		if line != "" && len(line)+1+len(word) > width {
			out = append(out, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		out = append(out, line)
	}
	return out
}
