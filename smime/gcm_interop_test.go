package smime_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"io"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// bodyDER returns the DER of the CMS object in a whole S/MIME message.
func bodyDER(t testing.TB, raw []byte) []byte {
	t.Helper()
	_, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatal("no body")
	}
	return decodeBody(t, body)
}

// openssl cms -decrypt (OpenSSL 3) reads AES-256-GCM AuthEnvelopedData
// with RSA-OAEP key transport for two recipients, across several chunks;
// the header says smime-type=authEnveloped-data and the Receipt
// aes256-gcm; openssl prints the algorithms we mean; and a changed octet
// of the ciphertext or of the tag makes openssl refuse the message.
func TestOpenSSLDecryptGCM(t *testing.T) {
	needTool(t, "openssl")
	if v := run(nil, nil, "openssl", "version"); !strings.HasPrefix(v.stdout, "OpenSSL 3.") {
		t.Fatalf("AuthEnvelopedData needs OpenSSL 3, have %q (%v)", v.stdout, v.err)
	}
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	bob := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "bob@example.org", Key: f.key2})
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, newProtector(t, storeOf(t, ann, bob),
		smime.Options{Algorithms: smime.Algorithms{GCM: true, OAEP: true}}))
	m := message("ann@example.org")
	m.Cc = []string{"bob@example.org"}
	m.Text = strings.Repeat("Line of text,\nand another\r\n", 2000) + canary + "\n"
	m.Attachments = []mailsec.Attachment{{Filename: "data.bin", Content: io.LimitReader(zeroReader{}, 40<<10)}}
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rec.Recipients {
		if r.Protection == nil || r.Protection.Cipher != "aes256-gcm" {
			t.Fatalf("receipt for %s: %+v", r.Address, r.Protection)
		}
	}
	ds := rt.Deliveries()
	if len(ds) != 1 {
		t.Fatalf("%d deliveries", len(ds))
	}
	raw := ds[0].Data
	if bytes.Contains(raw, []byte(canary)) || bytes.Contains(raw, []byte(realSubject)) {
		t.Fatal("plaintext on the wire")
	}
	if !bytes.Contains(raw, []byte("Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data;")) {
		t.Fatalf("not smime-type=authEnveloped-data:\n%.400s", raw)
	}

	dir := t.TempDir()
	in := writeFile(t, dir, "msg.eml", raw)
	var plains []string
	for _, c := range []struct {
		name string
		cert tls.Certificate
	}{{"ann", ann}, {"bob", bob}} {
		crt, key := keyFiles(t, dir, c.name, c.cert)
		r := run(nil, nil, "openssl", "cms", "-decrypt", "-in", in, "-recip", crt, "-inkey", key)
		if r.err != nil {
			t.Fatalf("openssl cms -decrypt for %s: %v\n%s", c.name, r.err, r.stderr)
		}
		checkPlain(t, r.stdout)
		plains = append(plains, r.stdout)
	}
	if plains[0] != plains[1] {
		t.Fatal("the recipients decrypt different content")
	}
	// The test's own reader (crypto/cipher's GCM) agrees with openssl.
	der := bodyDER(t, raw)
	want, keyAlg, cipherAlg, err := smime.OpenCMS(der, ann.Leaf, f.key1)
	if err != nil || string(want) != plains[0] || keyAlg != "rsaes-oaep-sha256" || cipherAlg != "aes256-gcm" {
		t.Fatalf("OpenCMS: %s %s, %d octets against openssl's %d: %v", keyAlg, cipherAlg, len(want), len(plains[0]), err)
	}

	r := run(nil, nil, "openssl", "cms", "-cmsout", "-print", "-in", in)
	if r.err != nil {
		t.Fatalf("openssl cms -cmsout -print: %v\n%s", r.err, r.stderr)
	}
	// Per recipient: rsaesOaep, SHA-256 as the hash and in MGF1; once:
	// aes-256-gcm with a 12-octet nonce and an ICV length of 16 (0x10).
	for w, n := range map[string]int{"contentType: id-smime-ct-authEnvelopedData": 1, "algorithm: aes-256-gcm": 1,
		"algorithm: rsaesOaep": 2, ":sha256\n": 4, ":mgf1\n": 2, "prim:  INTEGER           :10\n": 1,
		"prim:  OCTET STRING      [HEX DUMP]:": 1, "rsaEncryption": 0, "aes-256-cbc": 0} {
		if got := strings.Count(r.stdout, w); got != n {
			t.Fatalf("openssl cms -print shows %q %d times, want %d:\n%s", w, got, n, r.stdout)
		}
	}
	if i := strings.Index(r.stdout, "[HEX DUMP]:"); len(strings.Fields(r.stdout[i+len("[HEX DUMP]:"):])[0]) != 24 {
		t.Fatalf("nonce is not 12 octets:\n%s", r.stdout)
	}

	// Tampering, on the DER: the untouched DER decrypts, a changed octet
	// of ciphertext or tag does not.
	crt, key := keyFiles(t, dir, "ann", ann)
	decrypt := func(der []byte) runResult {
		return run(nil, nil, "openssl", "cms", "-decrypt", "-inform", "DER", "-in", writeFile(t, dir, "msg.der", der),
			"-recip", crt, "-inkey", key)
	}
	if r := decrypt(der); r.err != nil || r.stdout != plains[0] {
		t.Fatalf("openssl cms -decrypt -inform DER: %v\n%s", r.err, r.stderr)
	}
	const eocAuth = 6
	tagEnd := len(der) - eocAuth
	if !bytes.Equal(der[tagEnd-18:tagEnd-16], []byte{0x04, 0x10}) {
		t.Fatalf("no 16-octet mac before the end: % x", der[len(der)-30:])
	}
	ct := tagEnd - 18 - 4 - 1000 // within the last chunk of ciphertext
	for name, off := range map[string]int{"ciphertext": ct, "first tag octet": tagEnd - 16, "last tag octet": tagEnd - 1} {
		bad := bytes.Clone(der)
		bad[off] ^= 0x20
		r := decrypt(bad)
		if r.err == nil {
			t.Fatalf("openssl decrypted with a changed octet of the %s", name)
		}
		// The structure still parses: what fails is the decryption,
		// GCM's tag check.
		if !strings.Contains(r.stderr, "Error decrypting CMS structure") {
			t.Fatalf("changed %s: openssl failed otherwise than in decryption:\n%s", name, r.stderr)
		}
		if _, _, _, err := smime.OpenCMS(bad, ann.Leaf, f.key1); err == nil {
			t.Fatalf("OpenCMS opened a changed %s", name)
		}
	}
}

// With Options.Readers, one recipient whose reader is not known to take
// AES-GCM makes the whole message AES-256-CBC (an EnvelopedData openssl
// and every reader decrypt), while RSA-OAEP still goes to the recipient
// whose reader takes it and PKCS #1 v1.5 to the other; the Receipt says
// aes256-cbc. Sent to the modern reader alone, the message is GCM.
func TestReadersPerRecipient(t *testing.T) {
	needTool(t, "openssl")
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	bob := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "bob@example.org", Key: f.key2})
	var asked []string
	readers := func(_ context.Context, addr string, c *x509.Certificate) smime.Algorithms {
		asked = append(asked, addr+" "+c.EmailAddresses[0])
		if addr == "ann@example.org" {
			return smime.Algorithms{GCM: true, OAEP: true}
		}
		return smime.Algorithms{}
	}
	// Options.Algorithms is overridden by Readers for every recipient.
	p := newProtector(t, storeOf(t, ann, bob), smime.Options{Readers: readers, Algorithms: smime.Algorithms{GCM: true, OAEP: true}})
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, p)
	m := message("ann@example.org")
	m.Cc = []string{"bob@example.org"}
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rec.Recipients {
		if r.Protection == nil || r.Protection.Cipher != "aes256-cbc" {
			t.Fatalf("receipt for %s: %+v", r.Address, r.Protection)
		}
	}
	if len(asked) != 2 || asked[0] != "ann@example.org ann@example.org" || asked[1] != "bob@example.org bob@example.org" {
		t.Fatalf("Readers asked %q", asked)
	}
	raw := rt.Deliveries()[0].Data
	checkOpaque(t, raw)
	dir := t.TempDir()
	in := writeFile(t, dir, "msg.eml", raw)
	r := run(nil, nil, "openssl", "cms", "-cmsout", "-print", "-in", in)
	if r.err != nil {
		t.Fatalf("openssl cms -cmsout -print: %v\n%s", r.err, r.stderr)
	}
	if !strings.Contains(r.stdout, "contentType: pkcs7-envelopedData") || !strings.Contains(r.stdout, "aes-256-cbc") ||
		strings.Count(r.stdout, "algorithm: rsaesOaep") != 1 || strings.Count(r.stdout, "algorithm: rsaEncryption") != 1 {
		t.Fatalf("want CBC, one OAEP and one PKCS #1 v1.5 recipient:\n%s", r.stdout)
	}
	der := bodyDER(t, raw)
	for _, c := range []struct {
		name, keyAlg string
		cert         tls.Certificate
		key          *rsa.PrivateKey
	}{{"ann", "rsaes-oaep-sha256", ann, f.key1}, {"bob", "rsaEncryption", bob, f.key2}} {
		crt, key := keyFiles(t, dir, c.name, c.cert)
		// openssl smime (PKCS #7) has no RSA-OAEP; openssl cms has.
		r := run(nil, nil, "openssl", "cms", "-decrypt", "-in", in, "-recip", crt, "-inkey", key)
		if r.err != nil {
			t.Fatalf("openssl cms -decrypt for %s: %v\n%s", c.name, r.err, r.stderr)
		}
		checkPlain(t, r.stdout)
		if _, keyAlg, cipherAlg, err := smime.OpenCMS(der, c.cert.Leaf, c.key); err != nil || keyAlg != c.keyAlg || cipherAlg != "aes256-cbc" {
			t.Fatalf("%s: %s %s %v", c.name, keyAlg, cipherAlg, err)
		}
	}

	rt.Reset()
	if rec, err = s.Send(context.Background(), message("ann@example.org")); err != nil {
		t.Fatal(err)
	}
	if c := rec.Recipients[0].Protection.Cipher; c != "aes256-gcm" {
		t.Fatalf("ann alone: %s", c)
	}
	raw = rt.Deliveries()[0].Data
	if !bytes.Contains(raw, []byte("smime-type=authEnveloped-data")) {
		t.Fatal("ann alone: not authEnveloped-data")
	}
	crt, key := keyFiles(t, dir, "ann", ann)
	r = run(nil, nil, "openssl", "cms", "-decrypt", "-in", writeFile(t, dir, "ann.eml", raw), "-recip", crt, "-inkey", key)
	if r.err != nil {
		t.Fatalf("openssl cms -decrypt: %v\n%s", r.err, r.stderr)
	}
	checkPlain(t, r.stdout)
}

// gpgsm 2.2 cannot read AuthEnvelopedData nor RSA-OAEP key transport,
// which is why neither is the default: shown here for the gpgsm
// installed, when it is a 2.2. (Later versions may read them; then the
// test only checks that the default of the same message still decrypts.)
func TestGpgsm22RefusesStrongerAlgorithms(t *testing.T) {
	needTool(t, "gpgsm", "gpgconf", "openssl")
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	env := gpgsmHome(t, f.ca, ann)
	v := run(nil, env, "gpgsm", "--version")
	if v.err != nil {
		t.Fatal(v.err)
	}
	version, _, _ := strings.Cut(v.stdout, "\n")
	dir := t.TempDir()
	for _, a := range []smime.Algorithms{{GCM: true}, {OAEP: true}, {GCM: true, OAEP: true}} {
		rt := &mailsectest.RecordingTransport{}
		s := newSender(t, rt, newProtector(t, storeOf(t, ann), smime.Options{Algorithms: a}))
		if _, err := s.Send(context.Background(), message("ann@example.org")); err != nil {
			t.Fatal(err)
		}
		in := writeFile(t, dir, "msg.der", bodyDER(t, rt.Deliveries()[0].Data))
		r := run([]byte("test\n"), env, "gpgsm", "--batch", "--status-fd", "2", "--pinentry-mode", "loopback", "--passphrase-fd", "0",
			"--decrypt", in)
		t.Logf("%s, %+v: %v\n%s", version, a, r.err, r.stderr)
		if strings.HasPrefix(version, "gpgsm (GnuPG) 2.2.") &&
			(r.err == nil || strings.Contains(r.stderr, "DECRYPTION_OKAY") || strings.Contains(r.stdout, canary)) {
			t.Fatalf("%s decrypted %+v; the documentation says it cannot:\n%s", version, a, r.stderr)
		}
	}
	// The same message with the defaults is one gpgsm reads.
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, newProtector(t, storeOf(t, ann), smime.Options{}))
	if _, err := s.Send(context.Background(), message("ann@example.org")); err != nil {
		t.Fatal(err)
	}
	checkPlain(t, gpgsmDecrypt(t, env, rt.Deliveries()[0].Data))
}

// Signed, then encrypted with AES-256-GCM and RSA-OAEP: openssl cms
// decrypts it and verifies the signature inside.
func TestOpenSSLSignedGCM(t *testing.T) {
	needTool(t, "openssl")
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	app := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "app@example.com", Key: f.key2})
	signer, err := smime.NewSigner([]*x509.Certificate{app.Leaf, f.ca.Certificate}, f.key2)
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, newProtector(t, storeOf(t, ann),
		smime.Options{Signer: signer, Algorithms: smime.Algorithms{GCM: true, OAEP: true}}))
	rec, err := s.Send(context.Background(), message("ann@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if p := rec.Recipients[0].Protection; !p.Signed || p.Cipher != "aes256-gcm" {
		t.Fatalf("receipt: %+v", p)
	}
	dir := t.TempDir()
	crt, key := keyFiles(t, dir, "ann", ann)
	r := run(nil, nil, "openssl", "cms", "-decrypt", "-in", writeFile(t, dir, "msg.eml", rt.Deliveries()[0].Data),
		"-recip", crt, "-inkey", key)
	if r.err != nil {
		t.Fatalf("openssl cms -decrypt: %v\n%s", r.err, r.stderr)
	}
	checkPlain(t, r.stdout)
	v := run(nil, nil, "openssl", "cms", "-verify", "-in", writeFile(t, dir, "signed.eml", []byte(r.stdout)),
		"-CAfile", writeFile(t, dir, "ca.pem", f.ca.CertPEM()), "-purpose", "smimesign")
	if v.err != nil || !strings.Contains(v.stdout, canary) {
		t.Fatalf("openssl cms -verify: %v\n%s", v.err, v.stderr)
	}
}
