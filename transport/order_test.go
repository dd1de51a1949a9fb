package transport_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport"
)

// Replies belong to their own commands (DESIGN.md, invariant 12): a
// server that sends a reply nobody asked for ends the session, and no
// message is ever reported with another message's verdict. Each test
// sends a message to a server that misbehaves on its first connection,
// then a second message, which must get its own verdict.

// orderFake is a STARTTLS fake whose well-behaved answer to the end of
// each message names the message: "queued as Q<n>" for the n-th
// terminator it received. misbehave is offered every event first.
func orderFake(t *testing.T, misbehave func(verb string, c *fakeConn) bool) *fake {
	return newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, hook: func(verb string, c *fakeConn) bool {
		if misbehave(verb, c) {
			return true
		}
		if verb == "." {
			c.w(fmt.Sprintf("250 2.0.0 Ok: queued as Q%d\r\n", c.n))
			return true
		}
		return false
	}})
}

// assertUnsolicited checks that a delivery failed because the server sent
// a reply nobody asked for, temporarily, with no recipient accepted.
func assertUnsolicited(t *testing.T, res *mailsec.DeliveryResult, err error) {
	t.Helper()
	var ne *mailsec.NetworkError
	if !errors.As(err, &ne) || !errors.Is(err, transport.ErrUnsolicitedReply) || !mailsec.IsTemporary(err) {
		t.Fatalf("error %v (%T), want a temporary NetworkError wrapping ErrUnsolicitedReply", err, err)
	}
	if res != nil {
		if res.Reply != nil || len(acceptedOf(res)) != 0 {
			t.Fatalf("result reports a verdict: reply %v, accepted %v", res.Reply, acceptedOf(res))
		}
	}
}

// assertOwnVerdict checks that a delivery was accepted with the reply to
// its own end of DATA, on a session of its own.
func assertOwnVerdict(t *testing.T, res *mailsec.DeliveryResult, err error, queued string) {
	t.Helper()
	if err != nil {
		t.Fatalf("second message: %v", err)
	}
	if res.Reply == nil || res.Reply.Code != 250 || !strings.HasSuffix(res.Reply.Text, "queued as "+queued) || len(acceptedOf(res)) != 1 {
		t.Fatalf("second message: reply %v, accepted %v; want its own 250 (queued as %s)", res.Reply, acceptedOf(res), queued)
	}
}

func orderTransport(f *fake) *transport.Submission {
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth = nil
	return tr
}

// A 250 in the same write as the 354 to DATA, before the message, and the
// real verdict (550) after its end.
func TestEarlyReplyWithGoAhead(t *testing.T) {
	f := orderFake(t, func(verb string, c *fakeConn) bool {
		switch {
		case verb == "DATA" && c.conn == 1:
			c.w("354 go ahead\r\n250 2.0.0 Ok: accepted before the message\r\n")
			return true
		case verb == "." && c.conn == 1:
			c.w("550 5.7.1 the real verdict\r\n")
			return true
		}
		return false
	})
	tr := orderTransport(f)
	d, _ := canaryDelivery(t)
	res, err := deliver(t, tr, d)
	assertUnsolicited(t, res, err)
	if n := f.terminators(); n != 0 {
		t.Fatalf("the end of DATA was sent after an early reply (%d terminators)", n)
	}
	res, err = deliver(t, tr, d)
	assertOwnVerdict(t, res, err, "Q1")
	if f.connections() != 2 {
		t.Fatalf("%d connections: the session with the early reply was reused", f.connections())
	}
}

// A 250 while the message is being sent (after its first line), the real
// verdict after its end.
func TestEarlyReplyDuringContent(t *testing.T) {
	replied := make(chan struct{})
	f := orderFake(t, func(verb string, c *fakeConn) bool {
		switch {
		case verb == "BODY" && c.conn == 1:
			c.w("250 2.0.0 Ok: accepted in the middle of the message\r\n")
			close(replied)
			return true
		case verb == "." && c.conn == 1:
			c.w("550 5.7.1 the real verdict\r\n")
			return true
		}
		return false
	})
	tr := orderTransport(f)
	d, _ := canaryDelivery(t)
	first := *d
	first.Content = &pausingContent{head: strings.Repeat("X-Filler: "+strings.Repeat("x", 70)+"\r\n", 200), wait: replied,
		tail: "Subject: early\r\n\r\nbody\r\n"}
	res, err := deliver(t, tr, &first)
	assertUnsolicited(t, res, err)
	if n := f.terminators(); n != 0 {
		t.Fatalf("the end of DATA was sent after an early reply (%d terminators)", n)
	}
	res, err = deliver(t, tr, d)
	assertOwnVerdict(t, res, err, "Q1")
}

// pausingContent writes head, waits until wait is closed (or a few
// seconds), then writes tail. head is long enough to reach the server
// before the wait.
type pausingContent struct {
	head, tail string
	wait       chan struct{}
}

func (p *pausingContent) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, p.head)
	if err != nil {
		return int64(n), err
	}
	select {
	case <-p.wait:
	case <-time.After(5 * time.Second):
	}
	m, err := io.WriteString(w, p.tail)
	return int64(n + m), err
}

// Two replies to the end of the message in one write: which is the
// verdict cannot be known, and the second must not become the answer to
// the next message's MAIL.
func TestTwoRepliesToTheEnd(t *testing.T) {
	f := orderFake(t, func(verb string, c *fakeConn) bool {
		if verb == "." && c.conn == 1 {
			c.w("250 2.0.0 Ok: queued as A\r\n550 5.7.1 rejected after all\r\n")
			return true
		}
		return false
	})
	tr := orderTransport(f)
	d, _ := canaryDelivery(t)
	res, err := deliver(t, tr, d)
	assertUnsolicited(t, res, err)
	if !strings.Contains(err.Error(), "may have been delivered") {
		t.Errorf("error does not say the outcome is unknown: %v", err)
	}
	res, err = deliver(t, tr, d)
	assertOwnVerdict(t, res, err, "Q2")
	if f.connections() != 2 {
		t.Fatalf("%d connections", f.connections())
	}
}

// A reply that arrives while the session is idle in the pool.
func TestUnsolicitedReplyWhileIdle(t *testing.T) {
	f := orderFake(t, func(verb string, c *fakeConn) bool {
		if verb == "." && c.conn == 1 {
			c.w("250 2.0.0 Ok: queued as A\r\n")
			time.Sleep(30 * time.Millisecond)
			c.w("550 5.7.1 nobody asked\r\n")
			return true
		}
		return false
	})
	tr := orderTransport(f)
	d, _ := canaryDelivery(t)
	res, err := deliver(t, tr, d)
	if err != nil || res.Reply == nil || !strings.HasSuffix(res.Reply.Text, "queued as A") {
		t.Fatalf("first message: %v %v", res, err)
	}
	time.Sleep(150 * time.Millisecond)
	res, err = deliver(t, tr, d)
	assertOwnVerdict(t, res, err, "Q2")
	if res.Connection.Reused || f.connections() != 2 {
		t.Fatalf("the session with a pending reply was reused (%d connections)", f.connections())
	}
}

// A server that answers MAIL before it is sent: on a reused session (the
// answer arrives while it is idle), and on a new one (in the same write as
// the EHLO reply).
func TestReplyToMailBeforeMail(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		f := orderFake(t, func(verb string, c *fakeConn) bool {
			switch {
			case verb == "." && c.conn == 1:
				c.w("250 2.0.0 Ok: queued as A\r\n")
				time.Sleep(30 * time.Millisecond)
				c.w("250 2.1.0 Sender OK\r\n")
				return true
			case verb == "MAIL" && c.conn == 1 && c.n > 1:
				c.w("550 5.7.1 the real answer to MAIL\r\n")
				return true
			}
			return false
		})
		tr := orderTransport(f)
		d, _ := canaryDelivery(t)
		if _, err := deliver(t, tr, d); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond)
		res, err := deliver(t, tr, d)
		assertOwnVerdict(t, res, err, "Q2")
	})
	t.Run("new session", func(t *testing.T) {
		f := orderFake(t, func(verb string, c *fakeConn) bool {
			if verb == "EHLO" && c.conn == 1 {
				c.w("250-fake\r\n250 8BITMIME\r\n250 2.1.0 Sender OK\r\n")
				return true
			}
			return false
		})
		tr := orderTransport(f)
		d, _ := canaryDelivery(t)
		res, err := deliver(t, tr, d)
		assertUnsolicited(t, res, err)
		if f.transactions() != 0 {
			t.Fatal("MAIL sent on a session that had a reply waiting")
		}
		res, err = deliver(t, tr, d)
		assertOwnVerdict(t, res, err, "Q1")
	})
}

// A server that closes the session may say so with 421 (RFC 5321 section
// 3.8), also right after a reply: the verdict stands, the session ends.
func Test421AfterTheEnd(t *testing.T) {
	f := orderFake(t, func(verb string, c *fakeConn) bool {
		if verb == "." && c.conn == 1 {
			c.w("250 2.0.0 Ok: queued as A\r\n421 4.4.2 closing\r\n")
			return true
		}
		return false
	})
	tr := orderTransport(f)
	d, _ := canaryDelivery(t)
	res, err := deliver(t, tr, d)
	if err != nil || res.Reply == nil || !strings.HasSuffix(res.Reply.Text, "queued as A") {
		t.Fatalf("first message: %v %v", res, err)
	}
	res, err = deliver(t, tr, d)
	assertOwnVerdict(t, res, err, "Q2")
	if f.connections() != 2 {
		t.Fatalf("%d connections", f.connections())
	}
}

// acceptedOf lists the recipients res reports as accepted.
func acceptedOf(res *mailsec.DeliveryResult) []string {
	if res == nil {
		return nil
	}
	var out []string
	for _, r := range res.Recipients {
		if r.Accepted {
			out = append(out, r.Address)
		}
	}
	return out
}
