package mailsec_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
)

// DeliveryResult.Recipient reads one recipient's outcome out of a
// transport's result: its own fields first, the session's where it has
// none, and acceptance only when Deliver returned no error.
func TestDeliveryResultRecipient(t *testing.T) {
	session := &mailsec.ConnectionState{Host: "mx.example.org"}
	own := &mailsec.ConnectionState{Host: "mx.example.net"}
	dataOK := &mailsec.Reply{Code: 250, Text: "queued as ABC"}
	rcptOK := &mailsec.Reply{Code: 250, Text: "queued as DEF"}
	refused := &mailsec.Reply{Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Text: "no such user"}
	errRefused := errors.New("refused")
	errSession := errors.New("session failed")
	res := &mailsec.DeliveryResult{
		Connection: session,
		Reply:      dataOK,
		Recipients: []mailsec.RecipientResult{
			{Address: "ann@example.org", Accepted: true},
			{Address: "bob@example.net", Accepted: true, Reply: rcptOK, Connection: own},
			{Address: "carl@example.org", Reply: refused, Err: errRefused},
			{Address: "dan@example.org"},
		},
	}
	for _, c := range []struct {
		name     string
		res      *mailsec.DeliveryResult
		i        int
		err      error
		accepted bool
		conn     *mailsec.ConnectionState
		reply    *mailsec.Reply
		wantErr  error  // errors.Is
		errText  string // or, without wantErr, a part of the error's text
	}{
		{"accepted, the session's reply", res, 0, nil, true, session, dataOK, nil, ""},
		{"accepted, its own session and reply", res, 1, nil, true, own, rcptOK, nil, ""},
		{"refused, its own reply", res, 2, nil, false, session, refused, errRefused, ""},
		{"refused, whatever Deliver returned", res, 2, errSession, false, session, refused, errRefused, ""},
		{"accepted but Deliver failed", res, 0, errSession, false, session, dataOK, errSession, ""},
		{"no verdict, Deliver failed", res, 3, errSession, false, session, dataOK, errSession, ""},
		{"no verdict and no error", res, 3, nil, false, session, nil, nil, "no result for this recipient"},
		{"no entry", res, 4, nil, false, session, nil, nil, "no result for this recipient"},
		{"a negative index", res, -1, nil, false, session, nil, nil, "no result for this recipient"},
		{"no result, Deliver failed", nil, 0, errSession, false, nil, nil, errSession, ""},
		{"no result and no error", nil, 0, nil, false, nil, nil, nil, "no result for this recipient"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.res.Recipient(c.i, c.err)
			if r.Accepted != c.accepted || r.Connection != c.conn || r.Reply != c.reply {
				t.Fatalf("accepted %v, connection %v, reply %v; want %v, %v, %v", r.Accepted, r.Connection, r.Reply, c.accepted, c.conn, c.reply)
			}
			switch {
			case c.accepted:
				if r.Err != nil {
					t.Fatalf("err = %v, want none", r.Err)
				}
			case c.wantErr != nil:
				if !errors.Is(r.Err, c.wantErr) {
					t.Fatalf("err = %v, want %v", r.Err, c.wantErr)
				}
			default:
				if r.Err == nil || !strings.Contains(r.Err.Error(), c.errText) {
					t.Fatalf("err = %v, want one saying %q", r.Err, c.errText)
				}
			}
			if c.res != nil && c.i >= 0 && c.i < len(c.res.Recipients) && r.Address != c.res.Recipients[c.i].Address {
				t.Fatalf("address %q", r.Address)
			}
		})
	}
}
