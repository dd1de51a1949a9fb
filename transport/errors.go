package transport

import "github.com/mailsec/mailsec"

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
