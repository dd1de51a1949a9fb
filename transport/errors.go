package transport

import (
	"errors"
	"fmt"

	"github.com/mailsec/mailsec"
)

// configError reports a mistake in a transport's configuration: what
// Validate returns, and what Deliver returns until it is fixed.
func configError(field, value, reason string) error {
	return &mailsec.ConfigError{Field: field, Value: value, Reason: reason}
}

// invalid reports bad input to a call (a Delivery, a domain to check) in
// the form the Sender reports a bad Message.
func invalid(field, value, reason string) error {
	return &mailsec.ValidationError{Field: field, Value: value, Reason: reason}
}

// ErrNoVerdict: the end of the message went out (the terminating dot of
// DATA, or BDAT LAST with the last chunk) and no verdict came back: the
// connection failed or the time ran out. A *mailsec.NetworkError during
// DATA wraps it. The server may have taken the message.
var ErrNoVerdict = errors.New("mailsec/transport: the end of the message went out, and no verdict came back")

// OutcomeUnknown reports whether err, a delivery's failure or one of its
// recipients', leaves the outcome unknown: ErrNoVerdict, or
// ErrUnsolicitedReply (the server's replies came out of turn, at any point
// of the transaction: no reply can then be trusted, even one before the
// message went out). The server may have taken the message: a retry may
// deliver it twice. Any other failure before the end of the message went
// out, and one after a reply had refused the transaction, are not
// unknown: the server cannot have taken it.
//
// Direct never tries another MX host after such a failure, so that one
// delivery never leaves two copies with two hosts.
func OutcomeUnknown(err error) bool {
	return errors.Is(err, ErrNoVerdict) || errors.Is(err, ErrUnsolicitedReply)
}

// noVerdict marks err, a *mailsec.NetworkError, as a failure after the end
// of the message went out (ErrNoVerdict).
func noVerdict(err error) error {
	var ne *mailsec.NetworkError
	if !errors.As(err, &ne) {
		return err
	}
	return &mailsec.NetworkError{Host: ne.Host, Op: "DATA", Err: fmt.Errorf("%w: %w", ErrNoVerdict, ne.Err)}
}
