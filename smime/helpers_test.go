package smime_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/tooltest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// fixture holds what many tests share: RSA key generation is the slow
// part, so keys are made once per test binary and certified many times.
type fixture struct {
	ca, otherCA      *mailsectest.CA
	key1, key2, key3 *rsa.PrivateKey
	key1024          *rsa.PrivateKey
}

var (
	fixOnce sync.Once
	fix     fixture
	fixErr  error
)

func getFixture(t testing.TB) *fixture {
	t.Helper()
	fixOnce.Do(func() {
		if fix.ca, fixErr = mailsectest.NewCA(); fixErr != nil {
			return
		}
		if fix.otherCA, fixErr = mailsectest.NewCA(); fixErr != nil {
			return
		}
		for _, k := range []**rsa.PrivateKey{&fix.key1, &fix.key2, &fix.key3} {
			if *k, fixErr = rsa.GenerateKey(rand.Reader, 2048); fixErr != nil {
				return
			}
		}
		fix.key1024, fixErr = rsa.GenerateKey(rand.Reader, 1024)
	})
	if fixErr != nil {
		t.Fatal(fixErr)
	}
	return &fix
}

func issue(t testing.TB, ca *mailsectest.CA, o mailsectest.SMIMEOptions) tls.Certificate {
	t.Helper()
	c, err := ca.IssueSMIME(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func storeOf(t testing.TB, certs ...tls.Certificate) *smime.CertStore {
	t.Helper()
	var b bytes.Buffer
	for _, c := range certs {
		b.Write(mailsectest.LeafPEM(c))
	}
	s, err := smime.ReadCertificates(&b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newProtector(t testing.TB, certs smime.CertSource, o smime.Options) *smime.Protector {
	t.Helper()
	if o.Roots == nil {
		o.Roots = getFixture(t).ca.Pool()
	}
	p, err := smime.New(certs, &o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newSender(t testing.TB, tr mailsec.Transport, p mailsec.Protector) *mailsec.Sender {
	t.Helper()
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	canary      = "body-canary-7f3a9c"
	realSubject = "Quarterly numbers 4b1e"
)

func message(to ...string) *mailsec.Message {
	return &mailsec.Message{From: "App <app@example.com>", To: to, Subject: realSubject,
		Text: "Hello,\n" + canary + "\nregards\n"}
}

// needTool skips (or fails under CI) when a command-line tool is missing.
func needTool(t testing.TB, names ...string) {
	t.Helper()
	tooltest.Need(t, names...)
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type runResult struct {
	stdout, stderr string
	err            error
}

func run(stdin []byte, env []string, name string, args ...string) runResult {
	r := tooltest.Run(stdin, env, name, args...)
	return runResult{r.Stdout, r.Stderr, r.Err}
}

// keyFiles writes a certificate (leaf) and its PKCS#8 key for openssl.
func keyFiles(t testing.TB, dir, name string, c tls.Certificate) (certPath, keyPath string) {
	t.Helper()
	_, key, err := mailsectest.PEM(c)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name+".crt", mailsectest.LeafPEM(c)), writeFile(t, dir, name+".key", key)
}

// opensslDecrypt decrypts a whole S/MIME message file with openssl cms
// and openssl smime and checks that both give the same plaintext.
func opensslDecrypt(t testing.TB, dir string, raw []byte, certPath, keyPath string) string {
	t.Helper()
	in := writeFile(t, dir, "msg.eml", raw)
	r := run(nil, nil, "openssl", "cms", "-decrypt", "-in", in, "-recip", certPath, "-inkey", keyPath)
	if r.err != nil {
		t.Fatalf("openssl cms -decrypt: %v\n%s", r.err, r.stderr)
	}
	r2 := run(nil, nil, "openssl", "smime", "-decrypt", "-in", in, "-recip", certPath, "-inkey", keyPath)
	if r2.err != nil {
		t.Fatalf("openssl smime -decrypt: %v\n%s", r2.err, r2.stderr)
	}
	if r.stdout != r2.stdout {
		t.Fatal("openssl cms and openssl smime disagree")
	}
	return r.stdout
}

// checkOpaque fails when the raw message shows the body or the Subject.
func checkOpaque(t testing.TB, raw []byte) {
	t.Helper()
	if bytes.Contains(raw, []byte(canary)) || bytes.Contains(raw, []byte(realSubject)) {
		t.Fatalf("plaintext on the wire:\n%s", raw)
	}
	if !bytes.Contains(raw, []byte("Subject: ...\r\n")) {
		t.Fatalf("outer Subject is not \"...\":\n%s", raw)
	}
	if !bytes.Contains(raw, []byte("application/pkcs7-mime; smime-type=enveloped-data")) {
		t.Fatalf("not S/MIME enveloped-data:\n%s", raw)
	}
}

func checkPlain(t testing.TB, plain string) {
	t.Helper()
	if !strings.Contains(plain, canary) || !strings.Contains(plain, "Subject: "+realSubject) ||
		!strings.Contains(strings.ReplaceAll(plain, `"`, ""), `protected-headers=v1`) {
		t.Fatalf("decrypted content lacks the body canary or the protected headers:\n%s", plain)
	}
}

// gpgsmHome makes a short GNUPGHOME trusting ca, with the keys of certs
// imported, and returns the environment that selects it.
func gpgsmHome(t testing.TB, ca *mailsectest.CA, certs ...tls.Certificate) []string {
	t.Helper()
	return tooltest.NewGPGSM(t, ca, certs...).Env()
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, len(b)*2)
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// signatureOf decrypts pr's output (EnvelopedData or AuthEnvelopedData)
// with ann's key (key1) and returns the DER of its detached signature.
func signatureOf(t testing.TB, pr *mailsec.Protected, ann *x509.Certificate, key *rsa.PrivateKey) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := pr.Entity.Body.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(b.String(), "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	plain, _, _, err := smime.OpenCMS(der, ann, key)
	if err != nil {
		t.Fatal(err)
	}
	_, sig := splitSigned(t, string(plain))
	sigDER, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(sig), "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	return sigDER
}

func mailsectestOpts(email string, f *fixture) mailsectest.SMIMEOptions {
	return mailsectest.SMIMEOptions{Email: email, Key: f.key1}
}

func mailsectestLeaf(c tls.Certificate) []byte { return mailsectest.LeafPEM(c) }

func contextBG() context.Context { return context.Background() }

// berChildren parses b as one constructed value with identifier octet
// tag and returns its elements.
func berChildren(t testing.TB, b []byte, tag byte) []smime.BERValue {
	t.Helper()
	v, rest, err := smime.ParseBER(b, 0)
	if err != nil || len(rest) != 0 || v.Tag != tag || !v.Constructed {
		t.Fatalf("want one constructed value %#x: %v (%d octets left)", tag, err, len(rest))
	}
	var out []smime.BERValue
	for in := v.Content; len(in) > 0; {
		var c smime.BERValue
		if c, in, err = smime.ParseBER(in, 0); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}
