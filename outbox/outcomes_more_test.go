package outbox_test

import (
	"testing"
	"time"

	"github.com/mailsec/mailsec/outbox"
)

// The first MX host answers MAIL and RCPT and then drops the connection
// without answering DATA: not one byte of the message went out, so Direct
// gives it to the second MX host in the same attempt, and nobody is
// flagged: no server had a copy before.
func TestDirectFailoverAfterDropBeforeGoAhead(t *testing.T) {
	for _, pipelining := range []bool{false, true} {
		name := "lockstep"
		if pipelining {
			name = "pipelined"
		}
		t.Run(name, func(t *testing.T) {
			mx, d := scriptedDirect(t, map[string][]string{"example.org": {"mx1.example.org", "mx2.example.org"}})
			mx1, mx2 := mx["mx1.example.org"], mx["mx2.example.org"]
			mx1.pipelining = pipelining
			mx1.dataCmd = func(n int) string { return "DROP" } // mx1 is broken at DATA, always
			st := deliverScripted(t, d, &outbox.Options{MaxAge: 3 * time.Second}, "ann@example.org")
			for _, a := range st.Attempts {
				t.Logf("attempt %d: state %s dup=%v err=%q", a.Number, a.State, a.PossibleDuplicates, a.Error)
				if a.Receipt != nil {
					for _, r := range a.Receipt.Recipients {
						t.Logf("  %s accepted=%v err=%v", r.Address, r.Accepted, r.Err)
					}
				}
			}
			if n := mx1.copiesFor("ann@example.org"); n != 0 {
				t.Fatalf("mx1 took %d copies; the test expects none", n)
			}
			if st.State != outbox.Delivered || len(st.Attempts) != 1 || mx2.copiesFor("ann@example.org") != 1 {
				t.Errorf("state %s after %d attempts, mx2 copies %d; want delivered by mx2 in the first attempt (failover)",
					st.State, len(st.Attempts), mx2.copiesFor("ann@example.org"))
			}
			for _, a := range st.Attempts {
				if len(a.PossibleDuplicates) > 0 {
					t.Errorf("attempt %d names %v possible duplicates; no server had the message before", a.Number, a.PossibleDuplicates)
				}
			}
			if rs := rcptStatus(st, "ann@example.org"); rs != nil && rs.PossibleDuplicate {
				t.Errorf("ann is marked a possible duplicate; she got one copy")
			}
		})
	}
}

// A server that refuses a recipient at RCPT with "552 5.3.4" (the message
// is too big for that mailbox: the enhanced code says permanent, and the
// reason is not RFC 821's "too many recipients"): the recipient is
// refused by the first attempt, not tried again until the message expires.
func Test552MessageTooBigAtRcptNotRetried(t *testing.T) {
	srv := newScriptServer(t)
	srv.rcpt = func(n int, to string) string {
		if to == "bob@example.org" {
			return "552 5.3.4 Message too big for this recipient"
		}
		return ""
	}
	st := deliverScripted(t, srv.Transport(), &outbox.Options{MaxAge: 2 * time.Second}, "ann@example.org", "bob@example.org")
	rs := rcptStatus(st, "bob@example.org")
	if st.State != outbox.PartlyDelivered || len(st.Attempts) != 1 || rs == nil || rs.State != outbox.Refused {
		t.Fatalf("state %s after %d attempts, bob %+v; want bob refused by the first attempt", st.State, len(st.Attempts), rs)
	}
}

// Attempt 1 loses the verdict on the message (ann may have it). Then the
// message is settled without another copy reaching anyone: attempt 2's RCPT
// is refused for good (550), or the server defers her until the message
// expires. Her status says she may have the message all the same
// (PossiblyDelivered), and, since no second copy went out, neither her
// status nor any attempt calls her a possible duplicate.
func TestLostVerdictThenSettledKeepsATrace(t *testing.T) {
	for _, c := range []string{"refused", "expired"} {
		t.Run(c, func(t *testing.T) {
			srv := newScriptServer(t)
			srv.end = func(n int, _ []string, _ []byte) string {
				if n == 1 {
					return "DROP"
				}
				return ""
			}
			switch c {
			case "refused":
				srv.rcpt = func(n int, to string) string {
					if n >= 2 {
						return "550 5.1.1 no such user"
					}
					return ""
				}
			case "expired":
				srv.rcpt = func(n int, to string) string {
					if n >= 2 {
						return "450 4.2.1 try later"
					}
					return ""
				}
			}
			st := deliverScripted(t, srv.Transport(), &outbox.Options{MaxAge: 2 * time.Second}, "ann@example.org")
			if srv.copiesFor("ann@example.org") != 1 {
				t.Fatalf("%d copies; the test expects one (attempt 1's)", srv.copiesFor("ann@example.org"))
			}
			rs := rcptStatus(st, "ann@example.org")
			named := false
			for _, a := range st.Attempts {
				named = named || slicesHas(a.PossibleDuplicates, "ann@example.org")
			}
			if rs == nil || !rs.PossiblyDelivered {
				t.Errorf("ann ends %+v; she may have the message from attempt 1, and her status does not say so", rs)
			}
			if rs != nil && rs.PossibleDuplicate || named {
				t.Errorf("ann got one copy, yet is called a possible duplicate: %+v", rs)
			}
			want := map[string]outbox.RecipientState{"refused": outbox.Refused, "expired": outbox.ExpiredRecipient}[c]
			if rs != nil && rs.State != want {
				t.Errorf("ann ends %s, want %s", rs.State, want)
			}
		})
	}
}
