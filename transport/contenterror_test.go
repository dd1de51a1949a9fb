package transport_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
)

// opaqueContent writes head, waits until wait is closed, then writes
// tail, and reports a failure to write in its own words, as an
// application's writer may: the error it returns wraps nothing.
type opaqueContent struct{ pausedContent }

func (o *opaqueContent) WriteTo(w io.Writer) (int64, error) {
	n, err := o.pausedContent.WriteTo(w)
	if err != nil {
		return n, errors.New("attachment: could not write the message")
	}
	return n, nil
}

// A BDAT chunk refused for now, with a Content that reports the write that
// failed in its own words: the delivery's error is still the server's
// temporary refusal, never a permanent content error.
func TestChunkRefusedContentOwnError(t *testing.T) {
	refused := make(chan struct{})
	f := chunkFake(t, func(verb string, c *fakeConn) bool {
		if verb == "BDAT" && c.n == 1 {
			c.w("452 4.3.1 Insufficient system storage\r\n")
			close(refused)
			return true
		}
		return false
	})
	tr := orderTransport(f)
	d, _ := canaryDelivery(t)
	d.Content = &opaqueContent{pausedContent{head: "Subject: big\r\n\r\n" + lines(chunkSize/78+100),
		tail: lines(3 * chunkSize / 78), wait: refused}}
	res, err := deliver(t, tr, d)
	var se *mailsec.SMTPError
	if errors.Is(err, mailsec.ErrContent) || !errors.As(err, &se) || se.Code != 452 || !mailsec.IsTemporary(err) {
		t.Fatalf("error %v (%T), want the server's temporary 452", err, err)
	}
	if res == nil || res.Reply != nil || len(acceptedOf(res)) != 0 {
		t.Fatalf("result %+v", res)
	}
	tr.Close()
	for _, c := range f.commands() {
		if strings.HasPrefix(c, "BDAT") && strings.HasSuffix(c, "LAST") {
			t.Fatalf("BDAT LAST sent after a refused chunk: %q", c)
		}
	}
}

// bigOpaque writes n lines and reports a failure to write in its own
// words, wrapping nothing.
type bigOpaque struct{ n int }

func (b bigOpaque) WriteTo(w io.Writer) (int64, error) {
	var total int64
	line := "Subject: big\r\n\r\n"
	for i := 0; i <= b.n; i++ {
		m, err := io.WriteString(w, line)
		total += int64(m)
		if err != nil {
			return total, errors.New("attachment: could not write the message")
		}
		line = strings.Repeat("y", 76) + "\r\n"
	}
	return total, nil
}

// The connection lost while the content goes out with DATA, with a
// Content that reports the write that failed in its own words: the error
// is a temporary network failure, not a permanent content error.
func TestDataConnectionLostContentOwnError(t *testing.T) {
	f := orderFake(t, func(verb string, c *fakeConn) bool {
		if verb == "BODY" {
			c.hangup()
			return true
		}
		return false
	})
	tr := orderTransport(f)
	d, _ := canaryDelivery(t)
	d.Content = bigOpaque{n: 1 << 18} // 20 MB: more than any socket buffer holds
	res, err := deliver(t, tr, d)
	var ne *mailsec.NetworkError
	if errors.Is(err, mailsec.ErrContent) || !errors.As(err, &ne) || !mailsec.IsTemporary(err) {
		t.Fatalf("error %v (%T), want a temporary NetworkError", err, err)
	}
	if res == nil || res.Reply != nil || len(acceptedOf(res)) != 0 {
		t.Fatalf("result %+v", res)
	}
}

// Replies split across TCP segments while a large message goes out in
// chunks: the client looks for replies between chunks without waiting,
// finds a reply half arrived, and still pairs every reply with its own
// command; the verdict is the message's own.
func TestChunkedRepliesSplitAcrossSegments(t *testing.T) {
	f := chunkFake(t, func(verb string, c *fakeConn) bool {
		if verb == "BDAT" && strings.HasSuffix(c.line, " LAST") {
			return false
		}
		switch verb {
		case "MAIL", "RCPT", "BDAT":
			code := map[string]string{"MAIL": "250 2.1.0", "RCPT": "250 2.1.5", "BDAT": "250 2.0.0"}[verb]
			c.w(strings.Replace(code, " ", "-", 1) + " first line\r\n" + code[:2])
			time.Sleep(30 * time.Millisecond)
			c.w(code[2:] + " second line\r\n")
			return true
		}
		return false
	})
	tr := orderTransport(f)
	d, _ := canaryDelivery(t)
	d.Content = content("Subject: big\r\n\r\n" + lines(3*chunkSize/78))
	res, err := deliver(t, tr, d)
	if err != nil || res.Reply == nil || !strings.HasSuffix(res.Reply.Text, "queued as Q1") {
		t.Fatalf("%v %v", res, err)
	}
	if res, err = deliver(t, tr, d); err != nil || res.Reply == nil || !strings.HasSuffix(res.Reply.Text, "queued as Q2") {
		t.Fatalf("next message: %v %v", res, err)
	}
	if n := f.connections(); n != 1 {
		t.Fatalf("%d connections", n)
	}
}
