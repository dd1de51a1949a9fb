package pgp_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/transport"
)

var transportAuth = transport.Auth{Username: "alice", Password: "pf-secret"}

// To and Cc share one ciphertext for both their keys; each Bcc delivery's
// ciphertext names only that Bcc recipient's key, as gpg --list-packets
// shows.
func TestBccCiphertextNamesOnlyItsKey(t *testing.T) {
	home := gpgHome(t)
	k := testKeys(t)
	names := []string{"ann@example.org", "bob@example.org", "carl@example.org", "dave@example.org"}
	var es []*openpgp.Entity
	subID := map[string]string{}
	for _, n := range names {
		es = append(es, k[n])
		sub, _ := k[n].EncryptionKey(time.Now())
		subID[n] = fmt.Sprintf("%016X", sub.PublicKey.KeyId)
	}
	p, err := pgp.New(publicRing(t, es...), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s := newSender(t, srv.Transport(), p)
	if _, err := s.Send(context.Background(), &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"},
		Cc: []string{"bob@example.org"}, Bcc: []string{"carl@example.org", "dave@example.org"}, Subject: "secret subject", Text: canary}); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages", len(msgs))
	}
	keyIDs := regexp.MustCompile(`:pubkey enc packet: .*keyid ([0-9A-F]{16})`)
	for _, m := range msgs {
		checkWire(t, m.Data, "secret subject")
		path := t.TempDir() + "/m.asc"
		writeFile(t, path, encryptedPart(t, m.Data))
		out, _, _ := gpg(t, home, nil, "--list-packets", path)
		var got []string
		for _, sm := range keyIDs.FindAllStringSubmatch(out, -1) {
			got = append(got, sm[1])
		}
		var want []string
		for _, r := range m.To {
			want = append(want, subID[r])
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("delivery to %v: ciphertext names %v, want %v\n%s", m.To, got, want, out)
		}
	}
}

// Through a real Postfix: gpg decrypts the Maildir file; the file never
// holds the body canary or the real Subject.
func TestPostfixDelivery(t *testing.T) {
	home := gpgHome(t)
	ann, err := mailsectest.NewPGPKey("Ann", "ann@example.test", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := mailsectest.ArmorPrivate(ann, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustGPG(t, home, []byte(sec), "--passphrase", "", "--import")

	pf := postfixtest.Start(t, postfixtest.Config{Domain: "example.test",
		Mailboxes: []string{"ann"}, Users: map[string]string{"alice": "pf-secret"}})
	tr := &transport.Submission{Addr: pf.SubmissionAddr, ServerName: pf.Hostname,
		TLSConfig: &tls.Config{RootCAs: pf.RootCAs()}, Auth: &transportAuth}
	t.Cleanup(func() { tr.Close() })
	p, err := pgp.New(publicRing(t, ann), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newSender(t, tr, p)
	subject := "Befund für Ann"
	if _, err := s.Send(context.Background(), &mailsec.Message{From: "App <app@example.test>", To: []string{"Ann <ann@example.test>"},
		Subject: subject, Text: canary + "\nGrüße\n"}); err != nil {
		t.Fatal(err)
	}
	raw := pf.Wait(t, "ann", 1)[0]
	if bytes.Contains(raw, []byte(canary)) || bytes.Contains(raw, []byte("Befund")) || bytes.Contains(raw, []byte("=?utf-8?")) {
		t.Fatalf("plaintext in the Maildir file:\n%s", raw)
	}
	// Maildir files have LF line endings; gpg reads armor either way.
	raw = bytes.ReplaceAll(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	status, plain := gpgDecrypt(t, home, encryptedPart(t, raw))
	if !strings.Contains(status, "DECRYPTION_INFO 2 9") || !bytes.Contains(plain, []byte(canary)) {
		t.Fatalf("status:\n%s\nplaintext:\n%s", status, plain)
	}
}

// A 100 MB attachment, generated on the fly, is encrypted while it is
// written: the heap never grows anywhere near its size.
func TestLargeAttachmentStreams(t *testing.T) {
	size := int64(100 << 20)
	if testing.Short() || raceEnabled {
		size = 10 << 20
	}
	k := testKeys(t)
	p, err := pgp.New(publicRing(t, k["ann@example.org"]), nil)
	if err != nil {
		t.Fatal(err)
	}
	var written atomic.Int64
	tr := discard{n: &written}
	s := newSender(t, tr, p)

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	_, err = s.Send(context.Background(), &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"},
		Subject: "big", Text: "see attachment",
		Attachments: []mailsec.Attachment{{Filename: "big.bin", Content: &pattern{left: size}}}})
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if w := written.Load(); w < size {
		t.Fatalf("only %d bytes written", w)
	}
	grown := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("attachment %d MB, wire %d MB, heap in use grew by at most %.1f MB", size>>20, written.Load()>>20, float64(grown)/(1<<20))
	if grown > 16<<20 {
		t.Fatalf("heap grew by %d bytes while sending", grown)
	}
}

// pattern yields left pseudo-random bytes without holding them.
type pattern struct {
	left int64
	x    uint64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		p.x = p.x*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.x >> 56)
	}
	p.left -= int64(len(b))
	return len(b), nil
}

// discard is a Transport that writes the content to io.Discard.
type discard struct{ n *atomic.Int64 }

func (d discard) Deliver(_ context.Context, dl *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	n, err := dl.Content.WriteTo(io.Discard)
	if d.n != nil {
		d.n.Add(n)
	}
	if err != nil {
		return nil, err
	}
	res := &mailsec.DeliveryResult{}
	for _, r := range dl.To {
		res.Recipients = append(res.Recipients, mailsec.RecipientResult{Address: r, Accepted: true})
	}
	return res, nil
}
