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
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/smtpdata"
	"github.com/mailsec/mailsec/internal/smtpwire"
	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/transport/dane"
)

// Errors a session wraps, inside a *mailsec.NetworkError (temporary: a
// new session may fare better), when the server breaks the exchange
// itself rather than answering it.
var (
	// ErrUnsolicitedReply: the server sent a reply no command asked for
	// (a second reply to one command, or one before the command was
	// sent). The session ends there, so that no reply is ever taken for
	// another command's, or another message's. When it happens at the end
	// of DATA the server's verdict on the message is unknown: it may have
	// been delivered, and a retry may deliver it twice.
	ErrUnsolicitedReply = errors.New("mailsec/transport: the server sent a reply no command asked for")
	// ErrMalformedReply: the server sent something that is not an SMTP
	// reply, or a reply longer than the limit: 64 KiB before TLS, where an
	// attacker may be the one answering, 1 MiB after.
	ErrMalformedReply = errors.New("mailsec/transport: malformed SMTP reply")
	// ErrTLSVersion: the server offers only TLS versions below 1.2. It is
	// wrapped in a *mailsec.SecurityError (mailsec.ErrHandshake), not
	// temporary.
	ErrTLSVersion = errors.New("mailsec/transport: the server offers no TLS version from 1.2 up")
)

// Timeouts for the server's replies (RFC 5321 section 4.5.3.2), within
// whatever the context allows.
const (
	replyTimeout = 5 * time.Minute
	finalTimeout = 10 * time.Minute // the reply to the end of DATA
	// dataBlockTimeout bounds each write of a message's content (the DATA
	// block timeout), so that a server that stops reading is given up on
	// even when the context has no deadline. Time the application's reader
	// takes between writes does not count.
	dataBlockTimeout = 3 * time.Minute
	// maxPreTLSReply bounds one reply before TLS, where an attacker may be
	// the one answering.
	maxPreTLSReply = 64 << 10
)

// session is one SMTP connection that has met a security requirement and,
// if configured, authenticated. It is used by one goroutine at a time.
//
// It speaks SMTP itself, one command at a time, and takes each reply from
// an smtpwire.Reader, which hands over one reply per read and keeps
// whatever follows where the session can see it: any byte the server sends
// beyond the one reply a command asked for ends the session (see pending).
type session struct {
	host  string // for errors
	ehlo  string // our EHLO name
	key   string // pool key: the requirement it was established for
	conn  *ctxConn
	rw    net.Conn // what SMTP runs over: the TLS connection, or conn
	r     *smtpwire.Reader
	w     *bufio.Writer
	ext   map[string]string // capabilities from the last EHLO reply, keywords upper case
	state mailsec.ConnectionState
	peer  []*x509.Certificate // the chain the server sent, nil without TLS

	created  time.Time
	lastUsed time.Time
	messages int
	dirty    bool // a transaction may be open: RSET before reuse

	idleTimer *time.Timer      // fires IdleTimeout after the session was put back
	data      *smtpdata.Writer // reused for every message's DATA
	dot       smtpwire.DotWriter
	chunk     []byte // reused for BDAT chunks, when small
	// dataBlock is how long each write of a message's content gets; block
	// is set to it while the content is written (see blockWriter).
	dataBlock time.Duration
	block     time.Duration
	// writeErr is the first failure to write to the connection: once set,
	// the session is broken, whatever a content writer reports.
	writeErr error
}

// blockWriter is what the session's buffered writer writes to: the
// connection, with each write given s.block to complete while it is set
// (within whatever the bound context allows).
type blockWriter struct{ s *session }

func (b blockWriter) Write(p []byte) (int, error) {
	if b.s.block > 0 {
		_ = b.s.conn.SetWriteDeadline(time.Now().Add(b.s.block))
	}
	n, err := b.s.rw.Write(p)
	if err != nil && b.s.writeErr == nil {
		b.s.writeErr = err
	}
	return n, err
}

// dialConfig is what establishing a session needs; a Submission fills it
// once.
type dialConfig struct {
	addr       string
	serverName string
	implicit   bool
	localName  string
	tlsConfig  *tls.Config   // base; cloned per requirement
	sessions   *sessionCache // TLS sessions to resume; nil: none (see resume.go)
	dialer     Dialer
	auth       *Auth
	timeout    time.Duration // bounds establishing a session
	// dataBlock bounds each write of a message's content; zero means
	// dataBlockTimeout.
	dataBlock time.Duration

	// alterTLS, when set, changes the configuration a policy produced
	// before the handshake. Tests use it to take away one layer of a
	// check and show that the next layer holds on its own.
	alterTLS func(*tls.Config)
}

// contact is what establishing a session saw of the server, kept when it
// failed, for the Receipt's record of the attempt: the address dialled
// (the peer's, once connected) and the key of the certificate the server
// presented, if it got that far.
type contact struct {
	addr string
	pin  mailsec.Pin
}

// dial opens and secures a session that meets pol. When it fails after
// dialling, seen (if not nil) records what it saw of the server.
func (dc *dialConfig) dial(ctx context.Context, pol *tlsPolicy, key string, seen *contact) (_ *session, err error) {
	host := dc.serverName
	if pol.mode == tlsNone && dc.auth != nil && !dc.implicit {
		// Checked before connecting: a plaintext session with credentials
		// is never opened, whatever the caller checked before.
		return nil, refuse(host, errPlaintextAuth, "credentials are never sent without TLS", nil)
	}
	var s *session
	if seen != nil {
		*seen = contact{addr: dc.addr}
		defer func() {
			if err != nil && s != nil {
				seen.addr, seen.pin = s.state.Addr, s.state.PeerPin
			}
		}()
	}
	// A peer that accepts the connection and then says nothing must not
	// hold a caller without a deadline forever.
	ctx, cancel := context.WithTimeout(ctx, dc.timeout)
	defer cancel()
	raw, err := dc.dialer.DialContext(ctx, "tcp", dc.addr)
	if err != nil {
		return nil, &mailsec.NetworkError{Host: host, Op: "dial", Err: err}
	}
	cc := newCtxConn(raw)
	unbind := cc.bind(ctx)
	defer unbind()
	defer func() {
		if err != nil {
			_ = raw.Close()
		}
	}()

	s = &session{host: host, ehlo: dc.localName, key: key, conn: cc, created: time.Now(), dataBlock: dc.dataBlock}
	if s.dataBlock <= 0 {
		s.dataBlock = dataBlockTimeout
	}
	s.state = mailsec.ConnectionState{Host: host, Addr: raw.RemoteAddr().String()}

	if pol.mode == tlsNone && pol.loopbackOnly {
		if !isLoopback(raw.RemoteAddr()) {
			return nil, refuse(host, errPlaintextNotLocal,
				"the Plaintext level is for loopback development servers; "+raw.RemoteAddr().String()+" is not one", nil)
		}
	}

	var preTLSAuth bool
	switch {
	case dc.implicit:
		tc, err := dc.handshake(ctx, cc, pol, false, s)
		if err != nil {
			return nil, err
		}
		s.start(tc, smtpwire.NewReader(tc, 0))
		if err := s.greet(ctx); err != nil {
			return nil, err
		}
	case pol.mode == tlsNone:
		s.start(cc, smtpwire.NewReader(cc, 0))
		s.state.Verification = mailsec.NoTLS
		if err := s.greet(ctx); err != nil {
			return nil, err
		}
	default:
		pre := smtpwire.NewReader(cc, maxPreTLSReply)
		ext, auth, err := dc.startTLS(ctx, cc, pre)
		if pol.optional && errors.Is(err, errNoStartTLS) && ext != nil {
			// An opportunistic level, explicitly chosen for this
			// destination: go on without TLS, and say so. The EHLO reply
			// just read is the session's.
			s.state.Verification = mailsec.NoTLS
			s.state.Notes = append(s.state.Notes, host+": STARTTLS not offered; sent without TLS as the level allows")
			pre.SetMax(0)
			s.start(cc, pre)
			s.ext = ext
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
		s.start(tc, smtpwire.NewReader(tc, 0))
	}

	if s.ext == nil {
		if err := s.hello(ctx); err != nil {
			return nil, err
		}
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

// start makes rw, read through r, the session's SMTP connection.
func (s *session) start(rw net.Conn, r *smtpwire.Reader) {
	s.rw, s.r = rw, r
	s.w = bufio.NewWriterSize(blockWriter{s}, 16<<10)
}

// startTLS runs the plaintext part of a STARTTLS session on r: greeting,
// EHLO, STARTTLS. It returns the capabilities of the EHLO reply and
// whether AUTH was among them. When the server does not offer STARTTLS,
// the error is a SecurityError for errNoStartTLS and the capabilities
// are returned with it, the connection clean after the EHLO reply.
func (dc *dialConfig) startTLS(ctx context.Context, cc *ctxConn, r *smtpwire.Reader) (ext map[string]string, preTLSAuth bool, err error) {
	host := dc.serverName
	read := func(cmd string) (smtpwire.Reply, error) {
		_ = cc.SetDeadline(time.Now().Add(replyTimeout))
		rep, err := r.ReadReply()
		if err != nil {
			return rep, readError(ctx, host, cmd, err, maxPreTLSReply)
		}
		if n := r.Buffered(); n > 0 {
			// Before TLS, a reply nobody asked for is someone trying to
			// answer the next command in the server's place.
			return rep, refuse(host, errInjected,
				fmt.Sprintf("%d bytes arrived after the reply to %s, before any command asked for them", n, cmd), nil)
		}
		return rep, nil
	}
	send := func(cmd, line string) error {
		if _, err := io.WriteString(cc, line+"\r\n"); err != nil {
			return netError(ctx, host, cmd, err)
		}
		return nil
	}

	rep, err := read("greeting")
	if err != nil {
		return nil, false, err
	}
	if rep.Code != 220 {
		return nil, false, replyError(host, "greeting", rep.Code, rep.Text)
	}
	if err := send("EHLO", "EHLO "+dc.localName); err != nil {
		return nil, false, err
	}
	rep, err = read("EHLO")
	if err != nil {
		return nil, false, err
	}
	switch {
	case rep.Code/100 == 4:
		// Busy or closing: an answer about now, not about TLS.
		return nil, false, replyError(host, "EHLO", rep.Code, rep.Text)
	case rep.Code != 250:
		return nil, false, refuse(host, errNoStartTLS,
			fmt.Sprintf("EHLO refused (%d %s), so STARTTLS cannot be negotiated", rep.Code, syntax.PeerText(rep.Text)), nil)
	}
	ext = parseEHLO(rep.Text)
	if _, ok := ext["STARTTLS"]; !ok {
		return ext, false, refuse(host, errNoStartTLS,
			"EHLO reply does not list STARTTLS (stripped by an attacker, or TLS disabled on the server)", nil)
	}
	_, preTLSAuth = ext["AUTH"]

	if err := send("STARTTLS", "STARTTLS"); err != nil {
		return nil, false, err
	}
	_ = cc.SetDeadline(time.Now().Add(replyTimeout))
	rep, err = r.ReadReply()
	if err != nil {
		return nil, false, readError(ctx, host, "STARTTLS", err, maxPreTLSReply)
	}
	if rep.Code != 220 {
		e := refuse(host, errStartTLSRefused,
			fmt.Sprintf("server replied %d %s", rep.Code, syntax.PeerText(rep.Text)), nil)
		e.Temp = rep.Code/100 == 4
		return nil, false, e
	}
	if n := r.Buffered(); n > 0 {
		return nil, false, refuse(host, errInjected,
			fmt.Sprintf("%d bytes arrived after the 220 reply to STARTTLS, before the handshake", n), nil)
	}
	_ = cc.SetDeadline(time.Time{})
	return ext, preTLSAuth, nil
}

// handshake runs TLS on conn and checks the result against pol, filling
// in s.state.
func (dc *dialConfig) handshake(ctx context.Context, conn *ctxConn, pol *tlsPolicy, afterSTARTTLS bool, s *session) (*tls.Conn, error) {
	host := dc.serverName
	var match dane.Match
	cfg := pol.config(dc.tlsConfig, dc.serverName, &match)
	cfg.ClientSessionCache = dc.sessions.scoped(pol, cfg)
	if dc.alterTLS != nil {
		dc.alterTLS(cfg)
	}
	conn.tls.on = true
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		if c := presented(tc, err); c != nil {
			s.state.PeerPin = mailsec.PinOf(c)
		}
		return nil, classifyHandshake(ctx, host, err, afterSTARTTLS, &conn.tls)
	}
	if err := dc.checkHandshake(tc.ConnectionState(), pol, s); err != nil {
		return nil, err
	}
	return tc, nil
}

// checkHandshake checks a completed handshake against pol and fills in
// s.state. Each check repeats what the configuration built by pol.config
// enforced during the handshake, so that the result does not rest on the
// configuration (or a callback) alone.
func (dc *dialConfig) checkHandshake(cs tls.ConnectionState, pol *tlsPolicy, s *session) error {
	host := dc.serverName
	switch {
	case !cs.HandshakeComplete:
		return refuse(host, errHandshake, "handshake incomplete", nil)
	case cs.Version < tls.VersionTLS12:
		return refuse(host, errHandshake,
			"the server negotiated "+tls.VersionName(cs.Version)+"; TLS 1.2 or later is required", ErrTLSVersion)
	case len(cs.PeerCertificates) == 0:
		return refuse(host, errHandshake, "the server presented no certificate", nil)
	}
	s.state.PeerPin = mailsec.PinOf(cs.PeerCertificates[0])
	switch pol.mode {
	case tlsWebPKI:
		if len(cs.VerifiedChains) == 0 {
			return refuse(host, errCertificate, "no verified chain", nil)
		}
		s.state.Verification = pol.label
		if s.state.Verification == "" {
			s.state.Verification = mailsec.VerifiedWebPKI
		}
	case tlsPinned:
		if !slices.Contains(pol.pins, mailsec.PinOf(cs.PeerCertificates[0])) {
			return refuse(host, errPinMismatch, "", nil)
		}
		s.state.Verification = mailsec.VerifiedPin
	case tlsDANE:
		m, err := dane.Verify(cs.PeerCertificates, pol.tlsa, pol.names, pol.clock()())
		if err != nil {
			return refuse(host, errDANEMismatch, syntax.PeerText(err.Error()), err)
		}
		s.state.Verification = daneVerification(m)
		s.state.TLSA = m.Record.String()
	case tlsDomain:
		if err := verifyForDomain(cs.PeerCertificates, dc.rootCAs(), pol.names[0], pol.clock()()); err != nil {
			return refuse(host, errCertificate, syntax.PeerText(err.Error()), err)
		}
		s.state.Verification = mailsec.VerifiedWebPKI
	default:
		s.state.Verification = mailsec.NotVerified
	}
	s.state.TLSVersion = tls.VersionName(cs.Version)
	s.state.CipherSuite = tls.CipherSuiteName(cs.CipherSuite)
	s.state.TLSResumed = cs.DidResume
	s.peer = cs.PeerCertificates
	return nil
}

// presented returns the certificate the server presented in a handshake
// that failed with err, when it got that far: the one that was refused.
func presented(tc *tls.Conn, err error) *x509.Certificate {
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) && len(cv.UnverifiedCertificates) > 0 {
		return cv.UnverifiedCertificates[0]
	}
	if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
		return pc[0]
	}
	return nil
}

func (dc *dialConfig) rootCAs() *x509.CertPool {
	if dc.tlsConfig != nil {
		return dc.tlsConfig.RootCAs
	}
	return nil
}

func classifyHandshake(ctx context.Context, host string, err error, afterSTARTTLS bool, rec *recordTracker) error {
	if e := ctxErr(ctx, err); e != nil {
		return &mailsec.NetworkError{Host: host, Op: "TLS handshake", Err: e}
	}
	if vers, old := rec.oldVersion(); old {
		detail := "the server refused every TLS version from 1.2 up"
		if vers != 0 {
			detail = "the server chose " + tls.VersionName(vers) + "; TLS 1.2 or later is required"
		}
		return refuse(host, errHandshake, detail, fmt.Errorf("%w: %w", ErrTLSVersion, err))
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
			return refuse(host, errInjected, "non-TLS bytes where the server's handshake should be", err)
		}
		return refuse(host, errNotTLS, "the server answered in plaintext; it may expect STARTTLS (try port 587)", err)
	case errors.Is(err, errPinMismatch):
		return refuse(host, errPinMismatch, "", err)
	case errors.As(err, &de):
		return refuse(host, errDANEMismatch, syntax.PeerText(de.Error()), err)
	case errors.As(err, &dom):
		return refuse(host, errCertificate, syntax.PeerText(dom.Error()), err)
	case errors.As(err, &cv):
		return refuse(host, errCertificate, syntax.PeerText(certReason(cv.Err)), err)
	}
	return refuse(host, errHandshake, syntax.PeerText(err.Error()), err)
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

// replyText splits a reply's text into its enhanced status code (RFC 2034:
// at the start of every line) and the rest, cleaned.
func replyText(text string) (mailsec.EnhancedCode, string) {
	first, _, _ := strings.Cut(text, " ")
	ec, ok := mailsec.ParseEnhancedCode(first)
	if !ok {
		return mailsec.EnhancedCode{}, syntax.PeerText(text)
	}
	prefix := first + " "
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, prefix)
	}
	return ec, syntax.PeerText(strings.Join(lines, "\n"))
}

func replyError(host, cmd string, code int, text string) *mailsec.SMTPError {
	ec, msg := replyText(text)
	return &mailsec.SMTPError{Host: host, Command: cmd, Code: code, EnhancedCode: ec, Message: msg}
}

func replyOK(rep smtpwire.Reply) *mailsec.Reply {
	ec, text := replyText(rep.Text)
	return &mailsec.Reply{Code: rep.Code, EnhancedCode: ec, Text: text}
}

// netError reports a failure to write to or read from the server.
func netError(ctx context.Context, host, cmd string, err error) error {
	if e := ctxErr(ctx, err); e != nil {
		err = e
	}
	return &mailsec.NetworkError{Host: host, Op: cmd, Err: err}
}

// readError reports a failure to read a reply, from a reader that refuses
// replies longer than limit bytes: the connection's, or bytes that are not
// a reply. It never quotes what the server sent.
func readError(ctx context.Context, host, cmd string, err error, limit int) error {
	var se *smtpwire.SyntaxError
	switch {
	case cmd == "greeting" && errors.Is(err, smtpwire.ErrTLSRecord):
		return refuse(host, errTLSGreeting, "it expects implicit TLS (port 465), not STARTTLS or plaintext", ErrImplicitTLSPort)
	case errors.Is(err, smtpwire.ErrTooLong):
		err = fmt.Errorf("%w: server reply longer than %s", ErrMalformedReply, sizeName(limit))
	case errors.As(err, &se):
		err = fmt.Errorf("%w: %w", ErrMalformedReply, err)
	}
	return netError(ctx, host, cmd, err)
}

// sizeName names a reply limit: "64 KiB", "1 MiB".
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " bytes"
}

// send writes one command line.
func (s *session) send(ctx context.Context, cmd, line string) error {
	_, _ = s.w.WriteString(line)
	_, _ = s.w.WriteString("\r\n")
	if err := s.w.Flush(); err != nil {
		return netError(ctx, s.host, cmd, err)
	}
	return nil
}

// reply reads the one reply to cmd. Anything the server sent beyond it
// answers no command: the session can no longer pair replies with
// commands, and the error (ErrUnsolicitedReply) ends it.
func (s *session) reply(ctx context.Context, cmd string, timeout time.Duration) (smtpwire.Reply, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(timeout))
	rep, err := s.r.ReadReply()
	if err != nil {
		return rep, readError(ctx, s.host, cmd, err, smtpwire.DefaultMaxReply)
	}
	if n := s.more(); n > 0 {
		return rep, s.unsolicited(cmd, fmt.Sprintf("%d more bytes arrived with the reply to %s", n, cmd))
	}
	return rep, nil
}

// more returns how many bytes beyond the reply just read have arrived
// already: those in the reply reader, or else what one read that does not
// wait brings: application data from a TLS record crypto/tls has received
// and not yet handed over (it hands over one record per read, so a second
// reply sent with the first, in a record of its own, is there), or bytes on
// the socket. A connection that is not a socket is not read here (that
// would wait); pending, before the terminator of DATA and before reuse,
// looks further. A read error is left for the next command to meet: the
// reply just read stands.
func (s *session) more() int {
	if n := s.r.Buffered(); n > 0 {
		return n
	}
	s.conn.poll, s.conn.noWait = true, true
	n, _ := s.r.Fill()
	s.conn.poll, s.conn.noWait = false, false
	return n
}

func (s *session) unsolicited(cmd, detail string) error {
	return &mailsec.NetworkError{Host: s.host, Op: cmd, Err: fmt.Errorf("%w: %s", ErrUnsolicitedReply, detail)}
}

// roundTrip sends one command and reads its reply.
func (s *session) roundTrip(ctx context.Context, cmd, line string) (smtpwire.Reply, error) {
	return s.roundTripWithin(ctx, cmd, line, replyTimeout)
}

func (s *session) roundTripWithin(ctx context.Context, cmd, line string, timeout time.Duration) (smtpwire.Reply, error) {
	_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := s.send(ctx, cmd, line); err != nil {
		return smtpwire.Reply{}, err
	}
	return s.reply(ctx, cmd, timeout)
}

// pending reports whether the server has sent anything no command asked
// for yet, without waiting: bytes in the reply reader, application data the
// TLS layer holds or can decrypt now, a TLS record that has begun to
// arrive, or bytes on the socket. TLS records that carry no application
// data (a TLS 1.3 session ticket, a key update) are processed and do not
// count. An error means the connection is unusable.
func (s *session) pending() (bool, error) {
	if s.r.Buffered() > 0 {
		return true, nil
	}
	_ = s.conn.SetReadDeadline(time.Time{})
	s.conn.poll = true
	n, err := s.r.Fill()
	s.conn.poll = false
	switch {
	case n > 0:
		return true, nil
	case err == nil || errors.Is(err, errWouldBlock):
		return s.conn.tls.partial(), nil
	}
	return false, err
}

// greet reads the server's greeting.
func (s *session) greet(ctx context.Context) error {
	rep, err := s.reply(ctx, "greeting", replyTimeout)
	if err != nil {
		return err
	}
	if rep.Code != 220 {
		return replyError(s.host, "greeting", rep.Code, rep.Text)
	}
	return nil
}

// hello says EHLO (HELO to a server that does not know EHLO) and records
// the capabilities.
func (s *session) hello(ctx context.Context) error {
	rep, err := s.roundTrip(ctx, "EHLO", "EHLO "+s.ehlo)
	if err != nil {
		return err
	}
	if rep.Code == 500 || rep.Code == 502 {
		rep, err = s.roundTrip(ctx, "HELO", "HELO "+s.ehlo)
		if err != nil {
			return err
		}
		if rep.Code != 250 {
			return replyError(s.host, "HELO", rep.Code, rep.Text)
		}
		s.ext = map[string]string{}
		return nil
	}
	if rep.Code != 250 {
		return replyError(s.host, "EHLO", rep.Code, rep.Text)
	}
	s.ext = parseEHLO(rep.Text)
	return nil
}

func (s *session) has(ext string) bool {
	_, ok := s.ext[ext]
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
			return res, true, refuse(s.host, errRequireTLS,
				"the message demands REQUIRETLS (RFC 8689) and the server does not offer it over this verified session", nil)
		}
	}
	if d.SMTPUTF8 && !s.has("SMTPUTF8") {
		return res, true, &mailsec.ExtensionError{Host: s.host, Extension: "SMTPUTF8",
			Reason: "an address has a non-ASCII local part (or the header is UTF-8)"}
	}
	if d.EightBit && !s.has("8BITMIME") {
		return res, true, &mailsec.ExtensionError{Host: s.host, Extension: "8BITMIME", Reason: "the content is 8-bit"}
	}

	withDSN := d.DSN != nil && s.has("DSN")
	reused := res.Connection.Reused
	// Before the body is sent nothing can have been accepted: on a reused
	// session that the server dropped, is closing (421: it may limit
	// messages per connection; or a 221 out of place), or that got out of
	// step, the delivery can start again on a fresh one.
	beforeBody := func(err error) (*mailsec.DeliveryResult, bool, error) {
		var ne *mailsec.NetworkError
		var se *mailsec.SMTPError
		stale := errors.As(err, &ne) || errors.As(err, &se) && (se.Code == 421 || se.Code == 221)
		if stale && reused && ctx.Err() == nil {
			return res, false, &errRetry{err}
		}
		return res, !stale, err
	}

	if s.has("PIPELINING") {
		return s.pipelined(ctx, d, res, withDSN, beforeBody)
	}

	s.dirty = true
	rep, err := s.roundTrip(ctx, "MAIL", s.mailCommand(d, withDSN))
	if err != nil {
		return beforeBody(err)
	}
	if rep.Code != 250 {
		return beforeBody(replyError(s.host, "MAIL", rep.Code, rep.Text))
	}

	var errs []error
	accepted := 0
	for i, to := range d.To {
		rep, err := s.roundTrip(ctx, "RCPT", s.rcptCommand(d, to, withDSN))
		if err != nil {
			return beforeBody(err)
		}
		if !rcptAccepted(rep.Code) {
			se := replyError(s.host, "RCPT", rep.Code, rep.Text)
			if se.Code == 421 || se.Code == 221 {
				return beforeBody(se)
			}
			res.Recipients[i].Err = se
			res.Recipients[i].Reply = se.Reply()
			errs = append(errs, &mailsec.RecipientError{Recipient: to, Err: se})
			continue
		}
		accepted++
	}
	if accepted == 0 {
		return res, true, errors.Join(errs...)
	}

	rep, err = s.roundTrip(ctx, "DATA", "DATA")
	if err != nil {
		return beforeBody(err)
	}
	if rep.Code != 354 {
		return beforeBody(replyError(s.host, "DATA", rep.Code, rep.Text))
	}

	return s.dataContent(ctx, d, res)
}

// dataContent sends the content of d after the server's 354 to DATA,
// dot-stuffed and terminated, and reads the verdict.
func (s *session) dataContent(ctx context.Context, d *mailsec.Delivery, res *mailsec.DeliveryResult) (*mailsec.DeliveryResult, bool, error) {
	// The body: however long it takes in all, within the context, but
	// each write within the DATA block timeout.
	_ = s.conn.SetWriteDeadline(time.Time{})
	s.block = s.dataBlock
	defer func() { s.block = 0 }()
	s.dot.Reset(s.w)
	if s.data == nil {
		s.data = smtpdata.NewWriter(&s.dot)
	} else {
		s.data.Reset(&s.dot)
	}
	if _, err := d.Content.WriteTo(s.data); err != nil {
		// Never send the terminator after a partial message: drop the
		// connection so the server discards what it has.
		return res, false, s.contentError(ctx, err)
	}
	if err := s.data.Close(); err != nil {
		return res, false, s.contentError(ctx, err)
	}
	if err := s.dot.FinishBody(); err != nil {
		return res, false, s.contentError(ctx, err)
	}
	if err := s.w.Flush(); err != nil {
		return res, false, s.contentError(ctx, err)
	}
	// A server that has already answered, before the end of the message,
	// would have its early reply taken for the verdict: the terminator is
	// not sent, and the connection is dropped.
	switch early, err := s.pending(); {
	case err != nil:
		return res, false, netError(ctx, s.host, "DATA", err)
	case early:
		return res, false, s.unsolicited("DATA", "the server replied before the end of the message; "+
			"the message was not terminated, but the server may treat it as delivered")
	}
	// From here on the end of the message may have reached the server:
	// a failure leaves its verdict unknown.
	if err := s.dot.Terminate(); err != nil {
		return res, false, noVerdict(netError(ctx, s.host, "DATA", err))
	}
	if err := s.w.Flush(); err != nil {
		return res, false, noVerdict(netError(ctx, s.host, "DATA", err))
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(finalTimeout))
	rep, err := s.r.ReadReply()
	if err != nil {
		return res, false, noVerdict(readError(ctx, s.host, "DATA", err, smtpwire.DefaultMaxReply))
	}
	return s.verdict(res, rep)
}

// verdict completes res with rep, the server's reply to the end of the
// message's content: the verdict on it, which must be the last thing the
// server sent.
func (s *session) verdict(res *mailsec.DeliveryResult, rep smtpwire.Reply) (*mailsec.DeliveryResult, bool, error) {
	healthy := rep.Code != 421 && rep.Code != 221 // a server that says it is closing the session
	if s.more() > 0 {
		// More than one reply to the end of the message. A server that
		// closes the session may say so (421, RFC 5321 section 3.8); any
		// other reply leaves its verdict unknown.
		s.conn.poll = true
		next, err := s.r.ReadReply()
		s.conn.poll = false
		if err != nil || next.Code != 421 || s.r.Buffered() > 0 {
			desc := "more"
			if err == nil {
				desc = strconv.Itoa(next.Code)
			}
			return res, false, s.unsolicited("DATA", fmt.Sprintf("the server answered the end of the message more than once (%d, then %s): "+
				"its verdict is unknown, and the message may have been delivered", rep.Code, desc))
		}
		healthy = false
	}
	if rep.Code != 250 {
		s.dirty = false
		return res, healthy, replyError(s.host, "DATA", rep.Code, rep.Text)
	}
	s.dirty = false
	s.messages++
	res.Reply = replyOK(rep)
	for i := range res.Recipients {
		if res.Recipients[i].Err == nil {
			res.Recipients[i].Accepted = true
		}
	}
	return res, healthy, nil
}

// rcptAccepted reports a reply that accepts a recipient: 250, or 251
// (RFC 5321 section 4.3.2), or 252, which servers use to say they accept
// a recipient they cannot verify. Every other reply, another 2xx among
// them, refuses it. MAIL, the end of DATA, RSET and NOOP succeed on 250
// alone.
func rcptAccepted(code int) bool { return code >= 250 && code <= 252 }

// mailCommand returns the MAIL command for d.
func (s *session) mailCommand(d *mailsec.Delivery, withDSN bool) string {
	var b strings.Builder
	b.Grow(64 + len(d.From))
	b.WriteString("MAIL FROM:<")
	b.WriteString(d.From)
	b.WriteByte('>')
	if s.has("8BITMIME") {
		b.WriteString(" BODY=8BITMIME")
	}
	if d.RequireTLS {
		b.WriteString(" REQUIRETLS")
	}
	if d.SMTPUTF8 {
		b.WriteString(" SMTPUTF8")
	}
	if withDSN {
		if d.DSN.Return != "" {
			b.WriteString(" RET=" + string(d.DSN.Return))
		}
		if d.DSN.EnvelopeID != "" {
			b.WriteString(" ENVID=" + smtpwire.XText(d.DSN.EnvelopeID))
		}
	}
	return b.String()
}

// rcptCommand returns the RCPT command for one recipient of d.
func (s *session) rcptCommand(d *mailsec.Delivery, to string, withDSN bool) string {
	line := "RCPT TO:<" + to + ">"
	if !withDSN {
		return line
	}
	if len(d.DSN.Notify) > 0 {
		line += " NOTIFY=" + string(d.DSN.Notify[0])
		for _, n := range d.DSN.Notify[1:] {
			line += "," + string(n)
		}
	}
	if d.DSN.OriginalRecipient {
		switch {
		case !d.SMTPUTF8:
			line += " ORCPT=rfc822;" + smtpwire.XText(to)
		case s.has("SMTPUTF8"):
			line += " ORCPT=utf-8;" + smtpwire.UTF8AddrUnitext(to)
		default:
			line += " ORCPT=utf-8;" + smtpwire.UTF8AddrXText(to)
		}
	}
	return line
}

func (s *session) contentError(ctx context.Context, err error) error {
	if e := ctxErr(ctx, err); e != nil {
		return &mailsec.NetworkError{Host: s.host, Op: "DATA", Err: e}
	}
	if s.writeErr != nil {
		// The connection failed, which the content's writer may report in
		// its own words, wrapping nothing.
		return &mailsec.NetworkError{Host: s.host, Op: "DATA", Err: s.writeErr}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return &mailsec.NetworkError{Host: s.host, Op: "DATA", Err: err}
	}
	return fmt.Errorf("%w: %s: transaction abandoned before the end of DATA, nothing delivered: %w", mailsec.ErrContent, s.host, err)
}

// errPendingIdle is why a session is not reused when the server has sent
// something while it was idle.
var errPendingIdle = fmt.Errorf("%w: the server sent something while the session was idle", ErrUnsolicitedReply)

// check makes an idle session ready for a new transaction. It is never
// reused when the server has sent anything since the last reply (a reply
// nobody asked for, a late second reply, a 421 before closing): that
// would be taken for the answer to the next command. Then RSET if the
// last transaction may be open, NOOP if it has been idle long enough that
// the server may have dropped it. On a server that offers PIPELINING and a
// session not idle that long, the RSET is left to ride in the same write as
// the next transaction's MAIL (see pipelined).
func (s *session) check(ctx context.Context, probeAfter time.Duration) error {
	unbind := s.conn.bind(ctx)
	defer unbind()
	switch p, err := s.pending(); {
	case err != nil:
		return err
	case p:
		return errPendingIdle
	}
	cmd := ""
	idle := time.Since(s.lastUsed) >= probeAfter
	switch {
	case s.dirty && s.has("PIPELINING") && !idle:
		// RSET goes in the same write as the next transaction's MAIL.
		return nil
	case s.dirty:
		cmd = "RSET"
	case idle:
		cmd = "NOOP"
	default:
		return nil
	}
	rep, err := s.roundTrip(ctx, cmd, cmd)
	if err != nil {
		return err
	}
	if rep.Code != 250 {
		return replyError(s.host, cmd, rep.Code, rep.Text)
	}
	s.dirty = false
	return nil
}

// close ends the session, politely (QUIT) if it is healthy.
func (s *session) close(polite bool) {
	if polite && s.r != nil {
		if _, err := s.roundTripWithin(context.Background(), "QUIT", "QUIT", 2*time.Second); err == nil {
			_ = s.rw.Close()
		}
	}
	_ = s.conn.Close()
}
