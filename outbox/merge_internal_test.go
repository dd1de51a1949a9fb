package outbox

import (
	"errors"
	"fmt"
	"testing"

	"github.com/mailsec/mailsec"
)

// A run dies before any attempt reported on the recipients (they are
// known only from the envelope); the next attempt knows it (every
// recipient may have the message) but sends nothing: its Send returns no
// Receipt. The progress keeps that every recipient may have it, so that
// the attempt after it, which follows no dead run, flags them all.
func TestUnknownSurvivesNilReceiptBeforeFirstProgress(t *testing.T) {
	ob := &Outbox{}
	prog := &progress{}
	a2 := &Attempt{Number: 2, PossibleDuplicates: []string{"ann@example.org"}}
	tempErr := &mailsec.NetworkError{Host: "smtp.example.com", Op: "dial", Err: errors.New("connection refused")}
	ob.merge(prog, a2, &outcome{sendErr: tempErr, dup: map[string]bool{}, allDup: true})
	if !prog.Unknown || len(a2.PossibleDuplicates) != 0 {
		t.Fatalf("after an attempt that sent nothing: progress %+v, attempt's possible duplicates %v", prog, a2.PossibleDuplicates)
	}
	// Attempt 3 follows no dead run; attempt sees the mark, sends to
	// everyone, and flags those its Receipt names.
	if !prog.allMayHave(false) {
		t.Fatal("attempt 3 would not flag anyone")
	}
	a3 := &Attempt{Number: 3, PossibleDuplicates: []string{"ann@example.org"}}
	rec := &mailsec.Receipt{Recipients: []mailsec.RecipientReceipt{{Address: "ann@example.org", Accepted: true}}}
	ob.merge(prog, a3, &outcome{rec: rec, dup: map[string]bool{"ann@example.org": true}, allDup: true})
	if len(a3.PossibleDuplicates) != 1 || prog.Unknown || len(prog.Recipients) != 1 ||
		!prog.Recipients[0].PossibleDuplicate || !prog.Recipients[0].MayHave {
		t.Fatalf("attempt 3: possible duplicates %v, progress %+v", a3.PossibleDuplicates, prog)
	}
}

// A run died with the progress known; the next attempt sends nothing
// (450 to RCPT, with a Receipt) and names no possible duplicate; the one
// after sends and is flagged.
func TestDeadWorkerThenNothingThenSend(t *testing.T) {
	ob := &Outbox{}
	prog := &progress{Recipients: []rcptProgress{{Address: "ann@example.org", State: Pending}}}
	a2 := &Attempt{Number: 2, PossibleDuplicates: []string{"ann@example.org"}}
	busy := &mailsec.SMTPError{Host: "mx", Command: "RCPT", Code: 450}
	rec := &mailsec.Receipt{Recipients: []mailsec.RecipientReceipt{{Address: "ann@example.org", Err: busy, Failure: &mailsec.Failure{Temporary: true}}}}
	ob.merge(prog, a2, &outcome{rec: rec, dup: map[string]bool{"ann@example.org": true}}) // leftInFlight
	if len(a2.PossibleDuplicates) != 0 || !prog.Recipients[0].Unknown || !prog.Recipients[0].MayHave {
		t.Fatalf("attempt 2: possible duplicates %v, progress %+v", a2.PossibleDuplicates, prog.Recipients)
	}
	a3 := &Attempt{Number: 3, PossibleDuplicates: []string{"ann@example.org"}}
	rec3 := &mailsec.Receipt{Recipients: []mailsec.RecipientReceipt{{Address: "ann@example.org", Accepted: true}}}
	ob.merge(prog, a3, &outcome{rec: rec3, dup: map[string]bool{"ann@example.org": true}})
	if len(a3.PossibleDuplicates) != 1 || !prog.Recipients[0].PossibleDuplicate || prog.Recipients[0].State != Accepted {
		t.Fatalf("attempt 3: possible duplicates %v, progress %+v", a3.PossibleDuplicates, prog.Recipients)
	}
}

// Only a refusal of RCPT for too many recipients counts as the server's
// limit on one transaction.
func TestOverRecipientLimit(t *testing.T) {
	rcpt := func(code int, ec mailsec.EnhancedCode) error {
		return fmt.Errorf("sending: %w", &mailsec.SMTPError{Host: "mx.example.org", Command: "RCPT", Code: code, EnhancedCode: ec})
	}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{rcpt(452, mailsec.EnhancedCode{4, 5, 3}), true},
		{rcpt(452, mailsec.EnhancedCode{}), true},
		{rcpt(552, mailsec.EnhancedCode{5, 5, 3}), true},
		{rcpt(552, mailsec.EnhancedCode{}), true},
		{rcpt(452, mailsec.EnhancedCode{4, 3, 1}), false},
		{rcpt(452, mailsec.EnhancedCode{4, 2, 2}), false},
		{rcpt(552, mailsec.EnhancedCode{5, 3, 4}), false},
		{rcpt(451, mailsec.EnhancedCode{4, 5, 3}), false},
		{&mailsec.SMTPError{Command: "DATA", Code: 452, EnhancedCode: mailsec.EnhancedCode{4, 5, 3}}, false},
		{&mailsec.SMTPError{Command: "MAIL", Code: 452}, false},
		{errors.New("452 4.5.3 too many recipients"), false},
		{nil, false},
	} {
		if got := overRecipientLimit(c.err); got != c.want {
			t.Errorf("overRecipientLimit(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
