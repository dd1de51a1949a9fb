package bounce_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
)

func code(s string) mailsec.EnhancedCode {
	c, ok := mailsec.ParseEnhancedCode(s)
	if !ok {
		panic("bad code in test: " + s)
	}
	return c
}

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// corpus is what each file in testdata must parse to (see
// testdata/README.md for where each format comes from).
var corpus = []struct {
	file string
	want *bounce.Report
	err  error // the kind of error instead
	// errText is what the error's text must say.
	errText string
	// codes are the recipients' Code(), whose explanations Explain gives.
	codes []string
}{
	{file: "postfix-failed.eml", want: &bounce.Report{
		ReportingMTA: "relay.example.net",
		EnvelopeID:   "ms-7f3a9c2e41",
		ArrivalDate:  date("2025-03-04T10:15:01Z"),
		MessageID:    "20250304101500.a1b2c3@app.example.com",
		Recipients: []bounce.Recipient{{
			FinalRecipient:    "nobody@example.org",
			OriginalRecipient: "nobody@example.org",
			Action:            bounce.ActionFailed,
			Status:            code("5.1.1"),
			RemoteMTA:         "mx1.example.org",
			DiagnosticType:    "smtp",
			DiagnosticCode:    "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
		}},
	}, codes: []string{"5.1.1"}},
	{file: "postfix-delayed.eml", want: &bounce.Report{
		ReportingMTA: "relay.example.net",
		EnvelopeID:   "ms-51d0be77aa",
		ArrivalDate:  date("2025-03-04T10:18:40Z"),
		MessageID:    "20250304101839.77e0d1@app.example.com",
		Recipients: []bounce.Recipient{{
			FinalRecipient:    "slow@example.org",
			OriginalRecipient: "slow@example.org",
			Action:            bounce.ActionDelayed,
			Status:            code("4.4.1"),
			DiagnosticType:    "x-postfix",
			DiagnosticCode:    "connect to mx2.example.org[192.0.2.40]:25: Connection timed out",
			WillRetryUntil:    date("2025-03-09T10:18:40Z"),
		}},
	}, codes: []string{"4.4.1"}},
	{file: "exim-failed.eml", want: &bounce.Report{
		ReportingMTA: "mx.example.net",
		EnvelopeID:   "ms-0c4e19f2d3",
		MessageID:    "20250304101501.5e6f70@app.example.com",
		Recipients: []bounce.Recipient{{
			FinalRecipient: "full@example.org",
			Action:         bounce.ActionFailed,
			Status:         code("5.0.0"),
			RemoteMTA:      "mx1.example.org",
			DiagnosticType: "smtp",
			DiagnosticCode: "552 5.2.2 Mailbox full",
		}, {
			FinalRecipient: "moved@example.org",
			Action:         bounce.ActionFailed,
			Status:         code("5.0.0"),
			RemoteMTA:      "mx1.example.org",
			DiagnosticType: "smtp",
			DiagnosticCode: "550 User has moved",
		}},
	}, codes: []string{"5.2.2", "5.0.0"}},
	{file: "sendmail-failed.eml", want: &bounce.Report{
		ReportingMTA:    "mx.example.net",
		ReceivedFromMTA: "app.example.com",
		ArrivalDate:     date("2025-03-04T10:15:01Z"),
		MessageID:       "20250304101500.0f9e8d@app.example.com",
		Recipients: []bounce.Recipient{{
			FinalRecipient: "policy@example.org",
			Action:         bounce.ActionFailed,
			Status:         code("5.7.1"),
			RemoteMTA:      "mx1.example.org",
			DiagnosticType: "smtp",
			DiagnosticCode: "550 5.7.1 Message rejected by local policy",
			LastAttempt:    date("2025-03-04T10:15:03Z"),
		}},
	}, codes: []string{"5.7.1"}},
	{file: "exchange-online-failed.eml", want: &bounce.Report{
		ReportingMTA:    "DM6PR01MB0001.namprd01.prod.outlook.example",
		ReceivedFromMTA: "app.example.com",
		ArrivalDate:     date("2025-03-04T10:15:02Z"),
		MessageID:       "20250304101500.c0ffee@app.example.com",
		Recipients: []bounce.Recipient{{
			FinalRecipient:    "unknown@contoso.example",
			OriginalRecipient: "unknown@contoso.example",
			Action:            bounce.ActionFailed,
			Status:            code("5.1.10"),
			DiagnosticType:    "smtp",
			DiagnosticCode:    "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient unknown@contoso.example not found by SMTP address lookup",
		}},
	}, codes: []string{"5.1.10"}},
	{file: "gmail-failed.eml", want: &bounce.Report{
		ReportingMTA:    "googlemail.example",
		ReceivedFromMTA: "app.example.com",
		ArrivalDate:     date("2025-03-04T10:15:01Z"),
		MessageID:       "20250304101500.9a8b7c@app.example.com",
		Recipients: []bounce.Recipient{{
			FinalRecipient: "auth-fail@example.org",
			Action:         bounce.ActionFailed,
			Status:         code("5.7.26"),
			RemoteMTA:      "mx1.example.org",
			DiagnosticType: "smtp",
			DiagnosticCode: "550-5.7.26 Unauthenticated email from app.example.com is not accepted 550-5.7.26 due to domain's DMARC policy. Please contact the administrator of 550 5.7.26 app.example.com domain if this was a legitimate mail.",
			LastAttempt:    date("2025-03-04T10:15:03Z"),
		}},
	}, codes: []string{"5.7.26"}},
	{file: "global-dsn.eml", want: &bounce.Report{
		Global:       true,
		ReportingMTA: "mx.example.net",
		EnvelopeID:   "ms-2b7c1d9e00",
		MessageID:    "20250304101500.6533aa@app.example.com",
		Recipients: []bounce.Recipient{{
			FinalRecipient:    "jörg@bücher.example",
			OriginalRecipient: "jörg@bücher.example",
			Action:            bounce.ActionFailed,
			Status:            code("5.2.1"),
			RemoteMTA:         "mx.bücher.example",
			DiagnosticType:    "smtp",
			DiagnosticCode:    "550 5.2.1 Postfach deaktiviert",
		}},
	}, codes: []string{"5.2.1"}},
	{file: "qmail-qsbmf.eml", err: bounce.ErrNotDSN, errText: "qmail"},
	{file: "arf-feedback-report.eml", err: bounce.ErrNotDSN, errText: `"feedback-report"`},
}

func TestCorpus(t *testing.T) {
	for _, tc := range corpus {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := bounce.Parse(f)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Parse = %+v, %v; want an error matching %v", got, err, tc.err)
				}
				var be *bounce.Error
				if !errors.As(err, &be) || be.Temporary() || mailsec.IsTemporary(err) {
					t.Errorf("error %v: want a permanent *bounce.Error", err)
				}
				if !strings.Contains(err.Error(), tc.errText) {
					t.Errorf("error %q does not say %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tc.want)
			}
			if len(got.Recipients) != len(tc.codes) {
				t.Fatalf("%d recipients, %d codes in the test", len(got.Recipients), len(tc.codes))
			}
			for i, r := range got.Recipients {
				c := code(tc.codes[i])
				x := r.Explain()
				if r.Code() != c || x.Code != c || x.Text != c.Explain().Text {
					t.Errorf("recipient %d: Code %v, Explain %+v; want %v, %q", i, r.Code(), x, c, c.Explain().Text)
				}
				if want := r.Action == bounce.ActionDelayed || c[0] == 4; r.Temporary() != want {
					t.Errorf("recipient %d: Temporary %v, want %v", i, r.Temporary(), want)
				}
			}
		})
	}
}

// TestCorpusCRLF parses each DSN of the corpus again with CRLF line
// endings, as it arrives over SMTP, and wants the same report.
func TestCorpusCRLF(t *testing.T) {
	for _, tc := range corpus {
		if tc.want == nil {
			continue
		}
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := bounce.Parse(bytesReader(crlf(b)))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}
