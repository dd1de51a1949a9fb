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
		if err == nil || !strings.Contains(err.Error(), "Options.Protectors[1]") {
			t.Errorf("%s: error %v, want a refusal naming Options.Protectors[1]", c.name, err)
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
