package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// A request handler queues a message and returns; the outbox delivers it
// in the background and keeps its Status. A test SMTP server stands in
// for the smarthost here.
func Example() {
	ctx := context.Background()
	srv, err := mailsectest.Start(mailsectest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	sender, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// In production the key comes from a secret store or the environment
	// (outbox.ParseKeys(os.Getenv("MAILSEC_OUTBOX_KEY"))), never from the
	// database.
	ob, err := outbox.Open(ctx, sender, filepath.Join(dir, "mail.db"), &outbox.Options{
		Keys: []outbox.Key{outbox.NewKey()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer ob.Close(ctx)

	// In the handler: once Enqueue returns nil, the message is on disk.
	id, err := ob.Enqueue(ctx, &mailsec.Message{
		From:    "Clinic <results@example.com>",
		To:      []string{"Ann <ann@example.org>"},
		Subject: "Your results are ready",
		Text:    "Log in to see them.",
	}, nil)
	if err != nil {
		log.Fatal(err) // bad input: nothing was queued
	}

	// In the process (or processes) that deliver.
	if err := ob.Start(ctx); err != nil {
		log.Fatal(err)
	}

	st := waitFinished(ctx, ob, id)
	fmt.Println(st.State)
	for _, r := range st.Recipients {
		fmt.Println(r.Address, r.State, "after", r.Attempts, "attempt")
	}
	fmt.Println(len(srv.Messages()), "message received by the smarthost")
	// Output:
	// delivered
	// ann@example.org accepted after 1 attempt
	// 1 message received by the smarthost
}

// Open the application's SQLite file with the outbox's settings: its own
// tables and the outbox's live in it, and one transaction can write both
// (see the EnqueueTx example).
func ExampleOpenSQLiteDB() {
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	db, err := outbox.OpenSQLiteDB(filepath.Join(dir, "app.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE users (email TEXT PRIMARY KEY)`); err != nil {
		log.Fatal(err)
	}
	var mode string
	var sync int
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		log.Fatal(err)
	}
	if err := db.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil {
		log.Fatal(err)
	}
	fmt.Println(mode, sync == 2) // 2: FULL
	// Output: wal true
}

// Queue the welcome mail in the transaction that creates the user: both
// are committed, or neither.
func ExampleOutbox_EnqueueTx() {
	ctx := context.Background()
	srv, err := mailsectest.Start(mailsectest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	sender, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The application's own database, with the settings Open uses.
	db, err := outbox.OpenSQLiteDB(filepath.Join(dir, "app.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE users (email TEXT PRIMARY KEY)`); err != nil {
		log.Fatal(err)
	}
	ob, err := outbox.OpenSQLite(ctx, sender, db, &outbox.Options{Keys: []outbox.Key{outbox.NewKey()}})
	if err != nil {
		log.Fatal(err)
	}
	defer ob.Close(ctx)
	if err := ob.Start(ctx); err != nil {
		log.Fatal(err)
	}

	signUp := func(email string, commit bool) (string, error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return "", err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (email) VALUES (?)`, email); err != nil {
			return "", err
		}
		id, err := ob.EnqueueTx(ctx, tx, &mailsec.Message{
			From:    "App <welcome@example.com>",
			To:      []string{email},
			Subject: "Welcome",
			Text:    "Your account is ready.",
		}, nil)
		if err != nil || !commit {
			return id, err
		}
		return id, tx.Commit()
	}

	kept, err := signUp("ann@example.org", true)
	if err != nil {
		log.Fatal(err)
	}
	dropped, err := signUp("bob@example.org", false) // the handler failed later on
	if err != nil {
		log.Fatal(err)
	}

	fmt.Println("committed:", waitFinished(ctx, ob, kept).State)
	_, err = ob.Status(ctx, dropped)
	fmt.Println("rolled back:", errors.Is(err, outbox.ErrNotFound))
	fmt.Println(len(srv.Messages()), "message received by the smarthost")
	// Output:
	// committed: delivered
	// rolled back: true
	// 1 message received by the smarthost
}

// waitFinished polls a message's Status until it is neither queued nor
// being sent.
func waitFinished(ctx context.Context, ob *outbox.Outbox, id string) *outbox.Status {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		st, err := ob.Status(ctx, id)
		if err != nil {
			log.Fatal(err)
		}
		if st.State != outbox.Queued && st.State != outbox.Sending {
			return st
		}
	}
	log.Fatalf("message %s not finished after 30s", id)
	return nil
}

// Before an old key leaves Options.Keys, ask an outbox without it how
// many unfinished messages would wait for it.
func ExampleOutbox_WaitingForKeys() {
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	sender, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, nil)
	if err != nil {
		log.Fatal(err)
	}
	path := filepath.Join(dir, "mail.db")
	oldKey, newKey := outbox.NewKey(), outbox.NewKey()

	// Queued under the old key, and not delivered yet (nothing runs the
	// queue here).
	ob, err := outbox.Open(ctx, sender, path, &outbox.Options{Keys: []outbox.Key{oldKey}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := ob.Enqueue(ctx, &mailsec.Message{From: "noreply@example.com", To: []string{"ann@example.org"},
		Subject: "Your statement", Text: "It is ready: https://app.example.com/statements/7"}, nil); err != nil {
		log.Fatal(err)
	}
	if err := ob.Close(ctx); err != nil {
		log.Fatal(err)
	}

	// The new key alone: the message still needs the old one.
	ob, err = outbox.Open(ctx, sender, path, &outbox.Options{Keys: []outbox.Key{newKey}})
	if err != nil {
		log.Fatal(err)
	}
	defer ob.Close(ctx)
	n, err := ob.WaitingForKeys(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n, "message would wait for the old key")
	// Output: 1 message would wait for the old key
}
