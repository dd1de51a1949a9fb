package transport_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
)

// What a Receipt's JSON form says about a recipient that was not
// accepted, read back as an auditor would read it.
type failedJSON struct {
	Address    string         `json:"address"`
	Accepted   bool           `json:"accepted"`
	Delivery   int            `json:"delivery"`
	Connection map[string]any `json:"connection"`
	Error      string         `json:"error"`
	Failure    *struct {
		Temporary *bool         `json:"temporary"`
		Attempts  []attemptJSON `json:"attempts"`
		Notes     []string      `json:"notes"`
	} `json:"failure"`
}

type attemptJSON struct {
	Host    string   `json:"host"`
	Addr    string   `json:"addr"`
	Policy  string   `json:"policy"`
	Error   string   `json:"error"`
	PeerPin string   `json:"peer_spki_sha256"`
	TLSA    []string `json:"tlsa"`
	MTASTS  []string `json:"mta_sts"`
}

// sendForReceipt sends one message to "to" through a Sender over tr and
// returns the recipient's entry of the Receipt's JSON form, after checking
// that the Send failed for it and that the JSON holds no content.
func sendForReceipt(t *testing.T, tr mailsec.Transport, o *mailsec.Options, to string) (failedJSON, string) {
	t.Helper()
	s, err := mailsec.NewSender(tr, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := &mailsec.Message{From: "app@sender.example", To: []string{to}, Subject: "SUBJECT-evidence-5521", Text: directCanary}
	rec, err := s.Send(ctx, m)
	if err == nil || rec == nil {
		t.Fatalf("Send: receipt %v, err %v; want a failure with a Receipt", rec, err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	if strings.Contains(js, directCanary) || strings.Contains(js, m.Subject) {
		t.Fatalf("the receipt holds message content: %s", js)
	}
	var v struct {
		Recipients []failedJSON `json:"recipients"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Recipients) != 1 {
		t.Fatalf("JSON: %s", js)
	}
	r := v.Recipients[0]
	if r.Accepted || r.Error == "" || r.Failure == nil || r.Failure.Temporary == nil {
		t.Fatalf("a recipient that failed has no error, failure or temporary member: %s", js)
	}
	if *r.Failure.Temporary != mailsec.IsTemporary(rec.Recipients[0].Err) {
		t.Fatalf("temporary %v, but IsTemporary says %v: %s", *r.Failure.Temporary, !*r.Failure.Temporary, js)
	}
	// The JSON reads back into the same types.
	var back mailsec.Receipt
	if err := json.Unmarshal(b, &back); err != nil || back.Recipients[0].Failure == nil ||
		!slices.EqualFunc(back.Recipients[0].Failure.Attempts, rec.Recipients[0].Failure.Attempts, func(a, b mailsec.Attempt) bool {
			return a.Host == b.Host && a.Addr == b.Addr && a.PeerPin == b.PeerPin && a.Error == b.Error &&
				slices.Equal(a.TLSA, b.TLSA) && slices.Equal(a.MTASTS, b.MTASTS)
		}) {
		t.Fatalf("round trip: %v: %s", err, js)
	}
	return r, js
}

// Under DANE, a certificate that matches no TLSA record leaves the
// records and the key the server presented in the Receipt, with the MX
// host and address, and the failure deferred (temporary).
func TestReceiptEvidenceDANEMismatch(t *testing.T) {
	untrusted, _ := mailsectest.NewCA()
	leaf, err := untrusted.Issue(mailsectest.CertOptions{DNSNames: []string{"mx1.secure.example"}})
	if err != nil {
		t.Fatal(err)
	}
	e := newMXEnv(t)
	e.res.Secure("secure.example")
	e.res.MX("secure.example", dns.MX{Host: "mx1.secure.example", Pref: 10})
	e.mx("mx1.secure.example", "192.0.2.60", mailsectest.Config{Certificate: &leaf})
	rec := dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: make([]byte, 32)}
	e.res.TLSA("_25._tcp.mx1.secure.example", rec)

	r, js := sendForReceipt(t, e.direct(), nil, "ann@secure.example")
	e.nothingSent()
	if !*r.Failure.Temporary || r.Connection != nil || r.Delivery != 0 || len(r.Failure.Attempts) != 1 {
		t.Fatalf("JSON: %s", js)
	}
	a := r.Failure.Attempts[0]
	if a.Host != "mx1.secure.example" || a.Addr != "192.0.2.60:25" || a.Policy != "dane" ||
		!slices.Equal(a.TLSA, []string{rec.String()}) || a.PeerPin != mailsec.PinOf(leaf.Leaf).String() ||
		!strings.Contains(a.Error, "matches no usable TLSA record") {
		t.Fatalf("attempt %+v; want mx1.secure.example at 192.0.2.60:25 under dane, the record %q and the pin %s",
			a, rec.String(), mailsec.PinOf(leaf.Leaf))
	}
}

// An MX host that an MTA-STS policy in enforce mode does not list is
// refused before any connection; the Receipt keeps the host, the policy
// that refused it, and a temporary failure.
func TestReceiptEvidenceMTASTSUnlistedMX(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx.attacker.example", Pref: 10})
	e.mx("mx.attacker.example", "198.51.100.1", mailsectest.Config{})
	e.sts("example.org", "1", "enforce", "mx1.example.org", "*.mx.example.org")

	r, js := sendForReceipt(t, e.direct(), nil, "ann@example.org")
	if e.totalDials() != 0 {
		t.Fatal("connected to an MX host the enforce policy does not list")
	}
	e.nothingSent()
	if !*r.Failure.Temporary || len(r.Failure.Attempts) != 1 {
		t.Fatalf("JSON: %s", js)
	}
	a := r.Failure.Attempts[0]
	want := []string{"version: STSv1", "mode: enforce", "mx: mx1.example.org", "mx: *.mx.example.org", "max_age: 86400"}
	if a.Host != "mx.attacker.example" || a.Addr != "" || a.PeerPin != "" || !slices.Equal(a.MTASTS, want) ||
		!strings.Contains(a.Error, "not listed in the MTA-STS policy") {
		t.Fatalf("attempt %+v; want mx.attacker.example, no address, and the policy %q", a, want)
	}
}

// An expired certificate at an MX host: the Receipt names the host and
// address and keeps the presented key and, in the attempt's error, why
// it was refused.
func TestReceiptEvidenceExpiredCertificate(t *testing.T) {
	e := newMXEnv(t)
	expired, err := e.ca.Issue(mailsectest.CertOptions{DNSNames: []string{"mx1.example.org"},
		NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{Certificate: &expired})

	r, js := sendForReceipt(t, e.direct(), nil, "ann@example.org")
	e.nothingSent()
	if !*r.Failure.Temporary || len(r.Failure.Attempts) != 1 {
		t.Fatalf("JSON: %s", js)
	}
	a := r.Failure.Attempts[0]
	if a.Host != "mx1.example.org" || a.Addr != "192.0.2.10:25" || a.Policy != "verified" ||
		a.PeerPin != mailsec.PinOf(expired.Leaf).String() || !strings.Contains(a.Error, "expired") {
		t.Fatalf("attempt %+v; want mx1.example.org at 192.0.2.10:25, the expired certificate's pin %s and the reason",
			a, mailsec.PinOf(expired.Leaf))
	}
}

// Two MX hosts that fail differently (nothing listens at the first, the
// second presents a certificate from an unknown CA) are both in the
// Receipt, in order, each with what was seen there; the notes say what
// else happened (a third host not considered), and not the attempts
// again.
func TestReceiptEvidenceTwoHosts(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx2.example.org", Pref: 20}, dns.MX{Host: "mx1.example.org", Pref: 10},
		dns.MX{Host: "mx3.example.org", Pref: 30})
	e.res.IP("mx1.example.org", netip.MustParseAddr("192.0.2.10")) // nothing listens there
	other, _ := mailsectest.NewCA()
	bad, err := other.Issue(mailsectest.CertOptions{DNSNames: []string{"mx2.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	e.mx("mx2.example.org", "192.0.2.20", mailsectest.Config{Certificate: &bad})

	tr := e.direct()
	tr.MaxMXHosts = 2
	r, js := sendForReceipt(t, tr, nil, "ann@example.org")
	e.nothingSent()
	if !*r.Failure.Temporary || len(r.Failure.Attempts) != 2 {
		t.Fatalf("JSON: %s", js)
	}
	first, second := r.Failure.Attempts[0], r.Failure.Attempts[1]
	if first.Host != "mx1.example.org" || first.Addr != "192.0.2.10:25" || first.PeerPin != "" ||
		!strings.Contains(first.Error, "connection refused") {
		t.Fatalf("first attempt %+v; want mx1.example.org at 192.0.2.10:25, refused, no certificate", first)
	}
	if second.Host != "mx2.example.org" || second.Addr != "192.0.2.20:25" || second.PeerPin != mailsec.PinOf(bad.Leaf).String() ||
		!strings.Contains(second.Error, "untrusted authority") {
		t.Fatalf("second attempt %+v; want mx2.example.org at 192.0.2.20:25 with its certificate's pin %s, untrusted",
			second, mailsec.PinOf(bad.Leaf))
	}
	if len(r.Failure.Notes) != 1 || !strings.Contains(r.Failure.Notes[0], "1 more MX hosts not considered") {
		t.Fatalf("notes %q; want the one about the host not considered", r.Failure.Notes)
	}
}

// A smarthost whose certificate is refused: the Receipt names it, the
// address connected to and the key it presented; a configured server's
// certificate needs fixing, so the failure is not temporary.
func TestReceiptEvidenceSubmissionCertificateRefused(t *testing.T) {
	other, _ := mailsectest.NewCA()
	cert, err := other.Issue(mailsectest.CertOptions{DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{Certificate: &cert})
	tr := srv.Transport() // trusts srv.CA, which did not issue cert
	t.Cleanup(func() { tr.Close() })

	r, js := sendForReceipt(t, tr, nil, "ann@example.org")
	if srv.Transactions() != 0 {
		t.Fatal("the server saw MAIL")
	}
	if *r.Failure.Temporary || r.Connection != nil || r.Delivery != 0 || len(r.Failure.Attempts) != 1 {
		t.Fatalf("JSON: %s", js)
	}
	a := r.Failure.Attempts[0]
	if a.Host != "localhost" || a.Addr != srv.Addr || a.PeerPin != mailsec.PinOf(cert.Leaf).String() ||
		!strings.Contains(a.Error, "untrusted authority") {
		t.Fatalf("attempt %+v; want localhost at %s with the pin %s, untrusted", a, srv.Addr, mailsec.PinOf(cert.Leaf))
	}
}

// A pinned smarthost that presents another key: the Receipt keeps the key
// it presented, to compare with the pin configured.
func TestReceiptEvidenceSubmissionPinMismatch(t *testing.T) {
	ca, _ := mailsectest.NewCA()
	cert, err := ca.Issue(mailsectest.CertOptions{DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{Certificate: &cert})
	tr := srv.Transport()
	t.Cleanup(func() { tr.Close() })
	wanted := mailsec.Pin{1, 2, 3}
	policy := mailsec.WithSecurity(mailsec.DefaultPolicy(), mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{wanted}})

	r, js := sendForReceipt(t, tr, &mailsec.Options{Policy: policy}, "ann@example.org")
	if srv.Transactions() != 0 {
		t.Fatal("the server saw MAIL")
	}
	if *r.Failure.Temporary || len(r.Failure.Attempts) != 1 {
		t.Fatalf("JSON: %s", js)
	}
	a := r.Failure.Attempts[0]
	if a.Host != "localhost" || a.Addr != srv.Addr || a.PeerPin != mailsec.PinOf(cert.Leaf).String() ||
		!strings.Contains(a.Error, "matches no pin") {
		t.Fatalf("attempt %+v; want localhost at %s with the presented pin %s", a, srv.Addr, mailsec.PinOf(cert.Leaf))
	}
}

// A recipient a smarthost refuses at RCPT keeps that session as its one
// attempt, its reply cleaned of control characters.
func TestReceiptEvidenceSubmissionRcptRefused(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"gone@example.org": {Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Text: "no such user \x1b]0;pwned\x07"}}})
	tr := srv.Transport()
	t.Cleanup(func() { tr.Close() })

	r, js := sendForReceipt(t, tr, nil, "gone@example.org")
	if *r.Failure.Temporary || r.Connection == nil || r.Delivery != 1 || len(r.Failure.Attempts) != 1 {
		t.Fatalf("JSON: %s", js)
	}
	a := r.Failure.Attempts[0]
	if a.Host != "localhost" || a.Addr != srv.Addr || a.PeerPin != r.Connection["peer_spki_sha256"] || a.PeerPin == "" ||
		!strings.Contains(a.Error, "550") {
		t.Fatalf("attempt %+v; want the session with localhost at %s and its 550", a, srv.Addr)
	}
	if strings.ContainsAny(a.Error, "\x1b\x07") || strings.ContainsAny(js, "\x1b\x07") || strings.Contains(js, `\u001b`) {
		t.Fatalf("control characters from the server reached the Receipt: %s", js)
	}
}
