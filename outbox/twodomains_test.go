package outbox_test

import (
	"context"
	"crypto/tls"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport"
)

// Direct, two domains in one message; the verdict for one
// domain is lost, the other accepted. Only the lost one is sent again, and
// flagged.
func TestTwoDomainsOneVerdictLost(t *testing.T) {
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	mxA := newScriptServerFor(t, ca, "mx.example.org")
	mxB := newScriptServerFor(t, ca, "mx.example.net")
	mxA.pipelining, mxA.chunking = true, true
	mxA.end = func(n int, _ []string, _ []byte) string {
		if n == 1 {
			return "DROP"
		}
		return ""
	}
	res := mailsectest.NewResolver()
	res.MX("example.org", dns.MX{Host: "mx.example.org", Pref: 10})
	res.MX("example.net", dns.MX{Host: "mx.example.net", Pref: 10})
	res.IP("mx.example.org", netip.MustParseAddr("192.0.2.1"))
	res.IP("mx.example.net", netip.MustParseAddr("192.0.2.2"))
	d := &transport.Direct{Resolver: res, TLSConfig: &tls.Config{RootCAs: ca.Pool()},
		Dialer: mxDialer{"192.0.2.1": mxA, "192.0.2.2": mxB}, LocalName: "sender.example", AllowPrivate: true}
	ob, _ := openFile(t, newSender(t, d, nil), fast(nil), true)
	id, err := ob.Enqueue(context.Background(), scriptMsg("ann@example.org", "bob@example.net"), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, "", 20*time.Second)
	if st.State != outbox.Delivered || mxB.copiesFor("bob@example.net") != 1 || mxA.copiesFor("ann@example.org") != 2 {
		t.Fatalf("state %s, bob %d, ann %d", st.State, mxB.copiesFor("bob@example.net"), mxA.copiesFor("ann@example.org"))
	}
	last := st.Attempts[len(st.Attempts)-1]
	if !slices.Equal(last.PossibleDuplicates, []string{"ann@example.org"}) || rcptStatus(st, "bob@example.net").PossibleDuplicate ||
		!rcptStatus(st, "ann@example.org").PossibleDuplicate {
		t.Fatalf("last attempt flags %v; status %+v", last.PossibleDuplicates, st.Recipients)
	}
}
