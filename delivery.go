package mailsec

import (
	"cmp"
	"context"
	"errors"
	"io"
	"strconv"

	"github.com/mailsec/mailsec/internal/syntax"
)

// Transport performs one delivery: one SMTP transaction (or its
// equivalent) for one set of recipients. Implementations must be safe for
// concurrent use, must honour d.Security exactly (ending the session before
// MAIL FROM when it cannot be met) and decide no policy of their own.
//
// Deliver returns a non-nil error when no recipient was accepted: the
// session could not be established or secured, MAIL or DATA was refused, or
// every RCPT was. The DeliveryResult may still be non-nil then, to report
// what was observed. When the error is nil, at least one recipient was
// accepted; the result says which, and why the others were refused. A
// session that failed after the end of the message went out, with no
// verdict, should be reported as an error wrapping transport.ErrNoVerdict
// (see transport.OutcomeUnknown), so that a queue (package outbox) flags
// its recipients as possibly delivered rather than send to them again
// unmarked.
//
// A Sender treats a panic in Deliver as a failure of that delivery's
// recipients (not temporary: whether anything reached the server is
// unknown) and goes on with the message's other deliveries.
//
// A Transport may also have a method Validate() error that checks its
// configuration without connecting, as transport.Submission and
// transport.Direct do. NewSender calls it and refuses the Transport when
// it fails, so that a mistake (a Submission without an Addr) stops the
// application at start-up instead of failing every Send. It should return
// a *ConfigError naming the setting at fault; NewSender wraps any other
// error in one.
//
// The Sender hands a Transport one Delivery per recipient domain, each
// with an ENVID (DSN.EnvelopeID) of its own, so that no recipient's
// server learns the ENVID another domain's recipients were sent with
// (and so cannot write a delivery status notification the Receipt would
// match for them). This is the default, whatever the Transport: one that
// delivers to each domain's MX host (transport.Direct) needs it, and one
// whose kind the Sender cannot tell (a wrapper) is treated the same way.
// A Transport that hands every Delivery, whatever its recipients'
// domains, to one hop in one transaction (transport.Submission, which
// gives the whole message to a smarthost) may say so with a method
// SharedTransaction() bool that returns true; the Sender then puts the
// recipients of several domains in one Delivery, one transaction. A
// Transport that wraps another (dkimsign.Transport) forwards what the one
// it wraps declares, with the function SharedTransaction.
type Transport interface {
	Deliver(ctx context.Context, d *Delivery) (*DeliveryResult, error)
}

// SharedTransaction reports whether t declares, by a method
// SharedTransaction() bool that returns true, that it hands every
// Delivery to one hop in one transaction, so that the Sender need not
// give each recipient domain a Delivery (and an ENVID) of its own (see
// Transport). A Transport without the method, or whose method panics,
// does not: its deliveries are split by domain. A Transport that wraps
// another calls it to forward the wrapped one's declaration.
func SharedTransaction(t Transport) (shared bool) {
	st, ok := t.(interface{ SharedTransaction() bool })
	if !ok || isNil(t) {
		return false
	}
	defer func() {
		if recover() != nil {
			shared = false
		}
	}()
	return st.SharedTransaction()
}

// Delivery is one message for one set of recipients.
type Delivery struct {
	// From is the reverse-path (MAIL FROM); empty for the null path.
	From string
	// To are the forward-paths (RCPT TO), at least one.
	To []string
	// Security is the transport security floor.
	Security Security
	// RequireTLS sends REQUIRETLS (RFC 8689); the transport fails the
	// delivery unless the session is verified TLS and the server offers it.
	RequireTLS bool
	// TLSRequiredNo marks a message carrying "TLS-Required: No" (RFC 8689
	// §5): the sender asks that the recipient domain's TLS policies (DANE,
	// MTA-STS) not stop its delivery. Direct delivery then still requires
	// TLS, without authentication; a Submission ignores it (the header
	// travels on). Never together with RequireTLS.
	TLSRequiredNo bool
	// SMTPUTF8 marks an internationalised envelope or header; the transport
	// fails the delivery unless the server offers SMTPUTF8.
	SMTPUTF8 bool
	// EightBit marks 8-bit content; the transport fails the delivery unless
	// the server offers 8BITMIME.
	EightBit bool
	// DSN options; nil for none.
	DSN *DSN
	// Content writes the whole message, header and body. Line endings may
	// be CRLF or bare LF; the transport writes CRLF and dot-stuffs. It may
	// be written more than once if the transport retries.
	Content io.WriterTo
}

// Validate checks the envelope the way a transport must before using it:
// paths free of anything that could inject a command, DSN arguments well
// formed. Transports call it so that a Delivery built by hand is held to
// the same rules as one built by a Sender. A nil Delivery, or one without
// Content (nil, or a typed nil), is a *ValidationError too.
func (d *Delivery) Validate() error {
	if d == nil {
		return invalid("Delivery", "", "nil delivery")
	}
	if d.From != "" {
		if err := checkPath("From", d.From, d.SMTPUTF8); err != nil {
			return err
		}
	}
	if len(d.To) == 0 {
		return invalid("To", "", "no recipients")
	}
	for i, to := range d.To {
		if err := checkPath("To["+strconv.Itoa(i)+"]", to, d.SMTPUTF8); err != nil {
			return err
		}
	}
	if isNil(d.Content) {
		return invalid("Content", "", "no content")
	}
	if err := d.DSN.validate(); err != nil {
		return err
	}
	return d.Security.validate()
}

func checkPath(field, p string, utf8 bool) error {
	m, reason := parseAddrSpec(p)
	if reason != "" {
		return invalid(field, p, reason)
	}
	if m.utf8 && !utf8 {
		return invalid(field, p, "non-ASCII local part needs SMTPUTF8")
	}
	if !utf8 && !syntax.IsASCII(p) {
		return invalid(field, p, "a non-ASCII domain needs SMTPUTF8; without it, write the domain as A-labels ("+m.addr(false)+")")
	}
	return nil
}

// DeliveryResult is what a Transport observed.
type DeliveryResult struct {
	// Connection describes the session; nil when none was established,
	// or when the recipients' results each name their own.
	Connection *ConnectionState
	// Reply is the server's reply to the end of DATA; nil if not reached.
	Reply *Reply
	// Recipients has one entry per Delivery.To, in the same order.
	Recipients []RecipientResult
}

// RecipientResult is the outcome for one forward-path.
type RecipientResult struct {
	Address  string
	Accepted bool // the message was accepted for this recipient
	// Reply is the reply to RCPT when the recipient was refused. A
	// transport that used more than one session for a delivery (direct
	// delivery to several domains) sets it for accepted recipients too:
	// the reply to the end of DATA of their session (as
	// DeliveryResult.Recipient gives it); and for recipients whose
	// transaction failed after RCPT, the reply that ended it.
	Reply *Reply
	// Connection, when set, is the session this recipient's outcome came
	// from, overriding DeliveryResult.Connection. Recipients whose results
	// point to the same ConnectionState were in the same transaction: a
	// transport that runs several for one Delivery (direct delivery to
	// several domains) gives each its own, and leaves it nil for a
	// recipient no session was established for. The Sender numbers
	// Receipt deliveries by it.
	Connection *ConnectionState
	Err        error // why it was not accepted
	// Attempts, for a recipient not accepted, are the servers tried for
	// it, in order, with what was seen at each (Failure.Attempts in the
	// Receipt). A transport that tried one server for the whole delivery
	// may leave them to Recipient, which makes that one from Connection.
	Attempts []Attempt
	// Notes, for a recipient not accepted, are what the transport noted
	// on the way when Connection does not record them.
	Notes []string
}

// Recipient returns the outcome for the i-th recipient of the delivery
// (Delivery.To[i]) when Deliver returned r and err: the recipient's own
// result, completed with what r reports for the whole session.
//
//   - Its Connection is its own, or else r.Connection.
//   - It is accepted only when err is nil and its own result says so; its
//     Reply is then its own, or else r.Reply (the reply to the end of
//     DATA).
//   - Otherwise it failed: with its own Err and Reply when its result has
//     an Err; else with err and r.Reply; else (err is nil, and the
//     transport reported nothing for it) with an error that says so. Its
//     Attempts and Notes are its own; without Attempts, the session its
//     Connection names is its one attempt.
//
// This is the one place a recipient's outcome is read from a result: the
// Sender builds its Receipt with it, and a transport that runs several
// transactions for one Delivery (direct delivery to several domains)
// gathers each transaction's results into its own with it. r may be nil.
func (r *DeliveryResult) Recipient(i int, err error) RecipientResult {
	out := r.recipient(i, err)
	if !out.Accepted && len(out.Attempts) == 0 && out.Connection != nil {
		out.Attempts = []Attempt{attemptOf(out.Connection, out.Err)}
	}
	return out
}

func (r *DeliveryResult) recipient(i int, err error) RecipientResult {
	var out RecipientResult
	if r != nil {
		out.Connection = r.Connection
		if i >= 0 && i < len(r.Recipients) {
			own := r.Recipients[i]
			out.Address = own.Address
			if own.Connection != nil {
				out.Connection = own.Connection
			}
			switch {
			case own.Accepted && err == nil:
				out.Accepted, out.Reply = true, cmp.Or(own.Reply, r.Reply)
				return out
			case own.Err != nil:
				out.Reply, out.Err = own.Reply, own.Err
				out.Attempts, out.Notes = own.Attempts, own.Notes
				return out
			}
			out.Attempts, out.Notes = own.Attempts, own.Notes
		}
		if err != nil {
			out.Reply = r.Reply
		}
	}
	out.Err = err
	if err == nil {
		out.Err = errors.New("mailsec: transport reported no result for this recipient")
	}
	return out
}
