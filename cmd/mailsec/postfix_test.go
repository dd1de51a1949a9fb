package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/internal/tooltest"
	"github.com/mailsec/mailsec/mailsectest"
)

// TestSendPostfix runs mailsec send against a real Postfix on both of its
// submission ports and reads the result back from the Maildir.
func TestSendPostfix(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Config{Domain: "example.test",
		Mailboxes: []string{"ann", "bob"}, Users: map[string]string{"alice": "pf-secret"}})
	ca1 := writeFile(t, "ca.pem", pf.CertPEM)
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
			msgs := pf.Wait(t, box, n)
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

// TestSendPostfixProtected sends with -pgp-keys and with -smime-certs
// through a real Postfix; gpg, openssl and gpgsm decrypt the Maildir files,
// which never show the body or the real Subject.
func TestSendPostfixProtected(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Config{Domain: "example.test",
		Mailboxes: []string{"ann", "bob"}, Users: map[string]string{"alice": "pf-secret"}})
	env := map[string]string{"MAILSEC_PASSWORD": "pf-secret"}
	body := writeFile(t, "body.txt", []byte("Your result: "+canary+"\n"))
	base := []string{"send", "-server", pf.SubmissionAddr, "-ca", writeFile(t, "ca.pem", pf.CertPEM), "-user", "alice",
		"-from", "lab@example.test", "-subject", realSubject, "-body", body}
	wait := func(box string) []byte {
		t.Helper()
		msgs := pf.Wait(t, box, 1)
		checkOpaque(t, msgs[0])
		return msgs[0]
	}

	// PGP/MIME to ann.
	annKey := pgpKey(t, "Ann", "ann@example.test", mailsectest.PGPKeyOptions{})
	r := runCmd(t, "", env, append(base, "-to", "ann@example.test", "-pgp-keys", writeFile(t, "keys.asc", armorPublic(t, annKey)))...)
	wantCode(t, r, 0)
	g := tooltest.NewGPG(t)
	g.Import(armorSecret(t, annKey, ""))
	plain, status := g.Decrypt(pgpCiphertext(t, wait("ann")))
	checkPlain(t, plain)
	if !strings.Contains(status, "DECRYPTION_INFO 2 9") {
		t.Fatalf("gpg status:\n%s", status)
	}

	// S/MIME to bob.
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	bob, err := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "bob@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, "", env, append(base, "-to", "bob@example.test", "-smime-certs", writeFile(t, "certs.pem", mailsectest.LeafPEM(bob)),
		"-smime-roots", writeFile(t, "roots.pem", ca.CertPEM()))...)
	wantCode(t, r, 0)
	raw := wait("bob")
	checkPlain(t, tooltest.OpenSSLDecrypt(t, raw, bob))
	checkPlain(t, tooltest.NewGPGSM(t, ca, bob).Decrypt(smimeDER(t, raw)))
}
