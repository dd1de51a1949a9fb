package smime_test

import (
	"context"
	"crypto/x509"
	"net/mail"
	"strings"
	"testing"

	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// headerField returns the first name field of a header in text, as
// written (continuation lines included), or "".
func headerField(text, name string) string {
	lines := strings.SplitAfter(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	for i, l := range lines {
		if l == "\n" {
			break
		}
		if !strings.HasPrefix(l, name+": ") {
			continue
		}
		f := l
		for _, c := range lines[i+1:] {
			if !strings.HasPrefix(c, " ") && !strings.HasPrefix(c, "\t") {
				break
			}
			f += c
		}
		return f
	}
	return ""
}

// A From display name with a comma and non-ASCII text, signed with a
// certificate for the author's address: the message is sent (the signer
// check reads the From field back), openssl decrypts it and verifies the
// signature, and the protected header inside carries From and To exactly
// as the outside does, each reading back as the mailboxes given.
func TestSignedDisplayNameWithSpecials(t *testing.T) {
	needTool(t, "openssl")
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	bob := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "bob@example.org", Key: f.key3})
	app := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "app@example.com", Key: f.key2})
	signer, err := smime.NewSigner([]*x509.Certificate{app.Leaf, f.ca.Certificate}, f.key2)
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, newProtector(t, storeOf(t, ann, bob), smime.Options{Signer: signer}))
	m := message(`"Doe, Ann (Lab), x@evil.example" <ann@example.org>`, `"Roe, Bob Quincy Junior" <bob@example.org>`)
	m.From = `"Müller, Anna" <app@example.com>`
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if pr := rec.Recipients[0].Protection; pr == nil || !pr.Signed {
		t.Fatalf("receipt: %+v", pr)
	}
	raw := string(rt.Deliveries()[0].Data)
	dir := t.TempDir()
	crt, key := keyFiles(t, dir, "ann", ann)
	plain := opensslDecrypt(t, dir, []byte(raw), crt, key)
	checkPlain(t, plain)
	caPath := writeFile(t, dir, "ca.pem", f.ca.CertPEM())
	in := writeFile(t, dir, "signed.eml", []byte(plain))
	if r := run(nil, nil, "openssl", "cms", "-verify", "-in", in, "-CAfile", caPath, "-purpose", "smimesign"); r.err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", r.err, r.stderr)
	}
	part, _ := splitSigned(t, plain)
	for _, c := range []struct{ field, name, addr string }{
		{"From", "Müller, Anna", "app@example.com"},
		{"To", "Doe, Ann (Lab), x@evil.example", "ann@example.org"},
	} {
		outer, inner := headerField(raw, c.field), headerField(string(part), c.field)
		if outer == "" || inner != outer {
			t.Fatalf("%s: inner %q, outer %q", c.field, inner, outer)
		}
		v := strings.TrimPrefix(strings.ReplaceAll(inner, "\n", ""), c.field+": ")
		as, err := mail.ParseAddressList(v)
		if err != nil || len(as) < 1 || as[0].Name != c.name || as[0].Address != c.addr {
			t.Fatalf("%s %q reads as %v (%v)", c.field, v, as, err)
		}
	}
}
