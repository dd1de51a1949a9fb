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
