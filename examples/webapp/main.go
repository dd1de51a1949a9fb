// Webapp is a net/http application that sends password-reset mail with
// mailsec. Its test (main_test.go) shows how an application asserts on what
// it sent, with mailsectest's recording transport and with a wrapped policy.
//
// Run it against a real smarthost:
//
//	SMTP_ADDR=smtp.example.com:465 SMTP_USER=app SMTP_PASSWORD=... go run ./examples/webapp
//	curl -d email=ann@example.org http://localhost:8080/reset
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport"
)

// App holds what the handlers share. Sender is safe for concurrent use.
type App struct {
	Sender  *mailsec.Sender
	BaseURL string // the app's own HTTPS origin
	Logger  *slog.Logger
	// NewToken makes reset tokens; tests replace it.
	NewToken func() string
}

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reset", a.handleReset)
	return mux
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
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	sender, closeTransport, err := newSender(os.Getenv, logger)
	if err != nil {
		// A configuration mistake stops the application here, at start-up,
		// not at every request.
		log.Fatal(err)
	}
	defer closeTransport()
	app := &App{Sender: sender, BaseURL: "https://app.example.com", Logger: logger, NewToken: randomToken}
	srv := &http.Server{Addr: "localhost:8080", Handler: app.routes(), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
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
