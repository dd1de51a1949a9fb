package transport_test

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport"
)

// tlsFirstServer accepts connections, writes rec at once (what a TLS
// server that gives up on a client, or a TLS-speaking proxy, sends) and
// then waits, as a server on an implicit-TLS port waits for a
// ClientHello. It returns the address and, per connection, what the
// client sent.
func tlsFirstServer(t *testing.T, rec []byte) (string, <-chan []byte) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan []byte, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write(rec)
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				b, _ := io.ReadAll(c)
				got <- b
			}()
		}
	}()
	return l.Addr().String(), got
}

// A STARTTLS session, or a plaintext one, with a server that speaks TLS
// from the first byte ends as soon as the first record arrives, with an
// error that says so; the client sends nothing, not even EHLO.
func TestRefuseTLSWhereGreetingShouldBe(t *testing.T) {
	alert := []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46}
	for _, tc := range []struct {
		name  string
		level mailsec.SecurityLevel
	}{
		{"starttls", mailsec.Verified},
		{"plaintext", mailsec.Plaintext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, got := tlsFirstServer(t, alert)
			tr := &transport.Submission{Addr: addr, Mode: transport.StartTLS}
			d, canary := canaryDelivery(t)
			d.Security = mailsec.Security{Level: tc.level}
			start := time.Now()
			_, err := deliver(t, tr, d)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %v to give up", took)
			}
			if !errors.Is(err, transport.ErrImplicitTLSPort) {
				t.Fatalf("error %v, want ErrImplicitTLSPort", err)
			}
			var se *mailsec.SecurityError
			if !errors.As(err, &se) || !errors.Is(err, mailsec.ErrDowngrade) {
				t.Fatalf("error %v (%T) is not a SecurityError of category ErrDowngrade", err, err)
			}
			if mailsec.IsTemporary(err) {
				t.Errorf("a TLS port is not temporary: %v", err)
			}
			tr.Close()
			select {
			case b := <-got:
				if len(b) != 0 {
					t.Errorf("client sent %q", b)
				}
				assertNothingSent(t, b, canary)
			case <-time.After(10 * time.Second):
				t.Fatal("the client did not close the connection")
			}
		})
	}
}
