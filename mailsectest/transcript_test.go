package mailsectest_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

const transcriptCanary = "CANARY-transcript-5e1f"

func sendOne(t *testing.T, srv *mailsectest.Server, sec mailsec.Security) {
	t.Helper()
	tr := srv.Transport()
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tr.Deliver(ctx, &mailsec.Delivery{From: "app@example.com", To: []string{"rcpt@example.org"}, Security: sec,
		Content: strings.NewReader("Subject: " + transcriptCanary + "\r\n\r\nbody\r\n")})
	if err != nil {
		t.Fatal(err)
	}
}

func settledTranscripts(t *testing.T, srv *mailsectest.Server) []mailsectest.Transcript {
	t.Helper()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	return srv.Transcripts()
}

// What the server read is in the transcript decrypted, where Wire holds
// ciphertext: an assertion that a client never sent the canary can fail.
func TestTranscriptIsDecrypted(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		srv := mailsectest.NewServer(t, mailsectest.Config{ImplicitTLS: implicit})
		sendOne(t, srv, mailsec.Security{})
		ts := settledTranscripts(t, srv)
		if len(ts) != 1 || !ts[0].TLS {
			t.Fatalf("implicit=%v: transcripts %+v", implicit, ts)
		}
		tr := ts[0]
		before, after := tr.Received[:tr.ReceivedBeforeTLS], tr.Received[tr.ReceivedBeforeTLS:]
		wantBefore := "EHLO client.test\r\nSTARTTLS\r\n"
		if implicit {
			wantBefore = ""
		}
		if string(before) != wantBefore {
			t.Fatalf("implicit=%v: before TLS %q, want %q", implicit, before, wantBefore)
		}
		for _, want := range []string{"EHLO client.test\r\n", "MAIL FROM:<app@example.com>", "RCPT TO:<rcpt@example.org>", "Subject: " + transcriptCanary, "LAST\r\n", "body\r\nQUIT\r\n"} {
			if !bytes.Contains(after, []byte(want)) {
				t.Fatalf("implicit=%v: %q not in what the server read after TLS:\n%q", implicit, want, after)
			}
		}
		if !bytes.HasPrefix(tr.Sent, []byte("220 ")) || !bytes.Contains(tr.Sent, []byte("221 ")) {
			t.Fatalf("implicit=%v: sent %q", implicit, tr.Sent)
		}
		if !bytes.Equal(srv.Received(), tr.Received) {
			t.Fatal("Received is not the transcripts' concatenation")
		}
		if bytes.Contains(srv.Wire(), []byte(transcriptCanary)) {
			t.Fatal("the canary crossed the network in clear")
		}
	}
}

// Without TLS, everything is before it.
func TestTranscriptPlaintext(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{WithholdStartTLS: true})
	sendOne(t, srv, mailsec.Security{Level: mailsec.Plaintext})
	ts := settledTranscripts(t, srv)
	if len(ts) != 1 || ts[0].TLS || ts[0].ReceivedBeforeTLS != len(ts[0].Received) || !bytes.Contains(ts[0].Received, []byte(transcriptCanary)) {
		t.Fatalf("transcripts %+v", ts)
	}
	if !bytes.Equal(srv.Wire(), ts[0].Received) {
		t.Fatal("without TLS, Wire and Received differ")
	}
}

// A client that sends something right after the handshake, no SMTP at
// all, shows up in the transcript and not on the wire.
func TestTranscriptCatchesWhatWireCannot(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{ImplicitTLS: true})
	c, err := tls.Dial("tcp", srv.Addr, &tls.Config{RootCAs: srv.CA.Pool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(transcriptCanary + "\r\nQUIT\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	c.Close()
	ts := settledTranscripts(t, srv)
	if len(ts) != 1 || !bytes.Contains(ts[0].Received, []byte(transcriptCanary)) {
		t.Fatalf("transcripts %+v", ts)
	}
	if bytes.Contains(srv.Wire(), []byte(transcriptCanary)) {
		t.Fatal("the canary is in Wire: it was not encrypted")
	}
}

// A message's TLS state is the client's session with the server (its
// version bounds), as before the transcript.
func TestMessageTLSIsTheClients(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{MaxVersion: tls.VersionTLS12})
	sendOne(t, srv, mailsec.Security{})
	m := srv.Messages()
	if len(m) != 1 || m[0].TLS == nil || m[0].TLS.Version != tls.VersionTLS12 || m[0].TLS.ServerName != "localhost" {
		t.Fatalf("messages %+v", m)
	}
}

// With Discard, nothing is kept, and go-smtp serves the clients itself.
func TestDiscardKeepsNoTranscript(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{Discard: true})
	sendOne(t, srv, mailsec.Security{})
	if ts := settledTranscripts(t, srv); len(ts) != 0 || len(srv.Received()) != 0 {
		t.Fatalf("transcripts %+v", ts)
	}
	if srv.Connections() != 1 {
		t.Fatal("connection not counted")
	}
}

// A client that sends plaintext where its TLS handshake should be (after
// the 220 to STARTTLS, pipelined behind STARTTLS, on an implicit-TLS port,
// or after a handshake it gave up on) sent it in clear: the transcript must
// show it, or an assertion that the client never sent it would pass.
func TestTranscriptKeepsWhatReplacedTheHandshake(t *testing.T) {
	mail := "MAIL FROM:<" + transcriptCanary + "@example.com>\r\n"
	for _, tc := range []struct {
		name     string
		implicit bool
		client   func(t *testing.T, c net.Conn, r *bufio.Reader)
	}{
		{"after the 220 to STARTTLS", false, func(t *testing.T, c net.Conn, r *bufio.Reader) {
			startTLS(t, c, r, "STARTTLS\r\n")
			_, _ = c.Write([]byte(mail))
		}},
		{"pipelined behind STARTTLS", false, func(t *testing.T, c net.Conn, r *bufio.Reader) {
			startTLS(t, c, r, "STARTTLS\r\n"+mail)
		}},
		{"after a handshake the client gave up on", false, func(t *testing.T, c net.Conn, r *bufio.Reader) {
			startTLS(t, c, r, "STARTTLS\r\n")
			// No trusted roots: the client refuses the certificate, then
			// goes on in clear.
			tc := tls.Client(c, &tls.Config{ServerName: "localhost"})
			if err := tc.Handshake(); err == nil {
				t.Fatal("handshake with no trusted roots succeeded")
			}
			_, _ = c.Write([]byte(mail))
		}},
		{"on an implicit-TLS port", true, func(t *testing.T, c net.Conn, r *bufio.Reader) {
			_, _ = c.Write([]byte("EHLO client.test\r\n" + mail))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := mailsectest.NewServer(t, mailsectest.Config{ImplicitTLS: tc.implicit})
			c, err := net.Dial("tcp", srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			tc.client(t, c, bufio.NewReader(c))
			time.Sleep(50 * time.Millisecond)
			c.Close()
			if !bytes.Contains(srv.Wire(), []byte(transcriptCanary)) {
				t.Fatal("the canary did not reach the server")
			}
			ts := settledTranscripts(t, srv)
			if len(ts) != 1 || ts[0].TLS || !bytes.Contains(ts[0].Received, []byte(mail)) {
				t.Fatalf("the plaintext MAIL is not in the transcript: %v", ts)
			}
			if !bytes.Contains(srv.Received(), []byte(transcriptCanary)) {
				t.Fatal("the canary is not in Received")
			}
		})
	}
}

// startTLS reads the greeting, says EHLO, sends what (STARTTLS and
// perhaps more) and reads the reply to STARTTLS.
func startTLS(t *testing.T, c net.Conn, r *bufio.Reader, what string) {
	t.Helper()
	readReply := func() string {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if len(l) < 4 || l[3] != '-' {
				return l
			}
		}
	}
	readReply()
	_, _ = c.Write([]byte("EHLO client.test\r\n"))
	readReply()
	_, _ = c.Write([]byte(what))
	if l := readReply(); !strings.HasPrefix(l, "220") {
		t.Fatalf("STARTTLS: %q", l)
	}
}
