package mailsec

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Error categories, for errors.Is.
var (
	// ErrInvalid: a message or other input is malformed (a *ValidationError).
	ErrInvalid = errors.New("mailsec: invalid input")
	// ErrDowngrade: the server did not let TLS start cleanly: STARTTLS not
	// offered, refused, or preceded by injected bytes; plaintext on an
	// implicit-TLS port.
	ErrDowngrade = errors.New("mailsec: TLS downgrade refused")
	// ErrCertificate: the server's certificate did not verify (untrusted,
	// expired, wrong name, pin mismatch).
	ErrCertificate = errors.New("mailsec: server certificate not accepted")
	// ErrHandshake: the TLS handshake failed for another reason (no common
	// protocol version of 1.2 or later, no common cipher, broken peer).
	ErrHandshake = errors.New("mailsec: TLS handshake failed")
	// ErrRequireTLS: REQUIRETLS was asked for and cannot be honoured.
	ErrRequireTLS = errors.New("mailsec: REQUIRETLS cannot be honoured")
	// ErrPlaintext: a plaintext session was asked for where it is not
	// allowed (a non-loopback peer, or with credentials).
	ErrPlaintext = errors.New("mailsec: plaintext session not allowed")
	// ErrDomainPolicy: the route a delivery would take is refused by a
	// TLS policy: the recipient domain's (an MX host its MTA-STS policy
	// does not list; no usable DANE records where they are required; a
	// TLSA lookup that failed) or the requirement's (a level the transport
	// cannot honour).
	ErrDomainPolicy = errors.New("mailsec: refused by the TLS policy for the destination")
	// ErrAuth: SMTP authentication failed or could not be attempted safely.
	ErrAuth = errors.New("mailsec: SMTP authentication failed")
	// ErrUnsupported: the server lacks an extension the message needs
	// (SMTPUTF8, 8BITMIME).
	ErrUnsupported = errors.New("mailsec: server lacks a required extension")
	// ErrNoKey: protection is required and no usable key or certificate
	// exists for the recipient.
	ErrNoKey = errors.New("mailsec: no usable key for recipient")
	// ErrContent: writing the message failed midway (an attachment reader
	// or a Protector returned an error); the transaction was abandoned
	// before the end of DATA, so nothing was delivered.
	ErrContent = errors.New("mailsec: message content could not be written")
)

// IsTemporary reports whether err is worth retrying later unchanged, as
// the first error in its chain with a Temporary method says (a *SendError
// is temporary when every failure is). Temporary are 4xx replies, network
// failures and timeouts, key lookups that failed for now, and security
// failures that are themselves temporary (a 454 reply to STARTTLS, a TLSA
// lookup that failed for now). Direct delivery (transport.Direct) also
// reports a TLS or policy failure with a recipient's MX host as temporary
// (its DomainError): such mail is deferred, not bounced, because the
// failure may be an attack that ends or a policy about to be updated
// (RFC 8461 §5, RFC 7672 §2.2). Validation errors, permanent replies,
// missing keys, REQUIRETLS failures and the other security failures of a
// session with a server the application configured are not temporary:
// they need a change before a retry can succeed.
func IsTemporary(err error) bool {
	var t interface{ Temporary() bool }
	if errors.As(err, &t) {
		return t.Temporary()
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// ValidationError reports input refused before any I/O.
type ValidationError struct {
	Field  string // "To[1]", "Subject", "Headers[0].Name", "EHLO name"...
	Value  string // the offending value, possibly truncated
	Reason string
}

func (e *ValidationError) Error() string {
	v := e.Value
	if len(v) > 80 {
		v = v[:80] + "..."
	}
	if v == "" {
		return fmt.Sprintf("mailsec: invalid %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("mailsec: invalid %s %q: %s", e.Field, v, e.Reason)
}

// Is matches ErrInvalid.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Temporary is false: the same input will fail again.
func (e *ValidationError) Temporary() bool { return false }

// ErrConfig matches a *ConfigError: the library was configured wrongly.
var ErrConfig = errors.New("mailsec: configuration error")

// ConfigError reports a mistake in how the application put the library
// together, as opposed to bad input from its users (a *ValidationError):
// an Options field, a Policy that does not fit the Sender's Protectors or
// notice, a Transport's settings (a Submission without an Addr), a
// Protector's (a nil key ring). NewSender, a Transport's Validate method,
// and the constructors of packages pgp and smime return it, so that the
// mistake stops the application at start-up instead of failing every
// Send; a Transport whose Validate was never called returns it from
// Deliver. Reason says what to change. It matches ErrConfig, never
// ErrInvalid, and is never temporary: retrying cannot help.
type ConfigError struct {
	// Field is the setting at fault: "Options.Policy",
	// "Options.Protectors[1]", "Submission.Addr", "pgp.New keys".
	Field string
	// Value is its value, when it can be shown (never a secret), possibly
	// truncated.
	Value string
	// Reason says what is wrong and what to do about it.
	Reason string
	// Err is the underlying error, if any.
	Err error
}

func (e *ConfigError) Error() string {
	s := "mailsec: configuration: " + e.Field
	if v := e.Value; v != "" {
		if len(v) > 80 {
			v = v[:80] + "..."
		}
		s += fmt.Sprintf(" %q", v)
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches ErrConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

func (e *ConfigError) Unwrap() error { return e.Err }

// Temporary is false: the configuration must change first.
func (e *ConfigError) Temporary() bool { return false }

func invalid(field, value, reason string) *ValidationError {
	return &ValidationError{Field: field, Value: value, Reason: reason}
}

func badConfig(field, value, reason string) *ConfigError {
	return &ConfigError{Field: field, Value: value, Reason: reason}
}

// SecurityError reports that a session could not meet its security
// requirement. The session was ended before MAIL FROM: nothing of the
// message, and no credentials, were sent.
//
// Its Category is the one classification of security failures: errors.Is
// matches it, and it is one of ErrDowngrade, ErrCertificate,
// ErrHandshake, ErrRequireTLS, ErrPlaintext and ErrDomainPolicy. That is
// what an application acts on (alert about an attack on the way, fix a
// certificate, change a policy); whether to retry is Temporary. The finer
// reason, such as a stripped STARTTLS as opposed to a refused one, or a
// TLSA record as opposed to a pin that did not match, is said in words
// in Detail for the people who read the error, and is the transport's
// own business: a transport keeps it as an error of its own in Err, where
// it branches on it (package transport does, for TLS reports and its
// opportunistic levels).
type SecurityError struct {
	Host string
	// Category is the kind of rule broken: ErrDowngrade, ErrCertificate,
	// ErrHandshake, ErrRequireTLS, ErrPlaintext or ErrDomainPolicy.
	Category error
	// Detail says what was seen, in words: "STARTTLS refused: server
	// replied 454 4.7.0 TLS not available", the x509 error.
	Detail string
	Err    error // underlying error, if any
	// Temp marks a failure that is itself temporary: the server said so
	// (a 454 reply to STARTTLS), or a lookup it depends on failed for now.
	Temp bool
}

func (e *SecurityError) Error() string {
	s := "mailsec: " + e.Host + ": "
	switch {
	case e.Detail != "":
		return s + e.Detail
	case e.Category != nil:
		return s + strings.TrimPrefix(e.Category.Error(), "mailsec: ")
	}
	return s + "security requirement not met"
}

// Is matches the category (ErrDowngrade, ErrCertificate, ...).
func (e *SecurityError) Is(target error) bool { return e.Category != nil && target == e.Category }

func (e *SecurityError) Unwrap() error { return e.Err }

// Temporary reports Temp. Other security failures need a configuration
// change (or the end of an attack) before a retry can succeed; a transport
// may still report them as temporary through an error that wraps this one:
// transport.Direct defers a TLS or policy failure with a recipient's MX
// host (see IsTemporary).
func (e *SecurityError) Temporary() bool { return e.Temp }

// SMTPError is an error reply from the server.
type SMTPError struct {
	Host         string
	Command      string // "greeting", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", "RSET"...
	Code         int
	EnhancedCode EnhancedCode
	Message      string
}

func (e *SMTPError) Error() string {
	s := fmt.Sprintf("mailsec: %s: %s: %d", e.Host, e.Command, e.Code)
	if e.EnhancedCode != (EnhancedCode{}) {
		s += " " + e.EnhancedCode.String()
	}
	return s + " " + e.Message
}

// Temporary reports a 4xx reply, or a 552 to RCPT that says nothing else:
// with no enhanced code, X.5.3 ("too many recipients", RFC 3463) or a
// transient one (4.X.X). RFC 5321 section 4.5.3.1.10 asks clients to take
// that one as temporary, since servers that follow RFC 821 give it for too
// many recipients (452 since), a limit of one transaction that a later one
// does not meet. A 552 to RCPT with another enhanced code (5.3.4, the
// message too big) is permanent.
func (e *SMTPError) Temporary() bool {
	if ec := e.EnhancedCode; e.Code == 552 && e.Command == "RCPT" {
		return ec == (EnhancedCode{}) || (ec[1] == 5 && ec[2] == 3) || ec[0] == 4
	}
	return e.Code/100 == 4
}

// Reply returns the error as a Reply.
func (e *SMTPError) Reply() *Reply {
	return &Reply{Code: e.Code, EnhancedCode: e.EnhancedCode, Text: e.Message}
}

// AuthError reports an SMTP AUTH failure. Credentials are never part of it.
type AuthError struct {
	Host      string
	Mechanism string // the mechanism tried, if any
	Reason    string
	Err       error // the server's reply (*SMTPError) or the mechanism's error
}

func (e *AuthError) Error() string {
	s := "mailsec: " + e.Host + ": authentication"
	if e.Mechanism != "" {
		s += " (" + e.Mechanism + ")"
	}
	s += ": " + e.Reason
	var se *SMTPError
	switch {
	case errors.As(e.Err, &se):
		s += ": " + se.Reply().String()
	case e.Err != nil:
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches ErrAuth.
func (e *AuthError) Is(target error) bool { return target == ErrAuth }

func (e *AuthError) Unwrap() error { return e.Err }

// Temporary reports a 4xx reply to AUTH.
func (e *AuthError) Temporary() bool {
	var se *SMTPError
	return errors.As(e.Err, &se) && se.Temporary()
}

// ExtensionError reports that the server lacks an extension the delivery
// needs. Nothing was sent.
type ExtensionError struct {
	Host      string
	Extension string // "SMTPUTF8", "8BITMIME"
	Reason    string
}

func (e *ExtensionError) Error() string {
	return "mailsec: " + e.Host + ": server does not offer " + e.Extension + ": " + e.Reason
}

// Is matches ErrUnsupported.
func (e *ExtensionError) Is(target error) bool { return target == ErrUnsupported }

// Temporary is false.
func (e *ExtensionError) Temporary() bool { return false }

// NetworkError reports a failure to connect to or talk with a server, a
// timeout or a cancelled context among them. It is temporary.
type NetworkError struct {
	Host string
	Op   string // "dial", "greeting", "MAIL", "DATA"...
	Err  error
}

func (e *NetworkError) Error() string {
	s := "mailsec: " + e.Host + ": " + e.Op
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *NetworkError) Unwrap() error { return e.Err }

// Temporary is true unless the context was cancelled (as opposed to timing out).
func (e *NetworkError) Temporary() bool { return !errors.Is(e.Err, context.Canceled) }

// ProtectionError reports that content could not be protected for a
// recipient; it matches ErrNoKey when no usable key exists.
type ProtectionError struct {
	Recipient string
	Method    string // "pgp", "smime", or empty
	KeyID     string // key ID or certificate subject concerned, if any
	Reason    string // "expired", "revoked", "no encryption subkey"...
	Err       error

	// fault marks a failure that is not about the recipient's key: the
	// Protector failed without naming whom it could not serve, or the
	// plan names no method the Sender has. Such a recipient never falls
	// back to unprotected content or a notice.
	fault bool
}

func (e *ProtectionError) Error() string {
	s := "mailsec: " + e.Recipient + ": "
	if e.Method != "" {
		s += e.Method + ": "
	}
	if e.KeyID != "" {
		s += "key " + e.KeyID + ": "
	}
	s += e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches ErrNoKey, unless the failure was not about the recipient's
// key (the Protector failed as a whole).
func (e *ProtectionError) Is(target error) bool { return target == ErrNoKey && !e.fault }

func (e *ProtectionError) Unwrap() error { return e.Err }

// Temporary reports whether the cause is temporary (a key lookup that
// timed out, say): a later Send may find the key.
func (e *ProtectionError) Temporary() bool { return e.Err != nil && IsTemporary(e.Err) }

// RecipientError ties an error to one recipient.
type RecipientError struct {
	Recipient string
	Err       error
}

func (e *RecipientError) Error() string {
	if e.Err == nil {
		return "<" + e.Recipient + ">: not delivered"
	}
	msg := e.Err.Error()
	if strings.Contains(msg, e.Recipient) {
		return msg
	}
	return "<" + e.Recipient + ">: " + msg
}

func (e *RecipientError) Unwrap() error { return e.Err }

// Temporary delegates to the wrapped error.
func (e *RecipientError) Temporary() bool { return IsTemporary(e.Err) }

// SendError reports the recipients of a Send that were not delivered.
type SendError struct {
	Failed []*RecipientError
	Total  int // recipients in the message
}

func (e *SendError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mailsec: %d of %d recipients not delivered", len(e.Failed), e.Total)
	for i, f := range e.Failed {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Failed)-3)
			break
		}
		b.WriteString("; ")
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap returns the per-recipient errors.
func (e *SendError) Unwrap() []error {
	out := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		out[i] = f
	}
	return out
}

// Temporary reports whether every failure is temporary.
func (e *SendError) Temporary() bool {
	for _, f := range e.Failed {
		if !f.Temporary() {
			return false
		}
	}
	return len(e.Failed) > 0
}

// Partial reports whether some recipients were delivered.
func (e *SendError) Partial() bool { return len(e.Failed) < e.Total }

// recipientErrors collects every *RecipientError in err's tree.
func recipientErrors(err error) []*RecipientError {
	var out []*RecipientError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *RecipientError:
			out = append(out, e)
			return
		case *ProtectionError:
			if e.Recipient != "" {
				out = append(out, &RecipientError{Recipient: e.Recipient, Err: e})
				return
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// ErrSenderNotAllowed matches a *SenderError.
var ErrSenderNotAllowed = errors.New("mailsec: sender not allowed")

// SenderError reports a From, Sender or envelope-from address outside the
// Sender's AllowedSenders. Nothing was sent.
type SenderError struct {
	Field   string // "From", "Sender" or "EnvelopeFrom"
	Address string
}

func (e *SenderError) Error() string {
	return "mailsec: " + e.Field + " " + e.Address + " is not an allowed sender for this Sender (Options.AllowedSenders)"
}

// Is matches ErrSenderNotAllowed.
func (e *SenderError) Is(target error) bool { return target == ErrSenderNotAllowed }

// Temporary is false: the same message will be refused again.
func (e *SenderError) Temporary() bool { return false }

// ErrNonGlobalAddress matches an *AddressError: a connection to an address
// that is not global unicast (loopback, private, link-local, ...) was
// refused.
var ErrNonGlobalAddress = errors.New("mailsec: connection to a non-global address refused")

// AddressError reports a connection the library refused to make because
// the address a name led to is not a global unicast address: loopback,
// private, shared (CGNAT), link-local (the cloud metadata address
// 169.254.169.254 among them), unspecified, multicast, broadcast,
// reserved or documentation space, unique local or site-local IPv6, or an
// IPv4 address of those kinds inside IPv6 (IPv4-mapped, 6to4, NAT64).
// Direct delivery to MX hosts, the MTA-STS policy fetch and the Web Key
// Directory key fetch refuse such addresses by default, because the names
// that lead to them are chosen by whoever controls a recipient domain; an
// explicit AllowPrivate option on each lets them through. Nothing was sent
// to the address.
type AddressError struct {
	// Host is the name being connected to: the MX host, the policy host
	// ("mta-sts.<domain>") or the key server.
	Host string
	// Addr is the address refused; it is the zero Addr when the peer of
	// a connection a custom dialer opened had no IP address to check.
	Addr netip.Addr
	// Reason says what kind of address it is: "loopback", "private (RFC
	// 1918)", "link-local (...)".
	Reason string
}

func (e *AddressError) Error() string {
	a := "a peer without an IP address"
	if e.Addr.IsValid() {
		a = e.Addr.String()
	}
	return "mailsec: " + e.Host + ": refused to connect to " + a + " (" + e.Reason + "): not a global unicast address"
}

// Is matches ErrNonGlobalAddress.
func (e *AddressError) Is(target error) bool { return target == ErrNonGlobalAddress }

// Temporary is false: the same DNS answer leads to the same refusal.
func (e *AddressError) Temporary() bool { return false }
