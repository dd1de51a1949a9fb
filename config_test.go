package mailsec_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

// A Protector's Method is the name Plans and Receipts use for it: a name
// they could not tell apart, or a nil entry, is refused when the Sender is
// built.
func TestProtectorMethodNames(t *testing.T) {
	policy := mailsec.RequireProtection(mailsec.DefaultPolicy())
	for _, c := range []struct {
		name string
		p    mailsec.Protector
	}{
		{"empty", emptyMethod{}},
		{"none", &fakeProtector{method: mailsec.MethodNone}},
		{"notice", &fakeProtector{method: mailsec.MethodNotice}},
		{"nil entry", nil},
	} {
		_, err := mailsec.NewSender(&mailsectest.RecordingTransport{},
			&mailsec.Options{Policy: policy, Protectors: []mailsec.Protector{&fakeProtector{method: "pgp"}, c.p}})
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) || ce.Field != "Options.Protectors[1]" {
			t.Errorf("%s: error %v, want a *ConfigError for Options.Protectors[1]", c.name, err)
		}
	}
}

// The Receipt records each protected recipient under its Protector's
// Method.
func TestReceiptRecordsProtectorMethod(t *testing.T) {
	p := &fakeProtector{method: "x-lab", keys: map[string]string{"ann@example.org": "FP-ANN"}}
	s, rt := newRecordingSender(t, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{p}})
	rec, err := s.Send(context.Background(), base())
	if err != nil {
		t.Fatal(err)
	}
	pi := rec.Recipients[0].Protection
	if pi == nil || pi.Method != "x-lab" || pi.Fingerprint != "FP-ANN" || len(rt.Deliveries()) != 1 {
		t.Fatalf("protection %+v, %d deliveries", pi, len(rt.Deliveries()))
	}
}

// emptyMethod is a Protector without a method name.
type emptyMethod struct{}

func (emptyMethod) Method() string { return "" }

func (emptyMethod) Protect(context.Context, *mailsec.Entity, []string) (*mailsec.Protected, error) {
	return nil, errors.New("unused")
}

// validatingTransport is a Transport with a Validate method.
type validatingTransport struct {
	mailsectest.RecordingTransport
	err   error
	panic bool
}

func (v *validatingTransport) Validate() error {
	if v.panic {
		panic("half-initialised")
	}
	return v.err
}

// NewSender calls a Transport's Validate method: its refusal, whatever its
// type, and a panic in it become a *ConfigError, and no Sender is built.
func TestNewSenderValidatesTransport(t *testing.T) {
	own := &mailsec.ConfigError{Field: "Custom.Endpoint", Reason: "empty"}
	plain := errors.New("endpoint missing")
	for name, c := range map[string]struct {
		tr    *validatingTransport
		check func(err error) bool
	}{
		"ConfigError": {&validatingTransport{err: own}, func(err error) bool { return err == own }},
		"plain error": {&validatingTransport{err: plain}, func(err error) bool {
			return errors.Is(err, plain) && strings.Contains(err.Error(), "Transport")
		}},
		"ValidationError": {&validatingTransport{err: &mailsec.ValidationError{Field: "Custom.Addr", Reason: "bad"}}, func(err error) bool {
			var ce *mailsec.ConfigError
			return errors.As(err, &ce) && ce.Field == "Custom.Addr" && !errors.Is(err, mailsec.ErrInvalid)
		}},
		"panic": {&validatingTransport{panic: true}, func(err error) bool { return strings.Contains(err.Error(), "half-initialised") }},
	} {
		s, err := mailsec.NewSender(c.tr, nil)
		var ce *mailsec.ConfigError
		if s != nil || !errors.As(err, &ce) || !errors.Is(err, mailsec.ErrConfig) || mailsec.IsTemporary(err) || !c.check(err) {
			t.Errorf("%s: sender %v, error %v (%T)", name, s, err, err)
		}
	}
	if _, err := mailsec.NewSender(&validatingTransport{}, nil); err != nil {
		t.Fatalf("a Transport whose Validate passes: %v", err)
	}
}

// labPolicy is a Policy of an application's own that declares what its
// plans may ask for.
type labPolicy struct {
	needs mailsec.PolicyNeeds
	err   error
	panic bool
}

func (labPolicy) Plan(context.Context, *mailsec.Message, mailsec.Recipient) (mailsec.Plan, error) {
	return mailsec.Plan{Protection: mailsec.ProtectionRequired}, nil
}

func (p labPolicy) Needs() (mailsec.PolicyNeeds, error) {
	if p.panic {
		panic("rules not loaded")
	}
	return p.needs, p.err
}

// NewSender refuses a Policy that does not fit the Sender's Protectors and
// notice, each time with a *ConfigError that names the setting and says
// what to do, and builds no Sender. Above all: Protectors with a Policy
// that never asks for protection, which sent lab results in plain text.
func TestNewSenderRefusesPolicyMisfits(t *testing.T) {
	pgp := &fakeProtector{method: "pgp", keys: map[string]string{"ann@example.org": "FP"}}
	notice := func(context.Context, *mailsec.Message, mailsec.Recipient) (*mailsec.Notice, error) {
		return &mailsec.Notice{Text: "https://app.example.com/inbox"}, nil
	}
	noticeAction := mailsec.NoKeyNotice
	def := mailsec.DefaultPolicy()
	var pin mailsec.Pin
	for _, c := range []struct {
		name  string
		o     *mailsec.Options
		field string
		says  []string // what the error must say
	}{
		{"Protectors, nil Policy", &mailsec.Options{Protectors: []mailsec.Protector{pgp}},
			"Options.Policy", []string{"mailsec.RequireProtection", "mailsec.PreferProtection", "unprotected"}},
		{"Protectors, DefaultPolicy", &mailsec.Options{Policy: def, Protectors: []mailsec.Protector{pgp}},
			"Options.Policy", []string{"mailsec.RequireProtection", "mailsec.PreferProtection"}},
		{"Protectors, a pin only", &mailsec.Options{Policy: mailsec.WithSecurity(mailsec.ForDomains(def,
			mailsec.DomainRule{Domain: "partner.example", Security: &mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{pin}}}),
			mailsec.Security{}), Protectors: []mailsec.Protector{pgp}},
			"Options.Policy", []string{"mailsec.RequireProtection", "mailsec.PreferProtection"}},
		{"Protectors, notice without protection", &mailsec.Options{Policy: mailsec.NoticeWhenNoKey(def), Protectors: []mailsec.Protector{pgp}, Notice: notice},
			"Options.Policy", []string{"mailsec.RequireProtection", "mailsec.PreferProtection"}},

		{"required, no Protector", &mailsec.Options{Policy: mailsec.RequireProtection(def)},
			"Options.Protectors", []string{"required", "pgp.New", "smime.New"}},
		{"preferred, no Protector", &mailsec.Options{Policy: mailsec.PreferProtection(def)},
			"Options.Protectors", []string{"preferred", "pgp.New"}},
		{"one domain required, no Protector", &mailsec.Options{Policy: mailsec.ForDomains(def,
			mailsec.DomainRule{Domain: "clinic.example", Protection: mailsec.ProtectionRequired})},
			"Options.Protectors", []string{"required"}},
		{"required around a PolicyFunc, no Protector", &mailsec.Options{Policy: mailsec.RequireProtection(undeclared(def))},
			"Options.Protectors", []string{"required"}},

		{"method no Protector has", &mailsec.Options{Policy: mailsec.RequireProtection(def, "smime"), Protectors: []mailsec.Protector{pgp}},
			"Options.Policy", []string{`"smime"`, "they have pgp"}},
		{"one of two methods missing", &mailsec.Options{Policy: mailsec.PreferProtection(def, "pgp", "smime"), Protectors: []mailsec.Protector{pgp}},
			"Options.Policy", []string{`"smime"`}},
		{"a domain's method missing", &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.ForDomains(def,
			mailsec.DomainRule{Domain: ".bank.example", Methods: []string{"smime"}})), Protectors: []mailsec.Protector{pgp}},
			"Options.Policy", []string{`"smime"`}},

		{"notice, no Options.Notice", &mailsec.Options{Policy: mailsec.NoticeWhenNoKey(mailsec.RequireProtection(def)), Protectors: []mailsec.Protector{pgp}},
			"Options.Notice", []string{"NoticeWhenNoKey", "set Options.Notice"}},
		{"a domain's notice, no Options.Notice", &mailsec.Options{Policy: mailsec.ForDomains(def,
			mailsec.DomainRule{Domain: "clinic.example", Protection: mailsec.ProtectionRequired, NoKey: &noticeAction}), Protectors: []mailsec.Protector{pgp}},
			"Options.Notice", []string{"set Options.Notice"}},
		{"notice around a PolicyFunc, no Options.Notice", &mailsec.Options{Policy: mailsec.NoticeWhenNoKey(mailsec.RequireProtection(undeclared(def))), Protectors: []mailsec.Protector{pgp}},
			"Options.Notice", []string{"set Options.Notice"}},

		{"malformed domain rule", &mailsec.Options{Policy: mailsec.ForDomains(def, mailsec.DomainRule{Domain: "bad domain"})},
			"Options.Policy", []string{"ForDomains", "DomainRule[0].Domain"}},
		{"pinned without pins", &mailsec.Options{Policy: mailsec.WithSecurity(def, mailsec.Security{Level: mailsec.Pinned})},
			"Options.Policy", []string{"WithSecurity", "at least one pin"}},
		{"empty method name", &mailsec.Options{Policy: mailsec.RequireProtection(def, ""), Protectors: []mailsec.Protector{pgp}},
			"Options.Policy", []string{"empty protection method"}},

		{"declared: method missing", &mailsec.Options{Policy: labPolicy{needs: mailsec.PolicyNeeds{Protection: mailsec.ProtectionRequired, Methods: []string{"smime"}}},
			Protectors: []mailsec.Protector{pgp}}, "Options.Policy", []string{`"smime"`}},
		{"declared: error", &mailsec.Options{Policy: labPolicy{err: errors.New("rules file unreadable")}, Protectors: []mailsec.Protector{pgp}},
			"Options.Policy", []string{"rules file unreadable"}},
		{"declared: panic", &mailsec.Options{Policy: labPolicy{panic: true}, Protectors: []mailsec.Protector{pgp}},
			"Options.Policy", []string{"rules not loaded"}},
		{"declared: ValidationError", &mailsec.Options{Policy: labPolicy{err: &mailsec.ValidationError{Field: "rules[3]", Value: "bank example", Reason: "not a domain"}},
			Protectors: []mailsec.Protector{pgp}}, "Options.Policy", []string{"labPolicy", "rules[3]", "not a domain"}},
	} {
		s, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, c.o)
		var ce *mailsec.ConfigError
		if s != nil || !errors.As(err, &ce) || ce.Field != c.field || errors.Is(err, mailsec.ErrInvalid) || mailsec.IsTemporary(err) {
			t.Errorf("%s: sender %v, error %v; want a *ConfigError for %s", c.name, s, err, c.field)
			continue
		}
		for _, w := range c.says {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.name, err, w)
			}
		}
	}
}

// What fits is accepted, and so is a Policy that declares nothing (a
// PolicyFunc): NewSender cannot see what its plans ask for.
func TestNewSenderAcceptsPolicyFits(t *testing.T) {
	pgp := &fakeProtector{method: "pgp"}
	smime := &fakeProtector{method: "smime"}
	notice := func(context.Context, *mailsec.Message, mailsec.Recipient) (*mailsec.Notice, error) { return nil, nil }
	noticeAction := mailsec.NoKeyNotice
	def := mailsec.DefaultPolicy()
	for name, o := range map[string]*mailsec.Options{
		"nothing":                     nil,
		"required":                    {Policy: mailsec.RequireProtection(def), Protectors: []mailsec.Protector{pgp}},
		"preferred, both methods":     {Policy: mailsec.PreferProtection(def, "smime", "pgp"), Protectors: []mailsec.Protector{pgp, smime}},
		"notice":                      {Policy: mailsec.NoticeWhenNoKey(mailsec.RequireProtection(def)), Protectors: []mailsec.Protector{pgp}, Notice: notice},
		"notice, never required":      {Policy: mailsec.NoticeWhenNoKey(def)},
		"notice, only preferred":      {Policy: mailsec.NoticeWhenNoKey(mailsec.PreferProtection(def)), Protectors: []mailsec.Protector{pgp}},
		"one domain, with its notice": {Policy: mailsec.ForDomains(def, mailsec.DomainRule{Domain: "clinic.example", Protection: mailsec.ProtectionRequired, NoKey: &noticeAction}), Protectors: []mailsec.Protector{pgp}, Notice: notice},
		"methods, never protected":    {Policy: mailsec.ForDomains(def, mailsec.DomainRule{Domain: "bank.example", Methods: []string{"smime"}})},
		"PolicyFunc with Protectors":  {Policy: undeclared(def), Protectors: []mailsec.Protector{pgp}},
		"PolicyFunc needing a notice": {Policy: undeclared(mailsec.NoticeWhenNoKey(mailsec.RequireProtection(def, "smime"))), Protectors: []mailsec.Protector{pgp}},
		"preferred around PolicyFunc": {Policy: mailsec.PreferProtection(undeclared(def)), Protectors: []mailsec.Protector{pgp}},
		"declared, fits":              {Policy: labPolicy{needs: mailsec.PolicyNeeds{Protection: mailsec.ProtectionRequired, Methods: []string{"smime"}}}, Protectors: []mailsec.Protector{smime}},
		"pinned":                      {Policy: mailsec.WithSecurity(def, mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{{1}}})},
	} {
		if _, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, o); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
