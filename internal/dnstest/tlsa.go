package dnstest

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
)

// TLSA returns the zone-file line of a TLSA record (RFC 6698 §2) at owner
// that matches cert, for [Zone.Records]:
//
//	TLSA("_25._tcp.mx.secure.test.", 3, 1, 1, cert)
//
// gives "_25._tcp.mx.secure.test. 300 IN TLSA 3 1 1 <SHA-256 of the
// SubjectPublicKeyInfo>", the DANE-EE form SMTP servers should publish
// (RFC 7672 §3.1.1). For usage 2 (DANE-TA) pass the issuing CA's
// certificate. The owner for an SMTP server is "_25._tcp." followed by
// the MX host name (RFC 7672 §2.2.3).
//
// usage must be 0 to 3, selector 0 (the whole certificate) or 1 (its
// SubjectPublicKeyInfo), matchingType 0 (exact), 1 (SHA-256) or 2
// (SHA-512) (RFC 6698 §2.1.1 to §2.1.3).
func TLSA(owner string, usage, selector, matchingType uint8, cert *x509.Certificate) (string, error) {
	name, err := canonicalName(owner)
	if err != nil {
		return "", err
	}
	if cert == nil {
		return "", errors.New("dnstest: TLSA: no certificate")
	}
	if usage > 3 {
		return "", fmt.Errorf("dnstest: TLSA %s: unknown certificate usage %d", name, usage)
	}
	var data []byte
	switch selector {
	case 0:
		data = cert.Raw
	case 1:
		data = cert.RawSubjectPublicKeyInfo
	default:
		return "", fmt.Errorf("dnstest: TLSA %s: unknown selector %d", name, selector)
	}
	if len(data) == 0 {
		return "", fmt.Errorf("dnstest: TLSA %s: the certificate has no encoded form (selector %d)", name, selector)
	}
	switch matchingType {
	case 0:
	case 1:
		sum := sha256.Sum256(data)
		data = sum[:]
	case 2:
		sum := sha512.Sum512(data)
		data = sum[:]
	default:
		return "", fmt.Errorf("dnstest: TLSA %s: unknown matching type %d", name, matchingType)
	}
	return fmt.Sprintf("%s %d IN TLSA %d %d %d %s", name, ttl, usage, selector, matchingType, hex.EncodeToString(data)), nil
}
