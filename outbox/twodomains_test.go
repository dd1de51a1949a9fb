package outbox_test

import (
	"slices"
	"testing"

	"github.com/mailsec/mailsec/outbox"
)

// Direct, two domains in one message; the verdict for one
// domain is lost, the other accepted. Only the lost one is sent again, and
// flagged.
func TestTwoDomainsOneVerdictLost(t *testing.T) {
	mx, d := scriptedDirect(t, map[string][]string{"example.org": {"mx.example.org"}, "example.net": {"mx.example.net"}})
	mxA, mxB := mx["mx.example.org"], mx["mx.example.net"]
	mxA.pipelining, mxA.chunking = true, true
	mxA.end = func(n int, _ []string, _ []byte) string {
		if n == 1 {
			return "DROP"
		}
		return ""
	}
	st := deliverScripted(t, d, nil, "ann@example.org", "bob@example.net")
	if st.State != outbox.Delivered || mxB.copiesFor("bob@example.net") != 1 || mxA.copiesFor("ann@example.org") != 2 {
		t.Fatalf("state %s, bob %d, ann %d", st.State, mxB.copiesFor("bob@example.net"), mxA.copiesFor("ann@example.org"))
	}
	last := st.Attempts[len(st.Attempts)-1]
	if !slices.Equal(last.PossibleDuplicates, []string{"ann@example.org"}) || rcptStatus(st, "bob@example.net").PossibleDuplicate ||
		!rcptStatus(st, "ann@example.org").PossibleDuplicate {
		t.Fatalf("last attempt flags %v; status %+v", last.PossibleDuplicates, st.Recipients)
	}
}
