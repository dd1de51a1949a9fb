package outbox

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailsec/mailsec"
)

// EnqueueOptions are the options of one Enqueue.
type EnqueueOptions struct {
	// IdempotencyKey makes Enqueue queue the message once however often
	// it is called with the same key, so that a handler the client
	// retried (or a job run twice) sends one mail: a later call with the
	// same key returns the first message's ID and a nil error, queueing
	// nothing, when it gives the same message (every field, attachment
	// contents included, with the same Message-ID and Date or again
	// none), and fails with an *IdempotencyError when it gives another.
	// A key is remembered as long as its message's status is (see
	// Options.ReceiptRetention); only a keyed digest of it is stored.
	IdempotencyKey string
}

// SizeError reports a message larger than Options.MaxMessageSize.
// Nothing was queued.
type SizeError struct {
	// Field is where the limit was reached, in the order the parts are
	// counted: "Subject", "addresses", "Headers", "Text", "HTML",
	// "attachment names" (with their media types, Content-IDs and
	// records), "Attachments[1]", "Inline[0]".
	Field string
	// Limit is Options.MaxMessageSize.
	Limit int64
}

// ErrTooLarge matches a *SizeError.
var ErrTooLarge = errors.New("outbox: message too large")

func (e *SizeError) Error() string {
	return "outbox: message larger than the outbox's MaxMessageSize (" + strconv.FormatInt(e.Limit, 10) + " octets) at " + e.Field
}

// Is matches ErrTooLarge, and mailsec.ErrInvalid: the message cannot be
// queued as it is.
func (e *SizeError) Is(target error) bool {
	return target == ErrTooLarge || target == mailsec.ErrInvalid
}

// Temporary is false: the same message is refused again.
func (e *SizeError) Temporary() bool { return false }

// IdempotencyError reports an Enqueue with an idempotency key already
// used for another message. Nothing was queued.
type IdempotencyError struct {
	// ID is the message queued with the key first.
	ID string
}

// ErrIdempotencyConflict matches an *IdempotencyError.
var ErrIdempotencyConflict = errors.New("outbox: idempotency key used for another message")

func (e *IdempotencyError) Error() string {
	return "outbox: the idempotency key was used for another message (" + e.ID + "); a retried handler must enqueue the same message"
}

// Is matches ErrIdempotencyConflict.
func (e *IdempotencyError) Is(target error) bool { return target == ErrIdempotencyConflict }

// Temporary is false.
func (e *IdempotencyError) Temporary() bool { return false }

// Enqueue checks m exactly as the Sender's Send would (mailsec.Sender.Prepare:
// addresses, header fields, AllowedSenders), fixes its Message-ID and
// Date, gives it the outbox's own ENVID (in place of any in m.DSN: the
// one Ingest matches bounces by, Status.EnvelopeID), reads its attachments into the database (sealed, in chunks, never
// whole in memory) and commits it with its delivery job. When it returns
// a nil error the message is durably queued: no crash, restart or outage
// loses it. It returns the outbox's ID for the message, for Status and
// Cancel. Bad input fails with the Sender's *mailsec.ValidationError (or
// *mailsec.SenderError), a message over Options.MaxMessageSize with a
// *SizeError, and nothing is queued. o may be nil.
//
// Concurrent Enqueues may share a transaction: on SQLite each in a
// savepoint of its own; on Postgres, a message without attachments is
// queued with those of the Enqueues under way at the same time (their
// rows, with BEGIN and their jobs' River InsertManyTx, in one round trip,
// then one commit), and if that transaction fails before its commit, each is then
// queued in a transaction of its own. Each call returns only once its own
// message is committed, with its own ID and idempotency outcome. On
// Postgres, a context that ends while the call waits for a transaction
// ends the call; once its message's transaction has begun, a cancelled
// context does not stop it, and its work before the commit ends at the
// latest deadline of the callers it serves (none when one of them has
// none).
//
// The message is not protected (PGP, S/MIME) here: that happens at each
// attempt, with the keys the Sender's Protectors have then.
func (ob *Outbox) Enqueue(ctx context.Context, m *mailsec.Message, o *EnqueueOptions) (string, error) {
	if ob.isClosed() {
		return "", ErrClosed
	}
	pm, err := ob.prepare(m, o)
	if err != nil {
		return "", err
	}
	return ob.enqueuePrepared(ctx, m, pm)
}

// enqueuePrepared queues m, prepared as pm, in a transaction of its own,
// or shared with other Enqueues.
func (ob *Outbox) enqueuePrepared(ctx context.Context, m *mailsec.Message, pm *preparedMessage) (string, error) {
	if ob.eng.postgres() {
		if err := ob.claimStorage(ctx, ob.eng.pool(), false); err != nil {
			return "", err
		}
	}
	// On Postgres a message without attachments is queued with those of
	// concurrent Enqueues (see pgEnqueueGroup); when the group cannot
	// queue it, it is queued alone.
	if ob.enqueueGroup != nil && pm.env != nil {
		if id, grouped, err := ob.enqueueGroup.enqueue(ctx, pm); grouped {
			return id, err
		}
	}
	// On SQLite the transaction may be shared with other Enqueues and
	// attempts (see groupCommit): one commit, one wait for the disk.
	var id string
	var queued bool
	var enqErr error
	err := ob.eng.inTx(ctx, func(ctx context.Context, t txn) error {
		id, queued, enqErr = ob.enqueue(ctx, t, m, pm)
		switch {
		case enqErr != nil:
			return enqErr
		case !queued:
			return errAlreadyQueued // nothing to commit
		}
		return nil
	})
	switch {
	case enqErr != nil:
		return id, enqErr
	case !queued && errors.Is(err, errAlreadyQueued):
		return id, nil
	case err != nil:
		return "", fmt.Errorf("outbox: Enqueue: %w", err)
	}
	// The transaction that claimed the storage mode on SQLite, if this
	// one did, has committed.
	ob.storageRecorded.Store(true)
	return id, nil
}

// errAlreadyQueued rolls back the transaction of an Enqueue that found its
// idempotency key's message already queued.
var errAlreadyQueued = errors.New("outbox: already queued")

// EnqueueTx is Enqueue inside the application's own transaction on the
// SQLite database the outbox is in (OpenSQLite, or the file Open was
// given): the message is queued if and only if tx commits, and is durable
// once it has. A failed EnqueueTx leaves tx as it found it (it works in a
// savepoint), so that the application may still commit what else it did,
// or roll back.
func (ob *Outbox) EnqueueTx(ctx context.Context, tx *sql.Tx, m *mailsec.Message, o *EnqueueOptions) (string, error) {
	if _, ok := ob.eng.(*riverEngine[*sql.Tx]); !ok || tx == nil {
		return "", ob.wrongTx("EnqueueTx", tx == nil)
	}
	if ob.isClosed() {
		return "", ErrClosed
	}
	pm, err := ob.prepare(m, o)
	if err != nil {
		return "", err
	}
	sp, err := beginSQLiteSavepoint(ctx, tx)
	if err != nil {
		return "", fmt.Errorf("outbox: EnqueueTx: %w", err)
	}
	return ob.enqueueIn(ctx, sp, m, pm)
}

// EnqueuePgxTx is Enqueue inside the application's own transaction on the
// Postgres database the outbox is in (OpenPostgres, or the URL Open was
// given): the message is queued if and only if tx commits. A failed
// EnqueuePgxTx leaves tx as it found it (it works in a savepoint).
func (ob *Outbox) EnqueuePgxTx(ctx context.Context, tx pgx.Tx, m *mailsec.Message, o *EnqueueOptions) (string, error) {
	if _, ok := ob.eng.(*riverEngine[pgx.Tx]); !ok || tx == nil {
		return "", ob.wrongTx("EnqueuePgxTx", tx == nil)
	}
	if ob.isClosed() {
		return "", ErrClosed
	}
	pm, err := ob.prepare(m, o)
	if err != nil {
		return "", err
	}
	sub, err := tx.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("outbox: EnqueuePgxTx: %w", err)
	}
	// The claim is made on the pool, unless every connection is taken
	// (tx may hold the only one): then in tx, rather than wait for ever.
	if err := ob.claimStorage(ctx, pgQ{sub}, ob.enqueueGroup.poolTaken()); err != nil {
		_ = sub.Rollback(ctx)
		return "", err
	}
	return ob.enqueueIn(ctx, pgTx{pgQ{sub}, sub}, m, pm)
}

func (ob *Outbox) wrongTx(method string, nilTx bool) error {
	if nilTx {
		return &mailsec.ConfigError{Field: method + " transaction", Reason: "nil"}
	}
	switch e := ob.eng.(type) {
	case *riverEngine[*sql.Tx]:
		return &mailsec.ConfigError{Field: method, Reason: "the outbox is in a " + e.dbName + " database; use " + e.wrongKind}
	case *riverEngine[pgx.Tx]:
		return &mailsec.ConfigError{Field: method, Reason: "the outbox is in a " + e.dbName + " database; use " + e.wrongKind}
	}
	return &mailsec.ConfigError{Field: method, Reason: "not supported by this outbox"}
}

// enqueueIn runs enqueue in a savepoint of the application's transaction.
func (ob *Outbox) enqueueIn(ctx context.Context, sp txn, m *mailsec.Message, pm *preparedMessage) (string, error) {
	id, queued, err := ob.enqueue(ctx, sp, m, pm)
	if err != nil || !queued {
		_ = sp.rollback(ctx)
		return id, err
	}
	if err := sp.commit(ctx); err != nil {
		return "", fmt.Errorf("outbox: Enqueue: %w", err)
	}
	return id, nil
}

// messageParts are the sizes of what a message stores besides its
// attachments, in the order MaxMessageSize counts them.
func messageParts(m *mailsec.Message) []struct {
	field string
	n     int64
} {
	total := func(ss ...[]string) (n int64) {
		for _, s := range ss {
			for _, v := range s {
				n += int64(len(v))
			}
		}
		return n
	}
	var headers int64
	for _, h := range m.Headers {
		headers += int64(len(h.Name) + len(h.Value))
	}
	// An attachment's file name, media type and Content-ID are stored in
	// the envelope too (the media type's parameters are unbounded in
	// number), with a record of its part, size and chunks, which counts
	// attachmentRecord octets: a message cannot store any number of empty
	// attachments.
	var attMeta int64
	for _, a := range slices.Concat(m.Attachments, m.Inline) {
		attMeta += attachmentRecord + int64(len(a.Filename)+len(a.ContentType)+len(a.ContentID))
	}
	return []struct {
		field string
		n     int64
	}{
		{"Subject", int64(len(m.Subject))},
		{"addresses", total([]string{m.From, m.Sender, m.EnvelopeFrom}, m.ReplyTo, m.To, m.Cc, m.Bcc)},
		{"Headers", headers},
		{"Text", int64(len(m.Text))},
		{"HTML", int64(len(m.HTML))},
		{"attachment names", attMeta},
	}
}

// attachmentRecord is what MaxMessageSize counts for an attachment's
// record in the envelope besides its names: about its JSON's length.
const attachmentRecord = 64

// chunkSize is the size of an attachment chunk, sealed on its own.
const chunkSize = 64 << 10

// storedMessage is a mailsec.Message as the outbox stores it (sealed):
// every field, with the attachments' contents in chunks of their own.
type storedMessage struct {
	From          string             `json:"from"`
	Sender        string             `json:"sender,omitempty"`
	ReplyTo       []string           `json:"reply_to,omitempty"`
	To            []string           `json:"to,omitempty"`
	Cc            []string           `json:"cc,omitempty"`
	Bcc           []string           `json:"bcc,omitempty"`
	Subject       string             `json:"subject,omitempty"`
	Text          string             `json:"text,omitempty"`
	HTML          string             `json:"html,omitempty"`
	Attachments   []storedAttachment `json:"attachments,omitempty"`
	Inline        []storedAttachment `json:"inline,omitempty"`
	Headers       []mailsec.Header   `json:"headers,omitempty"`
	EnvelopeFrom  string             `json:"envelope_from,omitempty"`
	RequireTLS    bool               `json:"require_tls,omitempty"`
	TLSRequiredNo bool               `json:"tls_required_no,omitempty"`
	DSN           *mailsec.DSN       `json:"dsn,omitempty"`
	Date          time.Time          `json:"date"`
	MessageID     string             `json:"message_id"`
	Reference     string             `json:"reference,omitempty"`
	ReportType    string             `json:"report_type,omitempty"`
}

type storedAttachment struct {
	Filename    string `json:"filename,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	ContentID   string `json:"content_id,omitempty"`
	// Size is the content's length; it fills Chunks chunks of chunkSize
	// (the last one shorter), numbered from 0 under the attachment's part
	// number.
	Size   int64 `json:"size"`
	Chunks int   `json:"chunks"`
	Part   int   `json:"part"`
}

func toStored(m *mailsec.Message) *storedMessage {
	return &storedMessage{
		From: m.From, Sender: m.Sender, ReplyTo: m.ReplyTo, To: m.To, Cc: m.Cc, Bcc: m.Bcc,
		Subject: m.Subject, Text: m.Text, HTML: m.HTML, Headers: m.Headers,
		EnvelopeFrom: m.EnvelopeFrom, RequireTLS: m.RequireTLS, TLSRequiredNo: m.TLSRequiredNo,
		DSN: m.DSN, Date: m.Date, MessageID: m.MessageID, Reference: m.Reference,
		ReportType: m.ReportType,
	}
}

// enqueue queues m in t. It returns the message's ID, and whether it
// queued it (rather than finding it queued already under its idempotency
// key): t is to be committed only then.
func (ob *Outbox) enqueue(ctx context.Context, t txn, m *mailsec.Message, pm *preparedMessage) (string, bool, error) {
	if !ob.eng.postgres() {
		if err := ob.claimStorage(ctx, t, true); err != nil {
			return "", false, err
		}
	}
	id, err := ob.enqueueMessage(ctx, t, m, pm)
	if err != nil {
		return "", false, err
	}
	if id.existing {
		return id.id, false, nil
	}
	return id.id, true, nil
}

// enqueued is the ID of a message Enqueue queued, or found queued.
type enqueued struct {
	id       string
	existing bool
}

// preparedMessage is what Enqueue works out of a message before it takes
// a database connection: the checks, the fingerprint of the message as
// given, and what can be sealed already.
type preparedMessage struct {
	p    *mailsec.Message // m with its Message-ID and Date fixed
	size int64            // Text and HTML
	fp   hash.Hash        // with an idempotency key: the fingerprint, attachments still to come
	idem [][]byte         // the idempotency key's digests, or nil
	id   string
	prog []byte // the sealed progress
	env  []byte // the sealed envelope, when m has no attachments (else sealed once they are read)
}

// prepare checks m as Send would, and fingerprints and seals what it can,
// without the database.
func (ob *Outbox) prepare(m *mailsec.Message, o *EnqueueOptions) (*preparedMessage, error) {
	if m == nil {
		return nil, &mailsec.ValidationError{Field: "Message", Reason: "nil message"}
	}
	if o == nil {
		o = &EnqueueOptions{}
	}
	p, err := ob.sender.Prepare(m)
	if err != nil {
		return nil, err
	}
	var size int64
	for _, f := range messageParts(m) {
		if size += f.n; size > ob.o.maxSize {
			return nil, &SizeError{Field: f.field, Limit: ob.o.maxSize}
		}
	}
	pm := &preparedMessage{p: p, size: size, id: newID()}
	// The outbox's own ENVID, which a bounce carries back to Ingest.
	dsn := *p.DSN
	dsn.EnvelopeID = newEnvelopeID(pm.id)
	p.DSN = &dsn

	// The fingerprint of the message as given (its own Message-ID and
	// Date, or none), for a second Enqueue with the same idempotency key.
	if o.IdempotencyKey != "" {
		pm.fp = sha256.New()
		given, _ := json.Marshal(toStored(m))
		pm.fp.Write(given)
		pm.idem = ob.keys.idemDigests(o.IdempotencyKey)
	}
	prog, err := json.Marshal(&progress{MessageID: p.MessageID, Reference: p.Reference, EnvelopeID: dsn.EnvelopeID, PerDelivery: true,
		Count: len(p.To) + len(p.Cc) + len(p.Bcc)})
	if err != nil {
		return nil, err
	}
	pm.prog = ob.keys.seal(prog, aad("progress", pm.id, ""))
	if len(m.Attachments) == 0 && len(m.Inline) == 0 {
		env, err := encodeEnvelopeAfter(toStored(p), sealHead, sealSpare)
		if err != nil {
			return nil, err
		}
		pm.env = ob.keys.sealAfter(env, aad("envelope", pm.id, ""))
	}
	return pm, nil
}

func (ob *Outbox) enqueueMessage(ctx context.Context, t txn, m *mailsec.Message, pm *preparedMessage) (enqueued, error) {
	p, size, fp, idem, id := pm.p, pm.size, pm.fp, pm.idem, pm.id
	if idem != nil {
		prev, prevIdem, prevFP, err := findIdem(ctx, t, idem)
		if err != nil {
			return enqueued{}, err
		}
		if prev != "" {
			// Read the attachments only to compare them.
			if _, err := ob.readAttachments(ctx, nil, "", m, size, fp); err != nil {
				return enqueued{}, err
			}
			return ob.sameMessage(prev, prevIdem, prevFP, idem, fp.Sum(nil))
		}
	}

	env := pm.env
	if env == nil {
		sm := toStored(p)
		atts, err := ob.readAttachments(ctx, t, id, m, size, fp)
		if err != nil {
			return enqueued{}, err
		}
		sm.Attachments, sm.Inline = atts[:len(m.Attachments)], atts[len(m.Attachments):]
		b, err := encodeEnvelopeAfter(sm, sealHead, sealSpare)
		if err != nil {
			return enqueued{}, err
		}
		env = ob.keys.sealAfter(b, aad("envelope", id, ""))
	}
	now := time.Now()
	var idemCol, fpCol []byte
	if idem != nil {
		idemCol, fpCol = idem[0], ob.keys.fingerprint(0, fp.Sum(nil))
	}
	n, err := t.exec(ctx, sqlInsertMessageInto+`
VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $7, $8, $9)
ON CONFLICT (idem) DO NOTHING`,
		id, string(Queued), now.UnixMicro(), now.Add(ob.o.maxAge).UnixMicro(), now.UnixMicro(), idemCol, fpCol,
		env, pm.prog)
	if err != nil {
		return enqueued{}, fmt.Errorf("outbox: Enqueue: %w", err)
	}
	if n == 0 {
		// Another Enqueue with the same key committed first.
		prev, prevIdem, prevFP, err := findIdem(ctx, t, idem)
		if err != nil {
			return enqueued{}, err
		}
		if prev == "" {
			return enqueued{}, fmt.Errorf("outbox: Enqueue: the idempotency key is taken by a message this transaction cannot see yet; retry")
		}
		return ob.sameMessage(prev, prevIdem, prevFP, idem, fp.Sum(nil))
	}
	if err := ob.eng.queueJob(ctx, t, id); err != nil {
		return enqueued{}, fmt.Errorf("outbox: Enqueue: queueing the delivery job: %w", err)
	}
	return enqueued{id: id}, nil
}

// sqlInsertMessageInto names the columns of a new message's row, in the
// order of the values that follow it.
const sqlInsertMessageInto = `INSERT INTO mailsec_outbox_message
(id, state, created_at, expires_at, next_at, attempts, job_runs, idem, fingerprint, envelope, progress)`

// findIdem looks for a message queued with one of the digests of an
// idempotency key.
func findIdem(ctx context.Context, q querier, idem [][]byte) (id string, gotIdem, fp []byte, err error) {
	args := make([]any, len(idem))
	for i, d := range idem {
		args[i] = d
	}
	err = q.queryRow(ctx, `SELECT id, idem, fingerprint FROM mailsec_outbox_message WHERE idem IN (`+placeholders(1, len(idem))+`)`, args...).Scan(&id, &gotIdem, &fp)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, nil, nil
	}
	if err != nil {
		return "", nil, nil, fmt.Errorf("outbox: Enqueue: looking up the idempotency key: %w", err)
	}
	return id, gotIdem, fp, nil
}

// sameMessage returns prev when the message it was queued with has the
// fingerprint digest, and an *IdempotencyError otherwise.
func (ob *Outbox) sameMessage(prev string, prevIdem, prevFP []byte, idem [][]byte, digest []byte) (enqueued, error) {
	for i, d := range idem {
		if bytes.Equal(d, prevIdem) && hmac.Equal(ob.keys.fingerprint(i, digest), prevFP) {
			return enqueued{id: prev, existing: true}, nil
		}
	}
	return enqueued{}, &IdempotencyError{ID: prev}
}

// readAttachments reads m's attachments, then its inline parts, counting
// their sizes on top of size; with t, it stores them sealed in chunks of
// message id. Every byte read also goes to fp, when not nil.
func (ob *Outbox) readAttachments(ctx context.Context, t txn, id string, m *mailsec.Message, size int64, fp hash.Hash) ([]storedAttachment, error) {
	out := make([]storedAttachment, 0, len(m.Attachments)+len(m.Inline))
	if len(m.Attachments)+len(m.Inline) == 0 {
		return out, nil
	}
	buf := make([]byte, chunkSize)
	now := time.Now().UnixMicro()
	all := append(append([]mailsec.Attachment(nil), m.Attachments...), m.Inline...)
	for i, a := range all {
		field := "Attachments[" + strconv.Itoa(i) + "]"
		if i >= len(m.Attachments) {
			field = "Inline[" + strconv.Itoa(i-len(m.Attachments)) + "]"
		}
		sa := storedAttachment{Filename: a.Filename, ContentType: a.ContentType, ContentID: a.ContentID, Part: i}
		if fp != nil {
			var hdr [8]byte
			binary.BigEndian.PutUint64(hdr[:], uint64(i))
			fp.Write(hdr[:])
			meta, _ := json.Marshal(sa)
			fp.Write(meta)
		}
		for {
			n, err := readFull(a.Content, buf)
			if n > 0 {
				if size += int64(n); size > ob.o.maxSize {
					return nil, &SizeError{Field: field, Limit: ob.o.maxSize}
				}
				if fp != nil {
					fp.Write(buf[:n])
				}
				if t != nil {
					pos := strconv.Itoa(i) + ":" + strconv.Itoa(sa.Chunks)
					if _, err := t.exec(ctx, `INSERT INTO mailsec_outbox_chunk (message_id, part, seq, created_at, data) VALUES ($1, $2, $3, $4, $5)`,
						id, i, sa.Chunks, now, ob.keys.seal(buf[:n], aad("chunk", id, pos))); err != nil {
						return nil, fmt.Errorf("outbox: Enqueue: storing %s: %w", field, err)
					}
				}
				sa.Chunks++
				sa.Size += int64(n)
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("outbox: Enqueue: reading %s: %w", field, err)
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		out = append(out, sa)
	}
	return out, nil
}

// readFull fills buf from r as io.ReadFull does, but turns a panic in r,
// or a count r cannot have read, into an error: a reader's bug fails the
// Enqueue instead of taking the application down with the transaction
// still open.
func readFull(r io.Reader, buf []byte) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			n, err = 0, fmt.Errorf("the reader panicked: %v", v)
		}
	}()
	for n < len(buf) && err == nil {
		var nn int
		nn, err = r.Read(buf[n:])
		if nn < 0 || nn > len(buf)-n {
			return 0, fmt.Errorf("the reader returned %d for a buffer of %d octets", nn, len(buf)-n)
		}
		n += nn
	}
	switch {
	case n == len(buf):
		err = nil
	case n > 0 && err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
