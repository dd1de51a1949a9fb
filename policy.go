package mailsec

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Policy decides, for each recipient of a message, how it must be
// delivered: the transport security floor and whether end-to-end protection
// is required. It must be safe for concurrent use.
//
// Policies compose as wrappers: a function that takes a Policy and returns
// one that changes some decisions and defers to the wrapped one for the
// rest (see RequireProtection).
type Policy interface {
	Plan(ctx context.Context, m *Message, r Recipient) (Plan, error)
}

// PolicyFunc adapts a function to the Policy interface.
type PolicyFunc func(ctx context.Context, m *Message, r Recipient) (Plan, error)

// Plan calls f.
func (f PolicyFunc) Plan(ctx context.Context, m *Message, r Recipient) (Plan, error) {
	return f(ctx, m, r)
}

// DefaultPolicy returns the policy a Sender uses when none is given: every
// recipient over TLS verified for the server name, no end-to-end protection.
func DefaultPolicy() Policy {
	return PolicyFunc(func(context.Context, *Message, Recipient) (Plan, error) { return Plan{}, nil })
}

// RequireProtection wraps next so that every recipient's plan also
// requires end-to-end protection: a recipient without a usable key gets
// nothing.
func RequireProtection(next Policy) Policy {
	return PolicyFunc(func(ctx context.Context, m *Message, r Recipient) (Plan, error) {
		p, err := next.Plan(ctx, m, r)
		p.Protection = ProtectionRequired
		return p, err
	})
}

// WithSecurity wraps next so that every recipient's transport security is
// s. Use it to pin a smarthost's key, or, visibly, to lower the floor for
// a development server.
func WithSecurity(next Policy, s Security) Policy {
	return PolicyFunc(func(ctx context.Context, m *Message, r Recipient) (Plan, error) {
		p, err := next.Plan(ctx, m, r)
		p.Security = s
		return p, err
	})
}

// Recipient is one recipient as a Policy sees it.
type Recipient struct {
	// Address is the addr-spec as it will be sent in RCPT TO (domain in
	// A-label form).
	Address string
	Kind    RecipientKind
	// Domain is the address's domain in A-label form, lower case.
	Domain string
}

// Plan is the delivery plan for one recipient. The zero Plan is the safe
// default: verified TLS, no protection.
type Plan struct {
	Security   Security   `json:"security"`
	Protection Protection `json:"protection"`
}

func (p Plan) validate() error { return p.Security.Validate() }

// key groups recipients whose plans are identical.
func (p Plan) key() string {
	k := strconv.Itoa(int(p.Security.Level)) + "|" + strconv.Itoa(int(p.Protection))
	if len(p.Security.Pins) == 0 {
		return k
	}
	pins := make([]string, len(p.Security.Pins))
	for i, pin := range p.Security.Pins {
		pins[i] = pin.String()
	}
	slices.Sort(pins)
	return k + "|" + strings.Join(pins, ",")
}

// Protection says whether a recipient's content must be protected end to end.
type Protection int

// Protection choices.
const (
	// ProtectionNone sends the content as it is (over the transport
	// security the plan requires).
	ProtectionNone Protection = iota
	// ProtectionRequired sends only what the Sender's Protector produced for
	// the recipient; without a usable key the recipient gets nothing.
	ProtectionRequired
)

func (p Protection) String() string {
	switch p {
	case ProtectionNone:
		return "none"
	case ProtectionRequired:
		return "required"
	}
	return fmt.Sprintf("Protection(%d)", int(p))
}

// MarshalText implements encoding.TextMarshaler.
func (p Protection) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Protection) UnmarshalText(b []byte) error {
	switch string(b) {
	case "none":
		*p = ProtectionNone
	case "required":
		*p = ProtectionRequired
	default:
		return fmt.Errorf("mailsec: unknown protection %q", b)
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
	// port forward on loopback carries the plaintext further.
	Plaintext
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
	}
	return fmt.Sprintf("SecurityLevel(%d)", int(l))
}

// MarshalText implements encoding.TextMarshaler.
func (l SecurityLevel) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *SecurityLevel) UnmarshalText(b []byte) error {
	for _, v := range []SecurityLevel{Verified, Pinned, Unverified, Plaintext} {
		if v.String() == string(b) {
			*l = v
			return nil
		}
	}
	return fmt.Errorf("mailsec: unknown security level %q", b)
}

// Security is a transport security requirement. The zero value requires
// verified TLS.
type Security struct {
	Level SecurityLevel `json:"level"`
	// Pins are the accepted SPKI SHA-256 hashes for Level Pinned.
	Pins []Pin `json:"pins,omitempty"`
}

// Validate reports a requirement that cannot be met as written.
func (s Security) Validate() error {
	switch s.Level {
	case Verified, Unverified, Plaintext:
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
