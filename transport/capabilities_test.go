package transport_test

import (
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport"
)

// Only the capabilities the server lists after TLS count: what an attacker
// adds to the plaintext EHLO reply changes nothing.

// REQUIRETLS listed before TLS only: the message is refused before MAIL.
func TestRequireTLSOfferedOnlyBeforeTLS(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS", "REQUIRETLS"}, postTLSExt: []string{"8BITMIME"}})
	tr := orderTransport(f)
	d, canary := canaryDelivery(t)
	d.RequireTLS = true
	_, err := deliver(t, tr, d)
	assertSecurity(t, err, transport.FailRequireTLS, mailsec.ErrRequireTLS)
	tr.Close()
	assertNothingSent(t, fakeReceived(f), canary)
}

// AUTH mechanisms: the post-TLS list is the one chosen from, even when the
// plaintext one offers something the client would prefer.
func TestAuthMechanismFromPostTLSList(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS", "AUTH PLAIN"}, postTLSExt: []string{"AUTH CRAM-MD5"}})
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth.Mechanisms = []string{transport.MechPlain, transport.MechCRAMMD5}
	d, _ := canaryDelivery(t)
	res, err := deliver(t, tr, d)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connection.SASLMechanism != transport.MechCRAMMD5 {
		t.Fatalf("mechanism %q, want CRAM-MD5 from the post-TLS list", res.Connection.SASLMechanism)
	}
	tr.Close()
	for _, c := range f.commands() {
		if strings.HasPrefix(c, "AUTH PLAIN") {
			t.Fatalf("client sent %q", c)
		}
	}
}
