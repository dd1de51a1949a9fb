package transport_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport"
)

// With CHUNKING, MAIL, RCPT and BDAT LAST with the whole message go out in
// one write. When the connection breaks before the reply to BDAT LAST,
// whichever replies were lost, the server may have taken the message: the
// failure is ErrNoVerdict during DATA, its outcome unknown. When a reply
// already refused the transaction (MAIL, or every RCPT), the server cannot
// have taken it: the outcome is known, and Direct may give the message to
// another MX host.
func TestChunkedLostRepliesOutcomeUnknown(t *testing.T) {
	for _, c := range []struct {
		name       string
		mail, rcpt string // the replies; "" for none
		unknown    bool
	}{
		{"no reply", "", "", true},
		{"MAIL accepted", "250 2.1.0 Ok\r\n", "", true},
		{"MAIL 550", "550 5.7.1 not from you\r\n", "503 5.5.1 need MAIL\r\n", false},
		{"MAIL 451", "451 4.3.0 try later\r\n", "503 5.5.1 need MAIL\r\n", false},
		{"every RCPT refused", "250 2.1.0 Ok\r\n", "550 5.1.1 no such user\r\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := chunkFake(t, func(verb string, fc *fakeConn) bool {
				switch verb {
				case "MAIL", "RCPT":
					if r := map[string]string{"MAIL": c.mail, "RCPT": c.rcpt}[verb]; r != "" {
						fc.w(r)
					}
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
			if got := transport.OutcomeUnknown(err); got != c.unknown {
				t.Fatalf("OutcomeUnknown(%v) = %v, want %v", err, got, c.unknown)
			}
			var ne *mailsec.NetworkError
			if c.unknown && (!errors.As(err, &ne) || ne.Op != "DATA" || !errors.Is(err, transport.ErrNoVerdict)) {
				t.Fatalf("error %v (%T), want ErrNoVerdict during DATA", err, err)
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
