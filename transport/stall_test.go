package transport_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport"
)

// bigContent is a message of n lines of 76 octets.
type bigContent int

func (n bigContent) WriteTo(w io.Writer) (int64, error) {
	line := []byte("Subject: stall\r\n\r\n")
	var total int64
	m, err := w.Write(line)
	total += int64(m)
	line = make([]byte, 78)
	for i := range line {
		line[i] = 'x'
	}
	line[76], line[77] = '\r', '\n'
	for i := 0; i < int(n) && err == nil; i++ {
		m, err = w.Write(line)
		total += int64(m)
	}
	return total, err
}

// A server that answers DATA with 354 and then stops reading holds the
// message's writes; without a deadline in the context, each write of the
// body is still given up on after the DATA block timeout (RFC 5321 section
// 4.5.3.2.5), here shortened, and the pool slot is freed.
func TestStalledDataWithoutContextDeadline(t *testing.T) {
	release := make(chan struct{})
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, hook: func(verb string, c *fakeConn) bool {
		if verb == "DATA" && c.conn == 1 {
			c.w("354 go ahead\r\n")
			select {
			case <-release:
			case <-time.After(8 * time.Second):
			}
			c.hangup()
			return true
		}
		return false
	}})
	defer close(release)
	tr := orderTransport(f)
	tr.MaxConns = 1
	transport.SetDataBlockTimeout(tr, 300*time.Millisecond)
	defer tr.Close()
	d, _ := canaryDelivery(t)
	d.Content = bigContent(200000) // 15 MB: more than the socket buffers hold

	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := tr.Deliver(context.Background(), d)
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the delivery is still writing to a server that stopped reading")
	}
	var ne *mailsec.NetworkError
	if !errors.As(err, &ne) || !mailsec.IsTemporary(err) || ne.Op != "DATA" {
		t.Fatalf("error %v (%T) after %v, want a temporary NetworkError in DATA", err, err, time.Since(start))
	}
	if n := f.terminators(); n != 0 {
		t.Fatalf("%d terminators sent", n)
	}
}
