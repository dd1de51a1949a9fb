package transport_test

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/flighttest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// chunkSize mirrors the transport's largest BDAT chunk.
const chunkSize = 256 << 10

// chunkFake is a fake that offers PIPELINING and CHUNKING after TLS and
// answers like Postfix (2.1.0 to MAIL, 2.1.5 to RCPT, "queued as Q<n>" to
// the n-th end of a message); misbehave is offered every event first.
func chunkFake(t *testing.T, misbehave func(verb string, c *fakeConn) bool) *fake {
	return newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, postTLSExt: []string{"PIPELINING", "CHUNKING", "8BITMIME"},
		hook: func(verb string, c *fakeConn) bool {
			if misbehave != nil && misbehave(verb, c) {
				return true
			}
			switch verb {
			case "MAIL":
				c.w("250 2.1.0 Ok\r\n")
			case "RCPT":
				c.w("250 2.1.5 Ok\r\n")
			case ".":
				c.w(fmt.Sprintf("250 2.0.0 Ok: queued as Q%d\r\n", c.n))
			default:
				return false
			}
			return true
		}})
}

// One round trip per warm message, counted: against go-smtp's server,
// which offers PIPELINING and CHUNKING, MAIL, every RCPT and BDAT LAST with
// the message go out in one flight.
func TestFlightsChunked(t *testing.T) {
	for _, to := range [][]string{{"a@example.org"}, {"a@example.org", "b@example.org", "c@example.org"}} {
		srv := mailsectest.NewServer(t, mailsectest.Config{})
		p := flighttest.Start(t, srv.Addr, 2*time.Millisecond)
		tr := srv.Transport()
		tr.Addr = p.Addr
		d, _ := canaryDelivery(t)
		d.To = to
		got := warmFlights(t, p, tr, d, 10)
		t.Logf("%d recipients: %.2f flights per warm message", len(to), got)
		if got != 1 {
			t.Fatalf("%d recipients: %.2f flights per warm message, want 1", len(to), got)
		}
		tr.Close()
		if err := srv.WaitIdle(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		recv := string(srv.Received())
		if !strings.Contains(recv, "\r\nBDAT ") || strings.Contains(recv, "\r\nDATA\r\n") {
			t.Fatalf("the content did not go with BDAT alone")
		}
		if n := len(srv.Messages()); n != 11 {
			t.Fatalf("%d messages", n)
		}
	}
}

// RCPT partly refused, with BDAT: each recipient's result is its own, and
// the content goes once.
func TestChunkedRcptPartlyRefused(t *testing.T) {
	f := chunkFake(t, refuseRcpt("b@example.org"))
	tr := orderTransport(f)
	d, canary := canaryDelivery(t)
	d.To = []string{"a@example.org", "b@example.org", "c@example.org"}
	res, err := deliver(t, tr, d)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(acceptedOf(res), ","); got != "a@example.org,c@example.org" {
		t.Fatalf("accepted %s", got)
	}
	var se *mailsec.SMTPError
	if r := res.Recipients[1]; !errors.As(r.Err, &se) || se.Code != 550 || se.Command != "RCPT" || r.Reply == nil || r.Reply.Code != 550 {
		t.Fatalf("refused recipient: %+v", r)
	}
	if res.Reply == nil || !strings.HasSuffix(res.Reply.Text, "queued as Q1") {
		t.Fatalf("reply %v", res.Reply)
	}
	tr.Close()
	chunks := f.bdatChunks()
	if len(chunks) != 1 || strings.Count(chunks[0], canary) != 2 {
		t.Fatalf("chunks %q", chunks)
	}
}

// Every RCPT refused, with BDAT: the server refuses BDAT LAST; the result
// is the one DATA gives (a RecipientError for each, nothing accepted, no
// reply), and the session serves the next message after RSET.
func TestChunkedEveryRcptRefused(t *testing.T) {
	refuse := refuseRcpt("a@example.org", "b@example.org")
	f := chunkFake(t, func(verb string, c *fakeConn) bool {
		if verb == "." && c.n == 1 {
			c.w("554 5.5.1 Error: no valid recipients\r\n")
			return true
		}
		return refuse(verb, c)
	})
	tr := orderTransport(f)
	d, _ := canaryDelivery(t)
	d.To = []string{"a@example.org", "b@example.org"}
	res, err := deliver(t, tr, d)
	errs := joined(err)
	var re *mailsec.RecipientError
	if len(errs) != 2 || !errors.As(errs[0], &re) || re.Recipient != "a@example.org" || !errors.As(errs[1], &re) || re.Recipient != "b@example.org" {
		t.Fatalf("error %v", err)
	}
	if res == nil || res.Reply != nil || len(acceptedOf(res)) != 0 {
		t.Fatalf("result %+v", res)
	}
	d.To = []string{"c@example.org"}
	if res, err = deliver(t, tr, d); err != nil || len(acceptedOf(res)) != 1 {
		t.Fatalf("next message: %v %v", res, err)
	}
	tr.Close()
	if cmds := strings.Join(f.commands(), "|"); f.connections() != 1 || strings.Count(cmds, "RSET") != 1 {
		t.Fatalf("%d connections, commands %s", f.connections(), cmds)
	}
}

// pausedContent writes head, waits until wait is closed, then writes tail.
type pausedContent struct {
	head, tail string
	wait       chan struct{}
}

func (p *pausedContent) WriteTo(w io.Writer) (int64, error) {
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

// lines returns n lines of 76 octets, each starting with a dot.
func lines(n int) string {
	return strings.Repeat("."+strings.Repeat("x", 75)+"\r\n", n)
}

// A BDAT chunk refused mid-way: no further chunk is sent and BDAT LAST
// never is (RFC 3030 section 3); the refusal is the delivery's error; the
// session is reset and reused.
func TestChunkRefusedMidway(t *testing.T) {
	refused := make(chan struct{})
	f := chunkFake(t, func(verb string, c *fakeConn) bool {
		if verb == "BDAT" && c.n == 1 {
			c.w("552 5.3.4 Message size exceeds fixed limit\r\n")
			close(refused)
			return true
		}
		return false
	})
	tr := orderTransport(f)
	d, _ := canaryDelivery(t)
	first := *d
	first.Content = &pausedContent{head: "Subject: big\r\n\r\n" + lines(chunkSize/78+100), tail: lines(3 * chunkSize / 78), wait: refused}
	res, err := deliver(t, tr, &first)
	var se *mailsec.SMTPError
	if !errors.As(err, &se) || se.Code != 552 || se.Command != "DATA" || se.Temporary() {
		t.Fatalf("error %v (%T)", err, err)
	}
	if res == nil || res.Reply != nil || len(acceptedOf(res)) != 0 {
		t.Fatalf("result %+v", res)
	}
	if res, err = deliver(t, tr, d); err != nil || res.Reply == nil || !strings.HasSuffix(res.Reply.Text, "queued as Q1") {
		t.Fatalf("next message: %v %v", res, err)
	}
	tr.Close()
	cmds := f.commands()
	var bdats []string
	for _, c := range cmds {
		if strings.HasPrefix(c, "BDAT") {
			bdats = append(bdats, c)
		}
	}
	if len(bdats) != 2 || bdats[0] != fmt.Sprintf("BDAT %d", chunkSize) || !strings.HasSuffix(bdats[1], " LAST") {
		t.Fatalf("BDAT commands %q: want the refused chunk, then the next message's LAST alone", bdats)
	}
	if f.connections() != 1 || !strings.Contains(strings.Join(cmds, "|"), "RSET") {
		t.Fatalf("%d connections, commands %q", f.connections(), cmds)
	}
}

// A server that closes the connection after BDAT LAST: without a reply the
// verdict is unknown (a temporary NetworkError, nothing reported accepted,
// no silent retry that could deliver twice); with a reply, the verdict
// stands. Either way the next message goes on a new session.
func TestCloseAfterBDATLast(t *testing.T) {
	for _, answer := range []bool{false, true} {
		t.Run(fmt.Sprintf("answered=%v", answer), func(t *testing.T) {
			hungUp := make(chan struct{})
			f := chunkFake(t, func(verb string, c *fakeConn) bool {
				if verb == "." && c.conn == 1 {
					if answer {
						c.w("250 2.0.0 Ok: queued as A\r\n")
					}
					c.hangup()
					close(hungUp)
					return true
				}
				return false
			})
			tr := orderTransport(f)
			// The session is checked with NOOP before any reuse: the next
			// message must not depend on the server's close reaching the
			// client before it takes the session.
			tr.HealthCheckAfter = time.Nanosecond
			d, _ := canaryDelivery(t)
			res, err := deliver(t, tr, d)
			if answer {
				if err != nil || res.Reply == nil || !strings.HasSuffix(res.Reply.Text, "queued as A") {
					t.Fatalf("%v %v", res, err)
				}
			} else {
				var ne *mailsec.NetworkError
				if !errors.As(err, &ne) || !mailsec.IsTemporary(err) || ne.Op != "DATA" {
					t.Fatalf("error %v (%T), want a temporary NetworkError in DATA", err, err)
				}
				if res == nil || res.Reply != nil || len(acceptedOf(res)) != 0 {
					t.Fatalf("result %+v", res)
				}
				if f.events("MAIL") != 1 {
					t.Fatalf("%d transactions: retried a message whose verdict is unknown", f.transactions())
				}
			}
			<-hungUp
			res, err = deliver(t, tr, d)
			assertOwnVerdict(t, res, err, "Q2")
			if f.connections() != 2 {
				t.Fatalf("%d connections", f.connections())
			}
		})
	}
}

// A server that answers a transaction with BDAT once too often, or out of
// order: the session ends with ErrUnsolicitedReply, no verdict is taken
// from another command's reply, and the next message gets its own.
func TestChunkedRepliesOutOfStep(t *testing.T) {
	for name, misbehave := range map[string]func(verb string, c *fakeConn) bool{
		"RCPT answered twice": func(verb string, c *fakeConn) bool {
			if verb == "RCPT" && c.conn == 1 {
				c.w("250 2.1.5 Ok\r\n250 2.1.5 Ok again\r\n")
				return true
			}
			return false
		},
		"MAIL answered twice": func(verb string, c *fakeConn) bool {
			if verb == "MAIL" && c.conn == 1 {
				c.w("250 2.1.0 Ok\r\n250 2.1.0 Ok again\r\n")
				return true
			}
			if verb == "RCPT" && c.conn == 1 {
				c.w("250 2.1.5 Ok\r\n")
				return true
			}
			return false
		},
		"354 to BDAT": func(verb string, c *fakeConn) bool {
			if verb == "BDAT" && c.conn == 1 {
				c.w("354 go ahead\r\n")
				return true
			}
			return false
		},
		"verdict before MAIL's reply": func(verb string, c *fakeConn) bool {
			if verb == "MAIL" && c.conn == 1 {
				c.w("250 2.0.0 Ok: queued as EARLY\r\n")
				return false
			}
			return false
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := chunkFake(t, misbehave)
			tr := orderTransport(f)
			d, _ := canaryDelivery(t)
			res, err := deliver(t, tr, d)
			assertUnsolicited(t, res, err)
			res, err = deliver(t, tr, d)
			// Its own verdict is the one for the last end of a message
			// the server saw: Q2, or Q1 when the first session ended
			// before the server read the first message's end.
			assertOwnVerdict(t, res, err, fmt.Sprintf("Q%d", f.events(".")))
			if f.connections() != 2 {
				t.Fatalf("%d connections: the session out of step was reused", f.connections())
			}
		})
	}
}

// The content with BDAT: canonical (CRLF everywhere, a final CRLF), not
// dot-stuffed, in chunks of at most the chunk size, the last marked LAST;
// a line over 998 octets is refused before BDAT LAST, and the connection
// dropped so that the server discards what it got.
func TestChunkedContentOnTheWire(t *testing.T) {
	f := chunkFake(t, nil)
	tr := orderTransport(f)
	body := "Subject: hygiene\n\nbare LF\nbare CR\rCRLF\r\n.\nleading .dot\n..two\r.\r\n" + lines(8000) + "\rlast"
	want := "Subject: hygiene\r\n\r\nbare LF\r\nbare CR\r\nCRLF\r\n.\r\nleading .dot\r\n..two\r\n.\r\n" + lines(8000) + "\r\nlast\r\n"
	d := &mailsec.Delivery{From: "app@example.com", To: []string{"rcpt@example.org"}, Content: content(body)}
	if _, err := deliver(t, tr, d); err != nil {
		t.Fatal(err)
	}
	d.Content = content("Subject: long\r\n\r\n" + lines(4000) + strings.Repeat("y", 999) + "\r\n")
	_, err := deliver(t, tr, d)
	if !errors.Is(err, mailsec.ErrContent) {
		t.Fatalf("a 999-octet line: error %v", err)
	}
	tr.Close()
	chunks := f.bdatChunks()
	if len(chunks) < 3 {
		t.Fatalf("%d chunks", len(chunks))
	}
	got := strings.Join(chunks[:3], "")
	if got != want {
		t.Fatalf("content differs (%d octets, want %d)", len(got), len(want))
	}
	for i, c := range chunks {
		if len(c) > chunkSize {
			t.Fatalf("chunk %d: %d octets", i, len(c))
		}
	}
	// The second message's first chunk may or may not reach the fake
	// before the connection drops; its end never does.
	if f.terminators() != 1 {
		t.Fatalf("%d ends of message: the message with a long line was ended", f.terminators())
	}
}

// bigBody is a message of size octets, written in 32 KiB writes.
type bigBody int

func (n bigBody) WriteTo(w io.Writer) (int64, error) {
	line := strings.Repeat("x", 76) + "\r\n"
	block := []byte("Subject: big\r\n\r\n" + strings.Repeat(line, (32<<10)/len(line)))
	var total int64
	for total < int64(n) {
		m, err := w.Write(block)
		total += int64(m)
		if err != nil {
			return total, err
		}
		block = []byte(strings.Repeat(line, (32<<10)/len(line)))
	}
	return total, nil
}

// A large message goes out in chunks, streamed: the heap stays a few MB
// while 64 MB are sent.
func TestChunkedLargeMessageStreams(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{Discard: true})
	tr := srv.Transport()
	d := &mailsec.Delivery{From: "app@example.com", To: []string{"rcpt@example.org"}, Content: bigBody(64 << 20)}
	// A first message establishes the session, so that only sending is
	// measured.
	small := *d
	small.Content = content("Subject: small\r\n\r\nx\r\n")
	if _, err := deliver(t, tr, &small); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			mu.Lock()
			peak = max(peak, ms.HeapAlloc)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	_, err := deliver(t, tr, d)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	grew := int64(peak) - int64(base)
	mu.Unlock()
	t.Logf("heap grew by at most %.1f MB while 64 MB were sent", float64(grew)/(1<<20))
	if grew > 16<<20 {
		t.Fatalf("heap grew by %d MB while sending 64 MB: the message was buffered", grew>>20)
	}
	tr.Close()
	if n := srv.Transactions(); n != 2 {
		t.Fatalf("%d transactions", n)
	}
}

// The session never reads ahead into another command's reply, and never
// writes past STARTTLS: bytes sent with the 220 to STARTTLS, in the same
// flight, are refused (the fake offers PIPELINING before TLS too).
func TestChunkingNotBeforeTLS(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS", "PIPELINING", "CHUNKING"}, postTLSExt: []string{"PIPELINING", "CHUNKING"},
		inject: "250 2.1.0 Ok\r\n"})
	tr := orderTransport(f)
	d, canary := canaryDelivery(t)
	_, err := deliver(t, tr, d)
	assertSecurity(t, err, transport.FailInjection, mailsec.ErrDowngrade)
	assertNothingSent(t, f.wireBytes(), canary)
}
