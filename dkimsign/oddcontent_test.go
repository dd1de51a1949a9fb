package dkimsign_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dkimsign"
	"github.com/mailsec/mailsec/mailsectest"
)

type rawContent string

func (c rawContent) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, string(c))
	return int64(n), err
}

func deliverRaw(t *testing.T, o *dkimsign.Options, content string) ([]mailsectest.Delivery, error) {
	t.Helper()
	rec := &mailsectest.RecordingTransport{}
	tr, err := dkimsign.NewTransport(rec, o)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Deliver(context.Background(), &mailsec.Delivery{From: "b@example.com", To: []string{"ann@example.org"}, Content: rawContent(content)})
	return rec.Deliveries(), err
}

// Content of every odd shape arrives with signatures that verify.
func TestOddContentVerifies(t *testing.T) {
	ss := signers(t, "example.com")
	o := &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": ss}, SpoolMemory: 64}
	for name, c := range map[string]string{
		"bare LF":            "From: a@example.com\nSubject: x\n\nline\n.dot\n..two\n",
		"bare CR":            "From: a@example.com\rSubject: x\r\rline\r.dot\r",
		"no final CRLF":      "From: a@example.com\r\nSubject: x\r\n\r\nlast",
		"empty body":         "From: a@example.com\r\nSubject: x\r\n\r\n",
		"trailing blank":     "From: a@example.com\r\n\r\nx\r\n\r\n\r\n",
		"folded from":        "From: Someone\r\n <a@example.com>\r\nSubject: x\r\n\r\nx\r\n",
		"display name @":     "From: \"evil@example.net\" <a@example.com>\r\n\r\nx\r\n",
		"encoded-word":       "From: =?utf-8?q?evil=40example.net?= <a@example.com>\r\n\r\nx\r\n",
		"lower-case from":    "from: a@example.com\r\n\r\nx\r\n",
		"long body":          "From: a@example.com\r\n\r\n" + strings.Repeat(strings.Repeat("y", 900)+"\r\n.\r\n", 300),
		"header split CRLF":  "From: a@example.com\r\nSubject: x\r\r\n\nbody\r\n",
		"long header":        "From: a@example.com\r\nX-A: " + strings.Repeat("a ", 400) + "\r\n\r\nb\r\n",
		"whitespace in body": "From: a@example.com\r\n\r\n \t x  \t\r\n\t\r\n",
	} {
		ds, err := deliverRaw(t, o, c)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(ds) != 1 {
			t.Errorf("%s: %d deliveries", name, len(ds))
			continue
		}
		vs := verify(t, ds[0].Data, ss...)
		if len(vs) != 2 {
			t.Errorf("%s: %d signatures", name, len(vs))
		}
		for _, v := range vs {
			if v.Err != nil {
				t.Errorf("%s: %s: %v\n%q", name, v.Domain, v.Err, ds[0].Data)
			}
		}
	}
}

// Nothing is sent, signed or not, for a From the signers do not cover.
func TestUncoveredFromRefusedNothingSent(t *testing.T) {
	ss := signers(t, "example.com")
	o := &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": ss}}
	for name, c := range map[string]string{
		"two From":            "From: a@example.com\r\nFrom: b@example.net\r\n\r\nx\r\n",
		"two From cases":      "From: a@example.com\r\nFROM: b@example.net\r\n\r\nx\r\n",
		"two addresses":       "From: a@example.com, b@example.net\r\n\r\nx\r\n",
		"other domain":        "From: a@example.net\r\n\r\nx\r\n",
		"subdomain":           "From: a@sub.example.com\r\n\r\nx\r\n",
		"lookalike":           "From: a@example.com.evil.net\r\n\r\nx\r\n",
		"no From":             "Subject: x\r\n\r\nx\r\n",
		"space before colon":  "From: a@example.com\r\nFrom : b@example.net\r\n\r\nx\r\n",
		"tab before colon":    "From: a@example.com\r\nFrom\t: b@example.net\r\n\r\nx\r\n",
		"only spaced From":    "Subject: s\r\nFrom : a@example.com\r\n\r\nx\r\n",
		"group":               "From: g: a@example.com, b@example.net;\r\n\r\nx\r\n",
		"empty":               "",
		"header only garbage": "garbage\r\n\r\n",
		"leading blank":       "\r\nFrom: a@example.com\r\n\r\nx\r\n",
		"route addr":          "From: <@example.com:a@example.net>\r\n\r\nx\r\n",
		"obs from in body":    "Subject: x\r\n\r\nFrom: a@example.com\r\n",
		"comment domain":      "From: a@(example.com)example.net\r\n\r\nx\r\n",
	} {
		ds, err := deliverRaw(t, o, c)
		if err == nil || len(ds) != 0 {
			t.Errorf("%s: %d deliveries, err %v; want refused", name, len(ds), err)
			continue
		}
		var de *dkimsign.DomainError
		if !errors.As(err, &de) && !errors.Is(err, mailsec.ErrContent) {
			t.Errorf("%s: %v, want a *DomainError or ErrContent", name, err)
		}
	}
}
