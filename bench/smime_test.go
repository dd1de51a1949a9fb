package bench_test

import (
	"bytes"
	"crypto/x509"
	"strings"
	"sync"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

var smimeFix struct {
	once  sync.Once
	ca    *mailsectest.CA
	cert  *x509.Certificate
	store *smime.CertStore
	err   error
}

func smimeSetup(b *testing.B) {
	smimeFix.once.Do(func() {
		f := &smimeFix
		if f.ca, f.err = mailsectest.NewCA(); f.err != nil {
			return
		}
		c, err := f.ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"})
		if err != nil {
			f.err = err
			return
		}
		f.cert = c.Leaf
		f.store, f.err = smime.ReadCertificates(bytes.NewReader(mailsectest.LeafPEM(c)))
	})
	if smimeFix.err != nil {
		b.Fatal(smimeFix.err)
	}
}

var smimeText = strings.Repeat("The quick brown fox jumps over the lazy dog 0123456789.\n", 10<<10/56)

// BenchmarkSMIMESend sends a 10 KB text message to one RSA-2048 recipient
// through a Sender that requires S/MIME.
func BenchmarkSMIMESend(b *testing.B) {
	smimeSetup(b)
	p, err := smime.New(smimeFix.store, &smime.Options{Roots: smimeFix.ca.Pool()})
	if err != nil {
		b.Fatal(err)
	}
	benchSend(b, p, smimeText)
}

// BenchmarkSMIMEPlainSend sends the message of BenchmarkSMIMESend through
// the same transport with no protection: the cost of building it.
func BenchmarkSMIMEPlainSend(b *testing.B) { benchSend(b, nil, smimeText) }

// BenchmarkSMIMEBare is the bare pkcs7 call on the same bytes and
// certificate, with the same algorithms (AES-256-CBC, RSA PKCS#1 v1.5).
func BenchmarkSMIMEBare(b *testing.B) {
	smimeSetup(b)
	content := []byte(strings.ReplaceAll(smimeText, "\n", "\r\n"))
	certs := []*x509.Certificate{smimeFix.cert}
	pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC
	pkcs7.KeyEncryptionAlgorithm = pkcs7.OIDEncryptionAlgorithmRSA
	b.SetBytes(int64(len(smimeText)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pkcs7.Encrypt(content, certs); err != nil {
			b.Fatal(err)
		}
	}
}
