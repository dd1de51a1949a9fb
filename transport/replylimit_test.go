package transport_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport"
)

// Before TLS a reply is bounded at 64 KiB, and the error says so: a
// 70 KB EHLO reply is not "longer than 1 MiB".
func TestPreTLSReplyLimitNamed(t *testing.T) {
	long := "250-fake\r\n" + strings.Repeat("250-"+strings.Repeat("y", 996)+"\r\n", 70) + "250 STARTTLS"
	f := newFake(t, fakeOpts{preTLSEHLO: long})
	d, canary := canaryDelivery(t)
	_, err := deliver(t, fakeTransport(f, transport.StartTLS), d)
	var ne *mailsec.NetworkError
	if !errors.As(err, &ne) || !errors.Is(err, transport.ErrMalformedReply) {
		t.Fatalf("error %v (%T), want a NetworkError wrapping ErrMalformedReply", err, err)
	}
	if msg := err.Error(); !strings.Contains(msg, "64 KiB") || strings.Contains(msg, "MiB") {
		t.Fatalf("error %q does not name the 64 KiB limit before TLS", msg)
	}
	assertNothingSent(t, fakeReceived(f), canary)
}
