package bounce_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/mailsectest"
)

func testVERP() *bounce.VERP {
	return &bounce.VERP{Local: "bounces", Domain: "example.com", Secret: bytes.Repeat([]byte{7}, 32)}
}

// A return path is bounces+<ref>.<mac>@domain, at most 64 octets before
// the '@'; Parse reads it back (in any case) and Signs accepts it for its
// own delivery's ENVID alone.
func TestVERPReturnPath(t *testing.T) {
	v := testVERP()
	envid := "tzrn5rzkhptyvsdyzs4xyzqlue.qrpbn24gg5r6c72hxx7a.euaxdu5hyeodhtkq"
	rp, err := v.ReturnPath(envid)
	if err != nil {
		t.Fatal(err)
	}
	local, domain, _ := strings.Cut(rp, "@")
	if domain != "example.com" || !strings.HasPrefix(local, "bounces+tzrn5rzkhptyvsdyzs4xyzqlue.") || len(local) > 64 || strings.ToLower(rp) != rp {
		t.Fatalf("return path %q", rp)
	}
	for _, a := range []string{rp, "<" + rp + ">", strings.ToUpper(rp)} {
		tag, err := v.Parse(a)
		if err != nil || tag.Ref != "tzrn5rzkhptyvsdyzs4xyzqlue" || !tag.Signs(envid) {
			t.Fatalf("%q: %+v, %v", a, tag, err)
		}
		for _, other := range []string{envid + "x", strings.TrimSuffix(envid, "q") + "r", "tzrn5rzkhptyvsdyzs4xyzqlue", ""} {
			if tag.Signs(other) {
				t.Errorf("%q signs %q", a, other)
			}
		}
	}

	// Altered or made up: no delivery is signed by it.
	mac := rp[strings.LastIndexByte(local, '.')+1 : len(local)]
	flip := func(s string, i int) string {
		b := []byte(s)
		b[i] = map[bool]byte{true: 'a', false: 'b'}[b[i] != 'a']
		return string(b)
	}
	for _, forged := range []string{
		strings.Replace(rp, mac, flip(mac, 0), 1),
		strings.Replace(rp, mac, flip(mac, len(mac)-1), 1),
		strings.Replace(rp, "tzrn5", "tzrn6", 1),
	} {
		tag, err := v.Parse(forged)
		if err != nil {
			t.Fatalf("%q: %v", forged, err)
		}
		if tag.Signs(envid) {
			t.Errorf("altered %q signs the delivery", forged)
		}
	}
	other := testVERP()
	other.Secret = bytes.Repeat([]byte{8}, 32)
	if rp2, _ := other.ReturnPath(envid); rp2 == rp {
		t.Fatal("another secret makes the same tag")
	}
	if tag, err := other.Parse(rp); err != nil || tag.Signs(envid) {
		t.Fatalf("another secret accepts the tag: %v", err)
	}

	// Not this VERP's shape: refused by Parse.
	for _, bad := range []string{
		"bounces@example.com", "bounces+" + envid + "@example.com", "other+" + local[8:] + "@example.com",
		strings.Replace(rp, "example.com", "example.net", 1), "bounces+x.abc@example.com",
		"bounces+" + strings.Repeat("a", 60) + "." + mac + "@example.com", "",
	} {
		_, err := v.Parse(bad)
		var ve *bounce.VERPError
		if !errors.Is(err, bounce.ErrForged) || !errors.As(err, &ve) || mailsec.IsTemporary(err) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// The 64-octet limit and the configuration are checked, with errors that
// say which field.
func TestVERPLimits(t *testing.T) {
	v := testVERP()
	limit := 64 - len("bounces") - 2 - 16
	if rp, err := v.ReturnPath(strings.Repeat("a", limit) + ".x"); err != nil || len(rp[:strings.IndexByte(rp, '@')]) != 64 {
		t.Fatalf("%d-character ref: %q, %v", limit, rp, err)
	}
	for _, envid := range []string{strings.Repeat("a", limit+1) + ".x", "order+4411.x", ".x", ""} {
		var ce *mailsec.ConfigError
		if _, err := v.ReturnPath(envid); !errors.As(err, &ce) || ce.Field != "DSN.EnvelopeID" {
			t.Errorf("ENVID %q: %v", envid, err)
		}
	}
	for field, mod := range map[string]func(v *bounce.VERP){
		"Local":  func(v *bounce.VERP) { v.Local = "bounces+x" },
		"Domain": func(v *bounce.VERP) { v.Domain = "" },
		"Secret": func(v *bounce.VERP) { v.Secret = v.Secret[:31] },
	} {
		v := testVERP()
		mod(v)
		var ce *mailsec.ConfigError
		if _, err := v.ReturnPath("abc.x"); !errors.As(err, &ce) || ce.Field != "bounce.VERP."+field {
			t.Errorf("%s: %v", field, err)
		}
	}
}

// A Sender with ReturnPath sends each delivery from its own signed
// return path. A bounce sent to a delivery's return path, without an
// ENVID (a server that ignores DSN), matches the recipients of that
// delivery alone; one to a made-up or altered path matches nothing.
func TestVERPSenderAndBounce(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	v := testVERP()
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{ReturnPath: v.ReturnPath})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{"nobody@example.org"},
		Bcc: []string{"mallory@example.net"}, Subject: "x", Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	from := map[string]string{}
	for _, m := range srv.Messages() {
		from[m.To[0]] = m.From
	}
	nobody, mallory := from["nobody@example.org"], from["mallory@example.net"]
	if nobody == "" || mallory == "" || nobody == mallory || !strings.HasPrefix(nobody, "bounces+") {
		t.Fatalf("MAIL FROM %v", from)
	}
	if rp, _ := v.ReturnPath(rec.Recipients[0].EnvelopeID); rp != nobody {
		t.Fatalf("sent from %q, the Receipt's ENVID gives %q", nobody, rp)
	}

	raw, err := os.ReadFile("testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	// A server that drops the DSN parameters: no Original-Envelope-Id.
	rep, err := bounce.Parse(strings.NewReader(strings.Replace(string(raw), "Original-Envelope-Id: ms-7f3a9c2e41\n", "", 1)))
	if err != nil || rep.EnvelopeID != "" || rep.Recipients[0].FinalRecipient != "nobody@example.org" {
		t.Fatalf("%+v, %v", rep, err)
	}
	m, err := rep.ForReturnPath(v, nobody, rec)
	if err != nil || len(m) != 1 || m[0].Receipt.Address != "nobody@example.org" {
		t.Fatalf("the real bounce: %+v, %v", m, err)
	}
	// Mallory's server mails a report on nobody to Mallory's return path.
	if m, err := rep.ForReturnPath(v, mallory, rec); err != nil || len(m) != 0 {
		t.Fatalf("a report on another delivery's recipient: %+v, %v", m, err)
	}
	// Altered tags, and one made with another secret, name no delivery.
	other := testVERP()
	other.Secret = bytes.Repeat([]byte{9}, 32)
	forgedPath, _ := other.ReturnPath(rec.Recipients[0].EnvelopeID)
	at := strings.IndexByte(nobody, '@')
	for _, forged := range []string{forgedPath, nobody[:at-1] + "a" + nobody[at:], nobody[:at-1] + "b" + nobody[at:], "bounces@example.com"} {
		if forged == nobody {
			continue
		}
		if m, err := rep.ForReturnPath(v, forged, rec); !errors.Is(err, bounce.ErrForged) || m != nil {
			t.Errorf("%q: %+v, %v", forged, m, err)
		}
	}
}
