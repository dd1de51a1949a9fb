package pgp_test

import (
	"bytes"
	"context"
	"net/mail"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// headerField returns the first name field of a message or entity header
// in text, as written (continuation lines included), or "".
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

// A From display name with a comma and non-ASCII text, signed with the
// author's key: the message is sent (the signer check reads the From
// field back), gpg decrypts it and verifies the signature, and the
// protected header inside carries From and To exactly as the outside
// does (folded alike: never inside a quoted-string), each reading back as
// the mailboxes given.
func TestSignedDisplayNameWithSpecials(t *testing.T) {
	home := gpgHome(t)
	k := testKeys(t)
	ann, bob, app := k["ann@example.org"], k["bob@example.org"], k["app@example.com"]
	for _, e := range []*openpgp.Entity{ann, app} {
		sec, err := mailsectest.ArmorPrivate(e, nil)
		if err != nil {
			t.Fatal(err)
		}
		mustGPG(t, home, []byte(sec), "--passphrase", "", "--import")
	}
	p, err := pgp.New(publicRing(t, ann, bob), &pgp.Options{Signer: app})
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, p)
	m := &mailsec.Message{From: `"Müller, Anna" <app@example.com>`, To: []string{`"Doe, Ann (Lab), x@evil.example" <ann@example.org>`, `"Roe, Bob Quincy Junior" <bob@example.org>`},
		Subject: "signed", Text: canary}
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if pr := rec.Recipients[0].Protection; pr == nil || !pr.Signed {
		t.Fatalf("receipt: %+v", pr)
	}
	raw := rt.Deliveries()[0].Data
	_, plain := gpgDecrypt(t, home, encryptedPart(t, raw))
	part, sig, _ := splitSigned(t, plain)
	if st := gpgVerify(t, home, part, sig); !strings.Contains(st, "[GNUPG:] VALIDSIG "+pgp.Fingerprint(app)) {
		t.Fatalf("verify:\n%s", st)
	}
	for _, c := range []struct{ field, name, addr string }{
		{"From", "Müller, Anna", "app@example.com"},
		{"To", "Doe, Ann (Lab), x@evil.example", "ann@example.org"},
	} {
		outer, inner := headerField(string(raw), c.field), headerField(string(part), c.field)
		if outer == "" || strings.ReplaceAll(inner, "\r\n", "\n") != strings.ReplaceAll(outer, "\r\n", "\n") {
			t.Fatalf("%s: inner %q, outer %q", c.field, inner, outer)
		}
		v := strings.TrimPrefix(strings.ReplaceAll(strings.ReplaceAll(inner, "\r\n", ""), "\n", ""), c.field+": ")
		as, err := mail.ParseAddressList(v)
		if err != nil || len(as) < 1 || as[0].Name != c.name || as[0].Address != c.addr {
			t.Fatalf("%s %q reads as %v (%v)", c.field, v, as, err)
		}
	}
	if !bytes.Contains(part, []byte(canary)) {
		t.Fatal("no body in the signed part")
	}
}
