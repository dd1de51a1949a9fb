// Package outbox queues messages in a database and delivers them through a
// mailsec.Sender in the background, with retries, so that a request
// handler can queue a mail and return: a smarthost that answers 4xx or is
// down for an hour, or a process restarted between the request and the
// 250, no longer loses the mail.
//
// # Use
//
//	keys, err := outbox.ParseKeys(os.Getenv("MAILSEC_OUTBOX_KEY"))
//	...
//	ob, err := outbox.Open(ctx, sender, "mail.db", &outbox.Options{Keys: keys})
//	...
//	defer ob.Close(shutdownCtx)
//	if err := ob.Start(ctx); err != nil { ... } // in the processes that deliver
//
//	// in a handler
//	id, err := ob.Enqueue(ctx, msg, nil)
//	if err != nil { ... } // bad input, too large, or the database failed: nothing queued
//	...
//	st, err := ob.Status(ctx, id) // queued, sending, delivered, ... with every attempt's Receipt
//
// Enqueue checks the message as Send would (addresses, header fields,
// AllowedSenders) and fails fast on bad input; its attachments are read
// into the database then, the whole message (header fields and addresses
// included) bounded by Options.MaxMessageSize. Protection
// (PGP, S/MIME) happens at each attempt, with the keys the Sender's
// Protectors have then, so a key revoked while a message waits is honoured.
// EnqueueTx and EnqueuePgxTx queue a message in the application's own
// transaction: it is queued if and only if that transaction commits. An
// EnqueueOptions.IdempotencyKey makes a retried handler queue once.
//
// # SQLite or Postgres
//
// Open takes a file path or a postgres:// URL. A SQLite file (through
// River's riversqlite driver and the pure-Go modernc.org/sqlite) is the
// default: nothing else to run, for an application on one machine. It is
// opened in WAL mode with synchronous=FULL, so that a message is on disk
// before Enqueue returns, and with a busy timeout, so that several
// connections to it, from one process or several on that machine, may
// share it. Postgres (pgx v5, River's
// riverpgxv5 driver) is for several instances of an application sharing
// one queue: each opens the same database and starts, and a message is
// delivered by one of them. OpenSQLite and OpenPostgres open the outbox in
// the application's own database, for EnqueueTx and EnqueuePgxTx; open a
// SQLite file for both with OpenSQLiteDB, which gives it Open's settings.
//
// A SQLite file opened by Open or OpenSQLiteDB keeps the statements its
// connection runs prepared (the last 64, by their text). modernc.org/sqlite prepares every statement
// given as text anew, and River's SQLite driver sends all its queries so:
// parsing River's job insert, fetch and completion took more of the one
// connection's time than running them.
//
// On SQLite, where every write goes through one connection and every
// commit waits for the disk, the outbox commits the writes of concurrent
// Enqueues and attempts together, each in a savepoint of its own: one
// wait for the disk serves them all, and each call still returns only once
// its own write is committed. A failed one is undone alone. An Enqueue
// whose attachment reader is slow holds up the commit of the writes
// grouped with it, as it would hold up the one connection on its own.
// On Postgres, concurrent Enqueues of messages without attachments
// share a transaction likewise (their rows sent in one round trip, their
// jobs queued with one River InsertManyTx, one commit); when it fails
// before its commit, each of them is then queued alone, so that one
// caller's failure stays its own. Messages with attachments are queued
// each in a transaction of its own. On Postgres the reads of the delivery
// runs that start together are one statement, and so are the records of the
// attempts that end together, with one commit. A message whose row another
// transaction holds (a Cancel, say) is left out of its group and recorded
// alone, so that it holds up no other. In pgx's default query mode these
// groups' statements are prepared by name on each connection, as pgx
// prepares its own, and sent through pgconn with each parameter encoded
// once; an Enqueue group's BEGIN and rows go out with River's insert of
// their jobs, so that the group takes two round trips, the commit being
// the second (three when a row has an idempotency key, since the jobs
// then depend on which rows went in, and one more when River notifies
// its producers of the insert); the record runs on its generic plan,
// which Postgres would otherwise make anew for every group. On a pool set to another mode
// (behind a pooler that keeps no prepared statements) they go through pgx
// in that mode.
//
// On Postgres, a run whose attempt finished its message (delivered,
// failed, expired) returns its worker to River as soon as the attempt
// ends, and its record commits after that: River fetches jobs for the
// workers that are free, every 10 ms, and a worker held for the record
// would wait for the fetch after. The record is given the rest of its
// margin, as it is in the run; Close waits for the records under way. A
// run whose message is tried again (a recipient deferred) records its
// attempt before it returns, and so does every run on SQLite, whose
// transactions are grouped already.
//
// # What is guaranteed
//
// Once Enqueue (or the transaction of EnqueueTx) has returned nil, the
// message is committed to the database, and nothing loses it: not a
// SIGKILL of the process that queued it or of the one delivering it, not
// a restart of Postgres, not a smarthost that is down all along (the
// message waits, each attempt recorded as temporary, until MaxAge). It is
// delivered, or ends failed, expired or cancelled, with a Status that
// says which and why.
//
// Delivery is at least once. Workers, in one process or many, never
// deliver one message twice while none of them dies: a message has one
// delivery job, which River gives one worker at a time, and an attempt
// records its outcome in one transaction, on the message as the attempt
// read it (should the database fail at that moment, the worker tries
// again until its margin ends, so that a Postgres restart makes no
// duplicate). Recipients accepted by one attempt are never tried again.
//
// The one window for a duplicate is the end of the message: the server
// has taken it, and its 250 is lost, because the worker died before it
// could record it, or because the connection broke or the reply came out
// of turn. The outbox cannot know whether the server took the message, so
// it sends it again; that attempt lists the recipients in
// Attempt.PossibleDuplicates, and their RecipientStatus.PossibleDuplicate
// is set. A worker that dies leaves no record of how far its attempt got,
// so the recipients of every attempt that a dead worker left are flagged,
// including those of an attempt that died before DATA and delivered
// nothing: the flag says a recipient may have the message twice, not that
// it has.
//
// # When a worker dies
//
// An attempt that a worker left in flight (the process was killed, the
// machine lost) is taken up by another worker, in the same process after a
// restart or in another one sharing the database, once the rescue
// interval has passed since the attempt started:
//
//	margin         = DeliveryTimeout / 4, at least 5 s, at most 30 s
//	River's JobTimeout           = DeliveryTimeout + margin
//	River's RescueStuckJobsAfter = DeliveryTimeout + 3 × margin  (the rescue interval)
//
// Nothing is written before an attempt sends. River commits the start of
// each run of a message's delivery job (the job running, its run counted)
// before a worker is given it, and the outbox keeps with each message how
// many runs of its job it has accounted for: a recorded attempt accounts
// for its run, and so does a run that found the message not due. A run
// that finds itself more than one past that count knows that a run in
// between neither recorded an attempt nor ended having sent nothing, and
// flags its recipients as above; such a run counts as an attempt. The
// count is River's attempt number plus its count of snoozes (the job
// metadata's "snoozes", part of River's cross-language protocol), which
// grows by one with each run however the run before ended; a test holds
// River to it. While an attempt is under way its message is queued in the
// outbox's table: Status, List and Stats show it Sending from River's job
// state, Retry answers ErrSending, Ingest ErrBusy. On Postgres they do so
// too for three margins after River completed the job of a run whose
// finished attempt's record may not have committed yet.
//
// With the default DeliveryTimeout of 2 minutes that is 3.5 minutes, not
// River's default of an hour; it is never shorter than a live worker may
// still be at the attempt (a margin to open the message, one to record
// the outcome after River's JobTimeout, and one more for the time between
// River's start of the run and the worker's, and for clocks that differ).
// River's rescuer, run by the one elected leader among the processes,
// looks for such attempts every 30 seconds, and a leader that died is
// replaced within about 15 seconds, so the message is taken up somewhat
// after the interval, not exactly at it.
//
// River may end a message's delivery job while the message is still
// queued: its rescuer discards the job of a worker that died when the job
// is out of attempts, or when the leader is an application's own River
// client, which has no worker for the outbox's jobs; an operator may
// cancel or delete the job with River's tools. On Postgres, River also
// completes the job of a run whose finished attempt is still being
// recorded (see above), and the process may die before the record
// commits. The clean-up (see Retention), which River's leader runs at
// start and every 10 minutes (on Postgres every rescue interval when that
// is shorter),
// gives each unfinished message without a live delivery job (none
// available, scheduled, retryable, running or pending, nor one completed
// less than three margins ago, whose run's record may still commit) a new
// one, as Retry would: the runs of the old job are accounted for as Retry
// accounts for them, so that a run that died unrecorded is still taken
// for one that may have sent the message, and its recipients are flagged.
// A message whose record was lost so is sent again somewhat later than
// the rescue interval after its attempt, as one whose worker died during
// the attempt is. The message keeps
// its schedule, and its ID is logged. Each message is given its job in a
// transaction of its own that writes the message's row first and then
// looks for a live job again, as Retry, Cancel and an attempt's record
// write the row first: a message never has a job beside a live one, and a
// finished one is never given one, even when two processes sweep at once.
// River's own tools (JobRetry, River UI) write no message row: an ended
// delivery job revived with them may run beside the one the clean-up gave
// the message. Use Retry, which looks first.
//
// Close stops a process gracefully: the attempts under way are given until
// its context ends to finish; those still running then are interrupted
// (their SMTP sessions are dropped before the end of the message where
// they have not reached it) and stay queued, to be tried again at once by
// the next process that starts. Messages not yet attempted stay queued.
//
// # Retries and expiry
//
// A recipient refused with a temporary failure (mailsec.IsTemporary: a 4xx
// reply, a smarthost that cannot be reached) is tried again; one refused
// for good (a 5xx reply, no usable key where protection is required) is
// not. When some recipients of a message were accepted and others
// deferred, only the deferred ones are tried again. The wait after the
// first attempt is MinBackoff (default 1 minute), doubling with each
// attempt up to MaxBackoff (default 1 hour), each drawn at random from
// its upper half, so that messages deferred together are not retried
// together. Recipients deferred only for being beyond the server's limit
// on recipients in one transaction (RCPT answered 452, or 552 as RFC 821
// servers give it, with enhanced code X.5.3 or none: RFC 5321 section
// 4.5.3.1.10), in an attempt that had others accepted, are tried again at
// once, in a transaction of their own, as an MTA does. A recipient still
// deferred MaxAge after Enqueue (default 5
// days, as Postfix's maximal_queue_lifetime) expires: the message ends
// Expired, or PartlyDelivered when others were accepted. Options.OnReceipt
// is called after every attempt, and Options.Logger receives a record of
// each (no content, no address, no key).
//
// A run that ends without recording an attempt (the database unreachable
// when it reads the message, or a panic in the outbox, logged with its
// type and stack, never its value) is retried by River after the job's
// errors plus one to the fourth power in seconds (give or take 10%), at
// most MaxBackoff. A run that panics after the message's expiry, within
// River's JobTimeout, ends it Expired, with an attempt that says so and
// names the recipients still waiting as possible duplicates (the run may
// have sent to them): a panic that recurs on every run does not leave the
// message queued for ever. A run past its JobTimeout leaves the message
// to the next run, which River's rescue may already have started.
//
// # Sealed at rest
//
// Everything the outbox stores about a message (its content, header
// fields, addresses, attachments, progress and Receipts) is sealed with
// XChaCha20-Poly1305 under a key the application supplies (Options.Keys;
// MAILSEC_OUTBOX_KEY holds them as ParseKeys reads them), each value bound
// to its message and its place, so that a value changed, truncated or
// moved does not open: such a message is never sent, it ends Failed and
// the problem is logged and recorded. River's tables hold only the
// outbox's random ID for a message. Without a key, Open fails unless
// Options.Plaintext asks for plaintext storage, which is recorded in the
// database and in every Status. The record is kept: Open refuses keys on
// a plaintext outbox, and Plaintext on a sealed one, with a
// *mailsec.ConfigError, before it writes anything (a key would take a
// plaintext message for one tampered with, and end it failed).
//
// Keys rotate: put a new key first in Options.Keys and new messages are
// sealed under it, while the others still open what they sealed
// (Status.KeyID names the key a message needs). Drop an old key once no
// message needs it (WaitingForKeys, with the old key left out, says how
// many would); a message sealed under a key the outbox was not given
// waits for it, until its MaxAge.
//
// # Retention
//
// A message's content (envelope, header fields, body, attachments) is
// deleted in the transaction that records its last attempt, when it is
// delivered, fails, expires or is cancelled. Its Status and Receipts are
// kept for Options.ReceiptRetention (default 30 days; negative keeps them
// forever), then deleted by a clean-up job that runs at start and every
// 10 minutes (on Postgres every rescue interval when that is shorter).
//
// # TLS-RPT
//
// With Options.TLSRPT, each process flushes its tlsrpt.Aggregator into
// the outbox's database (every minute and at Close), where the counts of
// every process add up, and the leader sends each domain's TLS-RPT report
// for the previous UTC day once the day is over: at start and every 15
// minutes, recording each report sent so that no restart sends it twice,
// and deleting the counts after tlsrpt.Retention. SendTLSReports does the
// same at once. The counts are sealed as messages are: a count's policy
// domain and what it counts (policy, MX host, failure) under the sealing
// key, bound to its row; the rows are named by keyed digests (HMAC under a
// key derived from the outbox key), by which the counts of the processes
// that share a key add up. Counts under different keys (during a
// rotation) are added up when a report is made. A row of the day that
// the sending process cannot open (under a key it was not given, or
// changed, copied or moved) stops every report of that day, with an error
// that says which row, and none is recorded as sent: any row may hold a
// count of any domain. Mid-rotation the reports go out once the leader
// holds every key the day's counts are under; drop an old key only after
// the days it sealed are reported, or they wait until tlsrpt.Retention.
//
// The seal keeps a count's domain and what it counts confidential and
// bound to its day and row; the number itself is a plain integer, which
// every process adds to in one statement, and is not authenticated: a
// writer of the database can change a number, or delete a row, without
// the outbox noticing, though not make a count one of another domain,
// day or host.
//
// # Migrations
//
// Open brings River's tables and the outbox's own up to date. An
// application that changes its schema in a deployment step of its own
// sets Options.SkipMigrations and runs Migrate (or MigrateSQLite,
// MigratePostgres) there; Open then only checks that the tables are up to
// date, and fails with a *mailsec.ConfigError when they are not, which
// wraps ErrNoOutbox where the database holds no outbox and ErrNotMigrated
// where its tables are of an earlier version: it makes and migrates
// nothing, so that a tool may inspect an outbox without making one.
// Migrate may be run again: it changes nothing on tables already up to
// date.
//
// Schema version 4 changed how an attempt under way is known (see When a
// worker dies): processes of an earlier version mark a message in flight
// before each attempt, and this one no longer does, so the two must not
// deliver from one database at once. Stop every process of the earlier
// version, then open the database with this one; the migration leaves
// each queued message one delivery job (an earlier Retry could queue a
// second beside a running one). A process of an earlier version refuses a
// database migrated by a later one when it opens it.
//
// Schema version 5 changes no table, but on Postgres the record of a
// finished attempt may now commit just after River completed the
// message's job (see SQLite or Postgres): a process of an earlier version
// would take the message for one without a live job in between, and its
// Retry or clean-up could give it a second one. Stop every process of the
// earlier version before one of this version opens the database, as for
// version 4.
package outbox
