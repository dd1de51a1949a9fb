package mailsectest

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/xdg-go/scram"
)

// loginServer implements the server side of LOGIN.
type loginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if resp != nil {
			l.user = string(resp)
			l.step = 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(resp)
		l.step = 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check(l.user, string(resp))
	}
	return nil, false, errUnexpected
}

// cramMD5Server implements the server side of CRAM-MD5 (RFC 2195).
type cramMD5Server struct {
	challenge string
	users     map[string]string
	user      *string
	sent      bool
}

func newCRAMMD5Server(host string, users map[string]string, user *string) sasl.Server {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &cramMD5Server{challenge: fmt.Sprintf("<%x@%s>", b, host), users: users, user: user}
}

func (c *cramMD5Server) Next(resp []byte) ([]byte, bool, error) {
	if !c.sent {
		c.sent = true
		return []byte(c.challenge), false, nil
	}
	name, digest, ok := strings.Cut(string(resp), " ")
	pass, known := c.users[name]
	if !ok || !known {
		return nil, true, smtp.ErrAuthFailed
	}
	m := hmac.New(md5.New, []byte(pass))
	m.Write([]byte(c.challenge))
	if !hmac.Equal([]byte(hex.EncodeToString(m.Sum(nil))), []byte(digest)) {
		return nil, true, smtp.ErrAuthFailed
	}
	*c.user = name
	return nil, true, nil
}

// scramServer implements the server side of SCRAM-SHA-256 with
// xdg-go/scram, sending the server-final message as a challenge and
// completing on the client's empty reply, as RFC 4954 section 4 describes.
type scramServer struct {
	conv  *scram.ServerConversation
	user  *string
	final bool
}

func newSCRAMServer(users map[string]string, user *string) (sasl.Server, error) {
	var salt [16]byte
	_, _ = rand.Read(salt[:])
	srv, err := scram.SHA256.NewServer(func(name string) (scram.StoredCredentials, error) {
		pass, ok := users[name]
		if !ok {
			return scram.StoredCredentials{}, smtp.ErrAuthFailed
		}
		c, err := scram.SHA256.NewClient(name, pass, "")
		if err != nil {
			return scram.StoredCredentials{}, err
		}
		return c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt[:]), Iters: 4096})
	})
	if err != nil {
		return nil, err
	}
	return &scramServer{conv: srv.NewConversation(), user: user}, nil
}

func (s *scramServer) Next(resp []byte) ([]byte, bool, error) {
	if s.final {
		if len(resp) != 0 {
			return nil, true, smtp.ErrAuthFailed
		}
		*s.user = s.conv.Username()
		return nil, true, nil
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	out, err := s.conv.Step(string(resp))
	if err != nil {
		return nil, true, smtp.ErrAuthFailed
	}
	if s.conv.Done() {
		if !s.conv.Valid() {
			return nil, true, smtp.ErrAuthFailed
		}
		s.final = true
	}
	return []byte(out), false, nil
}

// xoauth2Server implements the server side of XOAUTH2.
type xoauth2Server struct {
	tokens map[string]string
	user   *string
	failed bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if x.failed {
		return nil, true, smtp.ErrAuthFailed
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	var user, token string
	for _, f := range strings.Split(string(resp), "\x01") {
		if v, ok := strings.CutPrefix(f, "user="); ok {
			user = v
		}
		if v, ok := strings.CutPrefix(f, "auth=Bearer "); ok {
			token = v
		}
	}
	if want, ok := x.tokens[user]; !ok || want != token || token == "" {
		x.failed = true
		return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), false, nil
	}
	*x.user = user
	return nil, true, nil
}
