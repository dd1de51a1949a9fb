package transport

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/smtpdata"
	"github.com/mailsec/mailsec/internal/smtpwire"
)

// group is one pipelined transaction (RFC 2920): the commands written and
// not yet answered, in order, and what the replies read so far said. Each
// reply is taken for the oldest command without one, and only for it.
type group struct {
	ctx context.Context
	s   *session
	d   *mailsec.Delivery
	res *mailsec.DeliveryResult

	queue []string // commands awaiting their reply: "RSET", "MAIL", "RCPT", "DATA", "BDAT", "BDAT LAST"
	rcpt  int      // index in d.To of the next RCPT reply due

	mailErr  *mailsec.SMTPError // MAIL refused
	closing  *mailsec.SMTPError // a 421 or 221: the server is ending the session
	accepted int
	errs     []error // one RecipientError per refused recipient
	// chunkErr is the refusal of a BDAT chunk before the last.
	chunkErr *mailsec.SMTPError
	// final is the reply to DATA, or to BDAT LAST, once read.
	final     smtpwire.Reply
	lastSent  bool // BDAT LAST was sent
	finalRead bool
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
		timeout := replyTimeout
		if cmd == "BDAT LAST" {
			timeout = finalTimeout
		}
		_ = g.s.conn.SetReadDeadline(time.Now().Add(timeout))
		rep, err := g.s.r.ReadReply()
		if err != nil {
			return readError(ctx, g.s.host, phase(cmd), err, smtpwire.DefaultMaxReply)
		}
		g.handle(rep)
	}
	return nil
}

// drain takes the replies that have arrived already, without waiting. A
// reply when no command awaits one is one nobody asked for.
func (g *group) drain(ctx context.Context) error {
	s := g.s
	for !g.done() {
		if s.more() == 0 {
			return nil
		}
		s.conn.poll = true
		rep, err := s.r.ReadReply()
		s.conn.poll = false
		switch {
		case errors.Is(err, errWouldBlock):
			return nil // a reply has begun to arrive
		case err != nil:
			return readError(ctx, s.host, phase(g.queue[0]), err, smtpwire.DefaultMaxReply)
		}
		g.handle(rep)
	}
	if len(g.queue) == 0 {
		if n := s.more(); n > 0 {
			return s.unsolicited("DATA", fmt.Sprintf("%d bytes arrived while the message was being sent, "+
				"beyond the replies to every command sent so far", n))
		}
	}
	return nil
}

// phase names the command a BDAT belongs to in errors: the content's,
// DATA, however it was sent.
func phase(cmd string) string {
	if cmd == "BDAT" || cmd == "BDAT LAST" {
		return "DATA"
	}
	return cmd
}

// refused reports that the transaction can no longer deliver: MAIL, every
// RCPT (once all are answered) or a chunk was refused, or the server is
// ending the session.
func (g *group) refused() bool {
	return g.mailErr != nil || g.chunkErr != nil || g.closing != nil || g.outOfStep != nil ||
		(g.rcpt == len(g.d.To) && g.accepted == 0)
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
		g.outOfStep = s.unsolicited(phase(cmd), fmt.Sprintf("the server answered %s with 354, a reply only DATA can have: "+
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
	case "BDAT":
		if rep.Code != 250 && g.chunkErr == nil {
			g.chunkErr = replyError(s.host, "DATA", rep.Code, rep.Text)
			if closing {
				g.closing = g.chunkErr
			}
		}
	case "BDAT LAST":
		g.final, g.finalRead = rep, true
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
	g := &group{ctx: ctx, s: s, d: d, res: res}
	_ = s.conn.SetWriteDeadline(time.Now().Add(replyTimeout))
	if s.dirty {
		// The last transaction may be open: RSET first, in the same
		// write (RFC 2920 section 3.1 lets it go anywhere in a group).
		g.write("RSET", "RSET")
	}
	s.dirty = true
	g.write("MAIL", s.mailCommand(d, withDSN))
	for _, to := range d.To {
		g.write("RCPT", s.rcptCommand(d, to, withDSN))
	}
	if s.has("CHUNKING") {
		return g.chunked(ctx, beforeBody)
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

// chunkSize is the largest BDAT chunk: a message up to this size goes out
// with its MAIL and RCPT commands in one write, and a larger one in chunks
// of this size, streamed, never held whole.
const chunkSize = 256 << 10

// keepChunk is the largest chunk buffer a session keeps between messages.
const keepChunk = 64 << 10

// errStopChunks stops the content's writer when the server has refused
// the transaction part way through: no more chunks are sent (RFC 3030
// section 3).
var errStopChunks = errors.New("mailsec/transport: the server refused the transaction; no more chunks are sent")

// chunked sends the content of the group's transaction with BDAT (RFC
// 3030), for a server that offers CHUNKING as well as PIPELINING: the first
// chunk, and for a message of up to chunkSize octets "BDAT n LAST" with the
// whole message, goes in the same write as MAIL and the RCPTs, so that a
// warm session spends one round trip on a message. The content is the
// canonical form DATA would carry (CRLF line endings, lines of at most 998
// octets, a final CRLF) without dot-stuffing, which BDAT does not use. Its
// verdict is reported as DATA's would be.
//
// The content goes out before the replies to RCPT are known: when every
// RCPT is refused, the server discards the chunk, and the result is the
// one DATA would give. Once a reply refuses the transaction (MAIL, every
// RCPT, a chunk), no further chunk is sent, and BDAT LAST never is.
func (g *group) chunked(ctx context.Context, beforeBody func(error) (*mailsec.DeliveryResult, bool, error)) (*mailsec.DeliveryResult, bool, error) {
	s, res := g.s, g.res
	cw := &chunkWriter{g: g, buf: s.chunk[:0]}
	s.block = s.dataBlock
	if s.data == nil {
		s.data = smtpdata.NewWriter(cw)
	} else {
		s.data.Reset(cw)
	}
	_, err := g.d.Content.WriteTo(s.data)
	if err == nil {
		err = s.data.Close()
	}
	if err == nil {
		err = cw.close()
	}
	s.block = 0
	if cap(cw.buf) <= keepChunk {
		s.chunk = cw.buf[:0]
	}
	switch {
	case cw.fail != nil:
		if cw.sent == 0 {
			// The first write failed: the server has read nothing.
			return beforeBody(cw.fail)
		}
		if cw.lastTried && !g.refused() {
			// The write of BDAT LAST failed, after earlier chunks went
			// out: a connection that fails mid-write has not sent it
			// whole, but one may report the failure once it has; taken,
			// cautiously, for a lost verdict.
			return res, false, noVerdict(cw.fail)
		}
		return res, false, cw.fail
	case cw.stopped:
		// The server refused the transaction: its reply is the verdict,
		// whatever the content's writer made of the error that stopped it.
	case err != nil:
		// Never send BDAT LAST after a partial message: drop the
		// connection so the server discards what it has.
		return res, false, s.contentError(ctx, err)
	}
	if err := g.readAll(ctx); err != nil {
		if g.lastSent && !g.refused() {
			// The whole message went out with BDAT LAST, and no reply
			// says the transaction was refused: whichever reply was
			// lost, the server may have taken the message.
			err = noVerdict(err)
		}
		return res, false, err
	}
	switch {
	case g.outOfStep != nil:
		return res, false, g.outOfStep
	case g.closing != nil:
		// A 421 or 221 before the content's verdict: nothing accepted.
		return beforeBody(g.closing)
	}
	if g.mailErr == nil && g.accepted > 0 && g.chunkErr == nil {
		if ec, _ := replyText(g.final.Text); g.final.Code/100 == 2 && ec[0] == 2 && ec[1] == 1 {
			// An enhanced code about an address (X.1.Y, RFC 3463) is the
			// answer to MAIL or RCPT, not to the content.
			return res, false, s.unsolicited("DATA", fmt.Sprintf("the server answered BDAT LAST with %d %s, a reply about an address: "+
				"its replies are out of step with the commands, and the message may have been delivered", g.final.Code, ec))
		}
		s.dirty = false
		return s.verdict(res, g.final)
	}
	// No verdict on the content: the transaction failed before it.
	healthy := true
	if g.finalRead {
		if g.final.Code/100 == 2 {
			return res, false, s.unsolicited("DATA", fmt.Sprintf("the server answered BDAT LAST with %d in a transaction it had refused: "+
				"its replies are out of step with the commands, and the message may have been delivered", g.final.Code))
		}
		healthy = g.final.Code != 421 && g.final.Code != 221
	}
	if n := s.more(); n > 0 {
		return res, false, s.unsolicited("DATA", fmt.Sprintf("%d more bytes arrived with the replies to the transaction", n))
	}
	switch {
	case g.mailErr != nil:
		return beforeBody(g.mailErr)
	case g.accepted == 0:
		return res, healthy, errors.Join(g.errs...)
	}
	return res, healthy, g.chunkErr
}

// chunkWriter sends canonical content as BDAT chunks: it holds up to
// chunkSize octets, sends them as a chunk when more content follows, and
// the rest as the last chunk on close. Before each chunk after the first it
// takes the replies that have arrived, and stops once one refuses the
// transaction.
type chunkWriter struct {
	g    *group
	buf  []byte
	sent int   // chunks sent
	eol  bool  // the content so far ends with a line ending (or is empty)
	fail error // a failure of the connection, or a reply out of step
	// stopped is set once a reply refused the transaction and no more
	// chunks are sent (errStopChunks).
	stopped bool
	// lastTried is set once the write of BDAT LAST began.
	lastTried bool
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if len(c.buf) >= chunkSize {
			if err := c.emit(false); err != nil {
				return n, err
			}
		}
		k := min(len(p), chunkSize-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		n += k
	}
	if n > 0 {
		c.eol = c.buf[len(c.buf)-1] == '\n'
	}
	return n, nil
}

// close ends the content with CRLF if its last line has none, as DATA's
// writer does, and sends the last chunk.
func (c *chunkWriter) close() error {
	if !c.eol && (len(c.buf) > 0 || c.sent > 0) {
		c.buf = append(c.buf, '\r', '\n')
	}
	return c.emit(true)
}

func (c *chunkWriter) emit(last bool) error {
	g, s := c.g, c.g.s
	if c.fail != nil {
		return c.fail
	}
	if c.sent > 0 {
		if err := g.drain(g.ctx); err != nil {
			c.fail = err
			return err
		}
		if g.refused() {
			c.stopped = true
			return errStopChunks
		}
	}
	cmd := "BDAT"
	c.lastTried = last
	_, _ = s.w.WriteString("BDAT ")
	_, _ = s.w.WriteString(strconv.Itoa(len(c.buf)))
	if last {
		cmd = "BDAT LAST"
		_, _ = s.w.WriteString(" LAST")
	}
	_, _ = s.w.WriteString("\r\n")
	_, _ = s.w.Write(c.buf)
	if err := s.w.Flush(); err != nil {
		c.fail = s.contentError(g.ctx, err)
		return c.fail
	}
	g.queue = append(g.queue, cmd)
	g.lastSent = last
	c.sent++
	c.buf = c.buf[:0]
	return nil
}
