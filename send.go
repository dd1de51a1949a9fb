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
)

// Send validates m, plans each recipient with the Sender's Policy, and
// delivers. Nothing is sent when m is invalid. Each recipient is handled on
// its own: when some fail (refused by the server, no usable key, security
// requirement not met) the others are still delivered, and the error is a
// *SendError that unwraps to one *RecipientError per failed recipient. The
// Receipt is returned whenever anything was attempted, error or not.
func (s *Sender) Send(ctx context.Context, m *Message) (*Receipt, error) {
	if s == nil || s.transport == nil {
		return nil, invalid("Sender", "", "not made by NewSender")
	}
	if ctx == nil {
		return nil, invalid("Context", "", "nil context")
	}
	if m == nil {
		return nil, invalid("Message", "", "nil message")
	}
	msg, err := s.prepare(m)
	if err != nil {
		return nil, err
	}
	rec := &Receipt{MessageID: msg.messageID}
	for _, r := range msg.rcpts {
		rec.Recipients = append(rec.Recipients, RecipientReceipt{Address: r.Address, Kind: r.Kind})
	}
	fail := func(i int, err error) {
		rec.Recipients[i].Err = &RecipientError{Recipient: rec.Recipients[i].Address, Err: err}
	}

	groups := make([]*group, 0, len(msg.rcpts))
	byKey := map[string]*group{}
	for i, r := range msg.rcpts {
		plan, err := s.plan(ctx, m, r.Recipient)
		if err == nil {
			err = plan.validate()
		}
		if err != nil {
			fail(i, fmt.Errorf("policy: %w", err))
			continue
		}
		rec.Recipients[i].Plan = plan
		key := plan.key()
		if g := byKey[key]; g != nil && r.Kind != KindBcc {
			g.idx = append(g.idx, i)
			continue
		}
		g := &group{plan: plan, idx: []int{i}}
		groups = append(groups, g)
		if r.Kind != KindBcc {
			byKey[key] = g
		}
	}
	// Deliveries that carry the content (notices do not): one per plain
	// group, and for a protected group one per method that may serve
	// part of it, plus the unprotected rest under ProtectionPreferred.
	carrying := 0
	for _, g := range groups {
		switch g.plan.Protection {
		case ProtectionNone:
			carrying++
		case ProtectionRequired:
			carrying += min(len(g.idx), len(s.protectorsFor(g.plan)))
		case ProtectionPreferred:
			carrying += min(len(g.idx), len(s.protectorsFor(g.plan))+1)
		}
	}
	if carrying > 1 {
		if err := msg.checkReplayable(carrying); err != nil {
			return nil, err
		}
	}

	seq := 0
	for _, g := range groups {
		if err := ctx.Err(); err != nil {
			for _, i := range g.idx {
				fail(i, err)
			}
			continue
		}
		s.deliver(ctx, m, msg, g, &seq, rec)
	}
	s.receipt(ctx, msg, rec)

	var failed []*RecipientError
	for _, r := range rec.Recipients {
		if r.Err != nil {
			var re *RecipientError
			if !errors.As(r.Err, &re) {
				re = &RecipientError{Recipient: r.Address, Err: r.Err}
			}
			failed = append(failed, re)
		}
	}
	if len(failed) > 0 {
		return rec, &SendError{Failed: failed, Total: len(rec.Recipients)}
	}
	return rec, nil
}

// plan asks the Policy for r's plan. A panic in it becomes an error, so
// that the recipient fails (receiving nothing) and the others go on.
func (s *Sender) plan(ctx context.Context, m *Message, r Recipient) (p Plan, err error) {
	defer func() {
		if v := recover(); v != nil {
			p, err = Plan{}, fmt.Errorf("mailsec: Policy panicked: %v", v)
		}
	}()
	p, err = s.policy.Plan(ctx, m, r)
	return p, usableError("Policy", err)
}

// buildNotice asks the NoticeFunc for r's notice, turning a panic in it
// into an error: the recipient then fails and receives nothing.
func (s *Sender) buildNotice(ctx context.Context, m *Message, r Recipient) (n *Notice, err error) {
	defer func() {
		if v := recover(); v != nil {
			n, err = nil, fmt.Errorf("mailsec: Options.Notice panicked: %v", v)
		}
	}()
	n, err = s.notice(ctx, m, r)
	return n, usableError("Options.Notice", err)
}

// receipt hands rec to OnReceipt. The messages have gone out by now, so a
// panic in it changes nothing of Send's outcome (an error would invite a
// retry, and so a second copy): it is recovered and logged, on the
// Logger or, without one, on slog's default logger, never silently.
func (s *Sender) receipt(ctx context.Context, msg *prepared, rec *Receipt) {
	if s.onReceipt == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			l := cmp.Or(s.logger, slog.Default())
			l.LogAttrs(ctx, slog.LevelError, "mailsec: Options.OnReceipt panicked",
				slog.String("message_id", msg.messageID), slog.String("panic", fmt.Sprint(v)))
		}
	}()
	s.onReceipt(ctx, rec)
}

// group is a set of recipients that share one delivery.
type group struct {
	plan Plan
	idx  []int // indexes into the prepared recipients
}

// deliver carries out one group's plan, filling in rec: a plain delivery;
// or one protected delivery per method that has keys for some of the
// group, then, for those left without a usable key, a plain delivery
// (ProtectionPreferred), a notice each (NoKeyNotice), or nothing.
func (s *Sender) deliver(ctx context.Context, m *Message, msg *prepared, g *group, seq *int, rec *Receipt) {
	if g.plan.Protection == ProtectionNone {
		s.transmit(ctx, msg, g.plan, g.idx, msg.content(), nil, seq, rec)
		return
	}
	remaining := g.idx
	why := map[int]error{}
	// hard marks recipients who must not fall back to unprotected content
	// or a notice: the failure was not "this recipient has no usable key"
	// (a Protector that failed as a whole, a key lookup that failed for
	// now, a plan naming no method the Sender has).
	hard := map[int]bool{}
	protectors := s.protectorsFor(g.plan)
	if len(g.plan.Methods) > 0 && len(protectors) == 0 {
		for _, i := range remaining {
			why[i] = &ProtectionError{Recipient: rec.Recipients[i].Address, fault: true,
				Reason: "the Sender has no Protector for the plan's methods " + strings.Join(g.plan.Methods, ", ")}
			hard[i] = true
		}
	}
	for _, np := range protectors {
		if len(remaining) == 0 {
			break
		}
		prot, failed := s.protect(ctx, msg, np.p, addressesOf(rec, remaining))
		var done, left []int
		for _, i := range remaining {
			if err := failed[rec.Recipients[i].Address]; err != nil || prot == nil {
				if err != nil {
					why[i] = joinReasons(why[i], err)
					hard[i] = hard[i] || !errors.Is(err, ErrNoKey) || IsTemporary(err)
				}
				left = append(left, i)
				continue
			}
			done = append(done, i)
		}
		if prot != nil && len(done) > 0 {
			info := map[int]*ProtectionInfo{}
			for _, i := range done {
				info[i] = &ProtectionInfo{Method: prot.Method, Fingerprint: prot.Fingerprints[rec.Recipients[i].Address], Signed: prot.Signed}
			}
			s.transmit(ctx, msg, g.plan, done, recovering{w: prot.Entity, what: "Protector"}, info, seq, rec)
		}
		remaining = left
	}
	for _, i := range remaining {
		if why[i] == nil {
			why[i] = &ProtectionError{Recipient: rec.Recipients[i].Address, Reason: "the Sender has no Protector"}
		}
	}
	// Those whose failure was not about their key fail, whatever the plan.
	var failed, soft []int
	for _, i := range remaining {
		if hard[i] {
			failed = append(failed, i)
		} else {
			soft = append(soft, i)
		}
	}
	for _, i := range failed {
		rec.Recipients[i].Err = &RecipientError{Recipient: rec.Recipients[i].Address, Err: why[i]}
	}
	if len(failed) > 0 {
		s.log(ctx, msg, addressesOf(rec, failed), nil, nil, errors.Join(mapValues(why, failed)...))
	}
	remaining = soft
	if len(remaining) == 0 {
		return
	}

	switch {
	case g.plan.Protection == ProtectionPreferred:
		info := map[int]*ProtectionInfo{}
		for _, i := range remaining {
			info[i] = &ProtectionInfo{Method: MethodNone, Reason: reasonText(why[i])}
		}
		s.transmit(ctx, msg, g.plan, remaining, msg.content(), info, seq, rec)
	case g.plan.NoKey == NoKeyNotice:
		for _, i := range remaining {
			s.sendNotice(ctx, m, msg, g.plan, i, why[i], seq, rec)
		}
	default:
		for _, i := range remaining {
			rec.Recipients[i].Err = &RecipientError{Recipient: rec.Recipients[i].Address, Err: why[i]}
		}
		s.log(ctx, msg, addressesOf(rec, remaining), nil, nil, errors.Join(mapValues(why, remaining)...))
	}
}

// sendNotice sends recipient i the link-only notice instead of the content
// it could not get protected.
func (s *Sender) sendNotice(ctx context.Context, m *Message, msg *prepared, plan Plan, i int, why error, seq *int, rec *Receipt) {
	r := &rec.Recipients[i]
	fail := func(err error) {
		r.Err = &RecipientError{Recipient: r.Address, Err: &ProtectionError{Recipient: r.Address, Reason: "no usable key, and the notice failed", Err: err}}
		s.log(ctx, msg, []string{r.Address}, nil, nil, r.Err)
	}
	if s.notice == nil {
		fail(errors.Join(why, errors.New("the plan asks for a notice but the Sender has no Options.Notice")))
		return
	}
	n, err := s.buildNotice(ctx, m, msg.rcpts[i].Recipient)
	if err != nil {
		fail(err)
		return
	}
	if n == nil {
		fail(errors.New("Options.Notice returned no notice"))
		return
	}
	if n.Text == "" && n.HTML == "" {
		fail(errors.New("Options.Notice returned a notice without Text or HTML"))
		return
	}
	nm, err := s.prepare(noticeMessage(m, n, r.Address, msg.date))
	if err != nil {
		fail(err)
		return
	}
	info := map[int]*ProtectionInfo{i: {Method: MethodNotice, Reason: reasonText(why), NoticeMessageID: nm.messageID}}
	s.transmitTo(ctx, nm, plan, []int{i}, []preparedRcpt{msg.rcpts[i]}, nm.content(), info, seq, rec)
}

// transmit hands one delivery to the Transport and records the outcome
// for the recipients idx.
func (s *Sender) transmit(ctx context.Context, msg *prepared, plan Plan, idx []int, content io.WriterTo, info map[int]*ProtectionInfo, seq *int, rec *Receipt) {
	rcpts := make([]preparedRcpt, len(idx))
	for j, i := range idx {
		rcpts[j] = msg.rcpts[i]
	}
	s.transmitTo(ctx, msg, plan, idx, rcpts, content, info, seq, rec)
}

func (s *Sender) transmitTo(ctx context.Context, msg *prepared, plan Plan, idx []int, prcpts []preparedRcpt, content io.WriterTo, info map[int]*ProtectionInfo, seq *int, rec *Receipt) {
	rcpts := make([]string, len(prcpts))
	d := &Delivery{
		From:          msg.envelopeFrom,
		Security:      plan.Security,
		RequireTLS:    msg.requireTLS,
		TLSRequiredNo: msg.tlsOptional,
		DSN:           msg.dsn,
		Content:       content,
		SMTPUTF8:      msg.utf8 || msg.envUTF8,
	}
	for j, r := range prcpts {
		rcpts[j] = r.Address
		d.SMTPUTF8 = d.SMTPUTF8 || r.utf8
	}
	d.To = rcpts
	d.EightBit = d.SMTPUTF8

	res, err := s.deliverRecovering(ctx, d)
	err = usableError("Transport", err)
	// Each SMTP transaction the transport reports gets the next delivery
	// number: recipients whose results share a session (the same
	// ConnectionState) share it; accepted recipients of a transport that
	// reports no session share one for this call.
	numbers := map[*ConnectionState]int{}
	number := func(c *ConnectionState) int {
		n, ok := numbers[c]
		if !ok {
			*seq++
			n = *seq
			numbers[c] = n
		}
		return n
	}
	for j, i := range idx {
		rr := &rec.Recipients[i]
		r := res.Recipient(j, err)
		rr.Delivery = 0
		rr.Connection = r.Connection
		rr.Reply = r.Reply
		rr.RequireTLS = msg.requireTLS
		rr.TLSRequiredNo = msg.tlsOptional
		rr.Protection = info[i]
		if r.Accepted {
			rr.Accepted = true
			if r.Reply != nil {
				rr.QueueID = QueueID(r.Reply.Text)
			}
		} else {
			rerr := usableError("Transport", r.Err)
			var re *RecipientError
			if !errors.As(rerr, &re) || re.Recipient != rr.Address {
				rerr = &RecipientError{Recipient: rr.Address, Err: rerr}
			}
			rr.Err = rerr
		}
		if inTransaction(rr) {
			rr.Delivery = number(rr.Connection)
		}
	}
	var prot []*ProtectionInfo
	for _, i := range idx {
		prot = append(prot, info[i])
	}
	s.log(ctx, msg, rcpts, prot, res, err)
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

// namedProtector is a Protector with the method name Plans refer to it by.
type namedProtector struct {
	name string
	p    Protector
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

func addressesOf(rec *Receipt, idx []int) []string {
	out := make([]string, len(idx))
	for j, i := range idx {
		out[j] = rec.Recipients[i].Address
	}
	return out
}

func mapValues(m map[int]error, idx []int) []error {
	out := make([]error, 0, len(idx))
	for _, i := range idx {
		out = append(out, m[i])
	}
	return out
}

// reasons is why each allowed method could not protect a recipient's
// content.
type reasons []error

func (r reasons) Error() string {
	s := make([]string, len(r))
	for i, e := range r {
		s[i] = strings.TrimPrefix(e.Error(), "mailsec: ")
	}
	return "mailsec: " + strings.Join(s, "; ")
}

func (r reasons) Unwrap() []error { return r }

func joinReasons(prev, err error) error {
	if prev == nil {
		return err
	}
	if r, ok := prev.(reasons); ok {
		return append(r, err)
	}
	return reasons{prev, err}
}

// reasonText is why a recipient's content was not protected, for the
// Receipt: the error's text without the package prefix.
func reasonText(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimPrefix(err.Error(), "mailsec: ")
}

// protect asks p for content for rcpts. Recipients it cannot serve are
// returned with their errors, and the others are protected again without
// them, so a missing key for one never exposes another.
func (s *Sender) protect(ctx context.Context, msg *prepared, p Protector, rcpts []string) (*Protected, map[string]error) {
	failed := map[string]error{}
	e, err := msg.entity()
	if err != nil {
		for _, r := range rcpts {
			failed[r] = &ProtectionError{Recipient: r, Reason: "internal: header does not parse", Err: err, fault: true}
		}
		return nil, failed
	}
	remaining := slices.Clone(rcpts)
	for len(remaining) > 0 {
		prot, err := protectOnce(ctx, p, e, remaining)
		if err == nil {
			return prot, failed
		}
		per := recipientErrors(err)
		progress := false
		for _, re := range per {
			if i := slices.Index(remaining, re.Recipient); i >= 0 {
				failed[re.Recipient] = re
				remaining = slices.Delete(remaining, i, i+1)
				progress = true
			}
		}
		if !progress {
			// An error that names no recipient applies to all of them.
			for _, r := range remaining {
				failed[r] = &ProtectionError{Recipient: r, Reason: "protection failed", Err: err, fault: true}
			}
			return nil, failed
		}
	}
	return nil, failed
}

// protectOnce calls the Protector and turns a panic inside it (a crypto
// library fed a malformed key, say) into an error instead of a crash.
func protectOnce(ctx context.Context, pr Protector, e *Entity, rcpts []string) (p *Protected, err error) {
	defer func() {
		if v := recover(); v != nil {
			p, err = nil, fmt.Errorf("mailsec: Protector panicked: %v", v)
		}
	}()
	p, err = pr.Protect(ctx, e, rcpts)
	err = usableError("Protector", err)
	if err == nil && (p == nil || p.Entity == nil) {
		err = errors.New("mailsec: Protector returned no entity")
	}
	return p, err
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

// log writes one record per delivery (or per group of recipients that got
// none). prot holds each recipient's protection, nil entries for none.
func (s *Sender) log(ctx context.Context, msg *prepared, rcpts []string, prot []*ProtectionInfo, res *DeliveryResult, err error) {
	if s.logger == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("message_id", msg.messageID),
		slog.Any("recipients", rcpts),
	}
	if p := firstNonNil(prot); p != nil {
		// One delivery has one method; fingerprints differ per recipient.
		attrs = append(attrs, slog.String("protection", p.Method))
		var fps []string
		for _, pi := range prot {
			if pi != nil && pi.Fingerprint != "" {
				fps = append(fps, pi.Fingerprint)
			}
		}
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
	s.logger.LogAttrs(ctx, level, "mailsec delivery", attrs...)
}

func firstNonNil(ps []*ProtectionInfo) *ProtectionInfo {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}
