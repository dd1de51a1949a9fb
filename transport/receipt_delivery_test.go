package transport_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// Through a Sender and Direct, a message to three domains is three SMTP
// transactions with three MX hosts, and its Receipt numbers them apart;
// two recipients at one domain share their number, and recipients whose
// domain got no session (a null MX, an MX nobody answers at) have none.
func TestReceiptDeliveryNumbersDirect(t *testing.T) {
	e := newMXEnv(t)
	servers := map[string]*mailsectest.Server{}
	for i, d := range []string{"a.example", "b.example", "c.example"} {
		mx := "mx." + d
		e.res.MX(d, dns.MX{Host: mx, Pref: 10})
		servers[d] = e.mx(mx, "192.0.2."+string(rune('1'+i)), mailsectest.Config{})
	}
	e.res.MX("nomail.example", dns.MX{Host: "", Pref: 0})
	e.res.MX("down.example", dns.MX{Host: "mx.down.example", Pref: 10})
	e.res.IP("mx.down.example", netip.MustParseAddr("192.0.2.99")) // nothing listens there

	s, err := mailsec.NewSender(e.direct(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rec, err := s.Send(ctx, &mailsec.Message{From: "app@sender.example",
		To:      []string{"ann@a.example", "bob@b.example", "dan@nomail.example", "carl@c.example", "amy@a.example", "eve@down.example"},
		Subject: "numbers", Text: directCanary})
	var se *mailsec.SendError
	if !errors.As(err, &se) || len(se.Failed) != 2 {
		t.Fatalf("err = %v, want dan and eve failed", err)
	}
	got := map[string]mailsec.RecipientReceipt{}
	for _, r := range rec.Recipients {
		got[r.Address] = r
	}
	for _, a := range []string{"dan@nomail.example", "eve@down.example"} {
		if r := got[a]; r.Accepted || r.Delivery != 0 || r.Connection != nil {
			t.Errorf("%s: delivery %d, connection %+v; want none", a, r.Delivery, r.Connection)
		}
	}
	var numbers []int
	for _, c := range []struct{ addr, domain string }{{"ann@a.example", "a.example"}, {"bob@b.example", "b.example"}, {"carl@c.example", "c.example"}} {
		r := got[c.addr]
		if !r.Accepted || r.Connection == nil || r.Connection.Host != "mx."+c.domain {
			t.Fatalf("%s: %+v", c.addr, r)
		}
		msgs := servers[c.domain].Messages()
		if len(msgs) != 1 {
			t.Fatalf("%s: %d transactions", c.domain, len(msgs))
		}
		numbers = append(numbers, r.Delivery)
	}
	if slices.Sort(numbers); !slices.Equal(numbers, []int{1, 2, 3}) {
		t.Fatalf("delivery numbers %v, want 1, 2 and 3 (one per transaction)", numbers)
	}
	if ann, amy := got["ann@a.example"], got["amy@a.example"]; !amy.Accepted || amy.Delivery != ann.Delivery {
		t.Fatalf("ann (%d) and amy (%d) shared one transaction", ann.Delivery, amy.Delivery)
	}
	if to := servers["a.example"].Messages()[0].To; !slices.Equal(to, []string{"ann@a.example", "amy@a.example"}) {
		t.Fatalf("a.example transaction for %v", to)
	}
}

// Direct's own result gives each domain's recipients their own session,
// and none to a domain that got no connection: what the Sender numbers
// deliveries by.
func TestDirectResultSessionsPerDomain(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("a.example", dns.MX{Host: "mx.a.example", Pref: 10})
	e.res.MX("b.example", dns.MX{Host: "mx.b.example", Pref: 10})
	e.res.MX("nomail.example", dns.MX{Host: "", Pref: 0})
	e.mx("mx.a.example", "192.0.2.1", mailsectest.Config{})
	e.mx("mx.b.example", "192.0.2.2", mailsectest.Config{})
	res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@a.example", "bob@b.example", "dan@nomail.example", "amy@a.example"))
	if err != nil {
		t.Fatal(err)
	}
	r := res.Recipients
	if r[0].Connection == nil || r[0].Connection != r[3].Connection || r[1].Connection == nil || r[1].Connection == r[0].Connection || r[2].Connection != nil {
		t.Fatalf("sessions: %p %p %p %p", r[0].Connection, r[1].Connection, r[2].Connection, r[3].Connection)
	}
	if !errors.Is(r[2].Err, transport.ErrNullMX) {
		t.Fatalf("dan: %v", r[2].Err)
	}
}

// A transaction that carried the whole message and was deferred at the
// end of DATA by every MX host tried is still a transaction: the
// recipient's Receipt names the session that carried the message last
// (its host and TLS), numbers the delivery, and keeps the server's reply;
// the failure stays temporary. Before, such a recipient read as if no
// session had ever been made.
func TestReceiptDeliveryOfDeferredTransaction(t *testing.T) {
	later := &mailsec.Reply{Code: 451, EnhancedCode: mailsec.EnhancedCode{4, 3, 0}, Text: "try again later"}
	for _, c := range []struct {
		name string
		env  func(e *mxEnv) []*mailsectest.Server
		last string // the host whose session the Receipt names
	}{
		{"one host", func(e *mxEnv) []*mailsectest.Server {
			e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
			return []*mailsectest.Server{e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{DataReply: later})}
		}, "mx1.example.org"},
		{"then an untrusted host", func(e *mxEnv) []*mailsectest.Server {
			e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10}, dns.MX{Host: "mx2.example.org", Pref: 20})
			other, _ := mailsectest.NewCA()
			bad, err := other.Issue(mailsectest.CertOptions{DNSNames: []string{"mx2.example.org"}})
			if err != nil {
				t.Fatal(err)
			}
			return []*mailsectest.Server{e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{DataReply: later}),
				e.mx("mx2.example.org", "192.0.2.20", mailsectest.Config{Certificate: &bad})}
		}, "mx1.example.org"},
		{"two deferring hosts", func(e *mxEnv) []*mailsectest.Server {
			e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10}, dns.MX{Host: "mx2.example.org", Pref: 20})
			return []*mailsectest.Server{e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{DataReply: later}),
				e.mx("mx2.example.org", "192.0.2.20", mailsectest.Config{DataReply: later})}
		}, "mx2.example.org"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newMXEnv(t)
			c.env(e)
			s, err := mailsec.NewSender(e.direct(), nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rec, err := s.Send(ctx, &mailsec.Message{From: "app@sender.example", To: []string{"ann@example.org"}, Subject: "deferred", Text: directCanary})
			if err == nil || !mailsec.IsTemporary(err) {
				t.Fatalf("err = %v, want a temporary failure", err)
			}
			r := rec.Recipients[0]
			if r.Accepted || r.Err == nil || r.Connection == nil || r.Connection.Host != c.last || r.Connection.Verification != mailsec.VerifiedWebPKI || r.Delivery != 1 {
				t.Fatalf("receipt: accepted %v, delivery %d, connection %+v, err %v", r.Accepted, r.Delivery, r.Connection, r.Err)
			}
			if r.Reply == nil || r.Reply.Code != 451 {
				t.Fatalf("reply = %+v, want the 451", r.Reply)
			}
		})
	}
}
