package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/outbox"
)

// outboxKeyEnv names the environment variable that holds the outbox's
// at-rest keys.
const outboxKeyEnv = "MAILSEC_OUTBOX_KEY"

// closeTimeout is how long a queue command gives deliveries under way to
// finish when it stops; those still running then stay queued.
const closeTimeout = 30 * time.Second

// outboxKeys reads the outbox's keys from the environment. There is no
// flag for them, so that they never appear in a process list or a shell
// history, and no error names a key by its value.
func outboxKeys(getenv func(string) string) ([]outbox.Key, error) {
	v := getenv(outboxKeyEnv)
	if strings.TrimSpace(v) == "" {
		return nil, usagef("the outbox is sealed with the key in the environment variable %s, which is not set (the standard base64 of 32 random bytes, e.g. from: head -c 32 /dev/urandom | base64; several separated by commas to rotate, the first one sealing)", outboxKeyEnv)
	}
	keys, err := outbox.ParseKeys(v)
	if err != nil {
		return nil, usagef("%s: %v", outboxKeyEnv, err)
	}
	// The outbox refuses a key given twice too, but only once the
	// database is opened (a SQLite file created), and in its own terms.
	for i, k := range keys {
		for j := range i {
			if keys[j].ID() == k.ID() {
				return nil, usagef("%s: keys %d and %d are the same key: list each key once", outboxKeyEnv, j+1, i+1)
			}
		}
	}
	return keys, nil
}

// dbName is the outbox database as messages may name it: a postgres://
// URL (its scheme in any case) without its secrets, the password in its
// userinfo and every query parameter whose name holds "password"
// (password, sslpassword), or without its whole query when that does not
// parse.
func dbName(db string) string {
	scheme, _, ok := strings.Cut(strings.TrimSpace(db), "://")
	if !ok {
		return db
	}
	// Any URL, not only postgres:// ones: a misspelt scheme is no less a
	// secret's carrier.
	u, err := url.Parse(strings.TrimSpace(db))
	if err != nil || u.Scheme == "" {
		return "the " + printable(strings.ToLower(strings.TrimSpace(scheme))) + ":// URL given"
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = "..."
		} else {
			for k := range q {
				if strings.Contains(strings.ToLower(k), "password") {
					q[k] = []string{"xxxxx"}
				}
			}
			u.RawQuery = q.Encode()
		}
	}
	u.Fragment, u.RawFragment = "", ""
	return u.Redacted()
}

// noDelivery is the transport of a process that queues or inspects
// messages and delivers none (its outbox is never started).
type noDelivery struct{}

func (noDelivery) Deliver(context.Context, *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	return nil, errors.New("mailsec: this process does not deliver")
}

// openOutbox opens the outbox in db with the keys and options given.
// Inspecting commands (mustExist) refuse a SQLite file that is not there
// rather than create an empty queue.
func openOutbox(ctx context.Context, db string, mustExist bool, s *mailsec.Sender, o *outbox.Options) (_ *outbox.Outbox, err error) {
	if db == "" {
		return nil, usagef("-db is required: the outbox's SQLite file or postgres:// URL")
	}
	if mustExist && !strings.Contains(db, "://") {
		if _, err := os.Stat(db); err != nil {
			return nil, usagef("-db %s: %v", db, errors.Unwrap(err))
		}
	}
	if name := dbName(db); name != db {
		// The library's errors may quote the string as given.
		defer func() {
			if err != nil {
				err = &redacted{err: err, secret: db, name: name}
			}
		}()
	}
	if s == nil {
		var err error
		if s, err = mailsec.NewSender(noDelivery{}, nil); err != nil {
			return nil, err
		}
	}
	ob, err := outbox.Open(ctx, s, db, o)
	if err != nil {
		return nil, fmt.Errorf("opening the outbox %s: %w", dbName(db), err)
	}
	return ob, nil
}

// redacted is err with every occurrence of secret, a database URL, given
// as name in its text.
type redacted struct {
	err          error
	secret, name string
}

func (r *redacted) Error() string { return strings.ReplaceAll(r.err.Error(), r.secret, r.name) }
func (r *redacted) Unwrap() error { return r.err }

func closeOutbox(ob *outbox.Outbox) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return ob.Close(ctx)
}

// enqueue is mailsec send -queue: it queues msg and prints its ID.
func enqueue(ctx context.Context, e *env, o *sendOptions, keys []outbox.Key, msg *mailsec.Message) int {
	const name = "send"
	ob, err := openOutbox(ctx, o.queue, false, nil, &outbox.Options{Keys: keys})
	if err != nil {
		return failure(e, name, err)
	}
	defer closeOutbox(ob)
	id, err := ob.Enqueue(ctx, msg, nil)
	if err != nil {
		fmt.Fprintln(e.stderr, errorLine(err))
		return exitFail
	}
	fmt.Fprintln(e.stderr, "mailsec: queued as "+id)
	// The message is queued: exit 0 whatever becomes of the output, so
	// that a caller that retries on failure does not queue it twice.
	out := []byte(id + "\n")
	if o.json {
		st, err := ob.Status(ctx, id)
		if err == nil {
			out, err = json.MarshalIndent(st, "", "  ")
			out = append(out, '\n')
		}
		if err != nil {
			fmt.Fprintf(e.stderr, "mailsec %s: %s is queued, but its status cannot be read: %s\n", name, id, strings.TrimPrefix(err.Error(), "mailsec: "))
			return exitOK
		}
	}
	if _, err := e.stdout.Write(out); err != nil {
		fmt.Fprintf(e.stderr, "mailsec %s: %s is queued, but writing the result to standard output failed: %v\n", name, id, err)
	}
	return exitOK
}

// failure reports an error of command c: a usage error (status 2) or
// any other (status 1).
func failure(e *env, c string, err error) int {
	var ue *usageError
	if errors.As(err, &ue) {
		return reportUsage(e, c, err)
	}
	fmt.Fprintf(e.stderr, "mailsec %s: %s\n", c, printable(strings.TrimPrefix(err.Error(), "mailsec: ")))
	return exitFail
}

func writeJSON(e *env, v any) int {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		fmt.Fprintf(e.stderr, "mailsec: encoding JSON: %v\n", err)
		return exitFail
	}
	if _, err := e.stdout.Write(append(out, '\n')); err != nil {
		fmt.Fprintf(e.stderr, "mailsec: writing: %v\n", err)
		return exitFail
	}
	return exitOK
}

const queueSynopsis = `usage: mailsec queue run -db DB [-once] {-server HOST:PORT ... | -mx ...} [the delivery flags of send]
       mailsec queue list -db DB [-state STATE[,STATE...]] [-limit N] [-json]
       mailsec queue show ID -db DB [-json]
       mailsec queue retry ID -db DB
       mailsec queue cancel ID -db DB
`

func queueUsage(w io.Writer) {
	fmt.Fprint(w, queueSynopsis, `
Queue works on the outbox that "mailsec send -queue DB" queues messages in: a
SQLite file, or a PostgreSQL database named by a postgres:// URL that several
processes share. Everything the outbox stores about a message (addresses,
subject, body, attachments, receipts) is sealed with the key in `+outboxKeyEnv+`.

run delivers the queued messages through the server or MX hosts its flags name
(the same flags as send's: -server, -tls, -user, -ca, -mx, -dns, -level,
-mx-port, -allow-private, -pgp-keys, -smime-certs, ...; end-to-end protection
happens at each attempt, with the keys and certificates given to run; -verp
sends each delivery from a signed return path of its own, which "mailsec
bounce ingest -recipient" checks). It retries temporary failures with
backoff until a message is 5 days old, and runs until interrupted; with
-once, until no message is due and none is being sent. A line per recipient and attempt goes to standard error. On
SIGINT or SIGTERM it gives deliveries under way 30s to finish; the rest stay
queued.

list shows the newest messages (ID, state, when queued, when next tried, how
many recipients and attempts), show one message's status with each
recipient and every attempt's receipt (-json: the status as JSON), retry makes
a queued message due now, and cancel stops it from being sent any further.
Their flags may come before the ID, after it, or both.

Examples:
  export `+outboxKeyEnv+`="$(head -c 32 /dev/urandom | base64)"
  mailsec send -queue mail.db -from app@example.com -to ann@example.org -subject hi
  mailsec queue run -db mail.db -once -server smtp.example.com:587 -user app
  mailsec queue run -db mail.db -server smtp.example.com:587 -user app \
      -verp bounces@example.com -verp-secret-file /etc/mailsec/verp.key
  mailsec queue list -db mail.db -state failed,expired
  mailsec queue show ID -db mail.db -json

run flags:
  -db DB     the outbox: a SQLite file or a postgres:// URL (required)
  -once      deliver what is due, then stop
  and the delivery flags of send, below

list flags:
  -state S   only messages in these states: queued, sending, delivered,
             partly-delivered, failed, expired, cancelled (comma-separated)
  -limit N   at most N messages, the newest first (default 100)
  -json      print the list as JSON
`)
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	(&deliveryOptions{}).register(fs)
	printFlags(w, fs, deliveryFlagGroups())
	fmt.Fprint(w, `
Environment:
  `+outboxKeyEnv+`  the outbox's keys, each the standard base64 of 32 random
                      bytes (head -c 32 /dev/urandom | base64), several
                      separated by commas to rotate keys: the first seals,
                      all open. Required; there is no flag for it, and it is
                      never printed.
  `+passwordEnv+`    with run -user, as for send

Exit status:
  0  done: the list or status printed, the message retried or cancelled,
     nothing due any more (run -once), or run stopped by a signal with
     nothing interrupted
  1  the outbox could not be opened or read (or is of an earlier version:
     list, show, retry and cancel make and migrate nothing; run brings it
     up to date), run -once left messages sealed under keys not in
     `+outboxKeyEnv+` (they wait for their keys), no message has the ID,
     the message has finished (retry, cancel) or is being sent (retry),
     its status does not open (show), or deliveries were interrupted at
     exit
  2  bad usage: unknown subcommand or flag, a missing -db or ID, a SQLite
     file that does not exist or a database that holds no outbox (list,
     show, retry, cancel), `+outboxKeyEnv+` missing or malformed, or a
     delivery flag of run that send would refuse
`)
}

func runQueue(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		return reportUsage(e, "queue", usagef("no subcommand: run, list, show, retry or cancel"))
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "run":
		return runQueueRun(ctx, e, args)
	case "list":
		return runQueueList(ctx, e, args)
	case "show", "retry", "cancel":
		return runQueueOne(ctx, e, sub, args)
	case "-h", "-help", "--help", "help":
		queueUsage(e.stdout)
		return exitOK
	}
	return reportUsage(e, "queue", usagef("unknown subcommand %q: run, list, show, retry or cancel", sub))
}

// parseQueueFlags parses flags and, for a subcommand that takes an ID,
// one argument before, between or after them ("show ID -db DB", "show
// -db DB ID -json").
func parseQueueFlags(e *env, name string, fs *flag.FlagSet, args []string, wantID bool) (id string, code int, ok bool) {
	if wantID && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	} else if wantID {
		// The flags before the ID: parsing stops at it.
		if code, ok := parseFlagsArgs(e, name, fs, queueUsage, args, len(args)); !ok {
			return "", code, false
		}
		if args = fs.Args(); len(args) > 0 {
			id, args = args[0], args[1:]
		}
	}
	// The flags after the ID, or all of them.
	if code, ok := parseFlagsArgs(e, name, fs, queueUsage, args, 0); !ok {
		return "", code, false
	}
	if wantID && id == "" {
		return "", reportUsage(e, name, usagef("the message's ID is required")), false
	}
	return id, 0, true
}

func runQueueOne(ctx context.Context, e *env, sub string, args []string) int {
	name := "queue " + sub
	fs := flag.NewFlagSet("mailsec "+name, flag.ContinueOnError)
	db := fs.String("db", "", "the outbox `DB`: a SQLite file or a postgres:// URL (required)")
	asJSON := false
	if sub == "show" {
		fs.BoolVar(&asJSON, "json", false, "print the status as JSON")
	}
	id, code, ok := parseQueueFlags(e, name, fs, args, true)
	if !ok {
		return code
	}
	ob, code, ok := inspectOutbox(ctx, e, name, *db)
	if !ok {
		return code
	}
	defer closeOutbox(ob)
	switch sub {
	case "retry":
		if err := ob.Retry(ctx, id); err != nil {
			return failure(e, name, err)
		}
		fmt.Fprintf(e.stderr, "mailsec %s: %s is due now\n", name, id)
	case "cancel":
		if err := ob.Cancel(ctx, id); err != nil {
			return failure(e, name, err)
		}
		fmt.Fprintf(e.stderr, "mailsec %s: %s is cancelled\n", name, id)
	case "show":
		st, err := ob.Status(ctx, id)
		if st != nil {
			if asJSON {
				if code := writeJSON(e, st); code != exitOK {
					return code
				}
			} else {
				printStatus(e.stdout, st)
			}
		}
		if err != nil {
			return failure(e, name, err)
		}
	}
	return exitOK
}

func runQueueList(ctx context.Context, e *env, args []string) int {
	const name = "queue list"
	fs := flag.NewFlagSet("mailsec "+name, flag.ContinueOnError)
	db := fs.String("db", "", "the outbox `DB`: a SQLite file or a postgres:// URL (required)")
	states := fs.String("state", "", "only messages in these `STATES` (comma-separated): queued, sending, delivered, partly-delivered, failed, expired, cancelled")
	limit := fs.Int("limit", outbox.DefaultListLimit, "at most `N` messages, the newest first")
	asJSON := fs.Bool("json", false, "print the list as JSON")
	if _, code, ok := parseQueueFlags(e, name, fs, args, false); !ok {
		return code
	}
	lo := &outbox.ListOptions{Limit: *limit}
	if *limit <= 0 {
		return reportUsage(e, name, usagef("-limit must be positive"))
	}
	if *states != "" {
		for s := range strings.SplitSeq(*states, ",") {
			st, err := outbox.ParseState(s)
			if err != nil {
				return reportUsage(e, name, usagef("-state %q: not a state: queued, sending, delivered, partly-delivered, failed, expired, cancelled", s))
			}
			lo.States = append(lo.States, st)
		}
	}
	ob, code, ok := inspectOutbox(ctx, e, name, *db)
	if !ok {
		return code
	}
	defer closeOutbox(ob)
	list, err := ob.List(ctx, lo)
	if err != nil {
		return failure(e, name, err)
	}
	if *asJSON {
		if list == nil {
			list = []outbox.Summary{}
		}
		return writeJSON(e, list)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tENQUEUED\tNEXT\tRECIPIENTS\tATTEMPTS\tPROBLEM")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.ID, strings.ReplaceAll(string(s.State), " ", "-"),
			stamp(s.Enqueued), stamp(s.Next), s.Recipients, s.Attempts, printable(s.Problem))
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintf(e.stderr, "mailsec %s: writing: %v\n", name, err)
		return exitFail
	}
	return exitOK
}

// stamp formats a time for the queue's tables: UTC to the second, "-"
// for none.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// printStatus writes a message's status for people.
func printStatus(w io.Writer, st *outbox.Status) {
	line := func(k, v string) {
		if v != "" && v != "-" {
			fmt.Fprintf(w, "%-11s %s\n", k+":", printable(v))
		}
	}
	line("id", st.ID)
	line("state", string(st.State))
	line("message-id", st.MessageID)
	line("reference", st.Reference)
	line("enqueued", stamp(st.Enqueued))
	if !st.State.Finished() {
		line("next", stamp(st.Next))
		line("expires", stamp(st.Expires))
	}
	line("finished", stamp(st.Finished))
	if st.Sealed {
		line("storage", "sealed, key "+st.KeyID)
	} else {
		line("storage", "PLAINTEXT (not sealed)")
	}
	line("problem", st.Problem)
	if len(st.Recipients) > 0 {
		fmt.Fprintln(w, "recipients:")
	}
	for _, r := range st.Recipients {
		s := fmt.Sprintf("  %s (%s): %s, %s", r.Address, r.Kind, r.State, plural(r.Attempts, "attempt"))
		switch {
		case r.PossibleDuplicate:
			s += ", POSSIBLE DUPLICATE"
		case r.PossiblyDelivered:
			s += ", possibly delivered (a verdict was lost)"
		}
		if r.Bounce != "" {
			s += ": " + r.Bounce
		} else if r.Error != "" {
			s += ": " + strings.TrimPrefix(r.Error, "mailsec: ")
		}
		fmt.Fprintln(w, printable(s))
	}
	if len(st.Attempts) > 0 {
		fmt.Fprintln(w, "attempts:")
	}
	for _, a := range st.Attempts {
		s := fmt.Sprintf("  %d: %s, %s", a.Number, stamp(a.Started), a.State)
		if !a.Next.IsZero() {
			s += ", next " + stamp(a.Next)
		}
		if a.Interrupted {
			s += ", interrupted"
		}
		if len(a.PossibleDuplicates) > 0 {
			s += ", possible duplicates: " + strings.Join(a.PossibleDuplicates, ", ")
		}
		if a.Error != "" {
			s += ": " + strings.TrimPrefix(a.Error, "mailsec: ")
		}
		fmt.Fprintln(w, printable(s))
		if a.Receipt != nil {
			for _, r := range a.Receipt.Recipients {
				fmt.Fprintln(w, "    "+strings.TrimPrefix(progressLine(r), "mailsec: "))
			}
		}
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// lockedWriter serialises the writes of concurrent deliveries.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func runQueueRun(ctx context.Context, e *env, args []string) int {
	const name = "queue run"
	fs := flag.NewFlagSet("mailsec "+name, flag.ContinueOnError)
	db := fs.String("db", "", "the outbox `DB`: a SQLite file or a postgres:// URL (required)")
	once := fs.Bool("once", false, "deliver what is due, then stop")
	var d deliveryOptions
	d.register(fs)
	if _, code, ok := parseQueueFlags(e, name, fs, args, false); !ok {
		return code
	}
	if *db == "" {
		return reportUsage(e, name, usagef("-db is required: the outbox's SQLite file or postgres:// URL"))
	}
	if err := d.check(e.getenv); err != nil {
		return reportUsage(e, name, err)
	}
	keys, err := outboxKeys(e.getenv)
	if err != nil {
		return reportUsage(e, name, err)
	}
	t, err := d.transport(e)
	if err != nil {
		return reportUsage(e, name, err)
	}
	defer t.Close()
	opts, verp, err := d.senderOptions(e)
	if err != nil {
		return reportUsage(e, name, err)
	}
	sender, err := mailsec.NewSender(t, opts)
	if err != nil {
		return failure(e, name, err)
	}

	stderr := &lockedWriter{w: e.stderr}
	onAttempt := func(_ context.Context, a *outbox.Attempt) {
		var b strings.Builder
		fmt.Fprintf(&b, "mailsec: %s attempt %d: %s", a.ID, a.Number, a.State)
		if !a.Next.IsZero() {
			b.WriteString(", next " + stamp(a.Next))
		}
		if a.Error != "" {
			b.WriteString(": " + strings.TrimPrefix(a.Error, "mailsec: "))
		}
		fmt.Fprintln(stderr, printable(b.String()))
		printProgress(stderr, a.Receipt)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ob, err := openOutbox(ctx, *db, false, sender, &outbox.Options{Keys: keys, OnReceipt: onAttempt, Logger: logger, VERP: verp})
	if err != nil {
		return failure(e, name, err)
	}
	code := exitOK
	if *once {
		st, err := ob.RunDue(ctx)
		waiting := 0
		if err == nil && st.Depth > 0 {
			waiting, err = ob.WaitingForKeys(ctx)
		}
		if err != nil {
			code = failure(e, name, err)
		} else if waiting > 0 {
			// A cron job run with the wrong key must not report success.
			fmt.Fprintf(stderr, "mailsec %s: %s sealed under keys not in %s: they wait for their keys until they expire (queue show ID names a message's key)\n",
				name, plural(waiting, "message"), outboxKeyEnv)
			code = exitFail
		} else {
			msg := fmt.Sprintf("mailsec %s: nothing due; %s queued for later", name, plural(st.Depth, "message"))
			fmt.Fprintln(stderr, msg)
		}
	} else {
		if err := ob.Start(ctx); err != nil {
			closeOutbox(ob)
			return failure(e, name, err)
		}
		fmt.Fprintf(stderr, "mailsec %s: delivering from %s until interrupted\n", name, dbName(*db))
		<-ctx.Done()
	}
	if err := closeOutbox(ob); err != nil {
		return failure(e, name, err)
	}
	return code
}

// inspectOutbox opens the existing outbox db, with the key from the
// environment, for a command that reads or changes queued messages
// without delivering them. When it cannot, it reports why and gives the
// exit code.
func inspectOutbox(ctx context.Context, e *env, name, db string) (*outbox.Outbox, int, bool) {
	keys, err := outboxKeys(e.getenv)
	if err != nil {
		return nil, reportUsage(e, name, err), false
	}
	// The outbox is inspected as it is: never made, nor migrated.
	ob, err := openOutbox(ctx, db, true, nil, &outbox.Options{Keys: keys, SkipMigrations: true})
	switch {
	case errors.Is(err, outbox.ErrNoOutbox):
		return nil, reportUsage(e, name, usagef("-db %s holds no outbox (mailsec send -queue and mailsec queue run make one)", dbName(db))), false
	case errors.Is(err, outbox.ErrNotMigrated):
		fmt.Fprintf(e.stderr, "mailsec %s: the outbox in %s is of an earlier version: stop the processes of that version, then run mailsec queue run -db %s (which brings it up to date), or outbox.Migrate\n", name, dbName(db), dbName(db))
		return nil, exitFail, false
	case err != nil:
		return nil, failure(e, name, err), false
	}
	return ob, exitOK, true
}
