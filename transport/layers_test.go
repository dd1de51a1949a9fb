package transport_test

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// Each layer of defence tested alone: every check that repeats another
// one (the TLS configuration a policy builds, then the checks on the
// finished handshake; Deliver's refusal, then dial's) is reached here with
// the layer in front of it taken away, so that removing either layer
// fails a test while the other still holds.

// assertNothingAfterTLS fails if the server read anything from the client
// once TLS was up (or at all, without TLS).
func assertNothingAfterTLS(t *testing.T, srv *mailsectest.Server) {
	t.Helper()
	for i, tr := range transcripts(t, srv) {
		if after := tr.Received[tr.ReceivedBeforeTLS:]; len(after) > 0 {
			t.Fatalf("connection %d: the server read %q after the handshake", i+1, after)
		}
	}
}

func transcripts(t *testing.T, srv *mailsectest.Server) []mailsectest.Transcript {
	t.Helper()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	return srv.Transcripts()
}

// The handshake's version floor (MinVersion) lowered: the check on the
// finished handshake refuses TLS 1.1 by itself.
func TestTLSVersionCheckAlone(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		srv := mailsectest.NewServer(t, mailsectest.Config{ImplicitTLS: implicit, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		tr := srv.Transport()
		_, err := transport.DialWith(tr, transport.SubmissionPolicy(mailsec.Security{}), func(c *tls.Config) { c.MinVersion = tls.VersionTLS10 })
		se := assertSecurity(t, err, transport.FailHandshake, mailsec.ErrHandshake)
		if !errors.Is(err, transport.ErrTLSVersion) || se.Temporary() {
			t.Fatalf("error %v: want ErrTLSVersion, not temporary", err)
		}
		ts := transcripts(t, srv)
		if len(ts) != 1 || !ts[0].TLS {
			t.Fatalf("the TLS 1.1 handshake did not complete: %+v", ts)
		}
		assertNothingAfterTLS(t, srv)
	}
}

// Deliver refuses credentials over a plaintext session; dial refuses them
// again, before connecting, for a caller that did not ask Deliver.
func TestPlaintextCredentialsRefusedByDial(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{WithholdStartTLS: true})
	tr := srv.Transport()
	tr.Auth = &transport.Auth{Username: "alice", Password: password}
	_, err := transport.DialWith(tr, transport.SubmissionPolicy(mailsec.Security{Level: mailsec.Plaintext}), nil)
	assertSecurity(t, err, transport.FailPlaintextAuth, mailsec.ErrPlaintext)
	if n := srv.Connections(); n != 0 {
		t.Fatalf("%d connections: a plaintext session with credentials was opened", n)
	}
}

// The policy's configuration turns InsecureSkipVerify off for a verified
// session; with it back on, the check for a verified chain refuses.
func TestVerifiedChainCheckAlone(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	other, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	tr := srv.Transport()
	tr.TLSConfig = &tls.Config{RootCAs: other.Pool()} // not the server's CA
	_, err = transport.DialWith(tr, transport.SubmissionPolicy(mailsec.Security{}), func(c *tls.Config) { c.InsecureSkipVerify = true })
	assertSecurity(t, err, transport.FailCertificate, mailsec.ErrCertificate)
	assertNothingAfterTLS(t, srv)
}

// The pin callback removed: the pin check on the finished handshake
// refuses a key that matches no pin.
func TestPinCheckAlone(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	pol := transport.SubmissionPolicy(mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{{1}}})
	_, err := transport.DialWith(srv.Transport(), pol, func(c *tls.Config) { c.VerifyConnection = nil })
	assertSecurity(t, err, transport.FailPinMismatch, mailsec.ErrCertificate)
	assertNothingAfterTLS(t, srv)
}

// The DANE callback removed: the DANE check on the finished handshake
// refuses a certificate that matches no TLSA record.
func TestDANECheckAlone(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	record := dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: make([]byte, 32)}
	_, err := transport.DialWith(srv.Transport(), transport.DANEPolicy([]dns.TLSA{record}, "localhost"), func(c *tls.Config) { c.VerifyConnection = nil })
	assertSecurity(t, err, transport.FailDANE, mailsec.ErrCertificate)
	assertNothingAfterTLS(t, srv)
}

// The recipient-domain callback removed: the check on the finished
// handshake refuses a certificate for another domain.
func TestDomainCheckAlone(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	_, err := transport.DialWith(srv.Transport(), transport.DomainPolicy("example.net"), func(c *tls.Config) { c.VerifyConnection = nil })
	assertSecurity(t, err, transport.FailCertificate, mailsec.ErrCertificate)
	assertNothingAfterTLS(t, srv)
}
