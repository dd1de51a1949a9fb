// Outbox queues a message in a durable, encrypted outbox (a SQLite file in
// a temporary directory), delivers it to an in-process TLS SMTP server, and
// prints its Status: the state, each recipient's, and the attempt's
// Receipt. Nothing else needs to run.
//
//	go run ./examples/outbox
//
// The outbox's key comes from MAILSEC_OUTBOX_KEY when it is set (the
// standard base64 of 32 random bytes), as it would in an application;
// otherwise the example makes one.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout, os.Getenv); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, w io.Writer, getenv func(string) string) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	// A smarthost stand-in: STARTTLS on a loopback port, with its own CA.
	srv, err := mailsectest.Start(mailsectest.Config{})
	if err != nil {
		return err
	}
	defer srv.Close()
	t := srv.Transport() // trusts the test CA, verifies "localhost"
	defer t.Close()
	sender, err := mailsec.NewSender(t, &mailsec.Options{Logger: logger})
	if err != nil {
		return err
	}

	// The key that seals everything the outbox stores. Keep it out of the
	// database and its backups: in an application, a secret store or the
	// environment.
	keys := []outbox.Key{outbox.NewKey()}
	if v := getenv("MAILSEC_OUTBOX_KEY"); v != "" {
		if keys, err = outbox.ParseKeys(v); err != nil {
			return err
		}
	}

	dir, err := os.MkdirTemp("", "mailsec-outbox-example-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ob, err := outbox.Open(ctx, sender, filepath.Join(dir, "mail.db"), &outbox.Options{Keys: keys, Logger: logger})
	if err != nil {
		return err
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_ = ob.Close(cctx)
	}()

	// In a handler: Enqueue validates the message as Send would and
	// returns once it is durably queued. The idempotency key makes a
	// retried handler queue it once.
	id, err := ob.Enqueue(ctx, &mailsec.Message{
		From:      "Example App <noreply@example.com>",
		To:        []string{"Ann <ann@example.org>"},
		Subject:   "Your statement is ready",
		Text:      "Your March statement is ready: https://app.example.com/statements/2026-03",
		Reference: "statement-2026-03-ann",
	}, &outbox.EnqueueOptions{IdempotencyKey: "statement-2026-03-ann"})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Queued as %s.\n", id)

	// In a worker (the same process here): deliver, with retries.
	if err := ob.Start(ctx); err != nil {
		return err
	}
	st, err := waitFinished(ctx, ob, id)
	if err != nil {
		return err
	}
	out, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Status:\n%s\n", out)
	if st.State != outbox.Delivered {
		return fmt.Errorf("message %s is %s", id, st.State)
	}
	fmt.Fprintf(w, "Delivered to %d recipient(s); the server received %d message(s).\n", len(st.Recipients), len(srv.Messages()))
	return nil
}

// waitFinished polls the message's status until it has finished.
func waitFinished(ctx context.Context, ob *outbox.Outbox, id string) (*outbox.Status, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := ob.Status(ctx, id)
		if err != nil {
			return nil, err
		}
		if st.State.Finished() {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("message %s still %s: %w", id, st.State, ctx.Err())
		case <-tick.C:
		}
	}
}
