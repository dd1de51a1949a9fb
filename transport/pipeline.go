package transport

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/smtpwire"
)

// group is one pipelined transaction (RFC 2920): the commands written and
// not yet answered, in order, and what the replies read so far said. Each
// reply is taken for the oldest command without one, and only for it.
type group struct {
	s   *session
	d   *mailsec.Delivery
	res *mailsec.DeliveryResult

	queue []string // commands awaiting their reply: "RSET", "MAIL", "RCPT", "DATA"
	rcpt  int      // index in d.To of the next RCPT reply due

	mailErr  *mailsec.SMTPError // MAIL refused
	closing  *mailsec.SMTPError // a 421 or 221: the server is ending the session
	accepted int
	errs     []error // one RecipientError per refused recipient
	// final is the reply to DATA, once read.
	final smtpwire.Reply
	// outOfStep is set when a reply cannot be the answer to the command it
	// would be taken for: the server's replies and the commands no longer
	// pair up, and no verdict can be trusted.
	outOfStep error
}

// write adds one command to the group, not yet sent.
func (g *group) write(cmd, line string) {
	_, _ = g.s.w.WriteString(line)
	_, _ = g.s.w.WriteString("\r\n")
	g.queue = append(g.queue, cmd)
}

// flush sends what the group has written.
func (g *group) flush(ctx context.Context, cmd string) error {
	if err := g.s.w.Flush(); err != nil {
		return netError(ctx, g.s.host, cmd, err)
	}
	return nil
}

// done reports that the group needs no more replies read: every command
// has its reply, or the server is ending the session, or its replies are
// out of step.
func (g *group) done() bool {
	return len(g.queue) == 0 || g.closing != nil || g.outOfStep != nil
}

// readAll reads the replies still due, in order, waiting for each.
func (g *group) readAll(ctx context.Context) error {
	for !g.done() {
		cmd := g.queue[0]
		_ = g.s.conn.SetReadDeadline(time.Now().Add(replyTimeout))
		rep, err := g.s.r.ReadReply()
		if err != nil {
			return readError(ctx, g.s.host, cmd, err, smtpwire.DefaultMaxReply)
		}
		g.handle(rep)
	}
	return nil
}

// handle takes rep as the reply to the oldest command awaiting one.
func (g *group) handle(rep smtpwire.Reply) {
	s := g.s
	cmd := g.queue[0]
	g.queue = g.queue[1:]
	closing := rep.Code == 421 || rep.Code == 221
	if rep.Code == 354 && cmd != "DATA" {
		// The go-ahead for content, where no command asked for it: the
		// server answers a command the client has not reached, or answers
		// one twice.
		g.outOfStep = s.unsolicited(cmd, fmt.Sprintf("the server answered %s with 354, a reply only DATA can have: "+
			"its replies are out of step with the commands", cmd))
		return
	}
	switch cmd {
	case "RSET":
		if closing {
			g.closing = replyError(s.host, cmd, rep.Code, rep.Text)
		}
		// Another refusal of RSET leaves the answer to MAIL to say
		// whether a transaction can start.
	case "MAIL":
		if rep.Code != 250 {
			g.mailErr = replyError(s.host, cmd, rep.Code, rep.Text)
			if closing {
				g.closing = g.mailErr
			}
		}
	case "RCPT":
		i := g.rcpt
		g.rcpt++
		if g.mailErr != nil {
			// The server's answer to a recipient of a transaction it
			// refused to start says nothing about the recipient.
			return
		}
		if rcptAccepted(rep.Code) {
			g.accepted++
			return
		}
		se := replyError(s.host, cmd, rep.Code, rep.Text)
		if closing {
			g.closing = se
			return
		}
		g.res.Recipients[i].Err = se
		g.res.Recipients[i].Reply = se.Reply()
		g.errs = append(g.errs, &mailsec.RecipientError{Recipient: g.d.To[i], Err: se})
	case "DATA":
		if rep.Code/100 == 2 {
			// DATA is answered with 354 or a refusal; a success reply
			// belongs to another command.
			g.outOfStep = s.unsolicited(cmd, fmt.Sprintf("the server answered DATA with %d: "+
				"its replies are out of step with the commands", rep.Code))
			return
		}
		g.final = rep
	}
}

// pipelined runs a transaction as one group of commands, for a server that
// offers PIPELINING (RFC 2920): MAIL, every RCPT and DATA go out in one
// write, and their replies are read in order. The content follows only a
// 354, and only when MAIL and at least one RCPT were accepted; a DATA that
// got 354 otherwise is ended at once with the lone terminator (RFC 2920
// section 3.1), so that not one byte of the content is sent.
func (s *session) pipelined(ctx context.Context, d *mailsec.Delivery, res *mailsec.DeliveryResult, withDSN bool,
	beforeBody func(error) (*mailsec.DeliveryResult, bool, error)) (*mailsec.DeliveryResult, bool, error) {
	g := &group{s: s, d: d, res: res}
	_ = s.conn.SetWriteDeadline(time.Now().Add(replyTimeout))
	s.dirty = true
	g.write("MAIL", s.mailCommand(d, withDSN))
	for _, to := range d.To {
		g.write("RCPT", s.rcptCommand(d, to, withDSN))
	}
	g.write("DATA", "DATA")
	if err := g.flush(ctx, "MAIL"); err != nil {
		return beforeBody(err)
	}
	if err := g.readAll(ctx); err != nil {
		return beforeBody(err)
	}
	switch {
	case g.outOfStep != nil:
		return res, false, g.outOfStep
	case g.closing != nil:
		return beforeBody(g.closing)
	}
	// Every command of the group has its reply: anything more answers
	// none of them.
	if n := s.more(); n > 0 {
		return beforeBody(s.unsolicited("DATA", fmt.Sprintf("%d more bytes arrived with the replies to MAIL, RCPT and DATA", n)))
	}
	goAhead := g.final.Code == 354
	if g.mailErr == nil && g.accepted > 0 {
		if !goAhead {
			return beforeBody(replyError(s.host, "DATA", g.final.Code, g.final.Text))
		}
		return s.dataContent(ctx, d, res)
	}
	healthy := true
	if goAhead {
		// The server opened DATA for a transaction it had refused: end it
		// with the terminator alone, and read the answer, which says
		// nothing about this message.
		ok, err := s.endEmptyData(ctx)
		if err != nil {
			return res, false, err
		}
		healthy = ok
	}
	if g.mailErr != nil {
		return beforeBody(g.mailErr)
	}
	return res, healthy, errors.Join(g.errs...)
}

// endEmptyData ends a DATA that got 354 with no content: the terminator
// alone. The server's reply to it must be the last thing it sent; healthy
// is false when it says the server is closing the session.
func (s *session) endEmptyData(ctx context.Context) (healthy bool, err error) {
	rep, err := s.roundTripWithin(ctx, "DATA", ".", finalTimeout)
	if err != nil {
		return false, err
	}
	return rep.Code != 421 && rep.Code != 221, nil
}
