package smime_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/mailsec/mailsec/smime"
)

// ReadCertificates never panics and either fails or returns certificates.
func FuzzReadCertificates(f *testing.F) {
	fx := getFixture(f)
	ann := issue(f, fx.ca, mailsectestOpts("ann@example.org", fx))
	f.Add(mailsectestLeaf(ann))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 64<<10 {
			return
		}
		s, err := smime.ReadCertificates(bytes.NewReader(in))
		if err == nil && len(s.Certificates()) == 0 {
			t.Fatal("no error and no certificates")
		}
	})
}

// pkcs7.Parse of bounded input never panics (or, when the library does,
// the panic is the library's: the fuzzer reports it).
func FuzzParsePKCS7(f *testing.F) {
	fx := getFixture(f)
	ann := issue(f, fx.ca, mailsectestOpts("ann@example.org", fx))
	p := newProtector(f, storeOf(f, ann), smime.Options{})
	pr, err := p.Protect(contextBG(), testEntity(), []string{"ann@example.org"})
	if err != nil {
		f.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := pr.Entity.Body.WriteTo(&b); err != nil {
		f.Fatal(err)
	}
	f.Add(decodeBody(f, b.Bytes()))
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 64<<10 {
			return
		}
		p7, err := pkcs7.Parse(in)
		if err == nil && p7 == nil {
			t.Fatal("nil result without error")
		}
	})
}

// CheckCertificate never panics on what a user uploads, and either
// accepts with a certificate and a fingerprint or refuses with a
// *CertificateError.
func FuzzCheckCertificate(f *testing.F) {
	fx := getFixture(f)
	ann := issue(f, fx.ca, mailsectestOpts("ann@example.org", fx))
	p := newProtector(f, smime.NewCertStore(), smime.Options{})
	f.Add(mailsectestLeaf(ann))
	f.Add(ann.Leaf.Raw)
	f.Add([]byte("-----BEGIN PKCS7-----\nMIAGCSqGSIb3DQEHAqCAMIACAQExADALBgkqhkiG9w0BBwGggDCA\n-----END PKCS7-----\n"))
	f.Add([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		chk, err := p.CheckCertificate(contextBG(), in, "ann@example.org")
		var ce *smime.CertificateError
		switch {
		case err == nil && (chk == nil || chk.Certificate == nil || len(chk.Fingerprint) != 64):
			t.Fatalf("accepted without a certificate: %+v", chk)
		case err != nil && !errors.As(err, &ce):
			t.Fatalf("untyped refusal: %v", err)
		}
	})
}
