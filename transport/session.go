package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/smtpdata"
	"github.com/mailsec/mailsec/transport/dane"
)

// session is one SMTP connection that has met a security requirement and,
// if configured, authenticated. It is used by one goroutine at a time.
type session struct {
	host   string // for errors
	ehlo   string // our EHLO name, to say it again after RSET
	key    string // pool key: the requirement it was established for
	conn   *ctxConn
	client *smtp.Client
	state  mailsec.ConnectionState
	peer   []*x509.Certificate // the chain the server sent, nil without TLS

	created  time.Time
	lastUsed time.Time
	messages int
	dirty    bool // a transaction may be open: RSET before reuse

	idleTimer *time.Timer      // fires IdleTimeout after the session was put back
	data      *smtpdata.Writer // reused for every message's DATA
}

// dialConfig is what establishing a session needs; a Submission fills it
// once.
type dialConfig struct {
	addr       string
	serverName string
	implicit   bool
	localName  string
	tlsConfig  *tls.Config // base; cloned per requirement
	dialer     Dialer
	auth       *Auth
	timeout    time.Duration // bounds establishing a session
}

// dial opens and secures a session that meets pol.
func (dc *dialConfig) dial(ctx context.Context, pol *tlsPolicy, key string) (_ *session, err error) {
	host := dc.serverName
	// A peer that accepts the connection and then says nothing must not
	// hold a caller without a deadline forever.
	ctx, cancel := context.WithTimeout(ctx, dc.timeout)
	defer cancel()
	raw, err := dc.dialer.DialContext(ctx, "tcp", dc.addr)
	if err != nil {
		return nil, &mailsec.NetworkError{Host: host, Op: "dial", Err: err}
	}
	cc := &ctxConn{Conn: raw}
	unbind := cc.bind(ctx)
	defer unbind()
	defer func() {
		if err != nil {
			_ = raw.Close()
		}
	}()

	s := &session{host: host, ehlo: dc.localName, key: key, conn: cc, created: time.Now()}
	s.state = mailsec.ConnectionState{Host: host, Addr: raw.RemoteAddr().String()}

	if pol.mode == tlsNone && pol.loopbackOnly {
		if !isLoopback(raw.RemoteAddr()) {
			return nil, &mailsec.SecurityError{Host: host, Failure: mailsec.FailPlaintextNotLocal,
				Detail: "the Plaintext level is for loopback development servers; " + raw.RemoteAddr().String() + " is not one"}
		}
	}
	if pol.mode == tlsNone && dc.auth != nil && !dc.implicit {
		return nil, &mailsec.SecurityError{Host: host, Failure: mailsec.FailPlaintextAuth,
			Detail: "credentials are never sent without TLS"}
	}

	var conn net.Conn
	var preTLSAuth bool
	switch {
	case dc.implicit:
		tc, err := dc.handshake(ctx, cc, pol, false, s)
		if err != nil {
			return nil, err
		}
		conn = tc
	case pol.mode == tlsNone:
		conn = cc
		s.state.Verification = mailsec.NoTLS
	default:
		greeting, auth, err := dc.startTLS(ctx, cc)
		var se *mailsec.SecurityError
		if pol.optional && errors.As(err, &se) && se.Failure == mailsec.FailStartTLSMissing && greeting != nil {
			// An opportunistic level, explicitly chosen for this
			// destination: go on without TLS, and say so.
			s.state.Verification = mailsec.NoTLS
			s.state.Notes = append(s.state.Notes, host+": STARTTLS not offered; sent without TLS as the level allows")
			conn = &replayConn{Conn: cc, pending: greeting}
			break
		}
		if err != nil {
			return nil, err
		}
		preTLSAuth = auth
		tc, err := dc.handshake(ctx, cc, pol, true, s)
		if err != nil {
			return nil, err
		}
		conn = &replayConn{Conn: tc, pending: greeting}
	}

	s.client = smtp.NewClient(&replyCap{Conn: conn})
	if err := s.client.Hello(dc.localName); err != nil {
		return nil, s.fail(ctx, "EHLO", err)
	}
	if dc.auth != nil {
		mech, err := dc.auth.authenticate(ctx, s, preTLSAuth)
		if err != nil {
			return nil, err
		}
		s.state.SASLMechanism = mech
	}
	return s, nil
}

// startTLS runs the plaintext part of a STARTTLS session on our own
// reader: greeting, EHLO, STARTTLS. It returns the greeting (to replay to
// go-smtp) and whether AUTH was advertised before TLS. When the server
// does not offer STARTTLS, the error is a FailStartTLSMissing
// SecurityError and the greeting is returned with it, the connection
// clean after the EHLO reply.
func (dc *dialConfig) startTLS(ctx context.Context, cc *ctxConn) (greeting []byte, preTLSAuth bool, err error) {
	host := dc.serverName
	br := bufio.NewReader(&cappedReader{r: cc, left: 64 << 10})
	tr := textproto.NewReader(br)
	netErr := func(op string, err error) error {
		if e := ctxErr(ctx, err); e != nil {
			err = e
		}
		return &mailsec.NetworkError{Host: host, Op: op, Err: err}
	}

	code, msg, err := tr.ReadResponse(220)
	if err != nil {
		if pe, ok := err.(*textproto.Error); ok {
			return nil, false, replyError(host, "greeting", pe.Code, pe.Msg)
		}
		return nil, false, netErr("greeting", err)
	}
	greeting = formatReply(code, msg)

	if _, err := io.WriteString(cc, "EHLO "+dc.localName+"\r\n"); err != nil {
		return nil, false, netErr("EHLO", err)
	}
	_, msg, err = tr.ReadResponse(250)
	if err != nil {
		if pe, ok := err.(*textproto.Error); ok && pe.Code/100 == 4 {
			// Busy or closing: an answer about now, not about TLS.
			return nil, false, replyError(host, "EHLO", pe.Code, pe.Msg)
		}
		if pe, ok := err.(*textproto.Error); ok {
			return nil, false, &mailsec.SecurityError{Host: host, Failure: mailsec.FailStartTLSMissing,
				Detail: fmt.Sprintf("EHLO refused (%d %s), so STARTTLS cannot be negotiated", pe.Code, cleanText(pe.Msg))}
		}
		return nil, false, netErr("EHLO", err)
	}
	ext := parseEHLO(msg)
	if _, ok := ext["STARTTLS"]; !ok {
		missing := &mailsec.SecurityError{Host: host, Failure: mailsec.FailStartTLSMissing,
			Detail: "EHLO reply does not list STARTTLS (stripped by an attacker, or TLS disabled on the server)"}
		if br.Buffered() > 0 {
			return nil, false, missing
		}
		return greeting, false, missing
	}
	_, preTLSAuth = ext["AUTH"]

	if _, err := io.WriteString(cc, "STARTTLS\r\n"); err != nil {
		return nil, false, netErr("STARTTLS", err)
	}
	if _, _, err := tr.ReadResponse(220); err != nil {
		if pe, ok := err.(*textproto.Error); ok {
			return nil, false, &mailsec.SecurityError{Host: host, Failure: mailsec.FailStartTLSRefused,
				Detail: fmt.Sprintf("server replied %d %s", pe.Code, cleanText(pe.Msg)), Temp: pe.Code/100 == 4}
		}
		return nil, false, netErr("STARTTLS", err)
	}
	if n := br.Buffered(); n > 0 {
		peek, _ := br.Peek(min(n, 40))
		return nil, false, &mailsec.SecurityError{Host: host, Failure: mailsec.FailInjection,
			Detail: fmt.Sprintf("%d bytes arrived after the 220 reply to STARTTLS, before the handshake (%q...)", n, peek)}
	}
	return greeting, preTLSAuth, nil
}

// handshake runs TLS on conn and checks the result against pol, filling
// in s.state.
func (dc *dialConfig) handshake(ctx context.Context, conn net.Conn, pol *tlsPolicy, afterSTARTTLS bool, s *session) (*tls.Conn, error) {
	host := dc.serverName
	var match dane.Match
	tc := tls.Client(conn, pol.config(dc.tlsConfig, dc.serverName, &match))
	if err := tc.Handshake(); err != nil {
		return nil, classifyHandshake(ctx, host, err, afterSTARTTLS)
	}
	cs := tc.ConnectionState()
	if !cs.HandshakeComplete || cs.Version < tls.VersionTLS12 || len(cs.PeerCertificates) == 0 {
		return nil, &mailsec.SecurityError{Host: host, Failure: mailsec.FailHandshake, Detail: "handshake incomplete or below TLS 1.2"}
	}
	// Each check below repeats what the configuration's callbacks
	// enforced, so that the result does not rest on a callback alone.
	switch pol.mode {
	case tlsWebPKI:
		if len(cs.VerifiedChains) == 0 {
			return nil, &mailsec.SecurityError{Host: host, Failure: mailsec.FailCertificate, Detail: "no verified chain"}
		}
		s.state.Verification = pol.label
		if s.state.Verification == "" {
			s.state.Verification = mailsec.VerifiedWebPKI
		}
	case tlsPinned:
		if !slices.Contains(pol.pins, mailsec.PinOf(cs.PeerCertificates[0])) {
			return nil, &mailsec.SecurityError{Host: host, Failure: mailsec.FailPinMismatch}
		}
		s.state.Verification = mailsec.VerifiedPin
	case tlsDANE:
		m, err := dane.Verify(cs.PeerCertificates, pol.tlsa, pol.names, pol.clock()())
		if err != nil {
			return nil, &mailsec.SecurityError{Host: host, Failure: mailsec.FailDANE, Detail: cleanText(err.Error()), Err: err}
		}
		s.state.Verification = m.Verification()
		s.state.TLSA = m.Record.String()
	case tlsDomain:
		if err := verifyForDomain(cs.PeerCertificates, dc.rootCAs(), pol.names[0], pol.clock()()); err != nil {
			return nil, &mailsec.SecurityError{Host: host, Failure: mailsec.FailCertificate, Detail: cleanText(err.Error()), Err: err}
		}
		s.state.Verification = mailsec.VerifiedWebPKI
	default:
		s.state.Verification = mailsec.NotVerified
	}
	s.state.TLSVersion = tls.VersionName(cs.Version)
	s.state.CipherSuite = tls.CipherSuiteName(cs.CipherSuite)
	s.state.PeerPin = mailsec.PinOf(cs.PeerCertificates[0])
	s.peer = cs.PeerCertificates
	return tc, nil
}

func (dc *dialConfig) rootCAs() *x509.CertPool {
	if dc.tlsConfig != nil {
		return dc.tlsConfig.RootCAs
	}
	return nil
}

func classifyHandshake(ctx context.Context, host string, err error, afterSTARTTLS bool) error {
	if e := ctxErr(ctx, err); e != nil {
		return &mailsec.NetworkError{Host: host, Op: "TLS handshake", Err: e}
	}
	if isNetwork(ctx, err) {
		// The connection broke; nothing the peer said about TLS.
		return &mailsec.NetworkError{Host: host, Op: "TLS handshake", Err: err}
	}
	var rh tls.RecordHeaderError
	var cv *tls.CertificateVerificationError
	var de *dane.Error
	var dom *domainError
	switch {
	case errors.As(err, &rh):
		if afterSTARTTLS {
			return &mailsec.SecurityError{Host: host, Failure: mailsec.FailInjection,
				Detail: "non-TLS bytes where the server's handshake should be", Err: err}
		}
		return &mailsec.SecurityError{Host: host, Failure: mailsec.FailNotTLS,
			Detail: "the server answered in plaintext; it may expect STARTTLS (try port 587)", Err: err}
	case errors.Is(err, errPinMismatch):
		return &mailsec.SecurityError{Host: host, Failure: mailsec.FailPinMismatch, Err: err}
	case errors.As(err, &de):
		return &mailsec.SecurityError{Host: host, Failure: mailsec.FailDANE, Detail: cleanText(de.Error()), Err: err}
	case errors.As(err, &dom):
		return &mailsec.SecurityError{Host: host, Failure: mailsec.FailCertificate, Detail: cleanText(dom.Error()), Err: err}
	case errors.As(err, &cv):
		return &mailsec.SecurityError{Host: host, Failure: mailsec.FailCertificate, Detail: cleanText(certReason(cv.Err)), Err: err}
	}
	return &mailsec.SecurityError{Host: host, Failure: mailsec.FailHandshake, Detail: cleanText(err.Error()), Err: err}
}

// isNetwork reports whether err is the connection failing (closed,
// reset, timed out) rather than a peer's protocol answer such as a TLS
// alert.
func isNetwork(ctx context.Context, err error) bool {
	if ctxErr(ctx, err) != nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && (op.Op == "read" || op.Op == "write" || op.Op == "dial")
}

func certReason(err error) string {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	switch {
	case errors.As(err, &ua):
		return "signed by an untrusted authority"
	case errors.As(err, &he):
		return "not valid for this host name: " + he.Error()
	case errors.As(err, &ci):
		if ci.Reason == x509.Expired {
			return "expired or not yet valid: " + ci.Error()
		}
		return ci.Error()
	}
	return err.Error()
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// parseEHLO returns the keywords (upper case) and parameters of an EHLO
// reply's capability lines.
func parseEHLO(msg string) map[string]string {
	ext := map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		kw, params, _ := strings.Cut(strings.TrimSpace(l), " ")
		if kw != "" {
			ext[strings.ToUpper(kw)] = params
		}
	}
	return ext
}

func formatReply(code int, msg string) []byte {
	lines := strings.Split(msg, "\n")
	var b strings.Builder
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(&b, "%d%s%s\r\n", code, sep, l)
	}
	return []byte(b.String())
}

// cleanText makes server-supplied text safe to print and log: control
// characters (a terminal escape, say) become '?', lines are joined.
func cleanText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n':
			return ' '
		case r == '\t':
			return r
		case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0, r == 0x2028, r == 0x2029, r == utf8.RuneError:
			return '?'
		}
		return r
	}, s)
}

func replyError(host, cmd string, code int, msg string) *mailsec.SMTPError {
	msg = cleanText(msg)
	e := &mailsec.SMTPError{Host: host, Command: cmd, Code: code, Message: msg}
	if first, rest, ok := strings.Cut(msg, " "); ok {
		if ec, ok := mailsec.ParseEnhancedCode(first); ok {
			e.EnhancedCode, e.Message = ec, rest
		}
	}
	return e
}

// fail converts an error from go-smtp into the mailsec error types.
func (s *session) fail(ctx context.Context, cmd string, err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		e := &mailsec.SMTPError{Host: s.host, Command: cmd, Code: se.Code, Message: cleanText(se.Message)}
		if se.EnhancedCode != smtp.EnhancedCodeNotSet && se.EnhancedCode != smtp.NoEnhancedCode {
			e.EnhancedCode = mailsec.EnhancedCode(se.EnhancedCode)
		}
		return e
	}
	if e := ctxErr(ctx, err); e != nil {
		err = e
	}
	return &mailsec.NetworkError{Host: s.host, Op: cmd, Err: err}
}

func (s *session) has(ext string) bool {
	ok, _ := s.client.Extension(ext)
	return ok
}

// errRetry marks a failure on a reused session before anything was
// accepted: the delivery can be retried on a fresh session.
type errRetry struct{ err error }

func (e *errRetry) Error() string { return e.err.Error() }
func (e *errRetry) Unwrap() error { return e.err }

// transact runs one mail transaction. healthy reports whether the session
// can be reused afterwards.
func (s *session) transact(ctx context.Context, d *mailsec.Delivery) (res *mailsec.DeliveryResult, healthy bool, err error) {
	unbind := s.conn.bind(ctx)
	defer unbind()

	state := s.state
	state.Reused = s.messages > 0 || s.dirty
	res = &mailsec.DeliveryResult{Connection: &state, Recipients: make([]mailsec.RecipientResult, len(d.To))}
	for i, to := range d.To {
		res.Recipients[i].Address = to
	}

	if d.RequireTLS {
		verified := s.state.Verification != mailsec.NotVerified && s.state.Verification != mailsec.NoTLS && s.state.Verification != ""
		if !verified || !s.has("REQUIRETLS") {
			return res, true, &mailsec.SecurityError{Host: s.host, Failure: mailsec.FailRequireTLS,
				Detail: "the message demands REQUIRETLS (RFC 8689) and the server does not offer it over this verified session"}
		}
	}
	if d.SMTPUTF8 && !s.has("SMTPUTF8") {
		return res, true, &mailsec.ExtensionError{Host: s.host, Extension: "SMTPUTF8",
			Reason: "an address has a non-ASCII local part (or the header is UTF-8)"}
	}
	if d.EightBit && !s.has("8BITMIME") {
		return res, true, &mailsec.ExtensionError{Host: s.host, Extension: "8BITMIME", Reason: "the content is 8-bit"}
	}

	opts := &smtp.MailOptions{RequireTLS: d.RequireTLS, UTF8: d.SMTPUTF8}
	withDSN := d.DSN != nil && s.has("DSN")
	if withDSN {
		opts.Return = smtp.DSNReturn(d.DSN.Return)
		opts.EnvelopeID = d.DSN.EnvelopeID
	}
	reused := res.Connection.Reused
	s.dirty = true
	if err := s.client.Mail(d.From, opts); err != nil {
		err = s.fail(ctx, "MAIL", err)
		var ne *mailsec.NetworkError
		var se *mailsec.SMTPError
		// A reused session the server has dropped, or is closing (421: it
		// may limit messages per connection), has accepted nothing: the
		// delivery can start again on a fresh one.
		stale := errors.As(err, &ne) || errors.As(err, &se) && se.Code == 421
		if stale && reused && ctx.Err() == nil {
			return res, false, &errRetry{err}
		}
		return res, !stale, err
	}

	var errs []error
	accepted := 0
	for i, to := range d.To {
		var ropts *smtp.RcptOptions
		if withDSN {
			ropts = &smtp.RcptOptions{}
			for _, n := range d.DSN.Notify {
				ropts.Notify = append(ropts.Notify, smtp.DSNNotify(n))
			}
			if d.DSN.OriginalRecipient {
				ropts.OriginalRecipientType = smtp.DSNAddressTypeRFC822
				if d.SMTPUTF8 {
					ropts.OriginalRecipientType = smtp.DSNAddressTypeUTF8
				}
				ropts.OriginalRecipient = to
			}
		}
		if err := s.client.Rcpt(to, ropts); err != nil {
			err = s.fail(ctx, "RCPT", err)
			var se *mailsec.SMTPError
			if !errors.As(err, &se) {
				return res, false, err
			}
			res.Recipients[i].Err = err
			res.Recipients[i].Reply = se.Reply()
			errs = append(errs, &mailsec.RecipientError{Recipient: to, Err: err})
			continue
		}
		accepted++
	}
	if accepted == 0 {
		return res, true, errors.Join(errs...)
	}

	w, err := s.client.Data()
	if err != nil {
		err = s.fail(ctx, "DATA", err)
		var ne *mailsec.NetworkError
		return res, !errors.As(err, &ne), err
	}
	if s.data == nil {
		s.data = smtpdata.NewWriter(w)
	} else {
		s.data.Reset(w)
	}
	cw := s.data
	if _, err := d.Content.WriteTo(cw); err != nil {
		// Never send the terminator after a partial message: drop the
		// connection so the server discards what it has.
		return res, false, s.contentError(ctx, err)
	}
	if err := cw.Close(); err != nil {
		return res, false, s.contentError(ctx, err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		err = s.fail(ctx, "DATA", err)
		var ne *mailsec.NetworkError
		healthy = !errors.As(err, &ne)
		if healthy {
			s.dirty = false
		}
		return res, healthy, err
	}
	s.dirty = false
	s.messages++
	res.Reply = replyOK(resp.StatusText)
	for i := range res.Recipients {
		if res.Recipients[i].Err == nil {
			res.Recipients[i].Accepted = true
		}
	}
	return res, true, nil
}

func (s *session) contentError(ctx context.Context, err error) error {
	if e := ctxErr(ctx, err); e != nil {
		return &mailsec.NetworkError{Host: s.host, Op: "DATA", Err: e}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return &mailsec.NetworkError{Host: s.host, Op: "DATA", Err: err}
	}
	return fmt.Errorf("%w: %s: transaction abandoned before the end of DATA, nothing delivered: %w", mailsec.ErrContent, s.host, err)
}

func replyOK(text string) *mailsec.Reply {
	text = cleanText(text)
	r := &mailsec.Reply{Code: 250, Text: text}
	if first, rest, ok := strings.Cut(text, " "); ok {
		if ec, ok := mailsec.ParseEnhancedCode(first); ok {
			r.EnhancedCode, r.Text = ec, rest
		}
	}
	return r
}

// check makes an idle session ready for a new transaction: RSET if the
// last one may be open, NOOP if it has been idle long enough that the
// server may have dropped it.
func (s *session) check(ctx context.Context, probeAfter time.Duration) error {
	if !s.dirty && time.Since(s.lastUsed) < probeAfter {
		return nil
	}
	unbind := s.conn.bind(ctx)
	defer unbind()
	if s.dirty {
		if err := s.client.Reset(); err != nil {
			return err
		}
		// go-smtp forgets the EHLO after RSET and would send it lazily
		// before the next command, keeping a failure of it for good; say
		// it now, so a failure ends this session instead.
		if err := s.client.Hello(s.ehlo); err != nil {
			return err
		}
		s.dirty = false
		return nil
	}
	return s.client.Noop()
}

// close ends the session, politely if it is healthy.
func (s *session) close(polite bool) {
	if polite && s.client != nil {
		_ = s.conn.SetDeadline(time.Now().Add(2 * time.Second))
		_ = s.client.Quit()
	}
	_ = s.conn.Close()
}
