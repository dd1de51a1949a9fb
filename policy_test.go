package mailsec_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/smime"
)

const (
	policyCanary  = "CANARY-policy-9931"
	policySubject = "Statement 9931 for Ann"
	attachCanary  = "ATTACHMENT-CANARY-4410"
	headerCanary  = "Biopsy-result-HEADER-7731"
)

func noticeFunc(calls *sync.Map) mailsec.NoticeFunc {
	return func(_ context.Context, _ *mailsec.Message, r mailsec.Recipient) (*mailsec.Notice, error) {
		if calls != nil {
			calls.Store(r.Address, true)
		}
		return &mailsec.Notice{Text: "You have a new message: https://app.example/inbox/" + r.Address}, nil
	}
}

func policyMessage() *mailsec.Message {
	m := base()
	m.Subject = policySubject
	m.Text = "Balance: " + policyCanary
	m.Attachments = []mailsec.Attachment{{Filename: "statement.txt", Content: strings.NewReader(attachCanary)}}
	m.Headers = []mailsec.Header{{Name: "X-Ticket", Value: headerCanary}}
	return m
}

// received maps each recipient to the raw bytes the server got for it,
// failing if anyone got two messages.
func received(t *testing.T, srv *mailsectest.Server) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, m := range srv.Messages() {
		for _, to := range m.To {
			if _, dup := out[to]; dup {
				t.Fatalf("%s received twice", to)
			}
			out[to] = m.Data
		}
	}
	return out
}

func receiptFor(t *testing.T, rec *mailsec.Receipt, addr string) mailsec.RecipientReceipt {
	t.Helper()
	for _, r := range rec.Recipients {
		if r.Address == addr {
			return r
		}
	}
	t.Fatalf("no receipt for %s", addr)
	return mailsec.RecipientReceipt{}
}

// One Send to a PGP recipient, an S/MIME recipient, a recipient without a
// key under "require, else notice", one without a key under "prefer", and
// a Bcc PGP recipient: each gets exactly what its plan says.
func TestMixedPlans(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	pgpP, smimeP, bobFpr := realProtectors(t)
	// Require, else a notice; but prefer for one domain (a wrapper, as a
	// DomainRule only ever raises protection).
	policy := wrapPlan(mailsec.NoticeWhenNoKey(mailsec.RequireProtection(mailsec.DefaultPolicy())), func(r mailsec.Recipient, p *mailsec.Plan) {
		if r.Domain == "prefer.example" {
			p.Protection = mailsec.ProtectionPreferred
		}
	})
	var notices sync.Map
	var stored []*mailsec.Receipt
	var mu sync.Mutex
	var logs bytes.Buffer
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{
		Policy: policy, Protectors: []mailsec.Protector{pgpP, smimeP}, Notice: noticeFunc(&notices),
		OnReceipt: func(_ context.Context, r *mailsec.Receipt) { mu.Lock(); stored = append(stored, r); mu.Unlock() },
		Logger:    slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	m := policyMessage()
	m.To = []string{"ann@example.org", "bob@corp.example", "carl@nokey.example"}
	m.Cc = []string{"dora@prefer.example"}
	m.Bcc = []string{"bcc@example.net"}
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}

	got := received(t, srv)
	want := map[string]struct {
		kind   mailsectest.Kind
		marker string
	}{
		"ann@example.org":     {mailsectest.KindPGP, "-----BEGIN PGP MESSAGE-----"},
		"bcc@example.net":     {mailsectest.KindPGP, "-----BEGIN PGP MESSAGE-----"},
		"bob@corp.example":    {mailsectest.KindSMIME, "smime.p7m"},
		"carl@nokey.example":  {mailsectest.KindPlain, "https://app.example/inbox/carl@nokey.example"},
		"dora@prefer.example": {mailsectest.KindPlain, policyCanary},
	}
	for rcpt, w := range want {
		data := got[rcpt]
		if mailsectest.KindOf(data) != w.kind || !bytes.Contains(data, []byte(w.marker)) {
			t.Errorf("%s did not get a %s message with %q:\n%s", rcpt, w.kind, w.marker, data)
		}
		if rcpt != "dora@prefer.example" && (bytes.Contains(data, []byte(policyCanary)) || bytes.Contains(data, []byte(policySubject)) ||
			bytes.Contains(data, []byte(headerCanary))) {
			t.Errorf("%s got the content, the Subject or an extra header in clear:\n%s", rcpt, data)
		}
	}
	notice := got["carl@nokey.example"]
	if bytes.Contains(notice, []byte(attachCanary)) || bytes.Contains(notice, []byte("statement.txt")) ||
		!bytes.Contains(notice, []byte("Subject: You have a new message")) {
		t.Errorf("the notice carries more than the link:\n%s", notice)
	}
	// To and Cc stay the same in every delivery, so that replies work; no
	// delivery names the Bcc recipient.
	for rcpt, data := range got {
		if !bytes.Contains(data, []byte("To: ann@example.org, bob@corp.example, carl@nokey.example")) ||
			!bytes.Contains(data, []byte("Cc: dora@prefer.example")) {
			t.Errorf("%s: To/Cc differ:\n%s", rcpt, data)
		}
		if bytes.Contains(data, []byte("bcc@example.net")) {
			t.Errorf("%s: the Bcc recipient is named", rcpt)
		}
	}
	if _, ok := notices.Load("carl@nokey.example"); !ok {
		t.Error("notice function not called for carl")
	}
	if n, ok := notices.Load("dora@prefer.example"); ok && n.(bool) {
		t.Error("notice function called for a prefer recipient")
	}

	for addr, wantMethod := range map[string]string{"ann@example.org": "pgp", "bcc@example.net": "pgp", "bob@corp.example": "smime",
		"carl@nokey.example": mailsec.MethodNotice, "dora@prefer.example": mailsec.MethodNone} {
		r := receiptFor(t, rec, addr)
		if !r.Accepted || r.Protection == nil || r.Protection.Method != wantMethod {
			t.Errorf("%s: accepted %v, protection %+v; want %s", addr, r.Accepted, r.Protection, wantMethod)
		}
	}
	if p := receiptFor(t, rec, "carl@nokey.example").Protection; p.NoticeMessageID == "" || p.NoticeMessageID == rec.MessageID || p.Reason == "" {
		t.Errorf("notice receipt: %+v", p)
	}
	if p := receiptFor(t, rec, "dora@prefer.example").Protection; !strings.Contains(p.Reason, "no key found") || !strings.Contains(p.Reason, "no certificate") {
		t.Errorf("prefer receipt does not say why: %+v", p)
	}
	if p := receiptFor(t, rec, "bob@corp.example").Protection; p.Fingerprint != bobFpr {
		t.Errorf("bob's fingerprint: %+v", p)
	}
	// ann and bob share no delivery (different methods); bcc has its own.
	deliveries := map[int]bool{}
	for _, r := range rec.Recipients {
		deliveries[r.Delivery] = true
	}
	if len(deliveries) != 5 || len(srv.Messages()) != 5 {
		t.Errorf("%d deliveries (%d messages), want 5", len(deliveries), len(srv.Messages()))
	}

	if len(stored) != 1 || stored[0] != rec {
		t.Errorf("OnReceipt got %d receipts", len(stored))
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"method":"notice"`, `"method":"none"`, `"no_key":"notice"`, `"protection":"preferred"`, `"notice_message_id":`} {
		if !bytes.Contains(b, []byte(w)) {
			t.Errorf("receipt JSON lacks %s:\n%s", w, b)
		}
	}
	if bytes.Contains(logs.Bytes(), []byte(policyCanary)) || bytes.Contains(logs.Bytes(), []byte(policySubject)) {
		t.Error("the log holds content")
	}
	if n := strings.Count(logs.String(), `"msg":"mailsec delivery"`); n != 5 {
		t.Errorf("%d log records, want one per delivery (5):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `"protection":"smime"`) || !strings.Contains(logs.String(), `"fingerprints":["`+bobFpr+`"]`) {
		t.Errorf("log records lack the protection:\n%s", logs.String())
	}
}

// realProtectors returns a PGP Protector with keys for ann@example.org and
// bcc@example.net, an S/MIME Protector with a certificate for
// bob@corp.example, and the fingerprint of that certificate.
func realProtectors(t *testing.T) (*pgp.Protector, *smime.Protector, string) {
	t.Helper()
	var ring []*openpgp.Entity
	for _, a := range []string{"ann@example.org", "bcc@example.net"} {
		k, err := mailsectest.NewPGPKey("", a, mailsectest.PGPKeyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ring = append(ring, k)
	}
	pp, err := pgp.New(pgp.NewKeyRing(ring...), nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	bob, err := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "bob@corp.example"})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := smime.ReadCertificates(bytes.NewReader(mailsectest.LeafPEM(bob)))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := smime.New(certs, &smime.Options{Roots: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bob.Leaf.Raw)
	return pp, sp, hex.EncodeToString(sum[:])
}

func wrapPlan(next mailsec.Policy, f func(mailsec.Recipient, *mailsec.Plan)) mailsec.Policy {
	return mailsec.PolicyFunc(func(ctx context.Context, m *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
		p, err := next.Plan(ctx, m, r)
		f(r, &p)
		return p, err
	})
}

// "Require, fail": a recipient without a key gets nothing and is named in
// the error; the others are delivered.
func TestRequireFailIsPerRecipient(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	pgp := &fakeProtector{method: "pgp", keys: map[string]string{"ann@example.org": "PGP-ANN"}}
	tr := srv.Transport()
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{pgp}, Notice: noticeFunc(nil)})
	if err != nil {
		t.Fatal(err)
	}
	m := policyMessage()
	m.To = []string{"ann@example.org", "carl@nokey.example"}
	rec, err := s.Send(context.Background(), m)
	var se *mailsec.SendError
	if !errors.As(err, &se) || len(se.Failed) != 1 || se.Failed[0].Recipient != "carl@nokey.example" || !errors.Is(err, mailsec.ErrNoKey) {
		t.Fatalf("error %v", err)
	}
	if !strings.Contains(err.Error(), "carl@nokey.example") {
		t.Fatalf("error does not name the recipient: %v", err)
	}
	got := received(t, srv)
	if _, ok := got["carl@nokey.example"]; ok || got["ann@example.org"] == nil {
		t.Fatalf("deliveries: %v", srv.Messages())
	}
	tr.Close()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(srv.Received(), []byte(policyCanary)) {
		t.Fatal("the canary reached the server")
	}
	if r := receiptFor(t, rec, "carl@nokey.example"); r.Accepted || r.Delivery != 0 {
		t.Fatalf("carl: %+v", r)
	}
}

// A plan that allows only S/MIME does not use the PGP key; methods are
// tried in the plan's order.
func TestPlanMethods(t *testing.T) {
	pgp := &fakeProtector{method: "pgp", keys: map[string]string{"ann@example.org": "PGP-ANN"}}
	smime := &fakeProtector{method: "smime", keys: map[string]string{"ann@example.org": "SMIME-ANN"}}
	for _, tc := range []struct {
		methods []string
		want    string
	}{{nil, "pgp"}, {[]string{"smime", "pgp"}, "smime"}, {[]string{"pgp"}, "pgp"}, {[]string{"smime"}, "smime"}, {[]string{"other"}, ""}} {
		rt := &mailsectest.RecordingTransport{}
		policy := mailsec.RequireProtection(mailsec.DefaultPolicy(), tc.methods...)
		if tc.want == "" {
			// NewSender refuses a method no Protector has; hidden from
			// it, the plan fails at Send.
			if _, err := mailsec.NewSender(rt, &mailsec.Options{Policy: policy, Protectors: []mailsec.Protector{pgp, smime}}); !errors.Is(err, mailsec.ErrConfig) {
				t.Fatalf("methods %v: NewSender: %v", tc.methods, err)
			}
			policy = undeclared(policy)
		}
		s, err := mailsec.NewSender(rt, &mailsec.Options{Policy: policy, Protectors: []mailsec.Protector{pgp, smime}})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := s.Send(context.Background(), policyMessage())
		r := rec.Recipients[0]
		if tc.want == "" {
			if err == nil || r.Accepted || len(rt.Deliveries()) != 0 || !strings.Contains(err.Error(), "no Protector for the plan's methods other") {
				t.Fatalf("methods %v: %v, %d deliveries", tc.methods, err, len(rt.Deliveries()))
			}
			continue
		}
		if err != nil || r.Protection == nil || r.Protection.Method != tc.want {
			t.Fatalf("methods %v: %v %+v", tc.methods, err, r.Protection)
		}
	}
}

// A per-domain rule that pins one partner's server key refuses a server
// with another key for that domain only.
func TestDomainRulePinRefusesOtherKey(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	var other mailsec.Pin
	other[0] = 1
	policy := mailsec.ForDomains(mailsec.DefaultPolicy(),
		mailsec.DomainRule{Domain: ".partner.example", Security: &mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{other}}})
	tr := srv.Transport()
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	m := policyMessage()
	m.To = []string{"ann@example.org", "bob@eu.partner.example"}
	rec, err := s.Send(context.Background(), m)
	if !errors.Is(err, mailsec.ErrCertificate) {
		t.Fatalf("error %v, want a certificate error", err)
	}
	got := received(t, srv)
	if got["ann@example.org"] == nil {
		t.Fatal("ann not delivered")
	}
	if _, ok := got["bob@eu.partner.example"]; ok {
		t.Fatal("bob delivered to a server with another key")
	}
	if r := receiptFor(t, rec, "bob@eu.partner.example"); r.Plan.Security.Level != mailsec.Pinned || r.Accepted {
		t.Fatalf("bob: %+v", r)
	}
	// The pinned session never carried the message (the verified one, for
	// ann, did: what the server read is decrypted).
	tr.Close()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	r := srv.Received()
	if !bytes.Contains(r, []byte("RCPT TO:<ann@example.org>")) || bytes.Contains(r, []byte("RCPT TO:<bob@eu.partner.example>")) {
		t.Fatalf("what the server read:\n%q", r)
	}
}

func TestForDomainsMatching(t *testing.T) {
	pinned := mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{{1}}}
	notice := mailsec.NoKeyNotice
	policy := mailsec.ForDomains(mailsec.PreferProtection(mailsec.DefaultPolicy()),
		mailsec.DomainRule{Domain: ".example.org", Protection: mailsec.ProtectionRequired},
		mailsec.DomainRule{Domain: ".eu.example.org", Security: &pinned},
		mailsec.DomainRule{Domain: "example.org", Protection: mailsec.ProtectionNone, NoKey: &notice, Methods: []string{"smime"}},
		mailsec.DomainRule{Domain: "bücher.example", Protection: mailsec.ProtectionRequired},
		mailsec.DomainRule{Domain: "B.Example.Org", Methods: []string{"pgp"}},
	)
	for _, tc := range []struct {
		domain string
		want   mailsec.Plan
	}{
		{"example.org", mailsec.Plan{Protection: mailsec.ProtectionPreferred, NoKey: notice, Methods: []string{"smime"}}}, // never lowered
		{"a.example.org", mailsec.Plan{Protection: mailsec.ProtectionRequired}},
		{"x.eu.example.org", mailsec.Plan{Protection: mailsec.ProtectionPreferred, Security: pinned}}, // longest suffix wins alone
		{"EXAMPLE.ORG", mailsec.Plan{Protection: mailsec.ProtectionPreferred, NoKey: notice, Methods: []string{"smime"}}},
		{"xn--bcher-kva.example", mailsec.Plan{Protection: mailsec.ProtectionRequired}},
		{"notexample.org", mailsec.Plan{Protection: mailsec.ProtectionPreferred}},
		{"b.example.org", mailsec.Plan{Protection: mailsec.ProtectionPreferred, Methods: []string{"pgp"}}}, // an exact domain before a ".domain" rule listed first
		{"x.b.example.org", mailsec.Plan{Protection: mailsec.ProtectionRequired}},                          // an exact rule covers no domain below it
	} {
		p, err := policy.Plan(context.Background(), base(), mailsec.Recipient{Address: "x@" + tc.domain, Domain: tc.domain})
		if err != nil {
			t.Fatal(err)
		}
		a, _ := json.Marshal(p)
		b, _ := json.Marshal(tc.want)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: plan %s, want %s", tc.domain, a, b)
		}
	}
	bad := mailsec.ForDomains(mailsec.DefaultPolicy(), mailsec.DomainRule{Domain: "exa mple.org"})
	if _, err := bad.Plan(context.Background(), base(), mailsec.Recipient{Address: "a@b.example", Domain: "b.example"}); !errors.Is(err, mailsec.ErrInvalid) {
		t.Fatalf("malformed rule: %v", err)
	}
}

// A From, Sender or envelope-from outside AllowedSenders is refused before
// any connection.
func TestAllowedSenders(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{AllowedSenders: []string{"example.com", "alerts@example.net", ".mail.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit  func(*mailsec.Message)
		field string
	}{
		{func(m *mailsec.Message) { m.From = "ceo@bank.example" }, "From"},
		{func(m *mailsec.Message) { m.From = "App <app@sub.example.com>" }, "From"},
		{func(m *mailsec.Message) { m.From = "other@example.net" }, "From"},
		{func(m *mailsec.Message) { m.From = "x@mail.example.org" }, "From"},
		{func(m *mailsec.Message) { m.Sender = "spoof@bank.example" }, "Sender"},
		{func(m *mailsec.Message) { m.EnvelopeFrom = "bounce@bank.example" }, "EnvelopeFrom"},
	} {
		m := base()
		tc.edit(m)
		_, err := s.Send(context.Background(), m)
		var se *mailsec.SenderError
		if !errors.Is(err, mailsec.ErrSenderNotAllowed) || !errors.As(err, &se) || se.Field != tc.field || mailsec.IsTemporary(err) {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
	if srv.Connections() != 0 {
		t.Fatalf("%d connections made", srv.Connections())
	}
	for _, from := range []string{"app@example.com", "App <APP@Example.COM>", "alerts@example.net", "x@eu.mail.example.org"} {
		m := base()
		m.From = from
		if _, err := s.Send(context.Background(), m); err != nil {
			t.Errorf("%s: %v", from, err)
		}
	}
	if _, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{AllowedSenders: []string{"bad domain"}}); !errors.Is(err, mailsec.ErrConfig) {
		t.Fatalf("malformed entry: %v", err)
	}
}

// A notice plan without a notice function fails the recipient (when
// NewSender could not see it coming), and a notice is built from the
// notice alone.
func TestNoticeFailures(t *testing.T) {
	rt := &mailsectest.RecordingTransport{}
	policy := undeclared(mailsec.NoticeWhenNoKey(mailsec.RequireProtection(mailsec.DefaultPolicy())))
	s, err := mailsec.NewSender(rt, &mailsec.Options{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Send(context.Background(), policyMessage())
	if !errors.Is(err, mailsec.ErrNoKey) || len(rt.Deliveries()) != 0 {
		t.Fatalf("no notice function: %v, %d deliveries", err, len(rt.Deliveries()))
	}
	s, err = mailsec.NewSender(rt, &mailsec.Options{Policy: policy, Notice: func(context.Context, *mailsec.Message, mailsec.Recipient) (*mailsec.Notice, error) {
		return &mailsec.Notice{}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), policyMessage()); err == nil || len(rt.Deliveries()) != 0 {
		t.Fatalf("empty notice: %v", err)
	}
	s, err = mailsec.NewSender(rt, &mailsec.Options{Policy: policy, Notice: func(_ context.Context, m *mailsec.Message, _ mailsec.Recipient) (*mailsec.Notice, error) {
		return &mailsec.Notice{Subject: "Re: " + m.Subject, Text: "see the app"}, nil // explicitly chosen by the app
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := policyMessage()
	m.To = nil
	m.Bcc = []string{"only@example.org"}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	d := rt.Deliveries()
	if len(d) != 1 || !bytes.Contains(d[0].Data, []byte("Subject: Re: "+policySubject)) || bytes.Contains(d[0].Data, []byte("only@example.org")) {
		t.Fatalf("notice to a Bcc-only recipient: %+v", d)
	}
}

// protectorFunc adapts a function to mailsec.Protector, with a method name.
type protectorFunc struct {
	name string
	f    func(ctx context.Context, e *mailsec.Entity, rcpts []string) (*mailsec.Protected, error)
}

func (p protectorFunc) Protect(ctx context.Context, e *mailsec.Entity, rcpts []string) (*mailsec.Protected, error) {
	return p.f(ctx, e, rcpts)
}

func (p protectorFunc) Method() string { return p.name }

type temporary struct{ error }

func (temporary) Temporary() bool { return true }

// Only "this recipient has no usable key" lets a recipient fall back to
// unprotected content (preferred) or a notice: a Protector that fails as
// a whole, a key lookup that fails for now, or a plan naming no method
// the Sender has, fails the recipients instead, and nothing is sent in
// clear.
func TestNoFallbackUnlessNoKey(t *testing.T) {
	broken := protectorFunc{"pgp", func(context.Context, *mailsec.Entity, []string) (*mailsec.Protected, error) {
		return nil, errors.New("keyring unreadable")
	}}
	panicking := protectorFunc{"pgp", func(context.Context, *mailsec.Entity, []string) (*mailsec.Protected, error) {
		panic("hostile key")
	}}
	lookupDown := protectorFunc{"pgp", func(_ context.Context, _ *mailsec.Entity, rcpts []string) (*mailsec.Protected, error) {
		var errs []error
		for _, r := range rcpts {
			errs = append(errs, &mailsec.ProtectionError{Recipient: r, Method: "pgp", Reason: "key lookup failed", Err: temporary{errors.New("WKD: connection reset")}})
		}
		return nil, errors.Join(errs...)
	}}
	smime := &fakeProtector{method: "smime", keys: map[string]string{"ann@example.org": "SMIME-ANN"}}
	for _, tc := range []struct {
		name       string
		protectors []mailsec.Protector
		methods    []string
		temporary  bool
		annGets    string // "" means nothing
	}{
		{"broken", []mailsec.Protector{broken}, nil, false, ""},
		{"panic", []mailsec.Protector{panicking}, nil, false, ""},
		{"lookup down", []mailsec.Protector{lookupDown}, nil, true, ""},
		{"unknown method", []mailsec.Protector{smime}, []string{"PGP"}, false, ""},
		{"broken then smime", []mailsec.Protector{broken, smime}, nil, false, "application/x-smime-protected"},
	} {
		for _, notice := range []bool{false, true} {
			rt := &mailsectest.RecordingTransport{}
			policy := mailsec.PreferProtection(mailsec.DefaultPolicy(), tc.methods...)
			if notice {
				policy = mailsec.NoticeWhenNoKey(mailsec.RequireProtection(mailsec.DefaultPolicy(), tc.methods...))
			}
			if tc.methods != nil {
				// NewSender refuses a method no Protector has; hidden
				// from it, the plan fails at Send.
				if _, err := mailsec.NewSender(rt, &mailsec.Options{Policy: policy, Protectors: tc.protectors, Notice: noticeFunc(nil)}); !errors.Is(err, mailsec.ErrConfig) {
					t.Fatalf("%s: NewSender: %v", tc.name, err)
				}
				policy = undeclared(policy)
			}
			s, err := mailsec.NewSender(rt, &mailsec.Options{Policy: policy, Protectors: tc.protectors, Notice: noticeFunc(nil)})
			if err != nil {
				t.Fatal(err)
			}
			m := policyMessage()
			m.To = []string{"ann@example.org", "bob@example.org"}
			_, err = s.Send(context.Background(), m)
			if err == nil {
				t.Fatalf("%s (notice %v): no error", tc.name, notice)
			}
			if mailsec.IsTemporary(err) != tc.temporary {
				t.Errorf("%s: IsTemporary = %v", tc.name, mailsec.IsTemporary(err))
			}
			for _, d := range rt.Deliveries() {
				if bytes.Contains(d.Data, []byte(policyCanary)) || bytes.Contains(d.Data, []byte("inbox/")) {
					t.Fatalf("%s (notice %v): %v got the content or a notice:\n%s", tc.name, notice, d.To, d.Data)
				}
				if len(d.To) != 1 || d.To[0] != "ann@example.org" || tc.annGets == "" || !bytes.Contains(d.Data, []byte(tc.annGets)) {
					t.Fatalf("%s (notice %v): unexpected delivery to %v", tc.name, notice, d.To)
				}
			}
			if tc.annGets != "" && len(rt.Deliveries()) != 1 {
				t.Fatalf("%s: ann not delivered", tc.name)
			}
		}
	}
}

// TLS-Required: No (RFC 8689 §5) is a visible header field, outside the
// encryption too, travels with the Delivery, is recorded in the Receipt,
// and cannot be combined with REQUIRETLS.
func TestTLSRequiredNo(t *testing.T) {
	pp, _, _ := realProtectors(t)
	rt := &mailsectest.RecordingTransport{}
	s, err := mailsec.NewSender(rt, &mailsec.Options{Protectors: []mailsec.Protector{pp},
		Policy: mailsec.PolicyFunc(func(ctx context.Context, m *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
			if r.Address == "ann@example.org" {
				return mailsec.Plan{Protection: mailsec.ProtectionRequired}, nil
			}
			return mailsec.Plan{}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	msg := &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org", "carl@example.net"},
		Subject: policySubject, Text: policyCanary, TLSRequiredNo: true}
	rec, err := s.Send(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	ds := rt.Deliveries()
	if len(ds) != 2 {
		t.Fatalf("%d deliveries", len(ds))
	}
	for _, d := range ds {
		head, _, _ := bytes.Cut(d.Data, []byte("\r\n\r\n"))
		if !d.TLSRequiredNo || !bytes.Contains(append(head, "\r\n"...), []byte("\r\nTLS-Required: No\r\n")) {
			t.Errorf("delivery to %v: flag %v, header:\n%s", d.To, d.TLSRequiredNo, head)
		}
	}
	for _, r := range rec.Recipients {
		if !r.TLSRequiredNo {
			t.Errorf("receipt for %s does not record TLS-Required: No", r.Address)
		}
	}

	rt.Reset()
	msg.RequireTLS = true
	if _, err := s.Send(context.Background(), msg); !errors.Is(err, mailsec.ErrInvalid) {
		t.Fatalf("REQUIRETLS with TLS-Required: No: err = %v", err)
	}
	msg.RequireTLS = false
	msg.TLSRequiredNo = false
	msg.Headers = []mailsec.Header{{Name: "TLS-Required", Value: "No"}}
	if _, err := s.Send(context.Background(), msg); !errors.Is(err, mailsec.ErrInvalid) {
		t.Fatalf("TLS-Required set through Headers: err = %v", err)
	}
	if n := len(rt.Deliveries()); n != 0 {
		t.Fatalf("%d deliveries after refusals", n)
	}
}

// undeclared hides what p declares, as a PolicyFunc of the application's
// own does: NewSender then checks nothing, and a mistake meets Send.
func undeclared(p mailsec.Policy) mailsec.Policy { return mailsec.PolicyFunc(p.Plan) }
