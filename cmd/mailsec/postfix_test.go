package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/mailsectest"
)

// TestSendPostfix runs mailsec send against a real Postfix on both of its
// submission ports and reads the result back from the Maildir.
func TestSendPostfix(t *testing.T) {
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(mailsectest.CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := mailsectest.PEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	pf := postfixtest.Start(t, postfixtest.Config{CertPEM: chain, KeyPEM: key, Domain: "example.test",
		Mailboxes: []string{"ann", "bob"}, Users: map[string]string{"alice": "pf-secret"}})
	ca1 := writeFile(t, "ca.pem", ca.CertPEM())
	attach := writeFile(t, "report.pdf", []byte("%PDF-1.7 mailsec"))
	env := map[string]string{"MAILSEC_PASSWORD": "pf-secret"}

	n := 0
	for _, c := range []struct{ addr, tls string }{{pf.SubmissionAddr, "starttls"}, {pf.SubmissionsAddr, "implicit"}} {
		subject := "via " + c.tls
		r := runCmd(t, "Hello from the command line.\n", env, "send", "-server", c.addr, "-tls", c.tls, "-ca", ca1,
			"-user", "alice", "-from", "app@example.test", "-to", "ann@example.test", "-bcc", "bob@example.test",
			"-subject", subject, "-body", "-", "-attach", attach)
		wantCode(t, r, 0)
		if lines := progressLines(r.stderr); len(lines) != 2 {
			t.Fatalf("progress lines: %q", lines)
		}
		if strings.Contains(r.stdout+r.stderr, "pf-secret") {
			t.Fatal("password printed")
		}
		n++
		for _, box := range []string{"ann", "bob"} {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			msgs, err := pf.WaitMessages(ctx, box, n)
			cancel()
			if err != nil {
				t.Fatalf("%s: %v\n%s", box, err, pf.Log())
			}
			raw := msgs[n-1]
			if !bytes.Contains(raw, []byte("Subject: "+subject)) || !bytes.Contains(raw, []byte("Hello from the command line.")) ||
				!bytes.Contains(raw, []byte("report.pdf")) || (box == "ann" && bytes.Contains(raw, []byte("bob@example.test"))) {
				t.Fatalf("%s received:\n%s", box, raw)
			}
		}
	}

	// A wrong password: exit 1, an authentication error, nothing delivered.
	r := runCmd(t, "", map[string]string{"MAILSEC_PASSWORD": "wrong"}, "send", "-server", pf.SubmissionAddr, "-ca", ca1,
		"-user", "alice", "-from", "app@example.test", "-to", "ann@example.test", "-subject", "must not arrive", "-body", "-")
	wantCode(t, r, 1)
	if !strings.Contains(r.stderr, "authentication") {
		t.Fatalf("stderr does not say why:\n%s", r.stderr)
	}
	time.Sleep(time.Second)
	msgs, _ := pf.Messages("ann")
	if len(msgs) != n {
		t.Fatalf("%d messages in ann's Maildir, want %d", len(msgs), n)
	}
}
