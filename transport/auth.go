package transport

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/xdg-go/scram"

	"github.com/mailsec/mailsec"
)

// Auth holds SMTP AUTH credentials. It is used only inside TLS, and its
// String, GoString and LogValue methods never reveal the secret.
//
// A failed AUTH returns a *mailsec.AuthError that names the mechanism,
// says why in this package's words and carries the server's reply code
// and enhanced status code, never the text of a reply in the exchange,
// where servers echo what they were sent (see authenticate in auth.go for
// why the text is dropped rather than filtered). An error from Token is
// wrapped as the token source returned it.
type Auth struct {
	Username string
	// Password for SCRAM-SHA-256(-PLUS), CRAM-MD5, PLAIN and LOGIN.
	Password string
	// Token returns an OAuth 2.0 access token for XOAUTH2 (Gmail,
	// Microsoft 365). When set, XOAUTH2 is the only mechanism used and
	// Password is ignored. It is called for each new session.
	Token func(ctx context.Context) (string, error)
	// Mechanisms restricts the mechanisms to try, in order of preference.
	// Empty means SCRAM-SHA-256-PLUS, SCRAM-SHA-256, CRAM-MD5, PLAIN,
	// LOGIN (or XOAUTH2 with Token). The first one the server offers after
	// TLS is used; there is no fallback to another after a failure.
	//
	// SCRAM-SHA-256 is never used where SCRAM-SHA-256-PLUS can be: on a
	// TLS 1.3 session whose server offers the PLUS variant, SCRAM-SHA-256 means
	// SCRAM-SHA-256-PLUS, whose proof is bound to this TLS session
	// (channel binding tls-exporter, RFC 9266), so that credentials
	// relayed by whoever terminates TLS in the server's place (with a
	// misissued certificate, say) do not authenticate. Where the server
	// offers SCRAM-SHA-256 alone on TLS 1.3, the exchange tells the
	// server that this side could have bound the session (GS2 flag "y",
	// RFC 5802 section 6), so that a server that did offer the PLUS
	// variant detects that the offer was removed. List only
	// SCRAM-SHA-256-PLUS to authenticate with channel binding or not at
	// all.
	Mechanisms []string
}

// Mechanism names.
const (
	MechSCRAMSHA256 = "SCRAM-SHA-256"
	// MechSCRAMSHA256PLUS is SCRAM-SHA-256 with channel binding
	// (tls-exporter, TLS 1.3 only; RFC 5802, RFC 7677, RFC 9266).
	MechSCRAMSHA256PLUS = "SCRAM-SHA-256-PLUS"
	MechCRAMMD5         = "CRAM-MD5"
	MechPlain           = "PLAIN"
	MechLogin           = "LOGIN"
	MechXOAUTH2         = "XOAUTH2"
)

// String redacts the secret from %v and %+v.
func (a Auth) String() string {
	return "transport.Auth{Username: " + a.Username + ", Password: [redacted]}"
}

// GoString redacts the secret from %#v.
func (a Auth) GoString() string { return a.String() }

// LogValue redacts the secret from slog records.
func (a Auth) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", a.Username), slog.String("password", "[redacted]"))
}

func (a *Auth) preferences() []string {
	if len(a.Mechanisms) > 0 {
		return a.Mechanisms
	}
	if a.Token != nil {
		return []string{MechXOAUTH2}
	}
	return []string{MechSCRAMSHA256PLUS, MechSCRAMSHA256, MechCRAMMD5, MechPlain, MechLogin}
}

func (a *Auth) validate() error {
	if a.Username == "" {
		return configError("Auth.Username", "", "empty: set the user name the server knows the application by")
	}
	if strings.ContainsAny(a.Username, "\x00\x01\r\n") {
		return configError("Auth.Username", "", "contains a control character")
	}
	if a.Token == nil && a.Password == "" {
		return configError("Auth.Password", "", "empty, and no Token: set the password, or a Token for XOAUTH2")
	}
	for _, m := range a.Mechanisms {
		switch m {
		case MechSCRAMSHA256PLUS, MechSCRAMSHA256, MechCRAMMD5, MechPlain, MechLogin:
			if a.Token != nil {
				return configError("Auth.Mechanisms", m, "needs a Password; Token is set, so list only XOAUTH2")
			}
		case MechXOAUTH2:
			if a.Token == nil {
				return configError("Auth.Mechanisms", m, "needs a Token")
			}
		default:
			return configError("Auth.Mechanisms", m, "unsupported mechanism")
		}
	}
	return nil
}

// authenticate runs AUTH on a session whose TLS is established, choosing
// from the mechanisms the server listed after TLS.
//
// # What an AUTH failure reports
//
// An AUTH failure says which mechanism was tried, why it failed in this
// package's own words, and the server's reply code and enhanced status
// code, never the text of any reply in the exchange. Servers echo what
// they were sent: "535 5.7.8 AUTH PLAIN AGFsaWNlAHMzY3JldA== rejected",
// "500 5.5.2 Error: bad syntax: <base64 of the password>", the XOAUTH2
// response with its token; the challenges before the final reply can do
// the same. The reply text is dropped rather than filtered, because no
// filter can be shown to catch every echo: a secret may come back raw,
// in base64 (aligned three ways), hex, quoted-printable, URL-encoded,
// truncated or split across lines, and a filter that misses one form
// writes the password into the application's logs and every Receipt. The
// codes keep what a person needs to act (5.7.8: wrong credentials, 4.7.0:
// try later, 5.7.9: mechanism too weak). The same holds for everything
// else the exchange produces: a mechanism's own failure (xdg-go/scram
// quotes the server's messages in its errors) becomes a fixed reason, the
// reply reader's errors never quote the server, and the mechanism names a
// server lists are reported only when they are names this package knows.
func (a *Auth) authenticate(ctx context.Context, s *session, preTLSAuth bool) (string, error) {
	fail := func(mech, reason string, err error) error {
		return &mailsec.AuthError{Host: s.host, Mechanism: mech, Reason: reason, Err: err}
	}
	params, ok := s.ext["AUTH"]
	if !ok {
		reason := "the server offers no AUTH after TLS"
		if preTLSAuth {
			reason = "the server offered AUTH only before TLS; credentials are never sent there"
		}
		return "", fail("", reason, nil)
	}
	offered := strings.Fields(strings.ToUpper(params))
	allowed := a.preferences()
	if s.state.Verification != mailsec.VerifiedWebPKI && s.state.Verification != mailsec.VerifiedPin {
		// Over TLS whose peer is not authenticated an active attacker can
		// be the peer, and every mechanism hands it something: the
		// password, a token, or material for an offline dictionary attack.
		return "", fail("", "the session's certificate is not verified; credentials are sent only over verified TLS", nil)
	}
	// Channel binding needs TLS 1.3 here: tls-exporter is defined for it
	// (RFC 9266), and tls-unique is unsafe on it and never used.
	cb, canBind := s.channelBinding()
	var mech string
	for _, m := range allowed {
		if m == MechSCRAMSHA256PLUS && !canBind {
			continue
		}
		if m == MechSCRAMSHA256 && canBind && slices.Contains(offered, MechSCRAMSHA256PLUS) {
			// Never the unbound variant where the bound one is offered.
			mech = MechSCRAMSHA256PLUS
			break
		}
		if slices.Contains(offered, m) {
			mech = m
			break
		}
	}
	if mech == "" {
		reason := "no acceptable mechanism: the server offers " + describeMechanisms(offered) +
			", allowed are " + strings.Join(allowed, " ")
		if !canBind && slices.Contains(allowed, MechSCRAMSHA256PLUS) && slices.Contains(offered, MechSCRAMSHA256PLUS) {
			reason += " (" + MechSCRAMSHA256PLUS + " needs TLS 1.3 for its channel binding; the session is " + s.state.TLSVersion + ")"
		}
		return "", fail("", reason, nil)
	}

	var client sasl.Client
	var sc *scramClient
	switch mech {
	case MechSCRAMSHA256, MechSCRAMSHA256PLUS:
		c, err := scram.SHA256.NewClient(a.Username, a.Password, "")
		if err != nil {
			// SASLprep refused the user name or password; the error
			// quotes neither, but say only what happened.
			return "", fail(mech, "the user name or password cannot be prepared for SCRAM (SASLprep)", nil)
		}
		sc = &scramClient{mech: mech}
		switch {
		case mech == MechSCRAMSHA256PLUS:
			sc.conv = c.NewConversationWithChannelBinding(cb)
		case canBind:
			// The server offers no PLUS variant: say that this side
			// supports channel binding (GS2 flag "y").
			sc.conv = c.NewConversationAdvertisingChannelBinding()
		default:
			sc.conv = c.NewConversation()
		}
		client = sc
	case MechCRAMMD5:
		client = &cramMD5Client{user: a.Username, pass: a.Password}
	case MechPlain:
		client = sasl.NewPlainClient("", a.Username, a.Password)
	case MechLogin:
		client = &loginClient{user: a.Username, pass: a.Password}
	case MechXOAUTH2:
		tok, err := a.Token(ctx)
		if err != nil {
			// The application's own error, as its token source returned it.
			return "", fail(mech, "token source failed", err)
		}
		if tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return "", fail(mech, "token source returned a malformed token (empty, or with spaces or control characters)", nil)
		}
		client = &xoauth2Client{user: a.Username, token: tok}
	}
	if err := s.exchange(ctx, mech, client); err != nil {
		return "", err
	}
	if sc != nil && !sc.conv.Valid() {
		return "", fail(mech, "the server did not prove it knows the password (no valid SCRAM server signature)", nil)
	}
	return mech, nil
}

// channelBinding returns the session's tls-exporter channel binding (RFC
// 9266: 32 bytes exported with the label "EXPORTER-Channel-Binding" and no
// context), when the session is TLS 1.3.
func (s *session) channelBinding() (scram.ChannelBinding, bool) {
	tc, ok := s.rw.(*tls.Conn)
	if !ok {
		return scram.ChannelBinding{}, false
	}
	cs := tc.ConnectionState()
	if cs.Version != tls.VersionTLS13 {
		return scram.ChannelBinding{}, false
	}
	cb, err := scram.NewTLSExporterBinding(&cs)
	if err != nil || cb.Type != scram.ChannelBindingTLSExporter || len(cb.Data) != 32 {
		return scram.ChannelBinding{}, false
	}
	return cb, true
}

// maxSASLSteps bounds the challenges of one exchange; the mechanisms here
// need at most three.
const maxSASLSteps = 8

// exchange runs one SASL exchange (RFC 4954 section 4). It reports the
// server's replies by code only (see authenticate).
func (s *session) exchange(ctx context.Context, mech string, c sasl.Client) error {
	fail := func(reason string, err error) error {
		return &mailsec.AuthError{Host: s.host, Mechanism: mech, Reason: reason, Err: err}
	}
	_, ir, err := c.Start()
	if err != nil {
		return fail("the mechanism could not start", nil)
	}
	line := "AUTH " + mech
	switch {
	case ir == nil:
	case len(ir) == 0:
		line += " =" // an empty initial response (RFC 4954 section 4)
	default:
		line += " " + base64.StdEncoding.EncodeToString(ir)
	}
	rep, err := s.roundTrip(ctx, "AUTH", line)
	for step := 0; ; step++ {
		if err != nil {
			// A broken connection, a malformed or unsolicited reply: the
			// error carries none of the server's text.
			return err
		}
		switch rep.Code {
		case 235:
			return nil
		case 334:
		default:
			ec, _ := replyText(rep.Text)
			return fail(rejection(mech, rep.Code, ec), &mailsec.SMTPError{Host: s.host, Command: "AUTH", Code: rep.Code, EnhancedCode: ec})
		}
		if step == maxSASLSteps {
			return fail("the server kept sending challenges", nil)
		}
		challenge, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(rep.Text))
		if derr != nil {
			return fail("the server sent a challenge that is not base64", nil)
		}
		resp, merr := c.Next(challenge)
		if merr != nil {
			// The connection is dropped, which cancels the exchange.
			return fail(mechanismFailure(mech), nil)
		}
		rep, err = s.roundTrip(ctx, "AUTH", base64.StdEncoding.EncodeToString(resp))
	}
}

// rejection says in words what a reply to AUTH means (RFC 4954 section 6,
// RFC 3463, RFC 5248).
func rejection(mech string, code int, ec mailsec.EnhancedCode) string {
	switch {
	case (code == 535 || ec == mailsec.EnhancedCode{5, 7, 8}) && mech == MechSCRAMSHA256PLUS:
		return "rejected by the server: the channel binding did not match (the TLS session ends at an intermediary " +
			"with a certificate this side trusts, not at the server), or credentials invalid"
	case code == 535 || ec == mailsec.EnhancedCode{5, 7, 8}:
		return "rejected by the server: credentials invalid"
	case code == 534 || ec == mailsec.EnhancedCode{5, 7, 9}:
		return "rejected by the server: mechanism too weak for this server"
	case code == 538 || ec == mailsec.EnhancedCode{5, 7, 11}:
		return "rejected by the server: encryption required for this mechanism"
	case code == 432 || ec == mailsec.EnhancedCode{4, 7, 12}:
		return "rejected by the server: a password transition is needed"
	case code == 454 || ec == mailsec.EnhancedCode{4, 7, 0}:
		return "rejected by the server: temporary authentication failure"
	case code == 504:
		return "rejected by the server: mechanism not supported"
	case code == 501 || code == 500 || code == 502:
		return "rejected by the server: it could not parse the exchange"
	}
	return "rejected by the server"
}

// mechanismFailure says why a mechanism gave up on a challenge.
func mechanismFailure(mech string) string {
	switch mech {
	case MechSCRAMSHA256PLUS:
		return "the server's SCRAM messages did not verify (it does not know the password, the exchange was tampered with, " +
			"or the channel binding did not match)"
	case MechSCRAMSHA256:
		return "the server's SCRAM messages did not verify (it does not know the password, or the exchange was tampered with)"
	case MechLogin:
		return "the server sent a LOGIN prompt other than for the user name or the password"
	}
	return "the server sent a challenge the mechanism has no answer for"
}

// knownMechanism reports whether m is a SASL mechanism name (IANA
// registry) that may be quoted from a server's EHLO reply; anything else
// the server lists is only counted, as it could be an echo of a
// credential.
func knownMechanism(m string) bool {
	switch m {
	case MechSCRAMSHA256, MechSCRAMSHA256PLUS, "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-512", "SCRAM-SHA-512-PLUS",
		MechCRAMMD5, "DIGEST-MD5", MechPlain, MechLogin, MechXOAUTH2, "OAUTHBEARER", "GSSAPI", "GS2-KRB5", "NTLM",
		"EXTERNAL", "ANONYMOUS":
		return true
	}
	return false
}

// describeMechanisms names the mechanisms a server offers, the ones this
// package knows by name, and counts the others.
func describeMechanisms(offered []string) string {
	var named []string
	other := 0
	for _, m := range offered {
		if knownMechanism(m) {
			named = append(named, m)
		} else {
			other++
		}
	}
	switch {
	case len(named) == 0 && other == 0:
		return "none"
	case other == 0:
		return strings.Join(named, " ")
	}
	s := strconv.Itoa(other) + " unknown"
	if len(named) > 0 {
		s = strings.Join(named, " ") + " and " + s
	}
	return s
}

// scramClient adapts xdg-go/scram to go-sasl.
type scramClient struct {
	mech string
	conv *scram.ClientConversation
}

func (c *scramClient) Start() (string, []byte, error) {
	first, err := c.conv.Step("")
	return c.mech, []byte(first), err
}

func (c *scramClient) Next(challenge []byte) ([]byte, error) {
	resp, err := c.conv.Step(string(challenge))
	if err != nil {
		return nil, err
	}
	// After verifying the server's final message the client sends an
	// empty response; go-sasl takes a nil response to mean "done".
	return append([]byte{}, resp...), nil
}

// cramMD5Client implements CRAM-MD5 (RFC 2195).
type cramMD5Client struct{ user, pass string }

func (c *cramMD5Client) Start() (string, []byte, error) { return MechCRAMMD5, nil, nil }

func (c *cramMD5Client) Next(challenge []byte) ([]byte, error) {
	m := hmac.New(md5.New, []byte(c.pass))
	m.Write(challenge)
	return []byte(c.user + " " + hex.EncodeToString(m.Sum(nil))), nil
}

// loginClient implements the LOGIN mechanism, answering the server's
// "Username:" and "Password:" prompts.
type loginClient struct{ user, pass string }

func (c *loginClient) Start() (string, []byte, error) { return MechLogin, nil, nil }

func (c *loginClient) Next(challenge []byte) ([]byte, error) {
	switch p := strings.ToLower(strings.TrimSpace(string(challenge))); {
	case strings.HasPrefix(p, "user"):
		return []byte(c.user), nil
	case strings.HasPrefix(p, "pass"):
		return []byte(c.pass), nil
	}
	return nil, sasl.ErrUnexpectedServerChallenge
}

// xoauth2Client implements Google's and Microsoft's XOAUTH2.
type xoauth2Client struct{ user, token string }

func (c *xoauth2Client) Start() (string, []byte, error) {
	return MechXOAUTH2, []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

// Next answers the server's error challenge (a JSON status) with an
// empty response, after which the server sends its final failure reply.
func (c *xoauth2Client) Next([]byte) ([]byte, error) { return []byte{}, nil }
