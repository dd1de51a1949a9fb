// Webapp is a net/http application that sends mail with mailsec: a
// password-reset link, sent from the handler, and a welcome message that
// a sign-up queues in a durable outbox (package outbox) inside the same
// database transaction as the new user's row, so that both are committed
// or neither is. Its test (main_test.go) shows how an application asserts
// on what it sent, with mailsectest's recording transport and with a
// wrapped policy, and that a failed sign-up leaves neither a user nor a
// queued message.
//
// Run it against a real smarthost:
//
//	export MAILSEC_OUTBOX_KEY="$(head -c 32 /dev/urandom | base64)" # keep it: it opens the queue
//	SMTP_ADDR=smtp.example.com:465 SMTP_USER=app SMTP_PASSWORD=... go run ./examples/webapp
//	curl -d email=ann@example.org http://localhost:8080/reset
//	curl -d email=ann@example.org http://localhost:8080/signup
//
// The application's database (users and the outbox) is the SQLite file
// WEBAPP_DB, webapp.db by default.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport"
)

// App holds what the handlers share. Sender and Outbox are safe for
// concurrent use.
type App struct {
	Sender  *mailsec.Sender
	BaseURL string // the app's own HTTPS origin
	Logger  *slog.Logger
	// NewToken makes reset tokens; tests replace it.
	NewToken func() string

	// DB is the application's SQLite database, Outbox the outbox opened
	// in it (outbox.OpenSQLite): the sign-up handler writes both in one
	// transaction.
	DB     *sql.DB
	Outbox *outbox.Outbox
	// AfterSignup, when set, does the rest of the application's work for
	// a sign-up in the same transaction (tests make it fail).
	AfterSignup func(ctx context.Context, tx *sql.Tx, userID int64) error
}

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reset", a.handleReset)
	mux.HandleFunc("POST /signup", a.handleSignup)
	return mux
}

// schema is the application's own table, beside the outbox's.
const schema = `CREATE TABLE IF NOT EXISTS users (
	id INTEGER PRIMARY KEY,
	email TEXT NOT NULL UNIQUE,
	welcome_mail TEXT
)`

// handleSignup creates a user and queues their welcome message in one
// transaction: a user without the message, or a message for a user who
// was not created, cannot happen. A delivery problem later does not
// concern the handler: the outbox retries it.
func (a *App) handleSignup(w http.ResponseWriter, r *http.Request) {
	email := r.FormValue("email")
	ctx := r.Context()
	tx, err := a.DB.BeginTx(ctx, nil)
	if err != nil {
		a.Logger.Error("sign-up: beginning a transaction", "error", err)
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	defer tx.Rollback() // after Commit, a no-op

	res, err := tx.ExecContext(ctx, `INSERT INTO users (email) VALUES (?) ON CONFLICT (email) DO NOTHING`, email)
	if err != nil {
		a.Logger.Error("sign-up: creating the user", "error", err)
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	if n, _ := res.RowsAffected(); n == 0 {
		http.Error(w, "already signed up", http.StatusConflict)
		return
	}
	userID, _ := res.LastInsertId()
	id, err := a.Outbox.EnqueueTx(ctx, tx, &mailsec.Message{
		From:      "Example App <noreply@example.com>",
		To:        []string{email},
		Subject:   "Welcome to Example App",
		Text:      "Your account is ready: " + a.BaseURL + "/signin",
		Headers:   []mailsec.Header{{Name: "Auto-Submitted", Value: "auto-generated"}},
		Reference: fmt.Sprintf("welcome-%d", userID),
	}, &outbox.EnqueueOptions{IdempotencyKey: fmt.Sprintf("welcome-%d", userID)})
	switch {
	case errors.Is(err, mailsec.ErrInvalid):
		// The deferred Rollback removes the user as well.
		http.Error(w, "invalid email address", http.StatusBadRequest)
		return
	case err != nil:
		a.Logger.Error("sign-up: queueing the welcome mail", "error", err)
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	if _, err := tx.ExecContext(ctx, `UPDATE users SET welcome_mail = ? WHERE id = ?`, id, userID); err != nil {
		a.Logger.Error("sign-up: recording the welcome mail", "error", err)
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	if a.AfterSignup != nil {
		if err := a.AfterSignup(ctx, tx, userID); err != nil {
			// The deferred Rollback removes the user and the queued mail.
			a.Logger.Error("sign-up failed", "error", err)
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
	}
	if err := tx.Commit(); err != nil {
		a.Logger.Error("sign-up: committing", "error", err)
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	a.Logger.Info("signed up; welcome mail queued", "user", userID, "outbox_id", id)
	w.WriteHeader(http.StatusCreated)
}

// handleReset sends a reset link to the address in the form. The address
// comes from a user: mailsec refuses anything that would inject a header or
// a recipient, and the handler turns that into 400.
func (a *App) handleReset(w http.ResponseWriter, r *http.Request) {
	email := r.FormValue("email")
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	receipt, err := a.Sender.Send(ctx, &mailsec.Message{
		From:    "Example App <noreply@example.com>",
		To:      []string{email},
		Subject: "Reset your password",
		Text: "Someone asked to reset the password for this address.\n\n" +
			"Choose a new one: " + a.BaseURL + "/reset/" + a.NewToken() + "\n\n" +
			"If it was not you, ignore this message.",
		Headers: []mailsec.Header{{Name: "Auto-Submitted", Value: "auto-generated"}},
	})
	switch {
	case errors.Is(err, mailsec.ErrInvalid):
		http.Error(w, "invalid email address", http.StatusBadRequest)
		return
	case mailsec.IsTemporary(err):
		http.Error(w, "mail service busy, try again", http.StatusServiceUnavailable)
		return
	case err != nil:
		a.Logger.Error("reset mail not sent", "error", err)
		http.Error(w, "could not send mail", http.StatusBadGateway)
		return
	}
	a.Logger.Info("reset mail sent", "message_id", receipt.MessageID,
		"tls", receipt.Recipients[0].Connection.TLSVersion, "queue_id", receipt.Recipients[0].QueueID)
	w.WriteHeader(http.StatusAccepted)
}

func main() {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	sender, closeTransport, err := newSender(os.Getenv, logger)
	if err != nil {
		// A configuration mistake stops the application here, at start-up,
		// not at every request.
		log.Fatal(err)
	}
	defer closeTransport()
	path := os.Getenv("WEBAPP_DB")
	if path == "" {
		path = "webapp.db"
	}
	db, err := openDB(ctx, path)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ob, err := openOutbox(ctx, sender, db, os.Getenv, logger)
	if err != nil {
		log.Fatal(err)
	}
	if err := ob.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer ob.Close(ctx)
	app := &App{Sender: sender, BaseURL: "https://app.example.com", Logger: logger, NewToken: randomToken, DB: db, Outbox: ob}
	srv := &http.Server{Addr: "localhost:8080", Handler: app.routes(), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// openDB opens the application's SQLite database as the outbox wants it
// (outbox.OpenSQLiteDB: one connection, WAL, synchronous=FULL so that a
// commit is on disk) and creates the application's table.
func openDB(ctx context.Context, path string) (*sql.DB, error) {
	db, err := outbox.OpenSQLiteDB(path)
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("webapp: creating the users table: %w", err)
	}
	return db, nil
}

// openOutbox opens the outbox in the application's database, sealed with
// the keys in MAILSEC_OUTBOX_KEY.
func openOutbox(ctx context.Context, sender *mailsec.Sender, db *sql.DB, getenv func(string) string, logger *slog.Logger) (*outbox.Outbox, error) {
	v := getenv("MAILSEC_OUTBOX_KEY")
	if v == "" {
		return nil, errors.New("webapp: set MAILSEC_OUTBOX_KEY to the outbox's key, the base64 of 32 random bytes (head -c 32 /dev/urandom | base64), and keep it out of the database")
	}
	keys, err := outbox.ParseKeys(v)
	if err != nil {
		return nil, fmt.Errorf("webapp: MAILSEC_OUTBOX_KEY: %w", err)
	}
	return outbox.OpenSQLite(ctx, sender, db, &outbox.Options{Keys: keys, Logger: logger})
}

// newSender builds the Sender from the environment: SMTP_ADDR (the
// smarthost's host:port), and SMTP_USER with SMTP_PASSWORD when it needs
// credentials. NewSender checks the configuration, so a missing or
// malformed setting is an error here, one that says what to set.
func newSender(getenv func(string) string, logger *slog.Logger) (*mailsec.Sender, func() error, error) {
	t := &transport.Submission{Addr: getenv("SMTP_ADDR"), Logger: logger}
	if u := getenv("SMTP_USER"); u != "" {
		t.Auth = &transport.Auth{Username: u, Password: getenv("SMTP_PASSWORD")}
	}
	sender, err := mailsec.NewSender(t, &mailsec.Options{Logger: logger})
	if err != nil {
		return nil, nil, fmt.Errorf("webapp: the smarthost is not configured; set SMTP_ADDR (host:port), and SMTP_USER and SMTP_PASSWORD if it needs them: %w", err)
	}
	return sender, t.Close, nil
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
