package smime

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// Signer holds the certificate chain and private key that sign messages.
// Its checks (digitalSignature, emailProtection, chain, validity) run in
// New against the Protector's roots and again at every Protect, so an
// expired signer certificate stops sending instead of producing
// signatures that do not verify.
type Signer struct {
	chain []*x509.Certificate
	key   crypto.Signer
}

// NewSigner returns a Signer for chain (leaf first; intermediates may
// follow, the root may be omitted) and the leaf's private key. Only RSA
// keys are supported (RSA PKCS#1 v1.5 with SHA-256).
func NewSigner(chain []*x509.Certificate, key crypto.Signer) (*Signer, error) {
	if len(chain) == 0 || chain[0] == nil {
		return nil, errors.New("smime: signer needs a certificate")
	}
	if key == nil {
		return nil, errors.New("smime: signer needs a private key")
	}
	pub, ok := key.Public().(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("smime: signer key is %T; only RSA keys are supported", key.Public())
	}
	cpub, ok := chain[0].PublicKey.(*rsa.PublicKey)
	if !ok || !cpub.Equal(pub) {
		return nil, fmt.Errorf("smime: private key does not match certificate %s", chain[0].Subject)
	}
	return &Signer{chain: append([]*x509.Certificate(nil), chain...), key: key}, nil
}

// LoadSigner reads the signer's certificate chain (PEM, leaf first) and
// its private key (PEM, PKCS#8 "PRIVATE KEY" or PKCS#1 "RSA PRIVATE
// KEY", unencrypted). Errors never contain key material.
func LoadSigner(certPath, keyPath string) (*Signer, error) {
	certs, err := LoadCertificates(certPath)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(keyPath)
	if err != nil {
		return nil, fmt.Errorf("smime: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEM))
	if err != nil {
		return nil, fmt.Errorf("smime: reading %s: %w", keyPath, err)
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, keyPath)
	}
	return NewSigner(certs.snapshot().all, key)
}

func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("smime: no PEM private key found")
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, errors.New("smime: corrupt PKCS#8 private key")
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("smime: unsupported private key %T", k)
			}
			return s, nil
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
			if err != nil {
				return nil, errors.New("smime: corrupt PKCS#1 private key")
			}
			return k, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("smime: encrypted private keys are not supported")
		}
	}
}

// Certificate returns the signer's leaf certificate.
func (s *Signer) Certificate() *x509.Certificate { return s.chain[0] }
