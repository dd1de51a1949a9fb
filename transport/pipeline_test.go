package transport_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/flighttest"
	"github.com/mailsec/mailsec/transport"
)

// warmFlights sends n messages on one session through p and returns the
// client's flights per message after the first (the cold one, which also
// establishes the session).
func warmFlights(t *testing.T, p *flighttest.Proxy, tr *transport.Submission, d *mailsec.Delivery, n int) float64 {
	t.Helper()
	if _, err := deliver(t, tr, d); err != nil {
		t.Fatal(err)
	}
	before := p.Flights()
	for range n {
		if _, err := deliver(t, tr, d); err != nil {
			t.Fatal(err)
		}
	}
	if c := p.Connections(); c != 1 {
		t.Fatalf("%d connections; the session was not reused", c)
	}
	return float64(p.Flights()-before) / float64(n)
}

// Round trips, counted: a server that offers PIPELINING gets MAIL, RCPT and
// DATA in one flight and the content in a second; one that offers neither
// PIPELINING nor CHUNKING gets each command on its own, as before.
func TestFlightsPipelinedAndLockstep(t *testing.T) {
	for _, tc := range []struct {
		name string
		ext  []string
		to   []string
		want float64
	}{
		{"lockstep", []string{"8BITMIME"}, []string{"a@example.org"}, 4}, // MAIL, RCPT, DATA, content
		{"lockstep two recipients", []string{"8BITMIME"}, []string{"a@example.org", "b@example.org"}, 5},
		{"pipelined", []string{"PIPELINING", "8BITMIME"}, []string{"a@example.org"}, 2}, // MAIL+RCPT+DATA, content
		{"pipelined two recipients", []string{"PIPELINING", "8BITMIME"}, []string{"a@example.org", "b@example.org"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, postTLSExt: tc.ext})
			p := flighttest.Start(t, f.addr(), 2*time.Millisecond)
			tr := orderTransport(f)
			tr.Addr = p.Addr
			d, _ := canaryDelivery(t)
			d.To = tc.to
			if got := warmFlights(t, p, tr, d, 5); got != tc.want {
				t.Fatalf("%.2f flights per warm message, want %v", got, tc.want)
			}
		})
	}
}

// refuseRcpt answers RCPT for the addresses in bad with 550, in a fake
// whose answer to the end of each message names it ("queued as Q<n>").
func refuseRcpt(bad ...string) func(verb string, c *fakeConn) bool {
	return func(verb string, c *fakeConn) bool {
		if verb == "RCPT" {
			for _, b := range bad {
				if strings.Contains(c.line, "<"+b+">") {
					c.w("550 5.1.1 <" + b + ">: no such user\r\n")
					return true
				}
			}
		}
		return false
	}
}

// RCPT partly refused within a pipelined group: each recipient's result
// is its own reply's, and the content goes once, to those accepted.
func TestPipelinedRcptPartlyRefused(t *testing.T) {
	f := orderFake(t, refuseRcpt("b@example.org", "d@example.org"))
	tr := orderTransport(f)
	d, canary := canaryDelivery(t)
	d.To = []string{"a@example.org", "b@example.org", "c@example.org", "d@example.org"}
	res, err := deliver(t, tr, d)
	if err != nil {
		// As without pipelining: the message went, the refused
		// recipients are in the result.
		t.Fatalf("error %v", err)
	}
	if got := strings.Join(acceptedOf(res), ","); got != "a@example.org,c@example.org" {
		t.Fatalf("accepted %s", got)
	}
	for _, r := range res.Recipients {
		refused := r.Address == "b@example.org" || r.Address == "d@example.org"
		var se *mailsec.SMTPError
		switch {
		case refused && (!errors.As(r.Err, &se) || se.Code != 550 || se.Command != "RCPT" || !strings.Contains(se.Message, r.Address)):
			t.Errorf("%s: error %v, want its own 550 to RCPT", r.Address, r.Err)
		case refused && (r.Reply == nil || r.Reply.Code != 550):
			t.Errorf("%s: reply %v", r.Address, r.Reply)
		case !refused && r.Err != nil:
			t.Errorf("%s: error %v", r.Address, r.Err)
		}
	}
	if res.Reply == nil || !strings.HasSuffix(res.Reply.Text, "queued as Q1") {
		t.Fatalf("reply %v", res.Reply)
	}
	tr.Close()
	plain := string(f.plainBytes())
	if n := strings.Count(plain, "The secret is "+canary); n != 1 {
		t.Fatalf("the content was sent %d times", n)
	}
	if n := strings.Count(plain, "\r\nDATA\r\n"); n != 1 {
		t.Fatalf("%d DATA commands", n)
	}
}

func joined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Every RCPT of a pipelined group refused: not one byte of the content is
// sent, whether the server refuses the DATA that followed (as it should)
// or opens it with 354 (then the client ends it with the terminator
// alone); the result is the one a client that waits for each reply gets,
// and the session serves the next message.
func TestPipelinedEveryRcptRefused(t *testing.T) {
	for _, goAhead := range []bool{false, true} {
		name := "DATA refused"
		if goAhead {
			name = "DATA opened"
		}
		t.Run(name, func(t *testing.T) {
			refuse := refuseRcpt("a@example.org", "b@example.org")
			f := orderFake(t, func(verb string, c *fakeConn) bool {
				if verb == "DATA" && c.conn == 1 && c.n == 1 && !goAhead {
					c.w("554 5.5.1 no valid recipients\r\n")
					// The fake reads a message after DATA: what the
					// client sends next (RSET, MAIL...) until a lone dot
					// would be taken for it, so end the session here.
					c.hangup()
					return true
				}
				return refuse(verb, c)
			})
			tr := orderTransport(f)
			d, canary := canaryDelivery(t)
			d.To = []string{"a@example.org", "b@example.org"}
			res, err := deliver(t, tr, d)
			if errs := joined(err); len(errs) != 2 {
				t.Fatalf("error %v, want one RecipientError per recipient", err)
			}
			for i, e := range joined(err) {
				var re *mailsec.RecipientError
				if !errors.As(e, &re) || re.Recipient != d.To[i] {
					t.Fatalf("error %d: %v", i, e)
				}
			}
			if res == nil || res.Reply != nil || len(acceptedOf(res)) != 0 {
				t.Fatalf("result %+v", res)
			}
			d.To = []string{"c@example.org"}
			res, err = deliver(t, tr, d)
			if err != nil || len(acceptedOf(res)) != 1 {
				t.Fatalf("next message: %v, %v", res, err)
			}
			tr.Close()
			plain := string(f.plainBytes())
			first, _, _ := strings.Cut(plain, "RCPT TO:<c@example.org>")
			if strings.Contains(first, canary) {
				t.Fatalf("content sent although every recipient was refused: %q", first)
			}
			if goAhead && !strings.Contains(first, "\r\nDATA\r\n.\r\n") {
				t.Fatalf("the opened DATA was not ended with the lone terminator: %q", first)
			}
		})
	}
}

// A server that answers a pipelined group out of order (the 354 first)
// or once too often (two replies to MAIL): the session ends with
// ErrUnsolicitedReply, no content is sent, and the next message gets its
// own verdict on a new session.
func TestPipelinedRepliesOutOfStep(t *testing.T) {
	for name, misbehave := range map[string]func(verb string, c *fakeConn) bool{
		"354 first": func(verb string, c *fakeConn) bool {
			if verb == "MAIL" && c.conn == 1 {
				// Read RCPT and DATA, then answer the three backwards.
				_, _ = c.readLine()
				_, _ = c.readLine()
				c.w("354 go ahead\r\n250 2.1.5 ok\r\n250 2.1.0 ok\r\n")
				// Swallow the message, so that the session stays open.
				for {
					l, err := c.readLine()
					if err != nil || l == "." {
						return true
					}
				}
			}
			return false
		},
		"MAIL answered twice": func(verb string, c *fakeConn) bool {
			if verb == "MAIL" && c.conn == 1 {
				c.w("250 2.1.0 ok\r\n250 2.1.0 ok again\r\n")
				return true
			}
			return false
		},
		"RCPT answered twice": func(verb string, c *fakeConn) bool {
			if verb == "RCPT" && c.conn == 1 {
				c.w("250 2.1.5 ok\r\n250 2.1.5 ok again\r\n")
				return true
			}
			return false
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := orderFake(t, misbehave)
			tr := orderTransport(f)
			d, canary := canaryDelivery(t)
			res, err := deliver(t, tr, d)
			assertUnsolicited(t, res, err)
			res, err = deliver(t, tr, d)
			assertOwnVerdict(t, res, err, "Q1")
			if f.connections() != 2 {
				t.Fatalf("%d connections: the session out of step was reused", f.connections())
			}
			tr.Close()
			if n := strings.Count(string(f.plainBytes()), "The secret is "+canary); n != 1 {
				t.Fatalf("content sent %d times, want once (the second message)", n)
			}
		})
	}
}

// Commands are never pipelined across EHLO, STARTTLS or AUTH: on a session
// that authenticates, MAIL is written only after the reply to AUTH, and
// the EHLO after TLS only after the handshake.
func TestNoPipeliningBeforeTheTransaction(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS", "PIPELINING"}, postTLSExt: []string{"PIPELINING", "AUTH PLAIN"},
		hook: func(verb string, c *fakeConn) bool {
			switch verb {
			case "EHLO", "AUTH":
				// Whatever the client wrote with EHLO or AUTH would be
				// waiting here already.
				time.Sleep(50 * time.Millisecond)
				if n := c.r.Buffered(); n > 0 {
					c.w("500 5.5.1 pipelined after " + verb + "\r\n")
					return true
				}
			}
			return false
		}})
	tr := fakeTransport(f, transport.StartTLS)
	d, _ := canaryDelivery(t)
	if _, err := deliver(t, tr, d); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	cmds := strings.Join(f.commands(), "|")
	if !strings.HasPrefix(cmds, "EHLO client.test|STARTTLS|EHLO client.test|AUTH PLAIN ") {
		t.Fatalf("commands %s", cmds)
	}
}

// Back to back on one session: after a transaction that left the session
// dirty (every recipient refused), the RSET rides in the same flight as
// the next message's MAIL, RCPT and BDAT LAST, and every reply stays with
// its own message.
func TestBackToBackAfterRefusal(t *testing.T) {
	var mu sync.Mutex
	noRcpt := false // the transaction under way has no recipient
	f := chunkFake(t, func(verb string, c *fakeConn) bool {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case verb == "RCPT" && strings.Contains(c.line, "<gone@example.org>"):
			noRcpt = true
			c.w("550 5.1.1 <gone@example.org>: no such user\r\n")
			return true
		case verb == "." && noRcpt:
			noRcpt = false
			c.w("554 5.5.1 Error: no valid recipients\r\n")
			return true
		}
		return false
	})
	p := flighttest.Start(t, f.addr(), 2*time.Millisecond)
	tr := orderTransport(f)
	tr.Addr = p.Addr
	d, _ := canaryDelivery(t)
	bad, good := *d, *d
	bad.To, good.To = []string{"gone@example.org"}, []string{"ann@example.org"}
	if _, err := deliver(t, tr, &good); err != nil {
		t.Fatal(err)
	}
	before := p.Flights()
	for i := range 3 {
		if _, err := deliver(t, tr, &bad); err == nil {
			t.Fatalf("round %d: no error with every recipient refused", i)
		}
		res, err := deliver(t, tr, &good)
		want := fmt.Sprintf("queued as Q%d", 2*i+3)
		if err != nil || res.Reply == nil || !strings.HasSuffix(res.Reply.Text, want) || len(acceptedOf(res)) != 1 {
			t.Fatalf("round %d: %v %v, want %s", i, res, err, want)
		}
	}
	got := float64(p.Flights()-before) / 6
	t.Logf("%.2f flights per message, a refused one and an accepted one in turn", got)
	if got != 1 || p.Connections() != 1 {
		t.Fatalf("%.2f flights per message over %d connections, want 1 over 1", got, p.Connections())
	}
	tr.Close()
	cmds := strings.Join(f.commands(), "|")
	if n := strings.Count(cmds, "RSET|MAIL"); n != 3 {
		t.Fatalf("%d RSETs before MAIL: %s", n, cmds)
	}
}
