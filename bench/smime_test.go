package bench_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// smimeDiscard accepts every delivery and writes its content to
// io.Discard: what is left is the cost of building and protecting.
type smimeDiscard struct{}

func (smimeDiscard) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if _, err := d.Content.WriteTo(io.Discard); err != nil {
		return nil, err
	}
	res := &mailsec.DeliveryResult{}
	for _, to := range d.To {
		res.Recipients = append(res.Recipients, mailsec.RecipientResult{Address: to, Accepted: true})
	}
	return res, nil
}

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
	s, err := mailsec.NewSender(smimeDiscard{}, &mailsec.Options{
		Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protector: p})
	if err != nil {
		b.Fatal(err)
	}
	m := &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "Report", Text: smimeText}
	b.SetBytes(int64(len(smimeText)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Send(context.Background(), m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSMIMEPlainSend sends the message of BenchmarkSMIMESend through
// the same transport with no protection: the cost of building it.
func BenchmarkSMIMEPlainSend(b *testing.B) {
	s, err := mailsec.NewSender(smimeDiscard{}, &mailsec.Options{Policy: mailsec.DefaultPolicy()})
	if err != nil {
		b.Fatal(err)
	}
	m := &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "Report", Text: smimeText}
	b.SetBytes(int64(len(smimeText)))
	b.ReportAllocs()
	for b.Loop() {
		rec, err := s.Send(context.Background(), m)
		if err != nil {
			b.Fatal(err)
		}
		if rec.Recipients[0].Protection != nil {
			b.Fatal("protected")
		}
	}
}

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
