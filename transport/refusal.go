package transport

import (
	"errors"
	"fmt"

	"github.com/mailsec/mailsec"
)

// Why a session is refused. A *mailsec.SecurityError carries the category
// an application acts on (errors.Is with mailsec.ErrDowngrade,
// mailsec.ErrCertificate, ...); the reasons below are this package's finer
// view, kept in the error's Err and said in words in its Detail. The
// package branches on them with errors.Is: an opportunistic level goes on
// without TLS only when STARTTLS was not offered, TLS reports have a
// result type for each, Check tells a host without STARTTLS from one whose
// TLS failed. No application needs them: they are not exported.

// failure is a reason a session is refused, within its category.
type failure struct {
	category error // the mailsec sentinel the SecurityError matches
	text     string
}

func (f *failure) Error() string { return f.text }

var (
	errNoStartTLS        = &failure{mailsec.ErrDowngrade, "STARTTLS not offered"}
	errStartTLSRefused   = &failure{mailsec.ErrDowngrade, "STARTTLS refused"}
	errInjected          = &failure{mailsec.ErrDowngrade, "bytes injected before the TLS handshake"}
	errNotTLS            = &failure{mailsec.ErrDowngrade, "server does not speak TLS on the implicit-TLS port"}
	errTLSGreeting       = &failure{mailsec.ErrDowngrade, "server speaks TLS where its plaintext greeting should be"}
	errCertificate       = &failure{mailsec.ErrCertificate, "certificate verification failed"}
	errPinMismatch       = &failure{mailsec.ErrCertificate, "certificate key matches no pin"}
	errDANEMismatch      = &failure{mailsec.ErrCertificate, "certificate matches no usable TLSA record"}
	errHandshake         = &failure{mailsec.ErrHandshake, "TLS handshake failed"}
	errRequireTLS        = &failure{mailsec.ErrRequireTLS, "REQUIRETLS not offered after verified TLS"}
	errPlaintextNotLocal = &failure{mailsec.ErrPlaintext, "plaintext to a non-loopback server"}
	errPlaintextAuth     = &failure{mailsec.ErrPlaintext, "credentials over a plaintext session"}
	errDANERequired      = &failure{mailsec.ErrDomainPolicy, "no usable DANE TLSA records"}
	errMXNotInPolicy     = &failure{mailsec.ErrDomainPolicy, "MX host not listed in the MTA-STS policy"}
	errTLSALookup        = &failure{mailsec.ErrDomainPolicy, "TLSA lookup failed"}
	errLevel             = &failure{mailsec.ErrDomainPolicy, "security level not supported by this transport"}
)

// ErrImplicitTLSPort is the cause (found with errors.Is) of the
// *mailsec.SecurityError returned when a server that should greet in
// plaintext, before STARTTLS or at the Plaintext level, begins with a TLS
// record instead: it expects implicit TLS (port 465, Mode ImplicitTLS).
// The session ends as soon as the record's first byte arrives. Like every
// configuration mismatch, it is not temporary.
var ErrImplicitTLSPort = errors.New("transport: the server speaks TLS from the first byte (implicit TLS)")

// refuse returns the error that ends a session with host for f: detail
// says what was seen, cause is the error underneath, if any (the x509 or
// DANE error, a failed lookup).
func refuse(host string, f *failure, detail string, cause error) *mailsec.SecurityError {
	text := f.text
	if detail != "" {
		text += ": " + detail
	}
	var err error = f
	if cause != nil {
		err = fmt.Errorf("%w: %w", f, cause)
	}
	return &mailsec.SecurityError{Host: host, Category: f.category, Detail: text, Err: err}
}
