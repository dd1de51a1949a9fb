package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
)

func corpusFile(name string) string { return filepath.Join("..", "..", "bounce", "testdata", name) }

func TestBounceExplain(t *testing.T) {
	t.Parallel()
	r := runCmd(t, "", nil, "bounce", "explain", corpusFile("exim-failed.eml"))
	wantCode(t, r, exitOK)
	full := mailsec.EnhancedCode{5, 2, 2}.Explain().Text
	for _, s := range []string{
		"Report from mx.example.net on message <20250304101501.5e6f70@app.example.com>, envelope ID ms-0c4e19f2d3",
		"full@example.org: failed, 5.2.2\n  what it means: " + full,
		"moved@example.org: failed, 5.0.0",
		"will not help",
		"mx1.example.org: 552 5.2.2 Mailbox full",
	} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("output lacks %q", s)
		}
	}
	if r.stderr != "" {
		t.Errorf("stderr: %q", r.stderr)
	}

	b, err := os.ReadFile(corpusFile("postfix-delayed.eml"))
	if err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, string(b), nil, "bounce", "explain", "-")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "slow@example.org: delayed, 4.4.1") || !strings.Contains(r.stdout, "still trying, until 2025-03-09 10:18:40Z") {
		t.Errorf("delay warning not explained: %s", r.stdout)
	}
}

func TestBounceExplainJSON(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"bounce", "explain", corpusFile("gmail-failed.eml"), "-json"},
		{"bounce", "explain", "-json", corpusFile("gmail-failed.eml")},
	} {
		r := runCmd(t, "", nil, args...)
		wantCode(t, r, exitOK)
		var v struct {
			MessageID  string `json:"message_id"`
			Recipients []struct {
				FinalRecipient string               `json:"final_recipient"`
				Status         mailsec.EnhancedCode `json:"status"`
				Explanation    mailsec.Explanation  `json:"explanation"`
				Temporary      *bool                `json:"temporary"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("%v: %s", err, r.stdout)
		}
		want := mailsec.EnhancedCode{5, 7, 26}
		if v.MessageID != "20250304101500.9a8b7c@app.example.com" || len(v.Recipients) != 1 || v.Recipients[0].FinalRecipient != "auth-fail@example.org" ||
			v.Recipients[0].Status != want || v.Recipients[0].Explanation != want.Explain() || v.Recipients[0].Temporary == nil || *v.Recipients[0].Temporary {
			t.Errorf("JSON: %+v", v)
		}
	}
}

func TestBounceExplainRefused(t *testing.T) {
	t.Parallel()
	r := runCmd(t, "", nil, "bounce", "explain", corpusFile("qmail-qsbmf.eml"))
	wantCode(t, r, exitFail)
	if !strings.Contains(r.stderr, "not a delivery status notification") || !strings.Contains(r.stderr, "qmail") || r.stdout != "" {
		t.Errorf("refusal not said: %q %q", r.stdout, r.stderr)
	}
	r = runCmd(t, "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.example\n\nAction: failed\n--b--\n", nil, "bounce", "explain", "-")
	wantCode(t, r, exitFail)
	if !strings.Contains(r.stderr, "malformed") || !strings.Contains(r.stderr, "Final-Recipient") {
		t.Errorf("malformed DSN: %q", r.stderr)
	}
}

func TestBounceUsage(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "none.eml")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bounce"}, "no subcommand"},
		{[]string{"bounce", "digest"}, `unknown subcommand "digest"`},
		{[]string{"bounce", "explain"}, "FILE is required"},
		{[]string{"bounce", "explain", missing}, "no such file"},
		{[]string{"bounce", "explain", corpusFile("exim-failed.eml"), "other.eml"}, "unexpected argument"},
		{[]string{"bounce", "explain", "-xml", corpusFile("exim-failed.eml")}, "unknown flag -xml"},
	} {
		r := runCmd(t, "", nil, c.args...)
		wantCode(t, r, exitUsage)
		if !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "run 'mailsec bounce") || r.stdout != "" {
			t.Errorf("%v: stderr %q, want %q and where to find the usage", c.args, r.stderr, c.want)
		}
	}
	r := runCmd(t, "", nil, "help", "bounce")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "Exit status") {
		t.Errorf("help: %q", r.stdout)
	}
	r = runCmd(t, "", nil, "bounce", "explain", "-h")
	wantCode(t, r, exitOK)
}
