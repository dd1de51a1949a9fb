package transport

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/xdg-go/scram"

	"github.com/mailsec/mailsec"
)

// Auth holds SMTP AUTH credentials. It is used only inside TLS, and its
// String, GoString and LogValue methods never reveal the secret.
type Auth struct {
	Username string
	// Password for SCRAM-SHA-256, CRAM-MD5, PLAIN and LOGIN.
	Password string
	// Token returns an OAuth 2.0 access token for XOAUTH2 (Gmail,
	// Microsoft 365). When set, XOAUTH2 is the only mechanism used and
	// Password is ignored. It is called for each new session.
	Token func(ctx context.Context) (string, error)
	// Mechanisms restricts the mechanisms to try, in order of preference.
	// Empty means SCRAM-SHA-256, CRAM-MD5, PLAIN, LOGIN (or XOAUTH2 with
	// Token). The first one the server offers after TLS is used; there is
	// no fallback to another after a failure.
	Mechanisms []string
}

// Mechanism names.
const (
	MechSCRAMSHA256 = "SCRAM-SHA-256"
	MechCRAMMD5     = "CRAM-MD5"
	MechPlain       = "PLAIN"
	MechLogin       = "LOGIN"
	MechXOAUTH2     = "XOAUTH2"
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
	return []string{MechSCRAMSHA256, MechCRAMMD5, MechPlain, MechLogin}
}

func (a *Auth) validate() error {
	if a.Username == "" {
		return mailsec.Invalid("Auth.Username", "", "empty")
	}
	if strings.ContainsAny(a.Username, "\x00\x01\r\n") {
		return mailsec.Invalid("Auth.Username", "", "contains a control character")
	}
	if a.Token == nil && a.Password == "" {
		return mailsec.Invalid("Auth.Password", "", "empty (and no Token)")
	}
	for _, m := range a.Mechanisms {
		switch m {
		case MechSCRAMSHA256, MechCRAMMD5, MechPlain, MechLogin:
			if a.Token != nil {
				return mailsec.Invalid("Auth.Mechanisms", m, "needs a Password; Token is set")
			}
		case MechXOAUTH2:
			if a.Token == nil {
				return mailsec.Invalid("Auth.Mechanisms", m, "needs a Token")
			}
		default:
			return mailsec.Invalid("Auth.Mechanisms", m, "unsupported mechanism")
		}
	}
	return nil
}

// authenticate runs AUTH on a session whose TLS is established, choosing
// from the mechanisms the server listed after TLS.
func (a *Auth) authenticate(ctx context.Context, s *session, preTLSAuth bool) (string, error) {
	fail := func(mech, reason string, err error) error {
		return &mailsec.AuthError{Host: s.host, Mechanism: mech, Reason: reason, Err: err}
	}
	ok, params := s.client.Extension("AUTH")
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
	var mech string
	for _, m := range allowed {
		if slices.Contains(offered, m) {
			mech = m
			break
		}
	}
	if mech == "" {
		return "", fail("", "no acceptable mechanism: the server offers "+cleanText(strings.Join(offered, " "))+
			", allowed are "+strings.Join(allowed, " "), nil)
	}

	var client sasl.Client
	var sc *scramClient
	switch mech {
	case MechSCRAMSHA256:
		c, err := scram.SHA256.NewClient(a.Username, a.Password, "")
		if err != nil {
			return "", fail(mech, "preparing credentials", err)
		}
		sc = &scramClient{conv: c.NewConversation()}
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
			return "", fail(mech, "token source failed", err)
		}
		if strings.ContainsAny(tok, "\x00\x01\r\n ") {
			return "", fail(mech, "token source returned a malformed token", nil)
		}
		client = &xoauth2Client{user: a.Username, token: tok}
	}
	if err := s.client.Auth(client); err != nil {
		if isNetwork(ctx, err) {
			return "", s.fail(ctx, "AUTH", err)
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return "", fail(mech, "rejected by the server", s.fail(ctx, "AUTH", err))
		}
		// The mechanism itself gave up: a SCRAM server signature that does
		// not verify, a challenge that makes no sense.
		return "", fail(mech, "the exchange failed", err)
	}
	if sc != nil && !sc.conv.Valid() {
		return "", fail(mech, "the server did not prove it knows the password (no valid SCRAM server signature)", nil)
	}
	return mech, nil
}

// scramClient adapts xdg-go/scram to go-sasl.
type scramClient struct{ conv *scram.ClientConversation }

func (c *scramClient) Start() (string, []byte, error) {
	first, err := c.conv.Step("")
	return MechSCRAMSHA256, []byte(first), err
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
