package transport_test

import (
	"errors"
	"testing"

	"github.com/mailsec/mailsec"
)

// Only the replies RFC 5321 section 4.3.2 lists as success count as
// success: 250 to MAIL and to the end of DATA, 250 or 251 (252 too, as
// servers use it) to RCPT. Another 2xx (a 221 "closing", a 220) is no
// acceptance: the message is not reported as delivered on it.
func TestOnlySuccessRepliesAccept(t *testing.T) {
	for _, tc := range []struct {
		verb, reply string
		code        int
		cmd         string
	}{
		{"MAIL", "221 2.0.0 Bye", 221, "MAIL"},
		{"MAIL", "220 2.0.0 hello again", 220, "MAIL"},
		{"RCPT", "221 2.0.0 Bye", 221, "RCPT"},
		{".", "221 2.0.0 Bye", 221, "DATA"},
		{".", "252 2.0.0 maybe", 252, "DATA"},
		{".", "235 2.7.0 Authentication successful", 235, "DATA"},
	} {
		t.Run(tc.verb+" "+tc.reply, func(t *testing.T) {
			f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, hook: func(verb string, c *fakeConn) bool {
				if verb == tc.verb {
					c.w(tc.reply + "\r\n")
					return true
				}
				return false
			}})
			tr := orderTransport(f)
			d, _ := canaryDelivery(t)
			res, err := deliver(t, tr, d)
			var se *mailsec.SMTPError
			if !errors.As(err, &se) || se.Code != tc.code || se.Command != tc.cmd {
				t.Fatalf("error %v (%T), want the %d to %s as a *mailsec.SMTPError", err, err, tc.code, tc.cmd)
			}
			if res != nil && (res.Reply != nil || len(acceptedOf(res)) != 0) {
				t.Fatalf("reported as delivered: reply %v, accepted %v", res.Reply, acceptedOf(res))
			}
		})
	}
}

// 251 (and 252) to RCPT accept the recipient.
func TestRecipientForwardReplyAccepts(t *testing.T) {
	for _, reply := range []string{"251 2.1.5 User not local; will forward", "252 2.1.5 Cannot VRFY user, but will accept message"} {
		f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, hook: func(verb string, c *fakeConn) bool {
			if verb == "RCPT" {
				c.w(reply + "\r\n")
				return true
			}
			return false
		}})
		tr := orderTransport(f)
		d, _ := canaryDelivery(t)
		res, err := deliver(t, tr, d)
		if err != nil || len(acceptedOf(res)) != 1 {
			t.Fatalf("%s: %v, %v", reply, res, err)
		}
	}
}
