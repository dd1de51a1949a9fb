package mailsectest_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/smallstep/pkcs7"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/tooltest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/smime"
)

const (
	openCanary  = "result-canary-51c2"
	openSubject = "Your lab result 0f3e"
)

func labResult(to string) *mailsec.Message {
	return &mailsec.Message{From: "Lab <lab@example.com>", To: []string{to}, Subject: openSubject,
		Text: "Dear patient,\n" + openCanary + "\n"}
}

// sendVia sends labResult through a Sender with p over a test server and
// returns what the server received.
func sendVia(t *testing.T, p mailsec.Protector, to string) []byte {
	t.Helper()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{
		Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), labResult(to)); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	raw := msgs[0].Data
	if bytes.Contains(raw, []byte(openCanary)) || bytes.Contains(raw, []byte(openSubject)) {
		t.Fatal("plaintext on the wire")
	}
	return raw
}

// checkOpened checks what every recipient should read.
func checkOpened(t *testing.T, o *mailsectest.Opened) {
	t.Helper()
	if s, _ := o.Outer.Subject(); s != "..." {
		t.Fatalf("outer Subject %q", s)
	}
	if s, err := o.Header.Subject(); err != nil || s != openSubject {
		t.Fatalf("protected Subject %q, %v", s, err)
	}
	if from, err := o.Header.AddressList("From"); err != nil || len(from) != 1 || from[0].Address != "lab@example.com" {
		t.Fatalf("protected From %v, %v", from, err)
	}
	text, err := o.Text()
	if err != nil || !strings.Contains(text, openCanary) {
		t.Fatalf("text %q, %v", text, err)
	}
	e, err := o.Entity()
	if err != nil || e.Header.Get("Subject") != openSubject {
		t.Fatalf("Entity: %v", err)
	}
}

func pgpKey(t *testing.T, name, addr string) *openpgp.Entity {
	t.Helper()
	k, err := mailsectest.NewPGPKey(name, addr, mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestOpenPGP(t *testing.T) {
	ann := pgpKey(t, "Ann", "ann@example.org")
	lab := pgpKey(t, "Lab", "lab@example.com")
	eve := pgpKey(t, "Eve", "eve@example.org")
	unsignedP, err := pgp.New(pgp.NewKeyRing(ann), nil)
	if err != nil {
		t.Fatal(err)
	}
	signedP, err := pgp.New(pgp.NewKeyRing(ann), &pgp.Options{Signer: lab})
	if err != nil {
		t.Fatal(err)
	}

	raw := sendVia(t, unsignedP, "ann@example.org")
	o, err := mailsectest.OpenPGP(raw, ann)
	if err != nil {
		t.Fatal(err)
	}
	checkOpened(t, o)
	if o.Signed || o.SignerKey != nil {
		t.Fatal("unsigned message reported as signed")
	}
	if _, err := mailsectest.OpenPGP(raw, eve); err == nil {
		t.Fatal("decrypted with a key it was not encrypted to")
	}

	raw = sendVia(t, signedP, "ann@example.org")
	o, err = mailsectest.OpenPGP(raw, ann, eve, lab)
	if err != nil {
		t.Fatal(err)
	}
	checkOpened(t, o)
	if !o.Signed || o.SignerKey == nil || o.SignerKey.PrimaryKey.Fingerprint == nil ||
		!bytes.Equal(o.SignerKey.PrimaryKey.Fingerprint, lab.PrimaryKey.Fingerprint) {
		t.Fatal("signed message not reported as signed by the lab's key")
	}
	if _, err := mailsectest.OpenPGP(raw, ann); err == nil || !strings.Contains(err.Error(), "signer") {
		t.Fatalf("signed message opened without a signer key to check it: %v", err)
	}
	if _, err := mailsectest.OpenPGP(raw, ann, eve); err == nil {
		t.Fatal("signature accepted from a key that did not make it")
	}

	// The signed content changed after signing, encrypted again: the
	// signature no longer verifies.
	plain := decryptPGP(t, raw, ann)
	tampered := bytes.Replace(plain, []byte(openCanary), []byte("result-canary-00000"), 1)
	if bytes.Equal(tampered, plain) {
		t.Fatal("canary not in the decrypted content")
	}
	if _, err := mailsectest.OpenPGP(pgpMIME(t, tampered, ann), ann, lab); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("tampered content: %v", err)
	}
	// The same content untampered, encrypted the same way, opens: the
	// failure above is the signature's.
	if _, err := mailsectest.OpenPGP(pgpMIME(t, plain, ann), ann, lab); err != nil {
		t.Fatal(err)
	}

	// A message that is not encrypted is refused.
	if _, err := mailsectest.OpenPGP([]byte("Subject: hi\r\nContent-Type: text/plain\r\n\r\n"+openCanary+"\r\n"), ann); err == nil {
		t.Fatal("plain message opened")
	}
}

// decryptPGP returns the content of a PGP/MIME message, decrypted with
// go-crypto directly.
func decryptPGP(t *testing.T, raw []byte, key *openpgp.Entity) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte("-----BEGIN PGP MESSAGE-----"))
	j := bytes.Index(raw, []byte("-----END PGP MESSAGE-----"))
	if i < 0 || j < 0 {
		t.Fatal("no armored message")
	}
	b, err := armor.Decode(bytes.NewReader(raw[i : j+len("-----END PGP MESSAGE-----")]))
	if err != nil {
		t.Fatal(err)
	}
	md, err := openpgp.ReadMessage(b.Body, openpgp.EntityList{key}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := out.ReadFrom(md.UnverifiedBody); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// pgpMIME encrypts content to key as a PGP/MIME message.
func pgpMIME(t *testing.T, content []byte, key *openpgp.Entity) []byte {
	t.Helper()
	var arm bytes.Buffer
	aw, err := armor.Encode(&arm, "PGP MESSAGE", nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := openpgp.Encrypt(aw, openpgp.EntityList{key}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(content)
	w.Close()
	aw.Close()
	return []byte("From: lab@example.com\r\nSubject: ...\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/encrypted; boundary=\"b1\"; protocol=\"application/pgp-encrypted\"\r\n\r\n" +
		"--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\n\r\n" + arm.String() + "\r\n--b1--\r\n")
}

// smimeFixture is a CA, a patient's certificate and the lab's signing
// certificate.
type smimeFixture struct {
	ca       *mailsectest.CA
	ann, lab tls.Certificate
	eve      tls.Certificate // another CA's
	evesCA   *mailsectest.CA
}

func newSMIMEFixture(t *testing.T) *smimeFixture {
	t.Helper()
	f := &smimeFixture{}
	var err error
	if f.ca, err = mailsectest.NewCA(); err != nil {
		t.Fatal(err)
	}
	if f.evesCA, err = mailsectest.NewCA(); err != nil {
		t.Fatal(err)
	}
	if f.ann, err = f.ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"}); err != nil {
		t.Fatal(err)
	}
	if f.lab, err = f.ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "lab@example.com"}); err != nil {
		t.Fatal(err)
	}
	if f.eve, err = f.evesCA.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"}); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestOpenSMIME(t *testing.T) {
	f := newSMIMEFixture(t)
	store := smime.NewCertStore(f.ann.Leaf)
	unsignedP, err := smime.New(store, &smime.Options{Roots: f.ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := smime.NewSigner([]*x509.Certificate{f.lab.Leaf}, f.lab.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	signedP, err := smime.New(store, &smime.Options{Roots: f.ca.Pool(), Signer: signer})
	if err != nil {
		t.Fatal(err)
	}

	raw := sendVia(t, unsignedP, "ann@example.org")
	o, err := mailsectest.OpenSMIME(raw, f.ann, f.ca.Pool())
	if err != nil {
		t.Fatal(err)
	}
	checkOpened(t, o)
	if o.Signed || o.SignerCertificate != nil {
		t.Fatal("unsigned message reported as signed")
	}
	if o.KeyTransport != "rsaEncryption" || o.ContentCipher != "aes256-cbc" {
		t.Fatalf("default algorithms read as %s and %s", o.KeyTransport, o.ContentCipher)
	}
	if _, err := mailsectest.OpenSMIME(raw, f.eve, f.ca.Pool()); err == nil {
		t.Fatal("decrypted with a certificate it was not encrypted to")
	}

	raw = sendVia(t, signedP, "ann@example.org")
	o, err = mailsectest.OpenSMIME(raw, f.ann, f.ca.Pool())
	if err != nil {
		t.Fatal(err)
	}
	checkOpened(t, o)
	if !o.Signed || o.SignerCertificate == nil || !o.SignerCertificate.Equal(f.lab.Leaf) {
		t.Fatal("signed message not reported as signed by the lab's certificate")
	}
	if o, err := mailsectest.OpenSMIME(raw, f.ann, nil); err != nil || !o.Signed {
		t.Fatalf("without roots: %v", err)
	}
	if _, err := mailsectest.OpenSMIME(raw, f.ann, f.evesCA.Pool()); err == nil {
		t.Fatal("signer accepted under roots it does not chain to")
	}

	// The signed content changed after signing, encrypted again: the
	// signature no longer verifies; untampered, the same way, it opens.
	plain := decryptSMIME(t, raw, f.ann)
	tampered := bytes.Replace(plain, []byte(openCanary), []byte("result-canary-00000"), 1)
	if bytes.Equal(tampered, plain) {
		t.Fatal("canary not in the decrypted content")
	}
	if _, err := mailsectest.OpenSMIME(smimeMessage(t, tampered, f.ann), f.ann, f.ca.Pool()); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("tampered content: %v", err)
	}
	if _, err := mailsectest.OpenSMIME(smimeMessage(t, plain, f.ann), f.ann, f.ca.Pool()); err != nil {
		t.Fatal(err)
	}

	if _, err := mailsectest.OpenSMIME([]byte("Subject: hi\r\nContent-Type: text/plain\r\n\r\n"+openCanary+"\r\n"), f.ann, nil); err == nil {
		t.Fatal("plain message opened")
	}
}

// decryptSMIME returns the content of an S/MIME message, decrypted with
// pkcs7 directly.
func decryptSMIME(t *testing.T, raw []byte, c tls.Certificate) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte("\r\n\r\n"))
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(raw[i+4:]), "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := p7.Decrypt(c.Leaf, c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// smimeMessage encrypts content to c as an S/MIME message, with
// openssl, which OpenSMIME must read as well as what package smime writes.
func smimeMessage(t *testing.T, content []byte, c tls.Certificate) []byte {
	t.Helper()
	tooltest.Need(t, "openssl")
	dir := t.TempDir()
	in := filepath.Join(dir, "content")
	crt := filepath.Join(dir, "ann.crt")
	if err := os.WriteFile(in, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crt, mailsectest.LeafPEM(c), 0o600); err != nil {
		t.Fatal(err)
	}
	return []byte(tooltest.Must(t, nil, nil, "openssl", "smime", "-encrypt", "-aes256", "-binary", "-in", in,
		"-subject", "...", "-from", "lab@example.com", crt))
}

// What openssl signs and encrypts (the other way round from package
// smime's test above: openssl's signature, openssl's encryption) opens.
func TestOpenSMIMEFromOpenSSL(t *testing.T) {
	tooltest.Need(t, "openssl")
	f := newSMIMEFixture(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, labKey, err := mailsectest.PEM(f.lab)
	if err != nil {
		t.Fatal(err)
	}
	content := "Content-Type: multipart/mixed; boundary=\"m\"; protected-headers=\"v1\"\r\n" +
		"Subject: " + openSubject + "\r\nFrom: Lab <lab@example.com>\r\n\r\n" +
		"--m\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDear patient,\r\n" + openCanary + "\r\n--m--\r\n"
	signed := tooltest.Must(t, nil, nil, "openssl", "smime", "-sign", "-in", write("content", []byte(content)),
		"-signer", write("lab.crt", mailsectest.LeafPEM(f.lab)), "-inkey", write("lab.key", labKey))
	raw := tooltest.Must(t, nil, nil, "openssl", "smime", "-encrypt", "-aes256", "-in", write("signed", []byte(signed)),
		"-subject", "...", "-from", "lab@example.com", write("ann.crt", mailsectest.LeafPEM(f.ann)))
	o, err := mailsectest.OpenSMIME([]byte(raw), f.ann, f.ca.Pool())
	if err != nil {
		t.Fatal(err)
	}
	checkOpened(t, o)
	if !o.Signed || !o.SignerCertificate.Equal(f.lab.Leaf) {
		t.Fatal("openssl's signature not reported")
	}
}

// A message sent with AES-256-GCM (AuthEnvelopedData) and RSA-OAEP opens,
// signed, and says so; one changed octet of its ciphertext, its tag or
// its nonce, and it does not.
func TestOpenSMIMEAuthEnveloped(t *testing.T) {
	f := newSMIMEFixture(t)
	signer, err := smime.NewSigner([]*x509.Certificate{f.lab.Leaf}, f.lab.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	p, err := smime.New(smime.NewCertStore(f.ann.Leaf), &smime.Options{Roots: f.ca.Pool(), Signer: signer,
		Algorithms: smime.Algorithms{GCM: true, OAEP: true}})
	if err != nil {
		t.Fatal(err)
	}
	raw := sendVia(t, p, "ann@example.org")
	if !bytes.Contains(raw, []byte("smime-type=authEnveloped-data")) {
		t.Fatalf("not sent as authEnveloped-data:\n%.400s", raw)
	}
	o, err := mailsectest.OpenSMIME(raw, f.ann, f.ca.Pool())
	if err != nil {
		t.Fatal(err)
	}
	checkOpened(t, o)
	if !o.Signed || !o.SignerCertificate.Equal(f.lab.Leaf) {
		t.Fatal("signature not reported")
	}
	if o.KeyTransport != "rsaes-oaep-sha256" || o.ContentCipher != "aes256-gcm" {
		t.Fatalf("read as %s and %s", o.KeyTransport, o.ContentCipher)
	}
	if _, err := mailsectest.OpenSMIME(raw, f.eve, f.ca.Pool()); err == nil {
		t.Fatal("decrypted with a certificate it was not encrypted to")
	}

	head, der := splitSMIME(t, raw)
	// The writer streams indefinite lengths: the 16-octet tag is the last
	// OCTET STRING, before the end-of-contents octets of the mac's
	// AuthEnvelopedData, [0] and ContentInfo; the GCMParameters nonce
	// follows its OCTET STRING header 04 0c.
	tagAt := len(der) - 6 - 1
	nonceAt := bytes.Index(der, []byte{0x30, 0x11, 0x04, 0x0c}) + 4
	if nonceAt < 4 || der[tagAt-16] != 0x10 || der[tagAt-17] != 0x04 {
		t.Fatalf("unexpected layout: % x", der[len(der)-32:])
	}
	for name, off := range map[string]int{"ciphertext": tagAt - 40, "tag": tagAt, "nonce": nonceAt + 3} {
		bad := bytes.Clone(der)
		bad[off] ^= 0x01
		_, err := mailsectest.OpenSMIME(joinSMIME(head, bad), f.ann, f.ca.Pool())
		if err == nil || !strings.Contains(err.Error(), "aes256-gcm") {
			t.Fatalf("a changed octet of the %s: %v", name, err)
		}
	}
	if _, err := mailsectest.OpenSMIME(joinSMIME(head, der), f.ann, f.ca.Pool()); err != nil {
		t.Fatalf("re-encoded unchanged: %v", err)
	}
}

// What openssl cms writes as AES-256-GCM with RSA-OAEP opens too.
func TestOpenSMIMEAuthEnvelopedFromOpenSSL(t *testing.T) {
	tooltest.Need(t, "openssl")
	f := newSMIMEFixture(t)
	dir := t.TempDir()
	in, crt := filepath.Join(dir, "content"), filepath.Join(dir, "ann.crt")
	content := "Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\n" +
		"Subject: " + openSubject + "\r\nFrom: Lab <lab@example.com>\r\n\r\nDear patient,\r\n" + openCanary + "\r\n"
	if err := os.WriteFile(in, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crt, mailsectest.LeafPEM(f.ann), 0o600); err != nil {
		t.Fatal(err)
	}
	raw := tooltest.Must(t, nil, nil, "openssl", "cms", "-encrypt", "-aes-256-gcm", "-binary", "-in", in,
		"-subject", "...", "-from", "lab@example.com", "-recip", crt,
		"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha256")
	o, err := mailsectest.OpenSMIME([]byte(raw), f.ann, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkOpened(t, o)
	if o.KeyTransport != "rsaes-oaep-sha256" || o.ContentCipher != "aes256-gcm" {
		t.Fatalf("read as %s and %s", o.KeyTransport, o.ContentCipher)
	}
}

// splitSMIME returns the header of an S/MIME message and its decoded body.
func splitSMIME(t *testing.T, raw []byte) (head, der []byte) {
	t.Helper()
	i := bytes.Index(raw, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatal("no header")
	}
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(raw[i+4:]), "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	return raw[:i+4], der
}

// joinSMIME is the other way round from splitSMIME.
func joinSMIME(head, der []byte) []byte {
	out := bytes.Clone(head)
	b := base64.StdEncoding.EncodeToString(der)
	for len(b) > 76 {
		out = append(out, b[:76]+"\r\n"...)
		b = b[76:]
	}
	return append(out, b+"\r\n"...)
}
