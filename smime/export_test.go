package smime

import (
	"crypto/rsa"
	"crypto/x509"

	"github.com/mailsec/mailsec/internal/cmsread"
)

// BERValue is one BER value, for tests of the encoding. For an indefinite
// length, Content runs up to the end-of-contents octets and Full includes
// them.
type BERValue = cmsread.Value

// ParseBER reads one value with a one-octet identifier from b, with
// definite or indefinite length.
func ParseBER(b []byte, depth int) (v BERValue, rest []byte, err error) {
	return cmsread.ParseBER(b, depth)
}

// OpenCMS decrypts the DER (or BER) of an EnvelopedData or
// AuthEnvelopedData this package writes, for a recipient, with the
// standard library only: the tests' independent reader (the one
// mailsectest.OpenSMIME reads with). It returns the content and the names
// of the key transport and content cipher.
func OpenCMS(der []byte, cert *x509.Certificate, key *rsa.PrivateKey) (content []byte, keyAlg, cipherAlg string, err error) {
	d, err := cmsread.Decrypt(der, cert, key)
	if err != nil {
		return nil, "", "", err
	}
	return d.Content, d.KeyTransport, d.ContentCipher, nil
}
