package main

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// signupApp is the application with its database and outbox in a fresh
// SQLite file, delivering to srv when start is set.
func signupApp(t *testing.T, srv *mailsectest.Server, start bool) *App {
	t.Helper()
	ctx := context.Background()
	tr := srv.Transport()
	t.Cleanup(func() { tr.Close() })
	s, err := mailsec.NewSender(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := openDB(ctx, filepath.Join(t.TempDir(), "webapp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key := outbox.NewKey()
	ob, err := openOutbox(ctx, s, db, func(string) string { return key.Base64() }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ob.Close(cctx)
	})
	if start {
		if err := ob.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return &App{Sender: s, BaseURL: "https://app.example.com", Logger: slog.New(slog.DiscardHandler),
		NewToken: func() string { return "tok123" }, DB: db, Outbox: ob}
}

func signup(app *App, email string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/signup", strings.NewReader(url.Values{"email": {email}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	app.routes().ServeHTTP(rec, req)
	return rec
}

func users(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	rows, err := db.Query(`SELECT email, COALESCE(welcome_mail, '') FROM users`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var e, m string
		if err := rows.Scan(&e, &m); err != nil {
			t.Fatal(err)
		}
		out[e] = m
	}
	return out
}

func queued(t *testing.T, ob *outbox.Outbox) []outbox.Summary {
	t.Helper()
	list, err := ob.List(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// A sign-up commits the user and the welcome mail together; the outbox
// then delivers it.
func TestSignupCommitsUserAndMail(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	app := signupApp(t, srv, true)
	if rec := signup(app, "ann@example.org"); rec.Code != http.StatusCreated {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	u := users(t, app.DB)
	id := u["ann@example.org"]
	if len(u) != 1 || id == "" {
		t.Fatalf("users: %v", u)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := app.Outbox.Status(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == outbox.Delivered {
			break
		}
		if st.State.Finished() || time.Now().After(deadline) {
			t.Fatalf("welcome mail: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	msgs := srv.MessagesFor("ann@example.org")
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "https://app.example.com/signin") {
		t.Fatalf("delivered: %v", msgs)
	}
	// Signing up again changes nothing and queues nothing.
	if rec := signup(app, "ann@example.org"); rec.Code != http.StatusConflict {
		t.Fatalf("second sign-up: status %d", rec.Code)
	}
	if n := len(queued(t, app.Outbox)); n != 1 {
		t.Fatalf("%d messages in the outbox, want 1", n)
	}
}

// The rest of the sign-up fails after the mail was queued: the rollback
// takes the mail with the user, and nothing is ever sent.
func TestSignupRollbackDropsMail(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	app := signupApp(t, srv, true)
	app.AfterSignup = func(context.Context, *sql.Tx, int64) error { return errors.New("billing service down") }
	if rec := signup(app, "ann@example.org"); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if u := users(t, app.DB); len(u) != 0 {
		t.Fatalf("users after a failed sign-up: %v", u)
	}
	if list := queued(t, app.Outbox); len(list) != 0 {
		t.Fatalf("outbox after a failed sign-up: %+v", list)
	}
	// The same sign-up, once the rest works, goes through.
	app.AfterSignup = nil
	if rec := signup(app, "ann@example.org"); rec.Code != http.StatusCreated {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if list := queued(t, app.Outbox); len(list) != 1 {
		t.Fatalf("outbox: %+v", list)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(srv.Messages()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // time for a second message, were one queued
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages delivered, want the one committed", n)
	}
}

// An address the outbox refuses rolls the user back too: 400, no user,
// nothing queued.
func TestSignupInvalidAddressRollsBackUser(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	app := signupApp(t, srv, false)
	for _, email := range []string{"ann@example.org\r\nBcc: everyone@example.org", "not-an-address"} {
		if rec := signup(app, email); rec.Code != http.StatusBadRequest {
			t.Errorf("%q: status %d", email, rec.Code)
		}
	}
	if u := users(t, app.DB); len(u) != 0 {
		t.Fatalf("users: %v", u)
	}
	if list := queued(t, app.Outbox); len(list) != 0 {
		t.Fatalf("outbox: %+v", list)
	}
}

// Without MAILSEC_OUTBOX_KEY the application does not start.
func TestStartupRefusesMissingOutboxKey(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := openDB(context.Background(), filepath.Join(t.TempDir(), "webapp.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = openOutbox(context.Background(), s, db, func(string) string { return "" }, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "MAILSEC_OUTBOX_KEY") {
		t.Fatalf("without a key: %v", err)
	}
}
