package mailsectest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/smallstep/pkcs7"
)

// OpenSMIME decrypts a received S/MIME message (application/pkcs7-mime
// enveloped-data, as package smime writes it) with cert, a recipient's
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
	content, err := decryptCMS(der, leaf, cert.PrivateKey)
	if err != nil {
		return nil, err
	}
	if !isMultipartSigned(content) {
		return opened(outer, content)
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
	return o, nil
}

// CMS content types (RFC 5652, RFC 5083).
var (
	oidEnvelopedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidAuthEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
)

// decryptCMS decrypts a CMS ContentInfo for leaf. Each content type it
// reads is a case of its switch.
func decryptCMS(der []byte, leaf *x509.Certificate, key any) (plain []byte, err error) {
	ct, err := cmsContentType(der)
	if err != nil {
		return nil, fmt.Errorf("mailsectest: CMS: %w", err)
	}
	defer func() {
		if v := recover(); v != nil {
			plain, err = nil, fmt.Errorf("mailsectest: CMS: %v", v)
		}
	}()
	switch {
	case ct.Equal(oidEnvelopedData):
		p7, err := pkcs7.Parse(der)
		if err != nil {
			return nil, fmt.Errorf("mailsectest: EnvelopedData: %w", err)
		}
		plain, err := p7.Decrypt(leaf, key)
		if err != nil {
			return nil, fmt.Errorf("mailsectest: EnvelopedData: decrypting for %s: %w", leaf.Subject, err)
		}
		return plain, nil
	case ct.Equal(oidAuthEnvelopedData):
		return nil, errors.New("mailsectest: AuthEnvelopedData is not read yet")
	default:
		return nil, fmt.Errorf("mailsectest: CMS content type %s is not encrypted content", ct)
	}
}

// cmsContentType returns the contentType of a BER ContentInfo (SEQUENCE {
// contentType OBJECT IDENTIFIER, ... }), of definite or indefinite length.
func cmsContentType(der []byte) (asn1.ObjectIdentifier, error) {
	if len(der) < 2 || der[0] != 0x30 {
		return nil, errors.New("not a ContentInfo (no SEQUENCE)")
	}
	i := 2
	switch l := der[1]; {
	case l == 0x80: // indefinite
	case l > 0x80:
		i += int(l & 0x7f)
	}
	if i+2 > len(der) || der[i] != 0x06 || der[i+1] >= 0x80 || i+2+int(der[i+1]) > len(der) {
		return nil, errors.New("not a ContentInfo (no contentType)")
	}
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(der[i:i+2+int(der[i+1])], &oid); err != nil {
		return nil, err
	}
	return oid, nil
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
