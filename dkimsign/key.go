package dkimsign

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/idna"
)

// MinRSABits is the smallest RSA key a Signer accepts. RFC 8301 §3.2 sets
// the floor at 1024 bits; large receivers expect 2048, and so do we.
const MinRSABits = 2048

// Signer is one DKIM key: the signing domain (d=), the selector (s=) under
// which its public key is published, at SELECTOR._domainkey.DOMAIN, and
// the private key. It is immutable and safe for concurrent use.
type Signer struct {
	domain, selector string
	key              crypto.Signer
	algo             string // "rsa" or "ed25519"
}

// NewSigner returns a Signer for domain and selector with key, an RSA key
// of at least MinRSABits bits or an Ed25519 key (RFC 8463): any
// crypto.Signer whose Public method returns an *rsa.PublicKey or an
// ed25519.PublicKey, so a key held in a hardware module will do. A
// smaller RSA key is a *KeyError for which errors.Is(err, ErrWeakKey)
// holds; any other key is a *KeyError too. A malformed domain or selector
// is a *mailsec.ConfigError. A domain in Unicode is written as A-labels.
func NewSigner(domain, selector string, key crypto.Signer) (*Signer, error) {
	d, err := normalDomain(domain)
	if err != nil {
		return nil, configError("domain", domain, err.Error())
	}
	if !validName(selector) {
		return nil, configError("selector", selector, "not a selector: dot-separated labels of letters, digits and hyphens (RFC 6376 §3.1)")
	}
	algo, err := keyAlgorithm(key)
	if err != nil {
		ke := err.(*KeyError)
		ke.Domain, ke.Selector = d, selector
		return nil, ke
	}
	return &Signer{domain: d, selector: strings.ToLower(selector), key: key, algo: algo}, nil
}

// Domain returns the signing domain (d=), in lower case A-labels.
func (s *Signer) Domain() string { return s.domain }

// Selector returns the selector (s=).
func (s *Signer) Selector() string { return s.selector }

// Algorithm returns "rsa" or "ed25519".
func (s *Signer) Algorithm() string { return s.algo }

// Record returns the DNS TXT record that publishes the Signer's public
// key (RFC 6376 §3.6.1), as its text, for example "v=DKIM1; k=ed25519;
// p=...". ZoneLine gives it as a zone-file line.
func (s *Signer) Record() string {
	r, _ := PublicRecord(s.key.Public())
	return r
}

// RecordName returns the name the record is published under:
// SELECTOR._domainkey.DOMAIN.
func (s *Signer) RecordName() string { return s.selector + "._domainkey." + s.domain }

// ZoneLine returns the record as one line of a DNS zone file, its text
// split into character-strings of at most 255 octets:
//
//	sel._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MIIBIjAN..." "...AQAB"
func (s *Signer) ZoneLine() string {
	rec := s.Record()
	var parts []string
	for len(rec) > 255 {
		parts = append(parts, `"`+rec[:255]+`"`)
		rec = rec[255:]
	}
	parts = append(parts, `"`+rec+`"`)
	return s.RecordName() + ". IN TXT " + strings.Join(parts, " ")
}

// PublicRecord returns the TXT record text for a public key: an
// *rsa.PublicKey (p= is its SubjectPublicKeyInfo, RFC 6376 §3.6.1) or an
// ed25519.PublicKey (p= is the raw 32 octets, RFC 8463 §4.2).
func PublicRecord(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k), nil
	}
	return "", &KeyError{Algorithm: fmt.Sprintf("%T", pub), Reason: fmt.Sprintf("a %T is not a DKIM key (RSA or Ed25519)", pub)}
}

// keyAlgorithm checks that key can sign DKIM and names its algorithm.
func keyAlgorithm(key crypto.Signer) (string, error) {
	if key == nil {
		return "", &KeyError{Reason: "no key"}
	}
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return "", &KeyError{Algorithm: "rsa", Bits: bits, weak: true,
				Reason: fmt.Sprintf("an RSA key of %d bits is too weak; use at least %d bits, or Ed25519", bits, MinRSABits)}
		}
		return "rsa", nil
	case ed25519.PublicKey:
		return "ed25519", nil
	default:
		return "", &KeyError{Algorithm: fmt.Sprintf("%T", k), Reason: fmt.Sprintf("a %T key is not a DKIM key; use RSA (at least %d bits) or Ed25519", k, MinRSABits)}
	}
}

// GenerateKey makes a new private key: algo "rsa" (2048 bits) or
// "ed25519".
func GenerateKey(algo string) (crypto.Signer, error) {
	switch algo {
	case "rsa":
		return rsa.GenerateKey(rand.Reader, MinRSABits)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, &KeyError{Algorithm: algo, Reason: fmt.Sprintf("unknown algorithm %q; use rsa or ed25519", algo)}
}

// MarshalPrivateKey encodes key as a PEM "PRIVATE KEY" block (PKCS #8).
func MarshalPrivateKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey reads an RSA or Ed25519 private key from PEM: a
// "PRIVATE KEY" block (PKCS #8, what MarshalPrivateKey and "openssl
// genpkey" write) or an "RSA PRIVATE KEY" block (PKCS #1). It checks
// the key the way NewSigner does. Errors never quote the key.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, &KeyError{Reason: "no PEM PRIVATE KEY or RSA PRIVATE KEY block"}
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, &KeyError{Reason: "the " + b.Type + " block does not parse"}
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, &KeyError{Algorithm: fmt.Sprintf("%T", key), Reason: fmt.Sprintf("a %T is not a DKIM key", key)}
		}
		if _, err := keyAlgorithm(s); err != nil {
			return nil, err
		}
		return s, nil
	}
}

// normalDomain returns a domain name in lower case A-labels without a
// final dot, or why it is not one.
func normalDomain(s string) (string, error) {
	d, err := idna.Lookup.ToASCII(strings.TrimSuffix(s, "."))
	if err != nil || !validName(d) || !strings.Contains(d, ".") {
		return "", errors.New("not a domain name")
	}
	return strings.ToLower(d), nil
}

// validName reports whether s is dot-separated labels of letters, digits,
// hyphens (not at either end) and underscores, at most 253 octets.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
