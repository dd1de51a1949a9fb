package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/emersion/go-message/mail"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

func newApp(t *testing.T, tr mailsec.Transport, policy mailsec.Policy) *App {
	t.Helper()
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	return &App{Sender: s, BaseURL: "https://app.example.com", Logger: slog.New(slog.DiscardHandler),
		NewToken: func() string { return "tok123" }}
}

func post(app *App, email string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/reset", strings.NewReader(url.Values{"email": {email}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	app.routes().ServeHTTP(rec, req)
	return rec
}

func TestResetSendsLink(t *testing.T) {
	rt := &mailsectest.RecordingTransport{}
	app := newApp(t, rt, nil)
	if rec := post(app, "ann@example.org"); rec.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	ds := rt.Deliveries()
	if len(ds) != 1 || ds[0].To[0] != "ann@example.org" || ds[0].Security.Level != mailsec.Verified {
		t.Fatalf("deliveries %+v", ds)
	}
	r, err := mail.CreateReader(strings.NewReader(string(ds[0].Data)))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := r.NextPart()
	body, _ := io.ReadAll(p.Body)
	if !strings.Contains(string(body), "https://app.example.com/reset/tok123") {
		t.Fatalf("body lacks the link:\n%s", body)
	}
	if r.Header.Get("Auto-Submitted") != "auto-generated" {
		t.Fatal("Auto-Submitted missing")
	}
}

// A user typing a header into the form gets 400 and nothing is sent.
func TestResetRefusesInjection(t *testing.T) {
	rt := &mailsectest.RecordingTransport{}
	app := newApp(t, rt, nil)
	for _, email := range []string{"ann@example.org\r\nBcc: everyone@example.org", "ann@example.org, eve@example.net", "not-an-address"} {
		if rec := post(app, email); rec.Code != http.StatusBadRequest {
			t.Errorf("%q: status %d", email, rec.Code)
		}
	}
	if n := len(rt.Deliveries()); n != 0 {
		t.Fatalf("%d deliveries", n)
	}
}

// Wrapping the default policy forces a decision for a test: here every
// recipient at one domain requires end-to-end protection, and with no
// Protector configured the handler reports failure and nothing leaves.
func TestResetWithWrappedPolicy(t *testing.T) {
	strict := mailsec.PolicyFunc(func(ctx context.Context, m *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
		p, err := mailsec.DefaultPolicy().Plan(ctx, m, r)
		if r.Domain == "clinic.example" {
			p.Protection = mailsec.ProtectionRequired
		}
		return p, err
	})
	rt := &mailsectest.RecordingTransport{}
	app := newApp(t, rt, strict)
	if rec := post(app, "dr@clinic.example"); rec.Code != http.StatusBadGateway {
		t.Fatalf("status %d", rec.Code)
	}
	if rec := post(app, "ann@example.org"); rec.Code != http.StatusAccepted {
		t.Fatalf("status %d", rec.Code)
	}
	if ds := rt.Deliveries(); len(ds) != 1 || ds[0].To[0] != "ann@example.org" {
		t.Fatalf("deliveries %+v", ds)
	}
}

// End to end over TLS with the in-process server; a server that strips
// STARTTLS makes the handler fail without sending.
func TestResetOverTLS(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	t.Cleanup(func() { tr.Close() })
	if rec := post(newApp(t, tr, nil), "ann@example.org"); rec.Code != http.StatusAccepted {
		t.Fatalf("status %d", rec.Code)
	}
	if m := srv.Messages(); len(m) != 1 || m[0].TLS == nil {
		t.Fatalf("messages %v", m)
	}

	stripped := mailsectest.NewServer(t, mailsectest.Config{WithholdStartTLS: true})
	tr2 := stripped.Transport()
	t.Cleanup(func() { tr2.Close() })
	if rec := post(newApp(t, tr2, nil), "ann@example.org"); rec.Code != http.StatusBadGateway {
		t.Fatalf("status %d", rec.Code)
	}
	if stripped.Transactions() != 0 {
		t.Fatal("MAIL sent without TLS")
	}
}

// The policy an application with sensitive mail would use: at the clinic's
// domain, encrypt for those with a key and send the others a link-only
// notice, never the reset link in clear. The test wraps the default policy
// the way the application would and asserts on each recipient's bytes.
func TestResetClinicEncryptsOrNotifies(t *testing.T) {
	drKey, err := mailsectest.NewPGPKey("Dr Who", "dr@clinic.example", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	protector, err := pgp.New(pgp.NewKeyRing(drKey), nil)
	if err != nil {
		t.Fatal(err)
	}
	notice := mailsec.NoKeyNotice
	policy := mailsec.ForDomains(mailsec.DefaultPolicy(),
		mailsec.DomainRule{Domain: "clinic.example", Protection: mailsec.ProtectionRequired, NoKey: &notice})
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	t.Cleanup(func() { tr.Close() })
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: policy, Protectors: []mailsec.Protector{protector},
		Notice: func(context.Context, *mailsec.Message, mailsec.Recipient) (*mailsec.Notice, error) {
			return &mailsec.Notice{Text: "Sign in to continue: https://app.example.com/signin"}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	app := &App{Sender: s, BaseURL: "https://app.example.com", Logger: slog.New(slog.DiscardHandler),
		NewToken: func() string { return "tok123" }}

	for _, email := range []string{"dr@clinic.example", "nurse@clinic.example", "ann@example.org"} {
		if rec := post(app, email); rec.Code != http.StatusAccepted {
			t.Fatalf("%s: status %d: %s", email, rec.Code, rec.Body)
		}
	}
	mailsectest.ExpectReceived(t, srv, "dr@clinic.example", mailsectest.KindPGP)
	n := mailsectest.ExpectReceived(t, srv, "nurse@clinic.example", mailsectest.KindPlain)
	if !strings.Contains(string(n.Data), "https://app.example.com/signin") || strings.Contains(string(n.Data), "tok123") {
		t.Fatalf("the notice:\n%s", n.Data)
	}
	plain := mailsectest.ExpectReceived(t, srv, "ann@example.org", mailsectest.KindPlain)
	if !strings.Contains(string(plain.Data), "tok123") {
		t.Fatal("the default-policy recipient did not get the link")
	}
	for _, m := range srv.Messages() {
		if m.To[0] != "ann@example.org" && strings.Contains(string(m.Data), "tok123") {
			t.Fatalf("%s got the reset token in clear", m.To[0])
		}
	}
}

// Started without SMTP_ADDR (or with a malformed one, or a user without a
// password), the application stops at start-up with an error that names
// what to set, a configuration error rather than a user's bad input; it
// does not start and answer every request with 400 "invalid email address".
func TestStartupRefusesMissingSMTPConfig(t *testing.T) {
	for name, c := range map[string]struct {
		env   map[string]string
		field string
	}{
		"no SMTP_ADDR":         {map[string]string{}, "Submission.Addr"},
		"SMTP_ADDR, no port":   {map[string]string{"SMTP_ADDR": "smtp.example.com"}, "Submission.Addr"},
		"SMTP_USER, no secret": {map[string]string{"SMTP_ADDR": "smtp.example.com:465", "SMTP_USER": "app"}, "Auth.Password"},
	} {
		getenv := func(k string) string { return c.env[k] }
		s, _, err := newSender(getenv, slog.New(slog.DiscardHandler))
		var ce *mailsec.ConfigError
		if s != nil || !errors.As(err, &ce) || ce.Field != c.field || errors.Is(err, mailsec.ErrInvalid) {
			t.Errorf("%s: sender %v, error %v; want a *mailsec.ConfigError for %s", name, s, err, c.field)
			continue
		}
		if !strings.Contains(err.Error(), "SMTP_ADDR") {
			t.Errorf("%s: %q does not say what to set", name, err)
		}
	}
	s, closeTransport, err := newSender(func(k string) string {
		return map[string]string{"SMTP_ADDR": "smtp.example.com:465", "SMTP_USER": "app", "SMTP_PASSWORD": "secret"}[k]
	}, slog.New(slog.DiscardHandler))
	if err != nil || s == nil {
		t.Fatalf("complete configuration: %v", err)
	}
	if err := closeTransport(); err != nil {
		t.Fatal(err)
	}
}
