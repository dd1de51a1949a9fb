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
	"math/big"
	"net"
	"time"
)

// CA is a throwaway certificate authority for tests. Nothing outside the
// test trusts it.
type CA struct {
	Certificate *x509.Certificate
	Key         crypto.Signer
}

// NewCA creates a CA with a fresh ECDSA P-256 key, valid for ten years.
func NewCA() (*CA, error) {
	// Room for one intermediate below it (NewIntermediate).
	return newCA(nil, "mailsectest CA ", 10, 1)
}

// NewIntermediate creates a CA certificate signed by ca, with a fresh
// ECDSA P-256 key, for chains of leaf, intermediate and root: certificates
// it issues verify only when the intermediate is available to the
// verifier besides ca's root.
func (ca *CA) NewIntermediate() (*CA, error) {
	return newCA(ca, "mailsectest intermediate ", 5, 0)
}

// newCA makes a CA certificate valid for years, self-signed when parent
// is nil, allowing maxPathLen CAs below it.
func newCA(parent *CA, name string, years, maxPathLen int) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name + serial.Text(16)[:8], Organization: []string{"mailsectest"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(years, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Certificate, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Certificate: cert, Key: key}, nil
}

// Pool returns a pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Certificate)
	return p
}

// TLSConfig returns a client configuration that trusts only this CA.
func (ca *CA) TLSConfig() *tls.Config { return &tls.Config{RootCAs: ca.Pool()} }

// CertPEM returns the CA certificate in PEM, as a -ca file wants it.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate.Raw})
}

// CertOptions describes a certificate to issue. Zero fields take
// defaults suited to a TLS server on the loopback interface.
type CertOptions struct {
	// CommonName defaults to the first DNS name or e-mail address.
	CommonName string
	// DNSNames and IPAddresses default to "localhost" and 127.0.0.1 when
	// EmailAddresses is empty too.
	DNSNames       []string
	IPAddresses    []net.IP
	EmailAddresses []string
	// NotBefore defaults to an hour ago, NotAfter to a day from now.
	NotBefore, NotAfter time.Time
	// KeyUsage defaults to DigitalSignature (plus KeyEncipherment for RSA).
	KeyUsage x509.KeyUsage
	// ExtKeyUsage defaults to ServerAuth for server names, EmailProtection
	// for e-mail addresses. Set NoExtKeyUsage to issue without any.
	ExtKeyUsage   []x509.ExtKeyUsage
	NoExtKeyUsage bool
	// RSABits selects an RSA key of that size; zero means ECDSA P-256.
	RSABits int
	// SelfSigned issues the certificate signed by its own key instead of
	// the CA's.
	SelfSigned bool
}

// Issue creates a key and a certificate for it. The returned
// tls.Certificate holds the chain (leaf, CA) and has Leaf set.
func (ca *CA) Issue(o CertOptions) (tls.Certificate, error) {
	if len(o.DNSNames) == 0 && len(o.IPAddresses) == 0 && len(o.EmailAddresses) == 0 {
		o.DNSNames = []string{"localhost"}
		o.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	var key crypto.Signer
	var err error
	if o.RSABits > 0 {
		key, err = rsa.GenerateKey(rand.Reader, o.RSABits)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(24 * time.Hour)
	}
	if o.KeyUsage == 0 {
		o.KeyUsage = x509.KeyUsageDigitalSignature
		if o.RSABits > 0 {
			o.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
	}
	if o.ExtKeyUsage == nil && !o.NoExtKeyUsage {
		if len(o.DNSNames)+len(o.IPAddresses) > 0 {
			o.ExtKeyUsage = append(o.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		}
		if len(o.EmailAddresses) > 0 {
			o.ExtKeyUsage = append(o.ExtKeyUsage, x509.ExtKeyUsageEmailProtection)
		}
	}
	if o.CommonName == "" {
		if len(o.DNSNames) > 0 {
			o.CommonName = o.DNSNames[0]
		} else if len(o.EmailAddresses) > 0 {
			o.CommonName = o.EmailAddresses[0]
		}
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: o.CommonName},
		NotBefore:      o.NotBefore,
		NotAfter:       o.NotAfter,
		KeyUsage:       o.KeyUsage,
		ExtKeyUsage:    o.ExtKeyUsage,
		DNSNames:       o.DNSNames,
		IPAddresses:    o.IPAddresses,
		EmailAddresses: o.EmailAddresses,
	}
	parent, signer := ca.Certificate, ca.Key
	if o.SelfSigned {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	chain := [][]byte{der}
	if !o.SelfSigned {
		chain = append(chain, ca.Certificate.Raw)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// PEM returns a certificate's chain and private key in PEM form, as
// Postfix, openssl and gpgsm want them.
func PEM(c tls.Certificate) (chain, key []byte, err error) {
	for _, der := range c.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	signer, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("mailsectest: private key is not a crypto.Signer")
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, nil, err
	}
	return chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}
