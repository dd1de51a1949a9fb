package outbox_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/mailsec/mailsec/outbox"
)

// mxDialer dials the script server standing for an MX address.
type mxDialer map[string]*scriptServer

func (m mxDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	s := m[host]
	if s == nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, s.Addr)
}

// The first MX host takes the whole message and the connection breaks
// before its reply to the end of the message arrives: it may have the
// message. Direct does not give it to the second MX host in the same
// attempt (the recipient would then have two copies with nothing to say
// so); the next attempt sends it again, flagged as a possible duplicate.
func TestDirectNoFailoverAfterLostFinalReply(t *testing.T) {
	mx, d := scriptedDirect(t, map[string][]string{"example.org": {"mx1.example.org", "mx2.example.org"}})
	mx1, mx2 := mx["mx1.example.org"], mx["mx2.example.org"]
	mx1.end = func(n int, _ []string, _ []byte) string {
		if n == 1 {
			return "DROP"
		}
		return ""
	}
	st := deliverScripted(t, d, nil, "ann@example.org")
	if st.State != outbox.Delivered {
		t.Fatalf("state %s", st.State)
	}
	if n := mx2.copiesFor("ann@example.org"); n != 0 {
		t.Fatalf("the second MX host took %d copies after the first may have taken the message", n)
	}
	if n := mx1.copiesFor("ann@example.org"); n != 2 {
		t.Fatalf("the first MX host took %d copies, want 2 (the one whose reply was lost, and the retry)", n)
	}
	if len(st.Attempts) != 2 {
		t.Fatalf("%d attempts, want 2: %+v", len(st.Attempts), st.Attempts)
	}
	if got := st.Attempts[0].PossibleDuplicates; len(got) != 0 {
		t.Fatalf("attempt 1's possible duplicates = %v, want none", got)
	}
	if got := st.Attempts[1].PossibleDuplicates; !slices.Equal(got, []string{"ann@example.org"}) {
		t.Fatalf("attempt 2's possible duplicates = %v, want ann", got)
	}
	if rs := rcptStatus(st, "ann@example.org"); rs == nil || !rs.PossibleDuplicate {
		t.Fatalf("ann's status: %+v", rs)
	}
}
