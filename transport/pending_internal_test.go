package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/mailsec/mailsec/internal/smtpwire"
)

// The look for bytes the server sent unasked (session.pending) against a
// real crypto/tls session, on a socket and on a connection that is not one:
// a TLS 1.3 session ticket is not a reply and is not pending, a reply is,
// and so is a record that has only begun to arrive.
func TestPendingOverTLS(t *testing.T) {
	cert := selfSigned(t)
	for _, socket := range []bool{true, false} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		type step struct {
			raw  []byte // written below TLS
			data string // written through TLS
		}
		steps := make(chan step)
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
			if err := tc.Handshake(); err != nil {
				return
			}
			for s := range steps {
				if s.raw != nil {
					_, _ = c.Write(s.raw)
				} else {
					_, _ = tc.Write([]byte(s.data))
				}
			}
		}()

		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		var c net.Conn = raw
		if !socket {
			c = struct{ net.Conn }{raw} // hides SyscallConn
		}
		cc := newCtxConn(c)
		if (cc.raw != nil) != socket {
			t.Fatalf("socket=%v: raw conn %v", socket, cc.raw)
		}
		cc.tls.on = true
		// With a session cache the client offers resumption, and the server
		// sends a ticket after its Finished: it is waiting, unread, when
		// the handshake returns.
		cache := tls.NewLRUClientSessionCache(4)
		tc := tls.Client(cc, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", MinVersion: tls.VersionTLS13, ClientSessionCache: cache})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		s := &session{host: "test", conn: cc}
		s.start(tc, smtpwire.NewReader(tc, 0))
		await := func(want bool) {
			t.Helper()
			// A reply the server has just written takes a moment to
			// arrive; nothing pending must show at once.
			deadline := time.Now().Add(2 * time.Second)
			for {
				got, err := s.pending()
				if err != nil {
					t.Fatalf("socket=%v: pending: %v", socket, err)
				}
				if got == want {
					return
				}
				if !want || time.Now().After(deadline) {
					t.Fatalf("socket=%v: pending = %v, want %v", socket, got, want)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}

		if _, ok := cache.Get("localhost"); ok {
			t.Fatalf("socket=%v: the ticket was processed during the handshake; this test needs it pending", socket)
		}
		time.Sleep(50 * time.Millisecond) // let the ticket arrive
		await(false)
		if _, ok := cache.Get("localhost"); !ok {
			// The ticket was read and processed by the check itself.
			t.Fatalf("socket=%v: no session ticket processed", socket)
		}

		steps <- step{data: "250 2.0.0 unasked\r\n"}
		await(true)
		rep, err := s.r.ReadReply()
		if err != nil || rep.Code != 250 {
			t.Fatalf("socket=%v: the pending reply: %+v %v", socket, rep, err)
		}
		await(false)

		// The first bytes of a record: something has begun to arrive.
		steps <- step{raw: []byte{23, 3, 3, 0, 40, 1, 2}}
		await(true)
		close(steps)
		raw.Close()
		<-done
	}
}

// An idle session with nothing pending answers without waiting.
func TestPendingDoesNotWait(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := newCtxConn(a)
	s := &session{conn: cc}
	s.start(cc, smtpwire.NewReader(cc, 0))
	start := time.Now()
	if p, err := s.pending(); p || err != nil {
		t.Fatal(p, err)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Fatalf("took %v", el)
	}
	go func() { _, _ = b.Write([]byte("421 4.4.2 bye\r\n")) }()
	// The writer runs when the scheduler lets it: look until it has.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		p, err := s.pending()
		if err != nil {
			t.Fatal(err)
		}
		if p {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a reply that arrived is not pending")
		}
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
