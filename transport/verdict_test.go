package transport_test

import (
	"strings"
	"testing"

	"github.com/mailsec/mailsec/transport"
)

// With CHUNKING, a reply that refused the transaction (MAIL refused, or
// every RCPT) was read, and then the connection breaks while the reply to
// BDAT LAST is awaited: the server cannot have taken the message, so the
// outcome is known, and Direct may give it to another MX host.
func TestChunkedRefusedThenBDATReplyLost(t *testing.T) {
	for _, c := range []struct {
		name       string
		mail, rcpt string
	}{
		{"MAIL 550", "550 5.7.1 not from you\r\n", "503 5.5.1 need MAIL\r\n"},
		{"MAIL 451", "451 4.3.0 try later\r\n", "503 5.5.1 need MAIL\r\n"},
		{"every RCPT refused", "250 2.1.0 Ok\r\n", "550 5.1.1 no such user\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := chunkFake(t, func(verb string, fc *fakeConn) bool {
				switch verb {
				case "MAIL":
					fc.w(c.mail)
					return true
				case "RCPT":
					fc.w(c.rcpt)
					return true
				case "BDAT":
					fc.hangup() // the reply to BDAT LAST never comes
					return true
				}
				return false
			})
			d, _ := canaryDelivery(t)
			_, err := deliver(t, orderTransport(f), d)
			if err == nil {
				t.Fatal("delivered")
			}
			if transport.OutcomeUnknown(err) {
				t.Fatalf("OutcomeUnknown(%v) = true after a reply refused the transaction; want false", err)
			}
		})
	}
}

// The connection breaks while the 354 to DATA is awaited: not one byte of
// the message went out, so the outcome is known (nothing delivered), with
// PIPELINING or without.
func TestDropBeforeGoAheadNotUnknown(t *testing.T) {
	for _, c := range []struct {
		name string
		ext  []string
	}{
		{"pipelined", []string{"PIPELINING", "8BITMIME"}},
		{"lockstep", []string{"8BITMIME"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, postTLSExt: c.ext,
				hook: func(verb string, fc *fakeConn) bool {
					if verb == "DATA" {
						fc.hangup() // no 354
						return true
					}
					return false
				}})
			d, canary := canaryDelivery(t)
			_, err := deliver(t, orderTransport(f), d)
			if err == nil {
				t.Fatal("delivered")
			}
			f.settle()
			if strings.Contains(string(f.plainBytes()), canary) {
				t.Fatal("the content reached the server; the test expects it not to")
			}
			if transport.OutcomeUnknown(err) {
				t.Fatalf("OutcomeUnknown(%v) = true, though no byte of the message was sent; want false", err)
			}
		})
	}
}

// A message larger than one chunk: the connection breaks after the first
// BDAT chunk, before BDAT LAST is sent. The server cannot have taken a
// message whose last chunk it never got: the outcome is known.
func TestChunkDropBeforeLastNotUnknown(t *testing.T) {
	hung := make(chan struct{})
	f := chunkFake(t, func(verb string, fc *fakeConn) bool {
		if verb == "BDAT" && fc.n == 1 {
			fc.hangup()
			close(hung)
			return true
		}
		return false
	})
	d, _ := canaryDelivery(t)
	big := *d
	big.Content = &pausedContent{head: "Subject: big\r\n\r\n" + lines(chunkSize/78+100), tail: lines(3 * chunkSize / 78), wait: hung}
	_, err := deliver(t, orderTransport(f), &big)
	if err == nil {
		t.Fatal("delivered")
	}
	tr := 0
	for _, c := range f.commands() {
		if strings.HasSuffix(c, " LAST") {
			tr++
		}
	}
	if tr != 0 {
		t.Fatalf("BDAT LAST reached the server; the test expects it not to")
	}
	if transport.OutcomeUnknown(err) {
		t.Fatalf("OutcomeUnknown(%v) = true, though BDAT LAST was never sent; want false", err)
	}
}
