package mailsec

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Security is a transport security requirement. The zero value requires
// verified TLS.
type Security struct {
	Level SecurityLevel `json:"level"`
	// Pins are the accepted SPKI SHA-256 hashes for Level Pinned.
	Pins []Pin `json:"pins,omitempty"`
}

// validate reports a requirement that cannot be met as written.
func (s Security) validate() error {
	switch s.Level {
	case Verified, Unverified, Plaintext, Opportunistic, DANE, DANEOnly, VerifyMX, SecureDomain, Cleartext:
		if len(s.Pins) > 0 {
			return invalid("Security.Pins", "", "pins are only used with the Pinned level")
		}
	case Pinned:
		if len(s.Pins) == 0 {
			return invalid("Security.Pins", "", "the Pinned level needs at least one pin")
		}
	default:
		return invalid("Security.Level", s.Level.String(), "unknown level")
	}
	return nil
}

// SecurityLevel is the least transport security a delivery accepts.
type SecurityLevel int

// Security levels, strongest first. The zero value is the default.
const (
	// Verified: TLS 1.2 or later, certificate chain verified to a trusted
	// root for the server's configured name.
	Verified SecurityLevel = iota
	// Pinned: TLS 1.2 or later, and the certificate's public key
	// (SubjectPublicKeyInfo) must hash to one of Security.Pins. The chain,
	// name and validity period are not consulted: the pin is the trust
	// anchor, as with DANE-EE.
	Pinned
	// Unverified: TLS 1.2 or later without certificate verification.
	// Protects against passive eavesdropping only, and no credentials are
	// sent over it. Explicit opt-in, recorded in the Receipt.
	Unverified
	// Plaintext: no TLS. Allowed only when the server's address is a
	// loopback address (a development server on the same machine), never
	// with credentials. Explicit opt-in, recorded in the Receipt. The
	// check is on the address the connection reports: a local proxy or
	// port forward on loopback carries the plaintext further. The same
	// holds for direct delivery; its level for no TLS to remote MX hosts is
	// Cleartext.
	Plaintext

	// The levels below apply to direct delivery to MX hosts
	// (transport.Direct), and are named after Postfix's
	// smtp_tls_security_level. A Submission refuses them. For direct
	// delivery, Verified (the default) means: DANE when the domain's MX
	// host has usable TLSA records, else the domain's MTA-STS policy when
	// it is in enforce mode, else a certificate that verifies for the MX
	// host name; otherwise nothing is sent. Unverified is Postfix's
	// "encrypt" and Pinned checks the MX host's key against Pins.

	// Opportunistic ("may"): STARTTLS when the MX host offers it, without
	// authentication, and plaintext when it does not. Protects against
	// passive eavesdropping only. Explicit opt-in, recorded in the Receipt.
	Opportunistic
	// DANE ("dane"): DANE when usable TLSA records exist; TLS without
	// authentication when only unusable ones do; otherwise as
	// Opportunistic.
	DANE
	// DANEOnly ("dane-only"): DANE is required; a domain without usable
	// TLSA records gets nothing.
	DANEOnly
	// VerifyMX ("verify"): a certificate that verifies for the MX host
	// name; no DANE and no MTA-STS. The MX host name comes from DNS, so
	// without DNSSEC this does not stop an attacker who spoofs the MX.
	VerifyMX
	// SecureDomain ("secure"): a certificate that verifies for the
	// recipient domain itself or a name below it, so that a spoofed MX
	// record cannot redirect the mail; for domains whose MX hosts carry
	// such names.
	SecureDomain
	// Cleartext ("none"): no TLS to the domain's MX hosts, whatever they
	// offer. For a destination known to break with TLS; explicit opt-in,
	// recorded in the Receipt.
	Cleartext
)

func (l SecurityLevel) String() string {
	switch l {
	case Verified:
		return "verified"
	case Pinned:
		return "pinned"
	case Unverified:
		return "unverified"
	case Plaintext:
		return "plaintext"
	case Opportunistic:
		return "may"
	case DANE:
		return "dane"
	case DANEOnly:
		return "dane-only"
	case VerifyMX:
		return "verify"
	case SecureDomain:
		return "secure"
	case Cleartext:
		return "none"
	}
	return fmt.Sprintf("SecurityLevel(%d)", int(l))
}

// MarshalText implements encoding.TextMarshaler.
func (l SecurityLevel) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler. Besides the names
// String returns it accepts Postfix's "encrypt" (Unverified).
func (l *SecurityLevel) UnmarshalText(b []byte) error {
	v, err := ParseSecurityLevel(string(b))
	if err == nil {
		*l = v
	}
	return err
}

// ParseSecurityLevel reads a level by the name String returns, or
// Postfix's "encrypt" for Unverified (Postfix's other names are String's).
func ParseSecurityLevel(s string) (SecurityLevel, error) {
	switch s {
	case "encrypt":
		return Unverified, nil
	}
	for v := Verified; v <= Cleartext; v++ {
		if v.String() == s {
			return v, nil
		}
	}
	return Verified, invalid("security level", s, "unknown level")
}

// Pin is the SHA-256 hash of a certificate's DER-encoded
// SubjectPublicKeyInfo, as HPKP and DANE (selector 1, matching type 1) use.
type Pin [32]byte

// PinOf returns the pin of cert's public key.
func PinOf(cert *x509.Certificate) Pin { return sha256.Sum256(cert.RawSubjectPublicKeyInfo) }

// ParsePin reads a pin written in base64 (optionally prefixed "sha256/",
// the form `openssl ... | openssl dgst -sha256 -binary | base64` prints) or
// in hex (64 digits, the form of a DANE 3 1 1 record).
func ParsePin(s string) (Pin, error) {
	var p Pin
	s = strings.TrimPrefix(strings.TrimPrefix(s, "sha256//"), "sha256/")
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			copy(p[:], b)
			return p, nil
		}
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(p) {
		return p, invalid("pin", s, "not a base64 or hex SHA-256 hash")
	}
	copy(p[:], b)
	return p, nil
}

// String returns the base64 form.
func (p Pin) String() string { return base64.StdEncoding.EncodeToString(p[:]) }

// MarshalText implements encoding.TextMarshaler (base64).
func (p Pin) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Pin) UnmarshalText(b []byte) error {
	v, err := ParsePin(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}
