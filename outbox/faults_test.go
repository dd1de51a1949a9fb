package outbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// panicReader panics when read, as a buggy reader of the application's
// may.
type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("reader bug") }

// lyingReader claims to have read more than it was given room for.
type lyingReader struct{}

func (lyingReader) Read(p []byte) (int, error) { return len(p) + 10, nil }

// An attachment reader that panics, or returns an impossible count, is an
// error of Enqueue, as it is of Send: Enqueue neither panics nor leaves
// its transaction open (on SQLite's one connection, that would stop
// every later Enqueue and every delivery), and nothing is queued.
func TestEnqueueBadReader(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), true)
	for name, r := range map[string]interface{ Read([]byte) (int, error) }{"panics": panicReader{}, "lies": lyingReader{}} {
		t.Run(name, func(t *testing.T) {
			m := message()
			m.Attachments = []mailsec.Attachment{{Filename: "a.pdf", Content: r}}
			var id string
			var err error
			func() {
				defer func() {
					if v := recover(); v != nil {
						err = errors.New("Enqueue panicked")
					}
				}()
				id, err = ob.Enqueue(context.Background(), m, nil)
			}()
			if err == nil || id != "" || strings.Contains(err.Error(), "panicked") && !strings.Contains(err.Error(), "Attachments[0]") {
				t.Fatalf("Enqueue: %q, %v", id, err)
			}
			// The outbox still works.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			good := message()
			good.Attachments = []mailsec.Attachment{{Filename: "b.pdf", Content: bytes.NewReader([]byte("fine"))}}
			gid, err := ob.Enqueue(ctx, good, nil)
			if err != nil {
				t.Fatalf("Enqueue after a bad reader: %v", err)
			}
			waitFor(t, ob, gid, outbox.Delivered, 20*time.Second)
			st, err := ob.Stats(ctx)
			if err != nil || st.Depth != 0 {
				t.Fatalf("stats %+v, %v", st, err)
			}
		})
	}
}

// lateTransport waits for the attempt's deadline, then writes the content,
// as a session does that sends DATA just as DeliveryTimeout ends: reading
// the stored attachment then fails for a reason that is not tampering.
// With db set, it writes the content at once, while the outbox's chunk
// table cannot be read (a database failing for a moment), and reports
// the failure as a session does when what it writes fails
// (transport/session.go).
type lateTransport struct{ db *sql.DB }

func (l lateTransport) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if l.db == nil {
		<-ctx.Done()
		_, err := d.Content.WriteTo(io.Discard)
		return nil, &mailsec.NetworkError{Host: "smarthost", Op: "DATA", Err: err}
	}
	if _, err := l.db.Exec(`ALTER TABLE mailsec_outbox_chunk RENAME TO gone`); err != nil {
		return nil, err
	}
	_, err := d.Content.WriteTo(io.Discard)
	if _, err := l.db.Exec(`ALTER TABLE gone RENAME TO mailsec_outbox_chunk`); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: smarthost: transaction abandoned before the end of DATA, nothing delivered: %w", mailsec.ErrContent, err)
}

// A stored attachment that cannot be read for a reason other than
// tampering (the attempt's deadline, Close, a database that is down for a
// moment) fails that attempt for now: the message stays queued and goes
// out later. It is neither declared tampered with, nor lost, nor left
// "sending" by a panic.
func TestChunkReadErrorIsTemporary(t *testing.T) {
	for _, dbErr := range []bool{false, true} {
		t.Run(fmt.Sprint("database error ", dbErr), func(t *testing.T) { testChunkReadError(t, dbErr) })
	}
}

func testChunkReadError(t *testing.T, dbErr bool) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	sw := &switchTransport{}
	at := newAttempts()
	logs := &syncBuffer{}
	ob, path := openFile(t, newSender(t, sw, nil), fast(&outbox.Options{OnReceipt: at.on, DeliveryTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}), false)
	if dbErr {
		sw.set(lateTransport{db: rawDB(t, path)})
	} else {
		sw.set(lateTransport{})
	}
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := message()
	m.Attachments = []mailsec.Attachment{{Filename: "a.pdf", Content: bytes.NewReader(bytes.Repeat([]byte("x"), 100<<10))}}
	id, err := ob.Enqueue(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := at.next(t)
	if a.State != outbox.Queued {
		t.Fatalf("attempt: state %s, error %q", a.State, a.Error)
	}
	sw.set(srv.Transport())
	waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	if strings.Contains(logs.String(), "panicked") || strings.Contains(logs.String(), "does not authenticate") {
		t.Fatalf("log:\n%s", logs)
	}
}

// lockAfter delivers through its transport, then, once the server has
// accepted the message, locks the outbox's SQLite file against writers for
// hold (longer than its busy timeout): the database fails just when the
// attempt records the 250.
type lockAfter struct {
	mailsec.Transport
	db   *sql.DB
	hold time.Duration
	once sync.Once
	t    *testing.T
}

func (l *lockAfter) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	res, err := l.Transport.Deliver(ctx, d)
	l.once.Do(func() {
		conn, cerr := l.db.Conn(context.Background())
		if cerr == nil {
			_, cerr = conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE")
		}
		if cerr != nil {
			l.t.Error(cerr)
			return
		}
		go func() {
			time.Sleep(l.hold)
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
			_ = conn.Close()
		}()
	})
	return res, err
}

// A database that fails for a few seconds just after the server accepted
// the message (a lock, a failover) does not make the outbox send it
// again: the outcome is recorded once the database is back, within the
// attempt's margin (see Options.DeliveryTimeout), and the recipient gets one copy.
func TestRecordRetriedAfterAccepted(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := &lockAfter{Transport: srv.Transport(), hold: 22 * time.Second, t: t}
	// The default DeliveryTimeout's margin (30 s) outlasts the lock (22 s,
	// two of SQLite's 10 s busy timeouts).
	ob, path := openFile(t, newSender(t, tr, nil), fast(&outbox.Options{DeliveryTimeout: 2 * time.Minute}), false)
	tr.db = rawDB(t, path)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, outbox.Delivered, 45*time.Second)
	if n := len(srv.Messages()); n != 1 || len(st.Attempts) != 1 || len(st.Attempts[0].PossibleDuplicates) != 0 {
		t.Fatalf("%d messages delivered, %d attempts: %+v", n, len(st.Attempts), st.Attempts)
	}
}

// A key of 32 zero octets (a buffer never filled, /dev/zero instead of
// /dev/urandom) seals nothing: anyone can open what it sealed. It is
// refused, in both forms an application may give it.
func TestZeroKeyRefused(t *testing.T) {
	if _, err := outbox.KeyFromBytes(make([]byte, 32)); !errors.As(err, new(*mailsec.ConfigError)) {
		t.Fatalf("KeyFromBytes(32 zero octets): %v", err)
	}
	good := outbox.NewKey().Base64()
	if _, err := outbox.ParseKeys(good + "," + base64.StdEncoding.EncodeToString(make([]byte, 32))); !errors.As(err, new(*mailsec.ConfigError)) ||
		!strings.Contains(err.Error(), "key 2") {
		t.Fatalf("ParseKeys with a zero key: %v", err)
	}
}

// Before the first attempt, Status lists the recipients as the message
// names them: To, then Cc, then Bcc, each in its order.
func TestStatusRecipientsInOrder(t *testing.T) {
	ob, _ := openFile(t, newSender(t, &mailsectest.RecordingTransport{}, nil), fast(nil), false)
	m := message()
	m.To = []string{"ann@example.org", "bob@example.org"}
	m.Cc = []string{"carl@example.org"}
	m.Bcc = []string{"dora@example.org", "emil@example.org"}
	id, err := ob.Enqueue(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "ann@example.org/to bob@example.org/to carl@example.org/cc dora@example.org/bcc emil@example.org/bcc"
	for range 20 { // a map's order would differ from one call to another
		st, err := ob.Status(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range st.Recipients {
			got = append(got, r.Address+"/"+strings.ToLower(string(r.Kind)))
		}
		if g := strings.Join(got, " "); g != want {
			t.Fatalf("recipients %s, want %s", g, want)
		}
	}
}
