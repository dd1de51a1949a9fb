package outbox

import (
	"errors"
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
