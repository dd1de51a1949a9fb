package dkimsign

import (
	"errors"
	"fmt"

	"github.com/mailsec/mailsec"
)

var (
	// ErrWeakKey: a key too weak to sign with (RSA under 2048 bits, RFC
	// 8301 §3.2).
	ErrWeakKey = errors.New("dkimsign: key too weak")
	// ErrNoSigner: the message's From domain has no signer, and the
	// Transport was not told to send such mail unsigned.
	ErrNoSigner = errors.New("dkimsign: no DKIM signer for the From domain")
	// ErrUnaligned: a signer's domain (d=) is neither the From domain nor
	// a parent of it (relaxed alignment, RFC 7489 §3.1.1).
	ErrUnaligned = errors.New("dkimsign: signing domain not aligned with the From domain")
)

// KeyError reports a key that cannot sign: too weak (errors.Is
// ErrWeakKey), of an algorithm DKIM does not define, or unreadable. It
// is a configuration mistake: errors.Is(err, mailsec.ErrConfig) holds,
// and a retry cannot help.
type KeyError struct {
	Domain, Selector string // the signer the key was meant for; may be empty
	Algorithm        string // "rsa", "ed25519", or the Go type of the key
	Bits             int    // an RSA key's size
	Reason           string
	weak             bool
}

func (e *KeyError) Error() string {
	who := ""
	if e.Domain != "" || e.Selector != "" {
		who = fmt.Sprintf(" for %s._domainkey.%s", e.Selector, e.Domain)
	}
	return fmt.Sprintf("dkimsign: key%s: %s", who, e.Reason)
}

// Is reports ErrWeakKey for a weak key, and mailsec.ErrConfig.
func (e *KeyError) Is(target error) bool {
	return target == mailsec.ErrConfig || (e.weak && target == ErrWeakKey)
}

// Temporary reports false: a key must be replaced, not retried.
func (e *KeyError) Temporary() bool { return false }

// DomainError reports a message the Transport refused to sign or send:
// its From domain has no signer (errors.Is ErrNoSigner), or its From
// header cannot be read or names more than one domain. Nothing was sent.
type DomainError struct {
	Domain string // the From domain, when one was read
	Reason string
	Err    error // ErrNoSigner, or the cause
}

func (e *DomainError) Error() string {
	if e.Domain == "" {
		return "dkimsign: " + e.Reason
	}
	return fmt.Sprintf("dkimsign: From domain %q: %s", e.Domain, e.Reason)
}

func (e *DomainError) Unwrap() error { return e.Err }

// Temporary reports false: the configuration or the message must change.
func (e *DomainError) Temporary() bool { return false }

// AlignmentError reports a signer whose domain does not align with the
// From domain it is configured for. errors.Is(err, ErrUnaligned) holds.
type AlignmentError struct {
	FromDomain, SigningDomain string
}

func (e *AlignmentError) Error() string {
	return fmt.Sprintf("dkimsign: signing domain %q is neither %q nor a parent of it; set Options.AllowUnaligned to sign with it anyway",
		e.SigningDomain, e.FromDomain)
}

// Is reports ErrUnaligned and mailsec.ErrConfig.
func (e *AlignmentError) Is(target error) bool {
	return target == ErrUnaligned || target == mailsec.ErrConfig
}

// Temporary reports false.
func (e *AlignmentError) Temporary() bool { return false }
