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
	exitOK    = 0 // every recipient accepted
	exitFail  = 1 // some recipient not accepted, or the message refused as invalid
	exitUsage = 2 // the command line cannot be used
)

// env is what a command may touch of the outside world besides the
// network and the files named on its command line.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand.
type command struct {
	name    string
	summary string // one line for the command list
	// usage writes the command's help: synopsis, description, flags,
	// environment and exit status. brief writes the synopsis and the
	// flags, for usage errors.
	usage, brief func(w io.Writer)
	run          func(ctx context.Context, e *env, args []string) int
}

// commands lists the subcommands in the order help shows them.
func commands() []command {
	return []command{
		{name: "send", summary: "send a message through a submission server, or to MX hosts, over verified TLS",
			usage: sendUsage, brief: sendBrief, run: runSend},
		{name: "check", summary: "report how well mail to a domain is protected in transit",
			usage: checkUsage, brief: checkBrief, run: runCheck},
		{name: "dkim", summary: "make a DKIM signing key and print the DNS record to publish (dkim keygen)",
			usage: dkimUsage, brief: dkimBrief, run: runDKIM},
		{name: "queue", summary: "deliver, list, show, retry or cancel messages queued with send -queue",
			usage: queueUsage, brief: queueBrief, run: runQueue},
		{name: "bounce", summary: "explain a bounce (a delivery status notification) in plain words, or record it in an outbox",
			usage: bounceUsage, brief: bounceBrief, run: runBounce},
		{name: "keys", summary: "check OpenPGP keys and S/MIME certificates as sending would (keys check)",
			usage: keysUsage, brief: keysBrief, run: runKeys},
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

// run runs the command line args (without the program name) and returns
// the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 {
		fmt.Fprintln(stderr, "mailsec: no command given")
		shortUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return help(e, args[1:])
	}
	c, ok := lookup(args[0])
	if !ok {
		if strings.HasPrefix(args[0], "-") {
			fmt.Fprintf(stderr, "mailsec: flags go after the command, found %q first\n", args[0])
		} else {
			fmt.Fprintf(stderr, "mailsec: unknown command %q\n", args[0])
		}
		shortUsage(stderr)
		return exitUsage
	}
	return c.run(ctx, e, args[1:])
}

// help prints the usage of every command, or of the one named, on
// standard output.
func help(e *env, args []string) int {
	switch len(args) {
	case 0:
		shortUsage(e.stdout)
		for _, c := range commands() {
			fmt.Fprintln(e.stdout)
			c.usage(e.stdout)
		}
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
	shortUsage(e.stderr)
	return exitUsage
}

func shortUsage(w io.Writer) {
	fmt.Fprint(w, `usage: mailsec <command> [flags]
       mailsec help [command]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
}

// usageError reports a command line that cannot be used (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// parseFlags parses args into fs for command c. It returns ok=false with
// the exit status when the command should stop: help was asked for (the
// usage goes to standard output, status 0) or the flags were bad (the
// error and the usage go to standard error, status 2).
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
		fmt.Fprintf(e.stderr, "mailsec %s: %v\n", c, err)
		briefUsage(e.stderr, c)
		return exitUsage, false
	case fs.NArg() > maxArgs:
		fmt.Fprintf(e.stderr, "mailsec %s: unexpected argument %q (every value needs a flag)\n", c, fs.Arg(0))
		briefUsage(e.stderr, c)
		return exitUsage, false
	}
	return 0, true
}

// reportUsage prints a usage error for command c and returns exit status 2.
func reportUsage(e *env, c string, err error) int {
	fmt.Fprintf(e.stderr, "mailsec %s: %v\n", c, err)
	briefUsage(e.stderr, c)
	return exitUsage
}

func briefUsage(w io.Writer, c string) {
	// A subcommand ("queue list") has its command's usage.
	c, _, _ = strings.Cut(c, " ")
	if cmd, ok := lookup(c); ok {
		cmd.brief(w)
		fmt.Fprintf(w, "Run 'mailsec help %s' for details.\n", c)
	}
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
