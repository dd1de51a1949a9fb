package transport

import (
	"errors"

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

// OutcomeUnknown reports whether err, a delivery's failure or one of its
// recipients', leaves the outcome unknown: the session broke during DATA
// (the connection failed, or the time ran out, while the message was sent
// or its verdict awaited; with CHUNKING, once BDAT LAST went out, whichever
// reply was lost), or the server's reply to the end of the message came
// out of turn (ErrUnsolicitedReply). The server may have taken the
// message: a retry may deliver it twice. A failure before the end of the
// message that sent none of it, a refusal, and content abandoned before
// the end (mailsec.ErrContent) are not unknown.
//
// Direct never tries another MX host after such a failure, so that one
// delivery never leaves two copies with two hosts.
func OutcomeUnknown(err error) bool {
	if errors.Is(err, ErrUnsolicitedReply) {
		return true
	}
	if errors.Is(err, mailsec.ErrContent) {
		return false // abandoned before the end of the message
	}
	var ne *mailsec.NetworkError
	return errors.As(err, &ne) && ne.Op == "DATA"
}
