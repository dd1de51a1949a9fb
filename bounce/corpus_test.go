package bounce_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
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
	}},
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
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tc.want)
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
