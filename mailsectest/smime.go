package mailsectest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"time"
)

// SMIMEOptions describes an S/MIME (RFC 8550) certificate to issue with
// [CA.IssueSMIME]. The zero value (plus an Email) gives what a mail client
// accepts for encryption and signing: RSA-2048, an rfc822Name SAN, keyUsage
// digitalSignature and keyEncipherment, extKeyUsage emailProtection, valid
// from an hour ago for a day. The other fields make the certificates that
// must be refused.
type SMIMEOptions struct {
	// Email is the rfc822Name SAN (and the CommonName when that is empty).
	Email      string
	CommonName string

	// Key is the subject key to certify; nil generates one as RSABits
	// and EC say. Reusing a key saves the cost of RSA key generation.
	Key crypto.Signer
	// RSABits is the size of a generated RSA key; zero means 2048.
	RSABits int
	// EC generates an ECDSA P-256 key instead of RSA.
	EC bool

	// NotBefore defaults to an hour ago, NotAfter to a day from now.
	NotBefore, NotAfter time.Time

	// KeyUsage replaces the default digitalSignature|keyEncipherment.
	KeyUsage x509.KeyUsage
	// NoKeyUsage issues without a keyUsage extension.
	NoKeyUsage bool
	// NoEKU issues without an extKeyUsage extension; ExtKeyUsage
	// replaces the default emailProtection.
	NoEKU       bool
	ExtKeyUsage []x509.ExtKeyUsage
}

// IssueSMIME issues an S/MIME certificate. The returned tls.Certificate
// holds the chain (leaf, CA), the private key and Leaf.
func (ca *CA) IssueSMIME(o SMIMEOptions) (tls.Certificate, error) {
	if o.Email == "" {
		return tls.Certificate{}, errors.New("mailsectest: SMIMEOptions.Email is required")
	}
	key := o.Key
	if key == nil {
		var err error
		switch {
		case o.EC:
			key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		default:
			bits := o.RSABits
			if bits == 0 {
				bits = 2048
			}
			key, err = rsa.GenerateKey(rand.Reader, bits)
		}
		if err != nil {
			return tls.Certificate{}, err
		}
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(24 * time.Hour)
	}
	ku := o.KeyUsage
	if ku == 0 && !o.NoKeyUsage {
		ku = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	if o.NoKeyUsage {
		ku = 0
	}
	eku := o.ExtKeyUsage
	if eku == nil && !o.NoEKU {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	}
	if o.NoEKU {
		eku = nil
	}
	cn := o.CommonName
	if cn == "" {
		cn = o.Email
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: cn, Organization: []string{"mailsectest"}},
		NotBefore:      o.NotBefore,
		NotAfter:       o.NotAfter,
		KeyUsage:       ku,
		ExtKeyUsage:    eku,
		EmailAddresses: []string{o.Email},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate, key.Public(), ca.Key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Certificate.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// LeafPEM returns only the leaf certificate of c in PEM form: what a
// recipient certificate file (or openssl's -recip) holds.
func LeafPEM(c tls.Certificate) []byte {
	if len(c.Certificate) == 0 {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
}
