// The Send pipeline. Send validates and renders the message (build.go),
// then one sending value carries it through: every recipient is planned
// by the Policy, grouped with those that get the same bytes, protected
// when its plan says so (protect.go, beside the Protector contract; the
// notice in notice.go), handed to the Transport (delivery.go has its
// contract) and recorded in the Receipt (receipt.go). The functions below
// come in that order, each above what it calls.

package mailsec

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Send validates m, plans each recipient with the Sender's Policy, and
// delivers. Nothing is sent when m is invalid. Each recipient is handled on
// its own: when some fail (refused by the server, no usable key, security
// requirement not met) the others are still delivered, and the error is a
// *SendError that unwraps to one *RecipientError per failed recipient. The
// Receipt is returned whenever anything was attempted, error or not.
func (s *Sender) Send(ctx context.Context, m *Message) (*Receipt, error) {
	return s.send(ctx, m, nil)
}

// SendTo sends m as Send does, but only to the recipients in to: the
// message is the one Send would write for all of its recipients (the same
// header, with To and Cc as m names them and no Bcc recipient in it, the
// same Message-ID and Date when m sets them), delivered to these alone,
// and the Receipt lists these alone. Each entry of to must be one of m's
// recipients (To, Cc or Bcc), written as m writes it or as its Receipt
// entry's Address is (what a queue keeps); repeats count once. An entry
// that is none of them, or an empty to, is a *ValidationError, and
// nothing is sent.
//
// A queue (package outbox) uses it to try again the recipients an earlier
// attempt did not reach, so that those it reached never get the message
// twice, with the Message-ID and Date that Prepare fixed.
func (s *Sender) SendTo(ctx context.Context, m *Message, to []string) (*Receipt, error) {
	if len(to) == 0 {
		return nil, invalid("SendTo recipients", "", "none given")
	}
	return s.send(ctx, m, to)
}

// Prepare validates m exactly as Send does, every check included
// (addresses, header fields, sizes, Options.AllowedSenders), without any
// I/O: attachments are not read, and the Policy is not asked. It returns
// a shallow copy of m (sharing its slices and attachment readers) whose
// MessageID, Date and DSN are set: m's own when it has them, or else the
// ones Send would have generated, by the Sender's clock and
// MessageIDDomain (for DSN: m's options, or ORCPT, with an EnvelopeID).
//
// A message sent later, or more than once, is prepared first: a queue
// (package outbox) calls Prepare when the application hands it a message,
// so that bad input fails there and then, and sends the copy, so that
// every attempt carries the same Message-ID and Date, and ENVIDs that
// begin with the same message ENVID (each delivery appends its own
// random part).
func (s *Sender) Prepare(m *Message) (*Message, error) {
	if err := s.check(m); err != nil {
		return nil, err
	}
	p, err := s.prepare(m)
	if err != nil {
		return nil, err
	}
	c := *m
	c.MessageID, c.Date, c.DSN = p.messageID, p.date, p.dsn
	return &c, nil
}

// check refuses what no Send can start with: a Sender not made by
// NewSender, a nil message.
func (s *Sender) check(m *Message) error {
	if s == nil || s.transport == nil {
		return invalid("Sender", "", "not made by NewSender")
	}
	if m == nil {
		return invalid("Message", "", "nil message")
	}
	return nil
}

// send is Send, to the recipients in only when only is not nil.
func (s *Sender) send(ctx context.Context, m *Message, only []string) (*Receipt, error) {
	if err := s.check(m); err != nil {
		return nil, err
	}
	if ctx == nil {
		return nil, invalid("Context", "", "nil context")
	}
	started := s.now()
	msg, err := s.prepare(m)
	if err != nil {
		return nil, err
	}
	if only != nil {
		if msg.rcpts, err = msg.only(only); err != nil {
			return nil, err
		}
	}
	sd := &sending{s: s, m: m, msg: msg}
	sd.start(started)
	planned := sd.plan(ctx)
	groups := sd.group(planned)
	if err := sd.checkReplayable(groups); err != nil {
		return nil, err
	}
	for _, g := range groups {
		sd.carryOut(ctx, g)
	}
	return sd.finish(ctx)
}

// sending is one Send under way: the message, its recipients, each with
// its entry in the Receipt, and the delivery numbers handed out so far.
type sending struct {
	s     *Sender
	m     *Message  // as the application gave it, for the Policy and the NoticeFunc
	msg   *prepared // m, validated and rendered
	rcpts []recipient
	rec   *Receipt
	seq   int // the last delivery number handed out
}

// recipient is one recipient of a Send on its way through it.
type recipient struct {
	preparedRcpt
	receipt *RecipientReceipt // its entry in the Receipt, filled in as the Send goes
	// why is why no allowed Protector could protect the recipient's
	// content. hard marks a failure that rules out the plan's fallback
	// (unprotected content, or a notice): it was not "this recipient has
	// no usable key" but a Protector that failed as a whole, a key lookup
	// that failed for now, or a plan naming no method the Sender has.
	why  error
	hard bool
}

// fail records that r receives nothing, and why.
func (r *recipient) fail(err error) {
	r.receipt.Err = &RecipientError{Recipient: r.Address, Err: err}
}

// start makes the Receipt of a Send that started at t, with an entry for
// each recipient.
func (sd *sending) start(t time.Time) {
	sd.rec = &Receipt{MessageID: sd.msg.messageID, Reference: sd.m.Reference, From: sd.msg.from,
		EnvelopeFrom: sd.msg.envelopeFrom, EnvelopeID: sd.msg.dsn.EnvelopeID, Started: t, Recipients: make([]RecipientReceipt, len(sd.msg.rcpts))}
	sd.rcpts = make([]recipient, len(sd.msg.rcpts))
	for i, r := range sd.msg.rcpts {
		sd.rec.Recipients[i] = RecipientReceipt{Address: r.Address, Kind: r.Kind}
		sd.rcpts[i] = recipient{preparedRcpt: r, receipt: &sd.rec.Recipients[i]}
	}
}

// plan asks the Policy for every recipient's plan and records it. It
// returns the recipients planned; one whose plan cannot be made fails and
// receives nothing.
func (sd *sending) plan(ctx context.Context) []*recipient {
	planned := make([]*recipient, 0, len(sd.rcpts))
	for i := range sd.rcpts {
		r := &sd.rcpts[i]
		p, err := sd.s.askPolicy(ctx, sd.m, r.Recipient)
		if err == nil {
			err = p.validate()
		}
		if err != nil {
			r.fail(fmt.Errorf("policy: %w", err))
			continue
		}
		r.receipt.Plan = p
		planned = append(planned, r)
	}
	return planned
}

// askPolicy asks the Policy for r's plan. A panic in it becomes an error,
// so that the recipient fails (receiving nothing) and the others go on.
func (s *Sender) askPolicy(ctx context.Context, m *Message, r Recipient) (p Plan, err error) {
	defer func() {
		if v := recover(); v != nil {
			p, err = Plan{}, fmt.Errorf("mailsec: Policy panicked: %v", v)
		}
	}()
	p, err = s.policy.Plan(ctx, m, r)
	return p, usableError("Policy", err)
}

// A group is a set of recipients that get the same bytes: one delivery,
// or one per protection method when the plan asks for protection.
type group struct {
	plan  Plan
	rcpts []*recipient
}

// group gathers planned recipients whose plans are alike and whose
// domain is the same (any domain, for a transport that declares
// SharedTransaction); every Bcc recipient gets a group of its own, and
// so does every recipient when Options.ReturnPath is set: each delivery's
// return path, which every recipient of it reads, then speaks for one
// recipient.
func (sd *sending) group(rcpts []*recipient) []*group {
	groups := make([]*group, 0, len(rcpts))
	byKey := map[string]*group{}
	alone := sd.s.returnPath != nil
	for _, r := range rcpts {
		plan := r.receipt.Plan
		key := plan.key()
		if sd.s.perDomain {
			key += "\x00" + domainKey(r.Address)
		}
		if g := byKey[key]; g != nil && r.Kind != KindBcc && !alone {
			g.rcpts = append(g.rcpts, r)
			continue
		}
		g := &group{plan: plan, rcpts: []*recipient{r}}
		groups = append(groups, g)
		if r.Kind != KindBcc {
			byKey[key] = g
		}
	}
	return groups
}

// domainKey is the domain of an address, for grouping: its letters in
// lower case.
func domainKey(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	return strings.ToLower(addr[at+1:])
}

// checkReplayable fails the Send, before any I/O, when the groups need
// the content more than once and an attachment can be read only once.
func (sd *sending) checkReplayable(groups []*group) error {
	// Deliveries that carry the content (notices do not): one per plain
	// group, and for a protected group one per method that may serve
	// part of it, plus the unprotected rest under ProtectionPreferred.
	carrying := 0
	for _, g := range groups {
		switch g.plan.Protection {
		case ProtectionNone:
			carrying++
		case ProtectionRequired:
			carrying += min(len(g.rcpts), len(sd.s.protectorsFor(g.plan)))
		case ProtectionPreferred:
			carrying += min(len(g.rcpts), len(sd.s.protectorsFor(g.plan))+1)
		}
	}
	if carrying > 1 {
		return sd.msg.checkReplayable(carrying)
	}
	return nil
}

// protectorsFor returns the Sender's Protectors a plan allows, in the
// plan's order of preference.
func (s *Sender) protectorsFor(plan Plan) []namedProtector {
	if len(plan.Methods) == 0 {
		return s.protectors
	}
	var out []namedProtector
	for _, m := range plan.Methods {
		for _, np := range s.protectors {
			if np.name == m {
				out = append(out, np)
			}
		}
	}
	return out
}

// carryOut carries out one group's plan: a plain delivery; or one
// protected delivery per method that has keys for some of the group,
// then, for those left without a usable key, a plain delivery
// (ProtectionPreferred), a notice each (NoKeyNotice), or nothing.
func (sd *sending) carryOut(ctx context.Context, g *group) {
	if err := ctx.Err(); err != nil {
		for _, r := range g.rcpts {
			r.fail(err)
		}
		return
	}
	if g.plan.Protection == ProtectionNone {
		sd.deliver(ctx, sd.msg, g.plan, g.rcpts, sd.msg.content())
		return
	}
	left := sd.protect(ctx, g)
	sd.unprotected(ctx, g.plan, left)
}

// deliver hands one delivery to the Transport: content, with msg's
// envelope, for rcpts, under plan's security requirement. Then it
// records the outcome.
func (sd *sending) deliver(ctx context.Context, msg *prepared, plan Plan, rcpts []*recipient, content io.WriterTo) {
	// Each delivery has its own ENVID (deliveryEnvelopeID); unless the
	// transport declares SharedTransaction, its recipients are of one
	// domain, and with Options.ReturnPath it has one recipient (group).
	dsn := *msg.dsn
	dsn.EnvelopeID = deliveryEnvelopeID(msg.dsn.EnvelopeID)
	from := msg.envelopeFrom
	if sd.s.returnPath != nil {
		var err error
		if from, err = sd.s.deliveryReturnPath(dsn.EnvelopeID, msg.utf8 || msg.envUTF8); err != nil {
			sd.record(ctx, msg, rcpts, nil, err, "")
			return
		}
	}
	d := &Delivery{
		From:          from,
		To:            addresses(rcpts),
		Security:      plan.Security,
		RequireTLS:    msg.requireTLS,
		TLSRequiredNo: msg.tlsOptional,
		DSN:           &dsn,
		Content:       content,
		SMTPUTF8:      msg.utf8 || msg.envUTF8,
	}
	for _, r := range rcpts {
		d.SMTPUTF8 = d.SMTPUTF8 || r.utf8
	}
	d.EightBit = d.SMTPUTF8
	res, err := sd.s.deliverRecovering(ctx, d)
	sd.record(ctx, msg, rcpts, res, usableError("Transport", err), dsn.EnvelopeID)
}

// deliveryReturnPath returns the reverse-path of the delivery whose ENVID
// is envid, by Options.ReturnPath: a valid path, or a *ConfigError. A
// panic in it is an error too.
func (s *Sender) deliveryReturnPath(envid string, utf8 bool) (path string, err error) {
	defer func() {
		if v := recover(); v != nil {
			path, err = "", &ConfigError{Field: "Options.ReturnPath", Reason: fmt.Sprintf("panicked: %v", v)}
		}
	}()
	path, err = s.returnPath(envid)
	if err = usableError("Options.ReturnPath", err); err != nil {
		return "", &ConfigError{Field: "Options.ReturnPath", Reason: err.Error()}
	}
	if path == "" {
		return "", &ConfigError{Field: "Options.ReturnPath", Reason: "returned no address"}
	}
	if err := checkPath("ReturnPath", path, utf8); err != nil {
		return "", &ConfigError{Field: "Options.ReturnPath", Value: path, Reason: err.Error()}
	}
	return path, nil
}

// deliverRecovering hands d to the Transport, turning a panic in it (a
// bug in the transport, or in a Dialer or Resolver it calls) into an
// error: the delivery's recipients fail, the message's other deliveries
// go on, and the application is not taken down. Whether any of it
// reached the server is unknown; the error is not temporary.
func (s *Sender) deliverRecovering(ctx context.Context, d *Delivery) (res *DeliveryResult, err error) {
	defer func() {
		if v := recover(); v != nil {
			res, err = nil, fmt.Errorf("mailsec: Transport panicked: %v", v)
		}
	}()
	return s.transport.Deliver(ctx, d)
}

// record writes the outcome of one delivery of msg, as the Transport
// returned it, into its recipients' Receipt entries, and logs it.
func (sd *sending) record(ctx context.Context, msg *prepared, rcpts []*recipient, res *DeliveryResult, err error, envelopeID string) {
	// Each SMTP transaction the transport reports gets the next delivery
	// number: recipients whose results share a session (the same
	// ConnectionState) share it; accepted recipients of a transport that
	// reports no session share one for this call.
	numbers := map[*ConnectionState]int{}
	for j, r := range rcpts {
		out := res.Recipient(j, err)
		rr := r.receipt
		rr.Connection, rr.Reply = out.Connection, out.Reply
		rr.RequireTLS, rr.TLSRequiredNo = msg.requireTLS, msg.tlsOptional
		if out.Accepted {
			rr.Accepted = true
			if out.Reply != nil {
				rr.QueueID = queueID(out.Reply.Text)
			}
		} else {
			rerr := usableError("Transport", out.Err)
			var re *RecipientError
			if !errors.As(rerr, &re) || re.Recipient != rr.Address {
				rerr = &RecipientError{Recipient: rr.Address, Err: rerr}
			}
			rr.Err = rerr
			rr.Failure = &Failure{Attempts: slices.Clone(out.Attempts), Notes: slices.Clone(out.Notes)}
		}
		rr.Delivery, rr.EnvelopeID = 0, ""
		if inTransaction(rr) {
			rr.EnvelopeID = envelopeID
			n, ok := numbers[rr.Connection]
			if !ok {
				sd.seq++
				n = sd.seq
				numbers[rr.Connection] = n
			}
			rr.Delivery = n
		}
	}
	sd.log(ctx, msg, rcpts, res, err)
}

// inTransaction reports whether an SMTP transaction carried, or tried to
// carry, the recipient rr: it was accepted, the server replied about it
// (to its RCPT, or to the end of DATA), or its session got as far as MAIL
// FROM. A session that ended before MAIL FROM fails with a
// *SecurityError or *ExtensionError (whose contracts say so), an
// *AuthError or a *ValidationError, or, when it was never established,
// reports no ConnectionState.
func inTransaction(rr *RecipientReceipt) bool {
	switch {
	case rr.Accepted, rr.Reply != nil:
		return true
	case rr.Connection == nil:
		return false
	}
	var se *SecurityError
	var ee *ExtensionError
	var ve *ValidationError
	var ae *AuthError
	return !errors.As(rr.Err, &se) && !errors.As(rr.Err, &ee) && !errors.As(rr.Err, &ve) && !errors.As(rr.Err, &ae)
}

// log writes one record per delivery of msg (or per set of recipients
// that got none), with the protection each recipient's Receipt entry
// records.
func (sd *sending) log(ctx context.Context, msg *prepared, rcpts []*recipient, res *DeliveryResult, err error) {
	l := sd.s.logger
	if l == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("message_id", msg.messageID),
		slog.Any("recipients", addresses(rcpts)),
	}
	if sd.m.Reference != "" {
		attrs = append(attrs, slog.String("reference", sd.m.Reference))
	}
	var p *ProtectionInfo
	var fps []string
	for _, r := range rcpts {
		if pi := r.receipt.Protection; pi != nil {
			p = cmp.Or(p, pi)
			if pi.Fingerprint != "" {
				fps = append(fps, pi.Fingerprint)
			}
		}
	}
	if p != nil {
		// One delivery has one method; fingerprints differ per recipient.
		attrs = append(attrs, slog.String("protection", p.Method))
		if len(fps) > 0 {
			attrs = append(attrs, slog.Any("fingerprints", fps))
		}
		if p.Reason != "" {
			attrs = append(attrs, slog.String("unprotected_because", p.Reason))
		}
	}
	if res != nil && res.Connection != nil {
		c := res.Connection
		attrs = append(attrs, slog.String("host", c.Host), slog.String("tls", c.TLSVersion),
			slog.String("cipher", c.CipherSuite), slog.String("verification", string(c.Verification)),
			slog.Bool("reused", c.Reused))
		if c.Policy != "" {
			attrs = append(attrs, slog.String("domain", c.Domain), slog.String("policy", c.Policy))
		}
		if len(c.Notes) > 0 {
			attrs = append(attrs, slog.Any("notes", c.Notes))
		}
	}
	if res != nil && res.Reply != nil {
		attrs = append(attrs, slog.String("reply", res.Reply.String()))
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	l.LogAttrs(ctx, level, "mailsec delivery", attrs...)
}

// finish completes the Receipt (whether a retry can help each recipient
// that was not delivered, when the Send finished), hands it to OnReceipt
// and returns it, with a *SendError for those recipients.
func (sd *sending) finish(ctx context.Context) (*Receipt, error) {
	for i := range sd.rec.Recipients {
		if rr := &sd.rec.Recipients[i]; rr.Err != nil {
			if rr.Failure == nil {
				rr.Failure = &Failure{}
			}
			rr.Failure.Temporary = IsTemporary(rr.Err)
			if x, ok := ExplainError(rr.Err); ok {
				rr.Failure.Explanation = &x
			}
		}
	}
	sd.rec.Finished = sd.s.now()
	sd.s.handOver(ctx, sd.rec)
	var failed []*RecipientError
	for _, r := range sd.rec.Recipients {
		if r.Err != nil {
			var re *RecipientError
			if !errors.As(r.Err, &re) {
				re = &RecipientError{Recipient: r.Address, Err: r.Err}
			}
			failed = append(failed, re)
		}
	}
	if len(failed) > 0 {
		return sd.rec, &SendError{Failed: failed, Total: len(sd.rec.Recipients)}
	}
	return sd.rec, nil
}

// handOver hands rec to OnReceipt. The messages have gone out by now, so
// a panic in it changes nothing of Send's outcome (an error would invite a
// retry, and so a second copy): it is recovered and logged, on the
// Logger or, without one, on slog's default logger, never silently.
func (s *Sender) handOver(ctx context.Context, rec *Receipt) {
	if s.onReceipt == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			l := cmp.Or(s.logger, slog.Default())
			l.LogAttrs(ctx, slog.LevelError, "mailsec: Options.OnReceipt panicked",
				slog.String("message_id", rec.MessageID), slog.String("reference", rec.Reference), slog.String("panic", fmt.Sprint(v)))
		}
	}()
	s.onReceipt(ctx, rec)
}

// addresses returns the recipients' addresses.
func addresses(rcpts []*recipient) []string {
	out := make([]string, len(rcpts))
	for i, r := range rcpts {
		out[i] = r.Address
	}
	return out
}

// usableError returns err, or, when err cannot be used as an error, an
// error that says so, naming who returned it. Unusable is a typed nil (a
// nil *ProtectionError returned as an error: its methods dereference it)
// and an error whose methods panic when the Sender, or the application
// after it, prints or classifies it, as one holding a typed nil does.
func usableError(who string, err error) (out error) {
	if err == nil {
		return nil
	}
	if isNil(err) {
		return fmt.Errorf("mailsec: %s returned a nil %T as its error", who, err)
	}
	defer func() {
		if v := recover(); v != nil {
			out = fmt.Errorf("mailsec: %s returned an error (%T) whose methods panic, a nil value inside it perhaps: %v", who, err, v)
		}
	}()
	_ = err.Error()
	_ = IsTemporary(err)
	_ = errors.Is(err, ErrNoKey)
	for _, re := range recipientErrors(err) {
		_ = re.Recipient
	}
	return err
}

// recovering turns a panic while a message is written (in a Protector's
// output, a crypto library fed something it did not expect; in an
// attachment reader) into an error: the transport abandons the delivery
// before the end of DATA, and the application goes on.
type recovering struct {
	w    io.WriterTo
	what string // who panicked, for the error
}

func (r recovering) WriteTo(w io.Writer) (n int64, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("mailsec: %s panicked while the message was written: %v", r.what, v)
		}
	}()
	return r.w.WriteTo(w)
}
