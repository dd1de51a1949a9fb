package transport_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/flighttest"
	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/transport"
)

// A real Postfix takes pipelined, chunked messages (its submission port
// offers PIPELINING and CHUNKING) and delivers, byte for byte, the message
// lockstep DATA delivers (its lockstep port offers neither): small and
// larger than one chunk, with dots at the start of lines, bare line
// endings and a last line without one. A warm message costs one flight.
func TestPostfixPipelinedChunked(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Config{
		Domain:    "example.test",
		Mailboxes: []string{"ann", "bob"},
		Users:     map[string]string{"alice": password},
	})
	newTransport := func(addr string) *transport.Submission {
		tr := &transport.Submission{Addr: addr, Mode: transport.StartTLS, ServerName: "localhost",
			TLSConfig: &tls.Config{RootCAs: pf.RootCAs()}, LocalName: "client.test",
			Auth: &transport.Auth{Username: "alice", Password: password}}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	p := flighttest.Start(t, pf.SubmissionAddr, 2*time.Millisecond)
	chunked, lockstep := newTransport(p.Addr), newTransport(pf.LockstepAddr)

	bodies := map[string]string{
		"small": "line one\n.\n..two dots\r\nbare CR\rend\r\n.\r\nlast line without an ending",
		"large": strings.Repeat(".a line that starts with a dot, then "+strings.Repeat("x", 60)+"\r\n", 9000) + "\n.\nend",
	}
	sent := 0
	for _, name := range []string{"small", "large"} {
		for _, tr := range []*transport.Submission{chunked, lockstep} {
			probe := fmt.Sprintf("%s-%d", name, sent)
			d := &mailsec.Delivery{From: "app@example.test", To: []string{"ann@example.test", "bob@example.test"},
				Security: mailsec.Security{Level: mailsec.Verified},
				Content:  content("X-Probe: " + name + "\r\nFrom: app@example.test\r\nSubject: " + probe + "\r\n\r\n" + bodies[name])}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			res, err := tr.Deliver(ctx, d)
			cancel()
			if err != nil || len(acceptedOf(res)) != 2 {
				t.Fatalf("%s: %v %v\n%s", probe, res, err, pf.Log())
			}
			sent++
		}
	}
	for _, box := range []string{"ann", "bob"} {
		msgs := pf.Wait(t, box, sent)
		got := map[string][][]byte{}
		for _, m := range msgs {
			i := bytes.Index(m, []byte("X-Probe: "))
			if i < 0 {
				t.Fatalf("%s: a message without its probe:\n%s", box, headerBlock(m))
			}
			// What the client sent, with Subject's counter taken out:
			// Postfix's own header fields come before it.
			m = m[i:]
			name := string(m[len("X-Probe: "):bytes.IndexByte(m, '\n')])
			name = strings.TrimSpace(name)
			m = bytes.Replace(m, []byte("Subject: "+name+"-"), []byte("Subject: "), 1)
			got[name] = append(got[name], m)
		}
		for name, ms := range got {
			if len(ms) != 2 {
				t.Fatalf("%s: %d copies of %s", box, len(ms), name)
			}
			// Subjects differ only in the counter's digits.
			a, b := cutSubject(ms[0]), cutSubject(ms[1])
			if !bytes.Equal(a, b) {
				t.Fatalf("%s: %s differs between pipelined BDAT and lockstep DATA (%d and %d octets)", box, name, len(a), len(b))
			}
			if !bytes.Contains(a, []byte("\n..two dots\n")) && name == "small" {
				t.Fatalf("%s: dots changed: %q", box, a)
			}
		}
	}
	// One flight per warm message through Postfix.
	before := p.Flights()
	for i := range 3 {
		d := &mailsec.Delivery{From: "app@example.test", To: []string{"ann@example.test"}, Security: mailsec.Security{Level: mailsec.Verified},
			Content: content(fmt.Sprintf("Subject: warm %d\r\n\r\nwarm\r\n", i))}
		if _, err := chunked.Deliver(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	got := float64(p.Flights()-before) / 3
	t.Logf("%.2f flights per warm message to Postfix", got)
	if got != 1 || p.Connections() != 1 {
		t.Fatalf("%.2f flights per warm message over %d connections, want 1 over 1", got, p.Connections())
	}
}

// cutSubject drops the Subject line's counter.
func cutSubject(m []byte) []byte {
	i := bytes.Index(m, []byte("\r\nSubject: "))
	if i < 0 {
		i = bytes.Index(m, []byte("\nSubject: "))
	}
	if i < 0 {
		return m
	}
	j := bytes.IndexByte(m[i+2:], '\n')
	return append(append([]byte{}, m[:i]...), m[i+2+j:]...)
}
