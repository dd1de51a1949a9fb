package mailsectest

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"sync"

	"github.com/emersion/go-message"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/smtpdata"
)

// RecordingTransport is a mailsec.Transport that records deliveries
// instead of sending them, for an application's own tests. It validates
// each delivery and writes its content through the same line-ending and
// line-length checks a real transport applies. It is safe for concurrent
// use.
type RecordingTransport struct {
	// Fail, when set, decides a delivery's fate: a non-nil error fails it
	// (after it has been recorded) as a real transport would.
	Fail func(d *mailsec.Delivery) error

	// PerDomain, when set, makes the RecordingTransport stand for a
	// transport that delivers to each recipient domain's servers (as
	// transport.Direct does): it no longer declares SharedTransaction, so
	// a mailsec.Sender hands it one delivery per recipient domain. When
	// unset it stands for a transport.Submission: one delivery for the
	// recipients of every domain.
	PerDomain bool

	mu         sync.Mutex
	deliveries []Delivery
}

// Delivery is one recorded delivery.
type Delivery struct {
	From       string
	To         []string
	Security   mailsec.Security
	RequireTLS bool
	// TLSRequiredNo: the message carries "TLS-Required: No".
	TLSRequiredNo bool
	SMTPUTF8      bool
	DSN           *mailsec.DSN
	// Data is the message with CRLF line endings.
	Data []byte
}

// SharedTransaction reports, unless PerDomain is set, that the
// RecordingTransport takes every delivery in one transaction, as a
// transport.Submission does (see mailsec.Transport).
func (r *RecordingTransport) SharedTransaction() bool { return !r.PerDomain }

// Deliver implements mailsec.Transport.
func (r *RecordingTransport) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w := smtpdata.NewWriter(&buf)
	if _, err := d.Content.WriteTo(w); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.deliveries = append(r.deliveries, Delivery{
		From: d.From, To: slices.Clone(d.To), Security: d.Security, RequireTLS: d.RequireTLS,
		TLSRequiredNo: d.TLSRequiredNo, SMTPUTF8: d.SMTPUTF8, DSN: d.DSN, Data: buf.Bytes(),
	})
	n := len(r.deliveries)
	r.mu.Unlock()

	res := &mailsec.DeliveryResult{
		Connection: &mailsec.ConnectionState{Host: "recording"},
		Recipients: make([]mailsec.RecipientResult, len(d.To)),
	}
	for i, to := range d.To {
		res.Recipients[i].Address = to
	}
	if r.Fail != nil {
		if err := r.Fail(d); err != nil {
			for i := range res.Recipients {
				res.Recipients[i].Err = err
			}
			return res, err
		}
	}
	res.Reply = &mailsec.Reply{Code: 250, EnhancedCode: mailsec.EnhancedCode{2, 0, 0}, Text: "Ok: queued as rec" + strconv.Itoa(n)}
	for i := range res.Recipients {
		res.Recipients[i].Accepted = true
	}
	return res, nil
}

// Deliveries returns what was recorded so far, in order.
func (r *RecordingTransport) Deliveries() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.deliveries)
}

// Reset forgets what was recorded.
func (r *RecordingTransport) Reset() {
	r.mu.Lock()
	r.deliveries = nil
	r.mu.Unlock()
}

// For returns the deliveries that included rcpt.
func (r *RecordingTransport) For(rcpt string) []Delivery {
	var out []Delivery
	for _, d := range r.Deliveries() {
		if slices.Contains(d.To, rcpt) {
			out = append(out, d)
		}
	}
	return out
}

// Entity parses the delivery's data as a MIME message.
func (d Delivery) Entity() (*message.Entity, error) {
	return message.Read(bytes.NewReader(d.Data))
}
