package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
)

const bounceSynopsis = `usage: mailsec bounce explain FILE [-json]
       mailsec bounce ingest -db DB [-verp LOCAL@DOMAIN -verp-secret-file FILE -recipient ADDR] [-json] < MESSAGE
`

func bounceUsage(w io.Writer) {
	fmt.Fprint(w, bounceSynopsis, `
Bounce reads delivery status notifications (DSNs, RFC 3464): the bounces and
delay warnings mail servers send back to a message's envelope sender when a
later hop could not deliver it.

explain reads one DSN, as it arrived, from FILE (or, with "-", from standard
input) and prints on standard output, per recipient, what happened (failed,
delayed, delivered, relayed, expanded), the status code and what it means in
one sentence, whether trying again can help, and what the remote server
said; with -json, the report as JSON. A message that is not a DSN (qmail's
plain-text bounces among them), is malformed or is too large is refused.

Examples:
  mailsec bounce explain bounce.eml
  mailsec bounce explain -json - < bounce.eml
  mailsec bounce ingest -db mail.db < bounce.eml
  mailsec bounce ingest -db mail.db -verp bounces@example.com \
      -verp-secret-file /etc/mailsec/verp.key -recipient "$RECIPIENT" < bounce.eml

explain flags:
  -json   print the report as JSON on standard output

Exit status: 0 the DSN was explained; 1 the message was refused (not a DSN,
malformed, too large) or could not be read through; 2 bad usage, or FILE
cannot be opened.

`, bounceIngestUsage)
}

func runBounce(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		return reportUsage(e, "bounce", usagef("no subcommand: explain or ingest"))
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "explain":
		return runBounceExplain(e, args)
	case "ingest":
		return runBounceIngest(ctx, e, args)
	case "-h", "-help", "--help", "help":
		bounceUsage(e.stdout)
		return exitOK
	}
	return reportUsage(e, "bounce", usagef("unknown subcommand %q: explain or ingest", sub))
}

func runBounceExplain(e *env, args []string) int {
	const name = "bounce explain"
	fs := flag.NewFlagSet("mailsec "+name, flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	// The file may come first ("explain FILE -json"), or after the flags.
	var file string
	if len(args) > 0 && (args[0] == "-" || !strings.HasPrefix(args[0], "-")) {
		file, args = args[0], args[1:]
	}
	maxArgs := 0
	if file == "" {
		maxArgs = 1
	}
	if code, ok := parseFlagsArgs(e, name, fs, bounceUsage, args, maxArgs); !ok {
		return code
	}
	if file == "" {
		file = fs.Arg(0)
	}
	if file == "" {
		return reportUsage(e, name, usagef(`the DSN's FILE is required ("-" for standard input)`))
	}
	in := e.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return reportUsage(e, name, usagef("%v", err))
		}
		defer f.Close()
		in = f
	}
	rep, err := bounce.Parse(in)
	if err != nil {
		return failure(e, name, err)
	}
	x := explained(rep)
	if *asJSON {
		return writeJSON(e, x)
	}
	printReport(e.stdout, x)
	return exitOK
}

// explainedReport is a bounce.Report with the explanation of each
// recipient's status: the JSON form of "bounce explain -json".
type explainedReport struct {
	*bounce.Report
	Recipients []explainedRecipient `json:"recipients"`
}

type explainedRecipient struct {
	bounce.Recipient
	// Code is the code explained (bounce.Recipient.Code).
	Code        mailsec.EnhancedCode `json:"code"`
	Explanation mailsec.Explanation  `json:"explanation"`
	Temporary   bool                 `json:"temporary"`
}

func explained(rep *bounce.Report) *explainedReport {
	x := &explainedReport{Report: rep}
	for _, r := range rep.Recipients {
		x.Recipients = append(x.Recipients, explainedRecipient{Recipient: r, Code: r.Code(), Explanation: r.Explain(), Temporary: r.Temporary()})
	}
	return x
}

func printReport(w io.Writer, x *explainedReport) {
	var b strings.Builder
	b.WriteString("Report")
	if x.ReportingMTA != "" {
		b.WriteString(" from " + x.ReportingMTA)
	}
	if x.MessageID != "" {
		b.WriteString(" on message <" + x.MessageID + ">")
	}
	if x.EnvelopeID != "" {
		b.WriteString(", envelope ID " + x.EnvelopeID)
	}
	if !x.ArrivalDate.IsZero() {
		b.WriteString(", received " + stamp(x.ArrivalDate))
	}
	fmt.Fprintln(w, printable(b.String()))
	for _, r := range x.Recipients {
		fmt.Fprintf(w, "\n%s: %s, %s\n", printable(r.FinalRecipient), r.Action, r.Code)
		if r.OriginalRecipient != "" && !strings.EqualFold(r.OriginalRecipient, r.FinalRecipient) {
			fmt.Fprintf(w, "  sent to:       %s\n", printable(r.OriginalRecipient))
		}
		fmt.Fprintf(w, "  what it means: %s\n", r.Explanation.Text)
		switch {
		case r.Action == bounce.ActionDelayed:
			s := "the reporting server is still trying"
			if !r.WillRetryUntil.IsZero() {
				s += ", until " + stamp(r.WillRetryUntil)
			}
			fmt.Fprintf(w, "  retry:         %s\n", s)
		case r.Action == bounce.ActionFailed && r.Temporary:
			fmt.Fprintf(w, "  retry:         sending again later can help\n")
		case r.Action == bounce.ActionFailed:
			fmt.Fprintf(w, "  retry:         will not help until something changes\n")
		}
		if r.DiagnosticCode != "" {
			who := "remote server"
			if r.RemoteMTA != "" {
				who = r.RemoteMTA
			}
			fmt.Fprintf(w, "  server said:   %s: %s\n", printable(who), printable(r.DiagnosticCode))
		}
	}
}
