package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/outbox"
)

// exitTempFail is EX_TEMPFAIL (sysexits.h): a mail system that ran the
// command (a Postfix pipe transport) keeps the message and tries again.
const exitTempFail = 75

// bounceIngestUsage is the part of bounce's usage about ingest.
const bounceIngestUsage = `ingest reads one message on standard input, a bounce (a delivery status
notification, RFC 3464) addressed to the envelope sender of mail the outbox
DB sent, and records it in the outbox: a "failed" report makes the
recipient it names "bounced", with the reason, in "mailsec queue show"; a
"delayed" one is recorded only. A bounce is matched by the ENVID the outbox
sent the message with, which carries a secret part: one that names no
message of the outbox, or names one with the wrong secret, changes nothing
(it is reported as unmatched). Meant for a Postfix pipe transport or a
mailbox poller; see the README.

With signed VERP return paths (queue run -verp), -recipient gives the
address the bounce was delivered to (Postfix pipe: ${recipient}), and the
bounce is matched by that address's tag, so that a bounce from a server
that returns no ENVID is matched too. A tag that is made up, altered, or
signed with another secret matches nothing (unmatched, exit 0). A bounce
delivered to LOCAL@DOMAIN itself, without a tag, is matched by its ENVID.

  -db DB     the outbox: a SQLite file or a postgres:// URL (required)
  -verp LOCAL@DOMAIN
             the return paths queue run -verp sends from
  -verp-secret-file FILE
             the secret queue run -verp-secret-file signs them with
  -recipient ADDR
             the envelope recipient of the bounce (with -verp)
  -json      print what was recorded as JSON on standard output

Environment: MAILSEC_OUTBOX_KEY, as for the queue commands.

ingest exit status:
  0   the bounce was recorded, or it matched nothing (not a notification,
      or not for a message of this outbox): retrying cannot help, so a
      mail system must not keep it; standard error says which
  1   the bounce matched a message that cannot be opened (tampered with)
  2   bad usage: unknown subcommand or flag, a missing -db, a SQLite file
      that does not exist, MAILSEC_OUTBOX_KEY missing or malformed, -verp
      without -verp-secret-file or -recipient without -verp, a secret file
      that cannot be read or holds fewer than 32 bytes
  75  a temporary failure (the database unreachable or busy, holding no
      outbox or one of an earlier version, which bounce ingest never
      makes nor migrates, the message in the middle of an attempt): the
      same bounce can be ingested later;
      a Postfix pipe transport keeps it and tries again
`

func runBounceIngest(ctx context.Context, e *env, args []string) int {
	const name = "bounce ingest"
	fs := flag.NewFlagSet("mailsec "+name, flag.ContinueOnError)
	db := fs.String("db", "", "the outbox `DB`: a SQLite file or a postgres:// URL (required)")
	asJSON := fs.Bool("json", false, "print what was recorded as JSON")
	var vo verpOptions
	vo.register(fs, "match bounces by the")
	recipient := fs.String("recipient", "", "the `ADDR` the bounce was delivered to (Postfix pipe: ${recipient}); with -verp")
	if code, ok := parseFlagsArgs(e, name, fs, bounceUsage, args, 0); !ok {
		return code
	}
	recipientSet := false
	fs.Visit(func(f *flag.Flag) { recipientSet = recipientSet || f.Name == "recipient" })
	if err := vo.check(); err != nil {
		return reportUsage(e, name, err)
	}
	switch {
	case recipientSet && vo.addr == "":
		return reportUsage(e, name, usagef("-recipient goes with -verp LOCAL@DOMAIN and -verp-secret-file: the address is checked against the signed return paths"))
	case recipientSet && strings.TrimSpace(*recipient) == "":
		return reportUsage(e, name, usagef("-recipient is empty: give the address the bounce was delivered to (Postfix pipe: ${recipient})"))
	}
	keys, err := outboxKeys(e.getenv)
	if err != nil {
		return reportUsage(e, name, err)
	}
	verp, err := vo.verp(e.stderr)
	if err != nil {
		return reportUsage(e, name, err)
	}
	// The outbox is the one the application's processes made: never made
	// nor migrated here. A bounce for a database that holds none, or one
	// of an earlier version, is kept by the mail server until it does.
	ob, err := openOutbox(ctx, *db, true, nil, &outbox.Options{Keys: keys, VERP: verp, SkipMigrations: true})
	if err != nil {
		var ue *usageError
		switch {
		case errors.As(err, &ue):
			return reportUsage(e, name, err)
		case errors.Is(err, outbox.ErrNoOutbox), errors.Is(err, outbox.ErrNotMigrated):
			fmt.Fprintf(e.stderr, "mailsec %s: %s (temporary: the bounce is kept until mailsec queue run -db %s has made or updated the outbox)\n",
				name, printable(err.Error()), dbName(*db))
			return exitTempFail
		}
		fmt.Fprintf(e.stderr, "mailsec %s: %s (temporary: try again later)\n", name, printable(err.Error()))
		return exitTempFail
	}
	defer closeOutbox(ob)
	var res *outbox.IngestResult
	if verp != nil && *recipient != "" && !isBareReturnPath(verp, *recipient) {
		res, err = ob.IngestReturnPath(ctx, e.stdin, *recipient)
	} else {
		res, err = ob.Ingest(ctx, e.stdin)
	}
	switch {
	case errors.Is(err, outbox.ErrUnmatched):
		fmt.Fprintf(e.stderr, "mailsec %s: unmatched, ignored: %s\n", name, printable(strings.TrimPrefix(err.Error(), "outbox: ")))
		return exitOK
	case mailsec.IsTemporary(err) || ctx.Err() != nil:
		fmt.Fprintf(e.stderr, "mailsec %s: %s (temporary: try again later)\n", name, printable(err.Error()))
		return exitTempFail
	case err != nil:
		return failure(e, name, err)
	}
	fmt.Fprintf(e.stderr, "mailsec %s: message %s: %s recorded, %s bounced\n", name, res.ID,
		plural(len(res.Recorded), "report"), plural(len(res.Bounced), "recipient"))
	if *asJSON {
		return writeJSON(e, res)
	}
	return exitOK
}

// isBareReturnPath reports whether addr is the VERP's own address,
// LOCAL@DOMAIN without a tag: mail sent without -verp has its bounces
// delivered there, and they are matched by their ENVID.
func isBareReturnPath(v *bounce.VERP, addr string) bool {
	a := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(addr), "<"), ">")
	local, domain, ok := strings.Cut(a, "@")
	return ok && strings.EqualFold(local, v.Local) && strings.EqualFold(strings.TrimSuffix(domain, "."), v.Domain)
}
