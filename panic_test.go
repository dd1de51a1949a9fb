package mailsec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

// noPanic fails the test, instead of crashing the test binary, when f
// panics.
func noPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Fatalf("%s panicked: %v", what, v)
		}
	}()
	f()
}

// deliveredTo lists the recipients the server accepted a message for.
func deliveredTo(srv *mailsectest.Server) []string {
	var out []string
	for _, m := range srv.Messages() {
		out = append(out, m.To...)
	}
	slices.Sort(out)
	return out
}

// A typed-nil reader as an attachment is refused before any I/O, with the
// field named, instead of panicking when it is read.
func TestTypedNilAttachmentRefused(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	for _, c := range []struct {
		field string
		edit  func(m *mailsec.Message)
	}{
		{"Attachments[0].Content", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{Filename: "a.pdf", Content: (*bytes.Reader)(nil)}}
		}},
		{"Attachments[1].Content", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{Filename: "a.txt", Content: strings.NewReader("a")}, {Filename: "b.txt", Content: (*os.File)(nil)}}
		}},
		{"Inline[0].Content", func(m *mailsec.Message) {
			m.Inline = []mailsec.Attachment{{Filename: "logo.png", ContentID: "logo", Content: (*strings.Reader)(nil)}}
		}},
	} {
		m := base()
		m.Bcc = []string{"archive@example.org"} // two deliveries: the readers must seek
		c.edit(m)
		var err error
		noPanic(t, c.field, func() { _, err = s.Send(context.Background(), m) })
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) || ve.Field != c.field {
			t.Fatalf("%s: error %v, want a *ValidationError for the field", c.field, err)
		}
	}
	if n := len(rt.Deliveries()); n != 0 {
		t.Fatalf("%d deliveries", n)
	}
}

// A Policy that panics for one recipient fails that recipient, which the
// server never hears of; the others in the message are delivered.
func TestPolicyPanicFailsOnlyThatRecipient(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	policy := mailsec.PolicyFunc(func(_ context.Context, _ *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
		if r.Domain == "panic.example" {
			panic("policy table corrupt")
		}
		return mailsec.Plan{}, nil
	})
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	m := base()
	m.To = []string{"ann@example.org", "bob@panic.example"}
	m.Cc = []string{"carl@example.org"}
	var rec *mailsec.Receipt
	noPanic(t, "Send", func() { rec, err = s.Send(context.Background(), m) })
	var se *mailsec.SendError
	if !errors.As(err, &se) || len(se.Failed) != 1 || se.Failed[0].Recipient != "bob@panic.example" ||
		!strings.Contains(err.Error(), "Policy panicked") || mailsec.IsTemporary(err) {
		t.Fatalf("error %v", err)
	}
	if got := deliveredTo(srv); !slices.Equal(got, []string{"ann@example.org", "carl@example.org"}) {
		t.Fatalf("server accepted for %v", got)
	}
	if r := receiptFor(t, rec, "bob@panic.example"); r.Accepted || r.Delivery != 0 || r.Err == nil {
		t.Fatalf("bob: %+v", r)
	}
}

// A Protector that panics, in Protect or while its output is written,
// fails the recipients it was asked to protect, who receive nothing; a
// recipient with another plan in the same message is delivered.
func TestProtectorPanicFailsOnlyItsRecipients(t *testing.T) {
	for _, c := range []struct {
		name string
		p    *fakeProtector
	}{
		{"Protect", &fakeProtector{panic: true}},
		{"WriteTo", &fakeProtector{panicOnWrite: true, keys: map[string]string{"ann@secure.example": "FP"}}},
	} {
		srv := mailsectest.NewServer(t, mailsectest.Config{})
		policy := mailsec.ForDomains(mailsec.DefaultPolicy(), mailsec.DomainRule{Domain: "secure.example", Protection: mailsec.ProtectionRequired})
		s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{Policy: policy, Protectors: []mailsec.Protector{c.p}})
		if err != nil {
			t.Fatal(err)
		}
		m := policyMessage()
		m.To = []string{"ann@secure.example", "bob@example.org"}
		var rec *mailsec.Receipt
		noPanic(t, c.name, func() { rec, err = s.Send(context.Background(), m) })
		var se *mailsec.SendError
		if !errors.As(err, &se) || len(se.Failed) != 1 || se.Failed[0].Recipient != "ann@secure.example" || !strings.Contains(err.Error(), "panicked") {
			t.Fatalf("%s: error %v", c.name, err)
		}
		if got := deliveredTo(srv); !slices.Equal(got, []string{"bob@example.org"}) {
			t.Fatalf("%s: server accepted for %v", c.name, got)
		}
		if r := receiptFor(t, rec, "ann@secure.example"); r.Accepted {
			t.Fatalf("%s: ann: %+v", c.name, r)
		}
	}
}

// A NoticeFunc that panics fails the recipient the notice was for, who
// receives nothing; the others are delivered.
func TestNoticePanicFailsOnlyThatRecipient(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{
		Policy:     mailsec.NoticeWhenNoKey(mailsec.RequireProtection(mailsec.DefaultPolicy())),
		Protectors: []mailsec.Protector{&fakeProtector{keys: map[string]string{"ann@example.org": "FP"}}},
		Notice: func(_ context.Context, _ *mailsec.Message, r mailsec.Recipient) (*mailsec.Notice, error) {
			if r.Address == "bob@example.org" {
				panic("template missing")
			}
			return &mailsec.Notice{Text: "You have a new message"}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := policyMessage()
	m.To = []string{"ann@example.org", "bob@example.org", "carl@example.org"}
	var rec *mailsec.Receipt
	noPanic(t, "Send", func() { rec, err = s.Send(context.Background(), m) })
	var se *mailsec.SendError
	if !errors.As(err, &se) || len(se.Failed) != 1 || se.Failed[0].Recipient != "bob@example.org" || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("error %v", err)
	}
	if got := deliveredTo(srv); !slices.Equal(got, []string{"ann@example.org", "carl@example.org"}) {
		t.Fatalf("server accepted for %v", got)
	}
	if r := receiptFor(t, rec, "carl@example.org"); !r.Accepted || r.Protection == nil || r.Protection.Method != mailsec.MethodNotice {
		t.Fatalf("carl: %+v", r)
	}
}

// An OnReceipt callback that panics cannot take Send down with it, nor
// make the delivered message look failed (a retry would send it twice):
// Send returns the Receipt, and the panic is logged.
func TestOnReceiptPanicIsLogged(t *testing.T) {
	var logged bytes.Buffer
	s, rt := newRecordingSender(t, &mailsec.Options{
		Logger:    slog.New(slog.NewTextHandler(&logged, nil)),
		OnReceipt: func(context.Context, *mailsec.Receipt) { panic("audit table missing") },
	})
	var rec *mailsec.Receipt
	var err error
	noPanic(t, "Send", func() { rec, err = s.Send(context.Background(), base()) })
	if err != nil || rec == nil || !rec.Recipients[0].Accepted || len(rt.Deliveries()) != 1 {
		t.Fatalf("Send = %+v, %v", rec, err)
	}
	if !strings.Contains(logged.String(), "OnReceipt panicked") || !strings.Contains(logged.String(), "audit table missing") ||
		!strings.Contains(logged.String(), rec.MessageID) || !strings.Contains(logged.String(), "level=ERROR") {
		t.Fatalf("log:\n%s", logged.String())
	}

	// Without a Logger, slog's default logger gets it.
	var def bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&def, nil)))
	defer slog.SetDefault(old)
	s2, _ := newRecordingSender(t, &mailsec.Options{OnReceipt: func(context.Context, *mailsec.Receipt) { panic("audit table missing") }})
	noPanic(t, "Send", func() { _, err = s2.Send(context.Background(), base()) })
	if err != nil || !strings.Contains(def.String(), "OnReceipt panicked") {
		t.Fatalf("err %v, default log:\n%s", err, def.String())
	}
}

// Nil and zero values at the edges of the API give errors, not panics.
func TestNilAndZeroValues(t *testing.T) {
	ctx := context.Background()
	isValidation := func(what string, err error) {
		t.Helper()
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: error %v (%T), want a *ValidationError", what, err, err)
		}
	}
	isConfig := func(what string, err error) {
		t.Helper()
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) || errors.Is(err, mailsec.ErrInvalid) {
			t.Errorf("%s: error %v (%T), want a *ConfigError", what, err, err)
		}
	}
	noPanic(t, "nil Sender", func() {
		var s *mailsec.Sender
		_, err := s.Send(ctx, base())
		isValidation("nil Sender", err)
	})
	noPanic(t, "zero Sender", func() {
		_, err := (&mailsec.Sender{}).Send(ctx, base())
		isValidation("zero Sender", err)
	})
	noPanic(t, "nil context", func() {
		s, rt := newRecordingSender(t, nil)
		//lint:ignore SA1012 a nil context is the point of the test
		_, err := s.Send(nil, base())
		isValidation("nil context", err)
		if len(rt.Deliveries()) != 0 {
			t.Error("delivered with a nil context")
		}
	})
	noPanic(t, "NewSender", func() {
		_, err := mailsec.NewSender(nil, nil)
		isConfig("nil Transport", err)
		_, err = mailsec.NewSender((*mailsectest.RecordingTransport)(nil), nil)
		isConfig("typed-nil Transport", err)
		var pf mailsec.PolicyFunc
		_, err = mailsec.NewSender(&mailsectest.RecordingTransport{}, &mailsec.Options{Policy: pf})
		isConfig("typed-nil Policy", err)
		_, err = mailsec.NewSender(&mailsectest.RecordingTransport{}, &mailsec.Options{Protectors: []mailsec.Protector{(*fakeProtector)(nil)}})
		isConfig("typed-nil Protector", err)
		_, err = mailsec.NewSender(&mailsectest.RecordingTransport{}, &mailsec.Options{Protectors: []mailsec.Protector{&fakeProtector{}, panicMethod{}}})
		isConfig("Protector whose Method panics", err)
	})
	noPanic(t, "Delivery", func() {
		var d *mailsec.Delivery
		isValidation("nil Delivery", d.Validate())
		d = &mailsec.Delivery{From: "a@example.com", To: []string{"b@example.org"}, Content: (*mailsec.Entity)(nil)}
		isValidation("typed-nil Content", d.Validate())
	})
	noPanic(t, "nil results", func() {
		var r *mailsec.Receipt
		var dr *mailsec.DeliveryResult
		if r.Failed() != nil || dr.Recipient(0, nil).Accepted {
			t.Error("nil Receipt or DeliveryResult reports recipients")
		}
		if got := (&mailsec.RecipientError{Recipient: "a@example.org"}).Error(); !strings.Contains(got, "a@example.org") {
			t.Errorf("RecipientError without Err: %q", got)
		}
		if got := (&mailsec.NetworkError{Host: "mx.example", Op: "dial"}).Error(); !strings.Contains(got, "mx.example") {
			t.Errorf("NetworkError without Err: %q", got)
		}
		if _, err := (&mailsec.Entity{}).WriteTo(io.Discard); err == nil {
			t.Error("Entity without a body written")
		}
	})
}

// panicMethod is a Protector whose Method panics.
type panicMethod struct{}

func (panicMethod) Protect(context.Context, *mailsec.Entity, []string) (*mailsec.Protected, error) {
	return nil, errors.New("unused")
}

func (panicMethod) Method() string { panic("no name") }

// A policy wrapper around a nil Policy is refused by NewSender, and fails
// every recipient instead of panicking when called directly or hidden
// from NewSender.
func TestPolicyWrapperOfNil(t *testing.T) {
	var nilFunc mailsec.PolicyFunc
	for name, p := range map[string]mailsec.Policy{
		"RequireProtection": mailsec.RequireProtection(nil),
		"PreferProtection":  mailsec.PreferProtection(nilFunc),
		"NoticeWhenNoKey":   mailsec.NoticeWhenNoKey(nil),
		"ForDomains":        mailsec.ForDomains(nil, mailsec.DomainRule{Domain: "example.org"}),
		"WithSecurity":      mailsec.WithSecurity(nil, mailsec.Security{}),
	} {
		noPanic(t, name, func() {
			if _, err := p.Plan(context.Background(), base(), mailsec.Recipient{Address: "ann@example.org", Domain: "example.org"}); !errors.Is(err, mailsec.ErrInvalid) {
				t.Errorf("%s(nil).Plan: %v", name, err)
			}
			if _, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, &mailsec.Options{Policy: p}); !errors.Is(err, mailsec.ErrConfig) || !strings.Contains(err.Error(), name+" wraps a nil Policy") {
				t.Errorf("%s(nil): NewSender: %v", name, err)
			}
			s, rt := newRecordingSender(t, &mailsec.Options{Policy: undeclared(p)})
			if _, err := s.Send(context.Background(), base()); err == nil || len(rt.Deliveries()) != 0 {
				t.Errorf("%s(nil): Send %v, %d deliveries", name, err, len(rt.Deliveries()))
			}
		})
	}
}

// panicReader panics when read.
type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("storage driver bug") }

// An attachment reader that panics abandons its delivery like a reader
// that fails: nothing is delivered, Send returns ErrContent, and the
// pooled session is not left mid-DATA for the next message.
func TestAttachmentReaderPanic(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	tr.MaxConns = 1
	s, err := mailsec.NewSender(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := base()
	m.Attachments = []mailsec.Attachment{{Filename: "a.bin", Content: panicReader{}}}
	noPanic(t, "Send", func() { _, err = s.Send(context.Background(), m) })
	if !errors.Is(err, mailsec.ErrContent) || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("error %v", err)
	}
	if _, err := s.Send(context.Background(), base()); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages; the abandoned one must not arrive", n)
	}
}

// errProtector protects nothing and returns err, with a Protected when
// with is set: a Protector whose error is a typed nil (a nil
// *ProtectionError in an error variable) or holds one.
type errProtector struct {
	err  error
	with bool
}

func (p errProtector) Protect(_ context.Context, e *mailsec.Entity, _ []string) (*mailsec.Protected, error) {
	if p.with {
		return &mailsec.Protected{Entity: e}, p.err
	}
	return nil, p.err
}

func (errProtector) Method() string { return "fake" }

// errTransport reports err for the delivery, or for its first recipient
// when perRecipient is set, and delivers nothing.
type errTransport struct {
	err          error
	perRecipient bool
}

func (t errTransport) Deliver(_ context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if !t.perRecipient {
		return nil, t.err
	}
	res := &mailsec.DeliveryResult{Recipients: make([]mailsec.RecipientResult, len(d.To))}
	for i, to := range d.To {
		res.Recipients[i].Address = to
	}
	res.Recipients[0].Err = t.err
	return res, nil
}

// An error value a Protector or Transport returns that cannot be used (a
// typed nil, whose methods dereference it, or one that holds such a
// value) fails the recipients it concerns with an error that can be
// printed and classified, instead of panicking in Send or later in the
// application that prints it; content that needed protection is not sent.
func TestUnusableErrorsFromPlugins(t *testing.T) {
	var nilPE *mailsec.ProtectionError
	var nilRE *mailsec.RecipientError
	var nilSMTP *mailsec.SMTPError
	for _, c := range []struct {
		name string
		opts func(rt *mailsectest.RecordingTransport) (mailsec.Transport, *mailsec.Options)
	}{
		{"Protector typed nil", func(rt *mailsectest.RecordingTransport) (mailsec.Transport, *mailsec.Options) {
			return rt, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{errProtector{err: nilPE}}}
		}},
		{"Protector typed nil with content", func(rt *mailsectest.RecordingTransport) (mailsec.Transport, *mailsec.Options) {
			return rt, &mailsec.Options{Policy: mailsec.PreferProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{errProtector{err: nilPE, with: true}}}
		}},
		{"Protector typed nil RecipientError", func(rt *mailsectest.RecordingTransport) (mailsec.Transport, *mailsec.Options) {
			return rt, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{errProtector{err: nilRE}}}
		}},
		{"Protector joined typed nil", func(rt *mailsectest.RecordingTransport) (mailsec.Transport, *mailsec.Options) {
			return rt, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{errProtector{err: errors.Join(nilPE)}}}
		}},
		{"Policy typed nil", func(rt *mailsectest.RecordingTransport) (mailsec.Transport, *mailsec.Options) {
			return rt, &mailsec.Options{Policy: mailsec.PolicyFunc(func(context.Context, *mailsec.Message, mailsec.Recipient) (mailsec.Plan, error) {
				var ve *mailsec.ValidationError
				return mailsec.Plan{}, ve
			})}
		}},
		{"Notice typed nil", func(rt *mailsectest.RecordingTransport) (mailsec.Transport, *mailsec.Options) {
			return rt, &mailsec.Options{Policy: mailsec.NoticeWhenNoKey(mailsec.RequireProtection(mailsec.DefaultPolicy())),
				Protectors: []mailsec.Protector{&fakeProtector{method: "fake"}},
				Notice: func(context.Context, *mailsec.Message, mailsec.Recipient) (*mailsec.Notice, error) {
					var ve *mailsec.ValidationError
					return nil, ve
				}}
		}},
		{"Transport typed nil", func(*mailsectest.RecordingTransport) (mailsec.Transport, *mailsec.Options) {
			return errTransport{err: nilSMTP}, nil
		}},
		{"Transport recipient typed nil", func(*mailsectest.RecordingTransport) (mailsec.Transport, *mailsec.Options) {
			return errTransport{err: nilSMTP, perRecipient: true}, nil
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rt := &mailsectest.RecordingTransport{}
			tr, o := c.opts(rt)
			s, err := mailsec.NewSender(tr, o)
			if err != nil {
				t.Fatal(err)
			}
			var rec *mailsec.Receipt
			noPanic(t, "Send", func() { rec, err = s.Send(context.Background(), base()) })
			var text string
			noPanic(t, "the error's methods", func() {
				text = err.Error()
				_ = mailsec.IsTemporary(err)
				_ = errors.Is(err, mailsec.ErrNoKey)
				for _, r := range rec.Recipients {
					if r.Err != nil {
						_ = r.Err.Error()
					}
				}
				_, _ = json.Marshal(rec)
			})
			var se *mailsec.SendError
			if !errors.As(err, &se) || len(se.Failed) != 1 || !strings.Contains(text, "nil") {
				t.Fatalf("err = %s", text)
			}
			if r := receiptFor(t, rec, "ann@example.org"); r.Accepted {
				t.Fatalf("accepted: %+v", r)
			}
			if n := len(rt.Deliveries()); n != 0 {
				t.Fatalf("%d deliveries", n)
			}
		})
	}
}

// panicTransport panics for a delivery to any address of domain and
// records the others.
type panicTransport struct {
	mailsectest.RecordingTransport
	domain string
}

func (p *panicTransport) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	for _, to := range d.To {
		if strings.HasSuffix(to, "@"+p.domain) {
			panic("transport bug")
		}
	}
	return p.RecordingTransport.Deliver(ctx, d)
}

// A Transport that panics (a bug in it, or in a Dialer or Resolver it
// calls) fails the recipients of that delivery; the other deliveries of
// the message go out, and Send returns instead of taking the caller down.
func TestTransportPanicFailsOnlyItsDelivery(t *testing.T) {
	tr := &panicTransport{domain: "panic.example"}
	s, err := mailsec.NewSender(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := base()
	m.Bcc = []string{"bob@panic.example"}
	var rec *mailsec.Receipt
	noPanic(t, "Send", func() { rec, err = s.Send(context.Background(), m) })
	var se *mailsec.SendError
	if !errors.As(err, &se) || len(se.Failed) != 1 || se.Failed[0].Recipient != "bob@panic.example" ||
		!strings.Contains(err.Error(), "Transport panicked") || mailsec.IsTemporary(err) {
		t.Fatalf("err = %v", err)
	}
	if r := receiptFor(t, rec, "bob@panic.example"); r.Accepted || r.Delivery != 0 {
		t.Fatalf("bob: %+v", r)
	}
	if r := receiptFor(t, rec, "ann@example.org"); !r.Accepted || len(tr.Deliveries()) != 1 {
		t.Fatalf("ann: %+v, %d deliveries", r, len(tr.Deliveries()))
	}
}
