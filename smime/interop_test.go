package smime_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
	"github.com/mailsec/mailsec/transport"
)

// Through a Sender and the in-process server: openssl cms and openssl
// smime decrypt what each recipient receives, the algorithms are
// AES-256-CBC and rsaEncryption, the Bcc recipient gets an envelope of
// its own that the To recipients cannot open, the Receipt records each
// certificate's SHA-256 fingerprint, and nothing readable is on the wire.
func TestOpenSSLDecrypt(t *testing.T) {
	needTool(t, "openssl")
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	bob := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "Bob@Example.org", Key: f.key2})
	carl := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "carl@example.net", Key: f.key3})
	p := newProtector(t, storeOf(t, ann, bob, carl), smime.Options{})
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	s := newSender(t, tr, p)
	m := message("ann@example.org")
	m.Cc = []string{"bob@EXAMPLE.org"}
	m.Bcc = []string{"carl@example.net"}
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d transactions, want 2", len(msgs))
	}
	tr.Close()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if r := srv.Received(); bytes.Contains(r, []byte(canary)) || bytes.Contains(r, []byte(realSubject)) {
		t.Fatal("plaintext reached the server")
	}
	want := map[string]tls.Certificate{"ann@example.org": ann, "bob@example.org": bob, "carl@example.net": carl}
	for _, r := range rec.Recipients {
		c, ok := want[strings.ToLower(r.Address)]
		sum := sha256.Sum256(c.Leaf.Raw)
		if !ok || r.Protection == nil || r.Protection.Method != "smime" || r.Protection.Fingerprint != hexString(sum[:]) {
			t.Fatalf("receipt for %s: %+v", r.Address, r.Protection)
		}
	}
	dir := t.TempDir()
	for i, c := range []struct {
		name string
		cert tls.Certificate
		msg  int
	}{{"ann", ann, 0}, {"bob", bob, 0}, {"carl", carl, 1}} {
		crt, key := keyFiles(t, dir, c.name, c.cert)
		raw := msgs[c.msg].Data
		checkOpaque(t, raw)
		checkPlain(t, opensslDecrypt(t, dir, raw, crt, key))
		if i == 0 {
			in := writeFile(t, dir, "print.eml", raw)
			r := run(nil, nil, "openssl", "cms", "-cmsout", "-print", "-in", in, "-inform", "SMIME")
			if r.err != nil {
				t.Fatalf("openssl cms -cmsout -print: %v\n%s", r.err, r.stderr)
			}
			if !strings.Contains(r.stdout, "aes-256-cbc") || !strings.Contains(r.stdout, "rsaEncryption") ||
				strings.Count(r.stdout, "issuerAndSerialNumber") != 2 {
				t.Fatalf("unexpected algorithms or recipients:\n%s", r.stdout)
			}
			// ann cannot open carl's Bcc copy.
			in = writeFile(t, dir, "bcc.eml", msgs[1].Data)
			if r := run(nil, nil, "openssl", "cms", "-decrypt", "-in", in, "-recip", crt, "-inkey", key); r.err == nil {
				t.Fatal("a To recipient decrypted the Bcc copy")
			}
		}
	}
}

// gpgsm --decrypt reads our EnvelopedData.
func TestGpgsmDecrypt(t *testing.T) {
	needTool(t, "gpgsm", "gpgconf", "openssl")
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, newProtector(t, storeOf(t, ann), smime.Options{}))
	if _, err := s.Send(context.Background(), message("ann@example.org")); err != nil {
		t.Fatal(err)
	}
	ds := rt.Deliveries()
	if len(ds) != 1 {
		t.Fatalf("%d deliveries", len(ds))
	}
	checkOpaque(t, ds[0].Data)
	env := gpgsmHome(t, f.ca, ann)
	checkPlain(t, gpgsmDecrypt(t, env, ds[0].Data))
}

// gpgsmDecrypt extracts the base64 body of a message and decrypts it.
func gpgsmDecrypt(t testing.TB, env []string, raw []byte) string {
	t.Helper()
	_, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		_, body, _ = bytes.Cut(raw, []byte("\n\n"))
	}
	in, err := os.CreateTemp("", "gsmsg")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(in.Name())
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(body)), ""))
	if err != nil {
		t.Fatal(err)
	}
	// gpgsm 2.2's --base64 reader stops early on this input; give it DER.
	if _, err := in.Write(der); err != nil {
		t.Fatal(err)
	}
	in.Close()
	r := run([]byte("test\n"), env, "gpgsm", "--batch", "--status-fd", "2", "--pinentry-mode", "loopback", "--passphrase-fd", "0",
		"--decrypt", in.Name())
	if r.err != nil || !strings.Contains(r.stderr, "DECRYPTION_OKAY") {
		t.Fatalf("gpgsm --decrypt: %v\n%s", r.err, r.stderr)
	}
	return r.stdout
}

// Sign then encrypt: after decryption, openssl cms -verify -purpose
// smimesign and gpgsm --verify accept the multipart/signed content;
// changing one byte of the signed part makes both refuse.
func TestSignVerify(t *testing.T) {
	needTool(t, "openssl", "gpgsm", "gpgconf")
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	app := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "app@example.com", Key: f.key2})
	signer, err := smime.NewSigner([]*x509.Certificate{app.Leaf, f.ca.Certificate}, f.key2)
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, newProtector(t, storeOf(t, ann), smime.Options{Signer: signer}))
	rec, err := s.Send(context.Background(), message("ann@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Recipients[0].Protection.Signed {
		t.Fatal("receipt does not say signed")
	}
	dir := t.TempDir()
	crt, key := keyFiles(t, dir, "ann", ann)
	plain := opensslDecrypt(t, dir, rt.Deliveries()[0].Data, crt, key)
	checkPlain(t, plain)
	if !strings.Contains(plain, `multipart/signed; `) || !strings.Contains(plain, `micalg=sha-256`) ||
		!strings.Contains(plain, `protocol="application/pkcs7-signature"`) {
		t.Fatalf("not multipart/signed:\n%s", plain)
	}
	caPath := writeFile(t, dir, "ca.pem", f.ca.CertPEM())
	env := gpgsmHome(t, f.ca)

	verify := func(signed string) (opensslOK, gpgsmOK bool, out string) {
		in := writeFile(t, dir, "signed.eml", []byte(signed))
		r := run(nil, nil, "openssl", "cms", "-verify", "-in", in, "-CAfile", caPath, "-purpose", "smimesign")
		opensslOK = r.err == nil
		out = r.stdout + r.stderr
		// gpgsm wants the detached signature and the signed bytes apart.
		part, sig := splitSigned(t, signed)
		sigDER, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(sig)), ""))
		if err != nil {
			t.Fatal(err)
		}
		sigPath := writeFile(t, dir, "smime.p7s", sigDER)
		dataPath := writeFile(t, dir, "part.bin", part)
		g := run(nil, env, "gpgsm", "--batch", "--status-fd", "1", "--verify", sigPath, dataPath)
		gpgsmOK = g.err == nil && strings.Contains(g.stdout, "[GNUPG:] GOODSIG") && strings.Contains(g.stdout, "VALIDSIG")
		return opensslOK, gpgsmOK, out + g.stdout + g.stderr
	}
	if o, g, out := verify(plain); !o || !g {
		t.Fatalf("signature refused (openssl %v, gpgsm %v):\n%s", o, g, out)
	}
	i := strings.Index(plain, canary)
	tampered := plain[:i] + "B" + plain[i+1:]
	if o, g, out := verify(tampered); o || g {
		t.Fatalf("tampered content accepted (openssl %v, gpgsm %v):\n%s", o, g, out)
	}
}

// splitSigned returns the exact signed bytes of the first part and the
// base64 signature of a multipart/signed entity.
func splitSigned(t testing.TB, m string) (part, sig []byte) {
	t.Helper()
	i := strings.Index(m, "boundary=\"")
	if i < 0 {
		t.Fatalf("no boundary:\n%s", m)
	}
	b := m[i+len("boundary=\""):]
	b = b[:strings.IndexByte(b, '"')]
	delim := "--" + b + "\r\n"
	start := strings.Index(m, delim)
	if start < 0 {
		t.Fatalf("no first part:\n%s", m)
	}
	rest := m[start+len(delim):]
	end := strings.Index(rest, "\r\n"+delim)
	if end < 0 {
		t.Fatalf("no second part:\n%s", m)
	}
	part = []byte(rest[:end])
	sigPart := rest[end+2+len(delim):]
	_, sigBody, _ := strings.Cut(sigPart, "\r\n\r\n")
	sigBody, _, _ = strings.Cut(sigBody, "--"+b+"--")
	return part, []byte(sigBody)
}

// Through a real Postfix: the Maildir file is decrypted by openssl and
// gpgsm, and never contains the body canary or the real Subject.
func TestPostfix(t *testing.T) {
	needTool(t, "openssl", "gpgsm", "gpgconf")
	f := getFixture(t)
	pf := postfixtest.Start(t, postfixtest.Config{Domain: "example.test",
		Mailboxes: []string{"ann"}, Users: map[string]string{"alice": "pf-secret"}})
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.test", Key: f.key1})
	tr := &transport.Submission{Addr: pf.SubmissionAddr, Mode: transport.StartTLS, ServerName: "localhost",
		TLSConfig: &tls.Config{RootCAs: pf.RootCAs()}, Auth: &transport.Auth{Username: "alice", Password: "pf-secret"}, LocalName: "client.test"}
	defer tr.Close()
	s := newSender(t, tr, newProtector(t, storeOf(t, ann), smime.Options{}))
	m := message("ann@example.test")
	m.From = "app@example.test"
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	raw := pf.Wait(t, "ann", 1)[0]
	if bytes.Contains(raw, []byte(canary)) || bytes.Contains(raw, []byte(realSubject)) {
		t.Fatalf("plaintext in the Maildir file:\n%s", raw)
	}
	dir := t.TempDir()
	crt, keyPath := keyFiles(t, dir, "ann", ann)
	checkPlain(t, opensslDecrypt(t, dir, raw, crt, keyPath))
	env := gpgsmHome(t, f.ca, ann)
	checkPlain(t, gpgsmDecrypt(t, env, bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))))
}

// A message of several encrypted chunks, with an attachment, is decrypted
// by openssl cms, openssl smime and gpgsm to the same bytes as by the Go
// pkcs7 package.
func TestInteropManyChunks(t *testing.T) {
	needTool(t, "openssl", "gpgsm", "gpgconf")
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, newProtector(t, storeOf(t, ann), smime.Options{}))
	m := message("ann@example.org")
	m.Text = strings.Repeat("Line of text,\nand another\r\n", 3000) + canary + "\n"
	m.Attachments = []mailsec.Attachment{{Filename: "data.bin", Content: io.LimitReader(zeroReader{}, 150<<10)}}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	raw := rt.Deliveries()[0].Data
	checkOpaque(t, raw)
	_, body, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	p7, err := pkcs7.Parse(decodeBody(t, body))
	if err != nil {
		t.Fatal(err)
	}
	want, err := p7.Decrypt(ann.Leaf, f.key1)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 200<<10 {
		t.Fatalf("only %d octets of content", len(want))
	}
	dir := t.TempDir()
	crt, key := keyFiles(t, dir, "ann", ann)
	if got := opensslDecrypt(t, dir, raw, crt, key); got != string(want) {
		t.Fatalf("openssl decrypts %d octets, pkcs7 %d, not the same", len(got), len(want))
	}
	env := gpgsmHome(t, f.ca, ann)
	if got := gpgsmDecrypt(t, env, raw); got != string(want) {
		t.Fatalf("gpgsm decrypts %d octets, pkcs7 %d, not the same", len(got), len(want))
	}
	checkPlain(t, string(want))
}
