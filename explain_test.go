package mailsec_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
)

// Every class, and the detail codes support people meet most, have a
// sentence of their own and the retry advice of their class.
func TestExplainCommonCodes(t *testing.T) {
	for _, c := range []struct {
		code  string
		words string // a word the sentence must contain
		retry bool
	}{
		{"5.1.1", "does not exist", false},
		{"5.1.2", "domain", false},
		{"5.1.10", "null MX", false},
		{"5.2.2", "full", false},
		{"4.2.2", "full", true},
		{"5.2.3", "larger", false},
		{"5.3.4", "larger", false},
		{"4.4.1", "did not answer", true},
		{"4.4.7", "gave up", true},
		{"5.4.4", "route", false},
		{"4.7.0", "policy", true},
		{"5.7.1", "policy", false},
		{"5.7.5", "cryptographic", false},
		{"5.7.10", "TLS", false},
		{"5.7.26", "DMARC", false},
		{"5.7.23", "SPF", false},
		{"5.7.30", "REQUIRETLS", false},
		{"2.0.0", "accepted", false},
	} {
		x := mustCode(t, c.code).Explain()
		if !x.Listed || !strings.Contains(x.Text, c.words) || x.Retry != c.retry || x.Code.String() != c.code {
			t.Errorf("%s: %+v, want a listed sentence with %q, retry %v", c.code, x, c.words, c.retry)
		}
		if !strings.HasSuffix(x.Text, ".") || strings.Count(x.Text, ". ") > 0 {
			t.Errorf("%s: %q is not one sentence", c.code, x.Text)
		}
	}
}

// Every code of every subject of RFC 3463 (X.0.0 to X.7.30) has a
// sentence; a code the vocabulary does not list falls back to its
// subject's, and says so.
func TestExplainEveryCode(t *testing.T) {
	seen := map[string]string{}
	for class := 4; class <= 5; class++ {
		for subject := 0; subject <= 7; subject++ {
			for detail := 0; detail <= 40; detail++ {
				x := mailsec.EnhancedCode{class, subject, detail}.Explain()
				if x.Text == "" || x.Retry != (class == 4) {
					t.Fatalf("%d.%d.%d: %+v", class, subject, detail, x)
				}
				if x.Listed {
					seen[x.Code.String()] = x.Text
				}
				if detail == 0 && !x.Listed {
					t.Errorf("%d.%d.0 is not listed", class, subject)
				}
			}
		}
	}
	if len(seen) < 2*60 {
		t.Errorf("only %d codes listed", len(seen))
	}
	if x := (mailsec.EnhancedCode{5, 1, 99}).Explain(); x.Listed || x.Text != (mailsec.EnhancedCode{5, 1, 0}).Explain().Text {
		t.Errorf("5.1.99: %+v, want the unlisted sentence for subject 1", x)
	}
	if x := (mailsec.EnhancedCode{5, 9, 1}).Explain(); x.Listed || x.Text == "" || x.Retry {
		t.Errorf("5.9.1: %+v", x)
	}
	if x := (mailsec.EnhancedCode{}).Explain(); x.Listed || x.Text == "" || x.Retry {
		t.Errorf("zero code: %+v", x)
	}
	if s := mustCode(t, "4.4.1").Explain().String(); !strings.HasSuffix(s, "Trying again later can help.") {
		t.Errorf("String = %q", s)
	}
	if s := mustCode(t, "5.1.1").Explain().String(); !strings.HasSuffix(s, "will not help.") {
		t.Errorf("String = %q", s)
	}
}

func TestExplainError(t *testing.T) {
	for _, c := range []struct {
		name  string
		err   error
		code  string // "" for no explanation
		retry bool
	}{
		{"enhanced code", &mailsec.SMTPError{Host: "mx.example.org", Command: "RCPT", Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 2, 2}, Message: "full"}, "5.2.2", false},
		{"basic code only", &mailsec.SMTPError{Host: "mx.example.org", Command: "MAIL", Code: 421, Message: "closing"}, "4.3.2", true},
		{"unknown basic code", &mailsec.SMTPError{Host: "mx.example.org", Command: "RCPT", Code: 559, Message: "no"}, "5.0.0", false},
		{"wrapped", &mailsec.RecipientError{Recipient: "a@example.org", Err: &mailsec.SMTPError{Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 7, 26}}}, "5.7.26", false},
		{"requiretls", &mailsec.SecurityError{Host: "mx.example.org", Category: mailsec.ErrRequireTLS}, "5.7.30", false},
		{"network", &mailsec.NetworkError{Host: "mx.example.org", Op: "dial", Err: errors.New("refused")}, "4.4.1", true},
		{"network mid-way", &mailsec.NetworkError{Host: "mx.example.org", Op: "DATA", Err: errors.New("reset")}, "4.4.2", true},
		{"certificate", &mailsec.SecurityError{Host: "mx.example.org", Category: mailsec.ErrCertificate}, "", false},
		{"validation", &mailsec.ValidationError{Field: "To[0]", Reason: "bad"}, "", false},
		{"nil", nil, "", false},
	} {
		x, ok := mailsec.ExplainError(c.err)
		if ok != (c.code != "") || (ok && (x.Code.String() != c.code || x.Retry != c.retry || x.Text != x.Code.Explain().Text)) {
			t.Errorf("%s: ExplainError = %+v, %v; want %q, retry %v", c.name, x, ok, c.code, c.retry)
		}
	}
}

// A refusal during Send carries, in the Receipt and its JSON form, the
// explanation of its status code, in the words a bounce with the same
// code gets; a failure without a code has none.
func TestReceiptExplainsRefusal(t *testing.T) {
	tr := transportFunc(func(_ context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
		res := &mailsec.DeliveryResult{Recipients: make([]mailsec.RecipientResult, len(d.To))}
		for i, to := range d.To {
			res.Recipients[i].Address = to
			switch to {
			case "gone@example.org":
				res.Recipients[i].Err = &mailsec.SMTPError{Host: "smtp.example.com", Command: "RCPT", Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Message: "no such user"}
			case "later@example.org":
				res.Recipients[i].Err = &mailsec.SMTPError{Host: "smtp.example.com", Command: "RCPT", Code: 452, EnhancedCode: mailsec.EnhancedCode{4, 2, 2}, Message: "over quota"}
			default:
				res.Recipients[i].Accepted = true
			}
		}
		return res, nil
	})
	policy := mailsec.PolicyFunc(func(ctx context.Context, m *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
		if r.Address == "secret@example.org" {
			return mailsec.Plan{Protection: mailsec.ProtectionRequired}, nil
		}
		return mailsec.Plan{}, nil
	})
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	m := base()
	m.To = []string{"ann@example.org", "gone@example.org", "later@example.org", "secret@example.org"}
	rec, err := s.Send(context.Background(), m)
	if err == nil {
		t.Fatal("no error")
	}
	by := map[string]mailsec.RecipientReceipt{}
	for _, r := range rec.Recipients {
		by[r.Address] = r
	}
	for addr, want := range map[string]string{"gone@example.org": "5.1.1", "later@example.org": "4.2.2"} {
		f := by[addr].Failure
		if f == nil || f.Explanation == nil {
			t.Fatalf("%s: failure %+v, want an explanation", addr, f)
		}
		if x := mustCode(t, want).Explain(); *f.Explanation != x || f.Explanation.Retry != f.Temporary {
			t.Errorf("%s: explanation %+v, want %+v with retry %v", addr, *f.Explanation, x, f.Temporary)
		}
	}
	if f := by["secret@example.org"].Failure; f == nil || f.Explanation != nil {
		t.Errorf("secret@example.org: failure %+v, want one without an explanation", f)
	}
	if by["ann@example.org"].Failure != nil {
		t.Errorf("ann@example.org: accepted, but has a failure")
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var back mailsec.Receipt
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"explanation":{"code":"5.1.1","text":"The recipient's address does not exist`) {
		t.Errorf("JSON form lacks the explanation: %s", b)
	}
	for _, r := range back.Recipients {
		if r.Address == "gone@example.org" && (r.Failure == nil || r.Failure.Explanation == nil || *r.Failure.Explanation != *by[r.Address].Failure.Explanation) {
			t.Errorf("explanation lost in the JSON round trip: %+v", r.Failure)
		}
	}
}

func mustCode(t *testing.T, s string) mailsec.EnhancedCode {
	t.Helper()
	c, ok := mailsec.ParseEnhancedCode(s)
	if !ok {
		t.Fatalf("bad code %q", s)
	}
	return c
}
