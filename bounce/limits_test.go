package bounce_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/mailsec/mailsec/bounce"
)

// dsn builds a minimal DSN around a status part and a returned header.
func dsn(header, status string) string {
	return "From: MAILER-DAEMON@relay.example.net\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=b1\r\n" + header +
		"\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nIt failed.\r\n" +
		"--b1\r\nContent-Type: message/delivery-status\r\n\r\n" + status +
		"\r\n--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <m1@app.example.com>\r\n\r\n" +
		"--b1--\r\n"
}

const goodStatus = "Reporting-MTA: dns; relay.example.net\r\n\r\n" +
	"Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"

func TestMinimal(t *testing.T) {
	rep, err := bounce.Parse(strings.NewReader(dsn("", goodStatus)))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Recipients) != 1 || rep.Recipients[0].FinalRecipient != "a@example.org" || rep.MessageID != "m1@app.example.com" {
		t.Fatalf("%+v", rep)
	}
}

func parseErr(t *testing.T, p *bounce.Parser, msg string, kind error, says ...string) {
	t.Helper()
	rep, err := p.Parse(strings.NewReader(msg))
	if !errors.Is(err, kind) || rep != nil {
		t.Fatalf("Parse = %+v, %v; want an error matching %v", rep, err, kind)
	}
	var be *bounce.Error
	if !errors.As(err, &be) || be.Temporary() {
		t.Fatalf("%v: not a permanent *bounce.Error", err)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

func TestNotDSN(t *testing.T) {
	var p bounce.Parser
	parseErr(t, &p, "From: a@example.org\r\nSubject: hi\r\n\r\nHello.\r\n", bounce.ErrNotDSN, "text/plain")
	parseErr(t, &p, "Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n--x--\r\n", bounce.ErrNotDSN, "disposition-notification")
	parseErr(t, &p, "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n", bounce.ErrNotDSN)
	parseErr(t, &p, "Content-Type: multipart/report; report-type=\r\n\r\n", bounce.ErrNotDSN, "Content-Type")
	parseErr(t, &p, "", bounce.ErrNotDSN)
}

func TestMalformed(t *testing.T) {
	var p bounce.Parser
	for _, c := range []struct {
		name, status string
		says         []string
	}{
		{"no Status", "Reporting-MTA: dns; r.example.net\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: failed\r\n", []string{"Status", "recipient block 1"}},
		{"no Action", "Reporting-MTA: dns; r.example.net\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nStatus: 5.1.1\r\n", []string{"Action"}},
		{"no Final-Recipient", "Reporting-MTA: dns; r.example.net\r\n\r\nAction: failed\r\nStatus: 5.1.1\r\n", []string{"Final-Recipient"}},
		{"unknown action", "Reporting-MTA: dns; r.example.net\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: exploded\r\nStatus: 5.1.1\r\n", []string{"Action", `"exploded"`}},
		{"bad status", "Reporting-MTA: dns; r.example.net\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 6.1.1\r\n", []string{"Status", `"6.1.1"`}},
		{"no recipients", "Reporting-MTA: dns; r.example.net\r\n", []string{"no per-recipient fields"}},
		{"second recipient broken", goodStatus + "\r\nFinal-Recipient: rfc822; b@example.org\r\nAction: failed\r\n", []string{"recipient block 2", "Status"}},
		{"not a header", "Reporting-MTA: dns; r.example.net\r\n\r\nthis is not a field\r\n", []string{"recipient block 1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			parseErr(t, &p, dsn("", c.status), bounce.ErrMalformed, c.says...)
		})
	}
	t.Run("no status part", func(t *testing.T) {
		msg := "Content-Type: multipart/report; report-type=delivery-status; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n--b1--\r\n"
		parseErr(t, &p, msg, bounce.ErrMalformed, "without a message/delivery-status part")
	})
	t.Run("no boundary", func(t *testing.T) {
		parseErr(t, &p, "Content-Type: multipart/report; report-type=delivery-status\r\n\r\nx\r\n", bounce.ErrMalformed, "boundary")
	})
	t.Run("unknown transfer encoding", func(t *testing.T) {
		msg := strings.Replace(dsn("", goodStatus), "Content-Type: message/delivery-status\r\n", "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: x-uuencode\r\n", 1)
		parseErr(t, &p, msg, bounce.ErrMalformed, "Content-Transfer-Encoding", "x-uuencode")
	})
	t.Run("unterminated", func(t *testing.T) {
		msg := dsn("", goodStatus)
		parseErr(t, &p, msg[:strings.Index(msg, "Action:")], bounce.ErrMalformed)
	})
}

// An encoded status part (RFC 6533 §6.2 allows it for the global form)
// is decoded.
func TestEncodedStatusPart(t *testing.T) {
	for _, cte := range []string{"base64", "quoted-printable"} {
		var enc string
		if cte == "base64" {
			enc = "UmVwb3J0aW5nLU1UQTogZG5zOyByZWxheS5leGFtcGxlLm5ldA0KDQpGaW5hbC1SZWNpcGll\r\nbnQ6IHJmYzgyMjsgYUBleGFtcGxlLm9yZw0KQWN0aW9uOiBmYWlsZWQNClN0YXR1czogNS4x\r\nLjENCg==\r\n"
		} else {
			enc = "Reporting-MTA: dns; relay.example.net\r\n\r\nFinal-Recipient: rfc822; a=\r\n@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
		}
		msg := strings.Replace(dsn("", enc), "Content-Type: message/delivery-status\r\n", "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: "+cte+"\r\n", 1)
		rep, err := bounce.Parse(strings.NewReader(msg))
		if err != nil {
			t.Fatalf("%s: %v", cte, err)
		}
		if r := rep.Recipients[0]; r.FinalRecipient != "a@example.org" || r.Status.String() != "5.1.1" || rep.ReportingMTA != "relay.example.net" {
			t.Errorf("%s: %+v", cte, rep)
		}
	}
}

// Text from the report is cleaned: no control characters reach the
// application's logs or terminal.
func TestCleaned(t *testing.T) {
	status := "Reporting-MTA: dns; relay.example.net\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
		"Diagnostic-Code: smtp; 550 \x1b[31mred\x1b[0m \u202egnp.exe\r\n"
	rep, err := bounce.Parse(strings.NewReader(dsn("", status)))
	if err != nil {
		t.Fatal(err)
	}
	if d := rep.Recipients[0].DiagnosticCode; strings.ContainsAny(d, "\x1b\u202e") {
		t.Errorf("diagnostic not cleaned: %q", d)
	}
}

func TestLimits(t *testing.T) {
	postfix, err := os.ReadFile("testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("size", func(t *testing.T) {
		p := &bounce.Parser{Limits: bounce.Limits{MaxSize: int64(len(postfix))}}
		if _, err := p.Parse(bytes.NewReader(postfix)); err != nil {
			t.Fatalf("at the limit: %v", err)
		}
		p.Limits.MaxSize--
		_, err := p.Parse(bytes.NewReader(postfix))
		if !errors.Is(err, bounce.ErrTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(len(postfix)-1)) {
			t.Fatalf("one octet over: %v", err)
		}
	})
	t.Run("trailing data counts", func(t *testing.T) {
		p := &bounce.Parser{Limits: bounce.Limits{MaxSize: int64(len(postfix)) + 100}}
		big := append(bytes.Clone(postfix), bytes.Repeat([]byte("x"), 200)...)
		if _, err := p.Parse(bytes.NewReader(big)); !errors.Is(err, bounce.ErrTooLarge) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("header line", func(t *testing.T) {
		var p bounce.Parser
		r := io.MultiReader(strings.NewReader("X-Long: "), &endless{}) // never ends
		_, err := p.Parse(r)
		if !errors.Is(err, bounce.ErrTooLarge) || !strings.Contains(err.Error(), "message header") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("header fields", func(t *testing.T) {
		p := &bounce.Parser{Limits: bounce.Limits{MaxHeaderFields: 50}}
		parseErr(t, p, dsn(strings.Repeat("X-A: b\r\n", 50), goodStatus), bounce.ErrTooLarge, "header fields")
		if _, err := p.Parse(strings.NewReader(dsn(strings.Repeat("X-A: b\r\n", 40), goodStatus))); err != nil {
			t.Fatalf("under the limit: %v", err)
		}
	})
	t.Run("headers just under the limit", func(t *testing.T) {
		p := &bounce.Parser{Limits: bounce.Limits{MaxHeaderBytes: 2000}}
		pad := "X-Pad: " + strings.Repeat("p", 1800) + "\r\n"
		msg := strings.Replace(dsn(pad, goodStatus), "Content-Type: message/delivery-status\r\n", pad+"Content-Type: message/delivery-status\r\n", 1)
		msg = msg + strings.Repeat("epilogue\r\n", 2000)
		if _, err := p.Parse(strings.NewReader(msg)); err != nil {
			t.Fatalf("%v", err)
		}
		parseErr(t, p, strings.Replace(msg, "X-Pad: ", "X-Pad: "+strings.Repeat("q", 300), 1), bounce.ErrTooLarge, "message header")
	})
	t.Run("part header", func(t *testing.T) {
		p := &bounce.Parser{Limits: bounce.Limits{MaxHeaderBytes: 1000}}
		msg := strings.Replace(dsn("", goodStatus), "Content-Type: message/delivery-status\r\n", "X-Pad: "+strings.Repeat("p", 20000)+"\r\nContent-Type: message/delivery-status\r\n", 1)
		parseErr(t, p, msg, bounce.ErrTooLarge, "part 2")
	})
	t.Run("depth", func(t *testing.T) {
		p := &bounce.Parser{Limits: bounce.Limits{MaxDepth: 5}}
		parseErr(t, p, nested(5), bounce.ErrTooLarge, "nested")
		if _, err := p.Parse(strings.NewReader(nested(3))); err != nil {
			t.Fatalf("3 levels: %v", err)
		}
	})
	t.Run("parts", func(t *testing.T) {
		p := &bounce.Parser{Limits: bounce.Limits{MaxParts: 10}}
		msg := strings.Replace(dsn("", goodStatus), "--b1\r\nContent-Type: text/plain\r\n\r\nIt failed.\r\n", strings.Repeat("--b1\r\nContent-Type: text/plain\r\n\r\nIt failed.\r\n", 10), 1)
		parseErr(t, p, msg, bounce.ErrTooLarge, "more than 10 parts")
	})
	t.Run("recipients", func(t *testing.T) {
		p := &bounce.Parser{Limits: bounce.Limits{MaxRecipients: 3}}
		block := "\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
		parseErr(t, p, dsn("", goodStatus+strings.Repeat(block, 3)), bounce.ErrTooLarge, "more than 3 recipients")
		rep, err := p.Parse(strings.NewReader(dsn("", goodStatus+strings.Repeat(block, 2))))
		if err != nil || len(rep.Recipients) != 3 {
			t.Fatalf("3 recipients: %v", err)
		}
	})
	t.Run("status part", func(t *testing.T) {
		p := &bounce.Parser{Limits: bounce.Limits{MaxStatusBytes: 2000}}
		parseErr(t, p, dsn("", goodStatus+"Diagnostic-Code: smtp; 550"+strings.Repeat(" x", 2000)+"\r\n"), bounce.ErrTooLarge, "message/delivery-status")
	})
}

// nested wraps a DSN in n levels of multipart/mixed.
func nested(n int) string {
	msg := dsn("", goodStatus)
	for i := range n {
		b := fmt.Sprintf("n%d", i)
		hdr, body, _ := strings.Cut(msg, "\r\n\r\n")
		ct := hdr[strings.Index(hdr, "Content-Type:"):]
		msg = "Content-Type: multipart/mixed; boundary=" + b + "\r\n\r\n--" + b + "\r\n" + ct + "\r\n\r\n" + body + "\r\n--" + b + "--\r\n"
	}
	return msg
}

// endless reads "a" forever.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.n += int64(len(p))
	return len(p), nil
}

// An error of the reader is returned as it is, not as a kind of refusal.
func TestReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	msg := dsn("", goodStatus)
	_, err := bounce.Parse(io.MultiReader(strings.NewReader(msg[:200]), errReader{boom}))
	if !errors.Is(err, boom) || errors.Is(err, bounce.ErrMalformed) || errors.Is(err, bounce.ErrNotDSN) || errors.Is(err, bounce.ErrTooLarge) {
		t.Fatalf("%v", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// Parse drains what it is given, so that a pipe (a Postfix pipe
// transport) sees its message taken.
func TestDrains(t *testing.T) {
	r := strings.NewReader(dsn("", goodStatus) + "epilogue\r\n")
	if _, err := bounce.Parse(r); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 0 {
		t.Errorf("%d octets left", r.Len())
	}
}
