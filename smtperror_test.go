package mailsec_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
)

// A 4xx reply is temporary, and so is a 552 to RCPT that says nothing
// else (RFC 5321 section 4.5.3.1.10: "too many recipients" in RFC 821's
// reply code); a 552 to RCPT with another enhanced code, a 552 to MAIL or
// to the end of the message (the size limit), and any other 5xx, are not.
func TestSMTPErrorTemporary(t *testing.T) {
	for _, c := range []struct {
		cmd  string
		code int
		want bool
	}{
		{"RCPT", 452, true},
		{"RCPT", 450, true},
		{"RCPT", 552, true},
		{"RCPT 5.5.3", 552, true},
		{"RCPT 5.3.4", 552, false},
		{"RCPT 5.2.2", 552, false},
		{"RCPT 4.5.3", 552, true},
		{"RCPT", 550, false},
		{"RCPT", 553, false},
		{"MAIL", 552, false},
		{"DATA", 552, false},
		{"DATA", 451, true},
		{"greeting", 421, true},
	} {
		t.Run(fmt.Sprint(c.cmd, c.code), func(t *testing.T) {
			e := &mailsec.SMTPError{Host: "mx.example.org", Command: c.cmd, Code: c.code}
			if cmd, ec, ok := strings.Cut(c.cmd, " "); ok {
				e.Command = cmd
				if _, err := fmt.Sscanf(ec, "%d.%d.%d", &e.EnhancedCode[0], &e.EnhancedCode[1], &e.EnhancedCode[2]); err != nil {
					t.Fatal(err)
				}
			}
			if got := e.Temporary(); got != c.want {
				t.Errorf("Temporary() = %v, want %v", got, c.want)
			}
			if got := mailsec.IsTemporary(fmt.Errorf("wrapped: %w", e)); got != c.want {
				t.Errorf("IsTemporary = %v, want %v", got, c.want)
			}
		})
	}
}
