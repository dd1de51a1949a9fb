package mailsectest

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mailsec/mailsec/internal/cmsread"
	"github.com/smallstep/pkcs7"
)

// OpenSMIME decrypts a received S/MIME message (application/pkcs7-mime
// enveloped-data or authEnveloped-data, as package smime writes it:
// AES-CBC or AES-GCM content, RSA PKCS #1 v1.5 or RSAES-OAEP with SHA-256
// key transport) with cert, a recipient's
// certificate and private key (what CA.IssueSMIME returns), and returns
// its protected content. When the content is signed (multipart/signed
// with an application/pkcs7-signature), the signature must verify, and
// with roots not nil the signer's certificate must chain to roots for
// e-mail protection; with roots nil only the signature itself is checked.
// A signature that does not verify is an error. A message that is not
// encrypted is an error too.
func OpenSMIME(raw []byte, cert tls.Certificate, roots *x509.CertPool) (*Opened, error) {
	leaf := cert.Leaf
	if leaf == nil && len(cert.Certificate) > 0 {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("mailsectest: OpenSMIME: certificate: %w", err)
		}
	}
	if leaf == nil || cert.PrivateKey == nil {
		return nil, errors.New("mailsectest: OpenSMIME: no certificate or no private key")
	}
	outer, params, der, err := readOuter(raw, "application/pkcs7-mime", "application/x-pkcs7-mime")
	if err != nil {
		return nil, err
	}
	if st := strings.ToLower(params["smime-type"]); st != "" && st != "enveloped-data" && st != "authenveloped-data" {
		return nil, fmt.Errorf("mailsectest: smime-type %s is not encrypted", st)
	}
	d, err := decryptCMS(der, leaf, cert.PrivateKey)
	if err != nil {
		return nil, err
	}
	content := d.Content
	if !isMultipartSigned(content) {
		o, err := opened(outer, content)
		if err != nil {
			return nil, err
		}
		o.KeyTransport, o.ContentCipher = d.KeyTransport, d.ContentCipher
		return o, nil
	}
	part, sig, err := splitSigned(content, "application/pkcs7-signature", "application/x-pkcs7-signature")
	if err != nil {
		return nil, fmt.Errorf("mailsectest: %w", err)
	}
	sigDER, err := io.ReadAll(io.LimitReader(sig.Body, maxOpen))
	if err != nil {
		return nil, err
	}
	signer, err := verifySMIME(part, sigDER, roots)
	if err != nil {
		return nil, err
	}
	o, err := opened(outer, part)
	if err != nil {
		return nil, err
	}
	o.Signed, o.SignerCertificate = true, signer
	o.KeyTransport, o.ContentCipher = d.KeyTransport, d.ContentCipher
	return o, nil
}

// decryptCMS decrypts a CMS ContentInfo (EnvelopedData or
// AuthEnvelopedData) for leaf.
func decryptCMS(der []byte, leaf *x509.Certificate, key any) (*cmsread.Decrypted, error) {
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("mailsectest: OpenSMIME: a %T cannot receive RSA key transport, want *rsa.PrivateKey", key)
	}
	d, err := cmsread.Decrypt(der, leaf, rk)
	if err != nil {
		return nil, fmt.Errorf("mailsectest: decrypting for %s: %w", leaf.Subject, err)
	}
	return d, nil
}

// verifySMIME checks a detached SignedData over part and returns the
// signer's certificate.
func verifySMIME(part, sigDER []byte, roots *x509.CertPool) (signer *x509.Certificate, err error) {
	defer func() {
		if v := recover(); v != nil {
			signer, err = nil, fmt.Errorf("mailsectest: S/MIME signature: %v", v)
		}
	}()
	p7, err := pkcs7.Parse(sigDER)
	if err != nil {
		return nil, fmt.Errorf("mailsectest: S/MIME signature: %w", err)
	}
	if len(p7.Signers) != 1 {
		return nil, fmt.Errorf("mailsectest: S/MIME signature with %d signers, want 1", len(p7.Signers))
	}
	p7.Content = part
	if err := p7.Verify(); err != nil {
		return nil, fmt.Errorf("mailsectest: S/MIME signature does not verify: %w", err)
	}
	signer = p7.GetOnlySigner()
	if signer == nil {
		return nil, errors.New("mailsectest: S/MIME signature without the signer's certificate")
	}
	if roots != nil {
		inter := x509.NewCertPool()
		for _, c := range p7.Certificates {
			inter.AddCert(c)
		}
		if _, err := signer.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}); err != nil {
			return nil, fmt.Errorf("mailsectest: S/MIME signer %s: %w", signer.Subject, err)
		}
	}
	return signer, nil
}
