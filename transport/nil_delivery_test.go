package transport_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// A nil Delivery is bad input like any other: both transports return a
// *mailsec.ValidationError, without a panic and without a connection.
func TestDeliverNilDelivery(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	for _, tr := range []struct {
		name string
		t    mailsec.Transport
	}{
		{"Submission", srv.Transport()},
		{"Direct", &transport.Direct{Resolver: mailsectest.NewResolver()}},
	} {
		var err error
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Fatalf("%s.Deliver(ctx, nil) panicked: %v", tr.name, v)
				}
			}()
			_, err = tr.t.Deliver(context.Background(), nil)
		}()
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) || ve.Field != "Delivery" {
			t.Fatalf("%s.Deliver(ctx, nil) = %v, want a *mailsec.ValidationError for the Delivery", tr.name, err)
		}
	}
	if n := srv.Connections(); n != 0 {
		t.Fatalf("%d connections for a nil Delivery", n)
	}
}

// A nil *net.Dialer in Submission.Dialer is refused as configuration, not
// dereferenced at the first Deliver.
func TestSubmissionTypedNilDialer(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	var d *net.Dialer
	sub := &transport.Submission{Addr: srv.Addr, Dialer: d}
	var ce *mailsec.ConfigError
	if err := sub.Validate(); !errors.As(err, &ce) || ce.Field != "Submission.Dialer" {
		t.Fatalf("Validate() = %v, want a *mailsec.ConfigError for Submission.Dialer", err)
	}
	_, err := sub.Deliver(context.Background(), &mailsec.Delivery{From: "a@example.com", To: []string{"b@example.org"},
		Content: strings.NewReader("Subject: x\r\n\r\nx\r\n")})
	if !errors.As(err, &ce) {
		t.Fatalf("Deliver = %v, want a *mailsec.ConfigError", err)
	}
}

// A Delivery built by hand is held to the Sender's rules: a Unicode
// domain in the envelope needs SMTPUTF8, so that no 8-bit byte reaches a
// server that did not offer it.
func TestDeliveryUnicodeDomainNeedsSMTPUTF8(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	for _, d := range []*mailsec.Delivery{
		{From: "a@example.com", To: []string{"b@bücher.example"}},
		{From: "a@bücher.example", To: []string{"b@example.org"}},
	} {
		d.Content = strings.NewReader("Subject: x\r\n\r\nx\r\n")
		_, err := srv.Transport().Deliver(context.Background(), d)
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) || !strings.Contains(ve.Reason, "SMTPUTF8") {
			t.Fatalf("Deliver(%v) = %v, want a *mailsec.ValidationError about SMTPUTF8", d.To, err)
		}
		d.SMTPUTF8, d.EightBit = true, true
		if err := d.Validate(); err != nil {
			t.Fatalf("with SMTPUTF8: %v", err)
		}
	}
	if n := srv.Transactions(); n != 0 {
		t.Fatalf("%d transactions", n)
	}
}

// A Delivery handed straight to Direct whose Content panics mid-DATA does
// not leave the MX connection open: the server sees it end, and nothing is
// delivered.
func TestDirectContentPanicClosesSession(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx.example.org", Pref: 10})
	srv := e.mx("mx.example.org", "192.0.2.1", mailsectest.Config{})
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the content's panic did not reach the caller")
			}
		}()
		_, _ = e.direct().Deliver(context.Background(), &mailsec.Delivery{From: "a@example.com",
			To: []string{"b@example.org"}, Security: mailsec.Security{Level: mailsec.VerifyMX}, Content: panickingContent{}})
	}()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatalf("the connection stayed open: %v", err)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d messages delivered", n)
	}
}
