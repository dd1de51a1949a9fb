package pgp_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

var (
	badOnce sync.Once
	badKeys map[string]*openpgp.Entity
	badErr  error
)

// bad returns keys that must each be refused, keyed by the reason.
func bad(t *testing.T) map[string]*openpgp.Entity {
	badOnce.Do(func() {
		badKeys = map[string]*openpgp.Entity{}
		for reason, o := range map[string]mailsectest.PGPKeyOptions{
			"expired":                    {Expired: true},
			"revoked":                    {Revoked: true},
			"no valid encryption subkey": {RevokedEncryptionSubkey: true},
			"sign-only":                  {SignOnly: true},
			"weak algorithm: RSA-1024":   {Algorithm: mailsectest.PGPRSA1024},
			"version 6 key":              {V6: true},
		} {
			e, err := mailsectest.NewPGPKey("Bad", "bad@example.org", o)
			if err != nil {
				badErr = err
				return
			}
			badKeys[reason] = e
		}
	})
	if badErr != nil {
		t.Fatal(badErr)
	}
	return badKeys
}

// Each bad key is refused with a typed error naming the key and the
// reason; the server sees no transaction at all.
func TestBadKeysRefused(t *testing.T) {
	k := testKeys(t)
	cases := map[string]struct {
		key    *openpgp.Entity
		reason string
	}{}
	for reason, e := range bad(t) {
		want := reason
		if reason == "sign-only" {
			want = "no valid encryption subkey"
		}
		cases[reason] = struct {
			key    *openpgp.Entity
			reason string
		}{e, want}
	}
	// A good key whose only user ID is another address.
	cases["wrong address"] = struct {
		key    *openpgp.Entity
		reason string
	}{k["carl@example.org"], "no user ID for this address"}

	srv := mailsectest.NewServer(t, mailsectest.Config{})
	for name, c := range cases {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			p, err := pgp.New(mapSource{"bad@example.org": {c.key}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := newSender(t, srv.Transport(), p)
			rec, err := s.Send(context.Background(), &mailsec.Message{From: "lab@example.com", To: []string{"bad@example.org"},
				Subject: "secret subject", Text: canary})
			if err == nil || !errors.Is(err, mailsec.ErrNoKey) {
				t.Fatalf("Send: %v", err)
			}
			var pe *mailsec.ProtectionError
			var ke *pgp.KeyError
			if !errors.As(rec.Recipients[0].Err, &pe) || !errors.As(pe, &ke) {
				t.Fatalf("error %T %v", rec.Recipients[0].Err, rec.Recipients[0].Err)
			}
			id := pgp.Fingerprint(c.key)
			if pe.Method != "pgp" || pe.Recipient != "bad@example.org" || pe.KeyID != fmt.Sprintf("%016X", c.key.PrimaryKey.KeyId) ||
				!strings.HasPrefix(pe.Reason, c.reason) || ke.Fingerprint != id {
				t.Fatalf("error fields %+v / %+v", pe, ke)
			}
			if !strings.Contains(err.Error(), c.reason) || !strings.Contains(err.Error(), pe.KeyID) {
				t.Fatalf("message does not name key and reason: %v", err)
			}
		})
	}
	if n := srv.Transactions(); n != 0 {
		t.Fatalf("server saw %d transactions", n)
	}
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if r := srv.Received(); strings.Contains(string(r), canary) || strings.Contains(string(r), "secret subject") {
		t.Fatal("plaintext reached the server")
	}
}

// Several keys for one address: a valid one wins; with none valid the
// error is the most nearly valid key's.
func TestSeveralKeysForOneAddress(t *testing.T) {
	k := testKeys(t)
	b := bad(t)
	good, err := mailsectest.NewPGPKey("Bad", "bad@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := pgp.New(mapSource{"bad@example.org": {b["revoked"], good, b["expired"]}}, nil)
	e := &mailsec.Entity{Header: headerFor("bad@example.org"), Body: strBody(canary)}
	out, err := p.Protect(context.Background(), e, []string{"bad@example.org"})
	if err != nil || out.Fingerprints["bad@example.org"] != pgp.Fingerprint(good) {
		t.Fatalf("Protect: %v", err)
	}
	p, _ = pgp.New(mapSource{"bad@example.org": {k["carl@example.org"], b["expired"]}}, nil)
	_, err = p.Protect(context.Background(), e, []string{"bad@example.org"})
	var pe *mailsec.ProtectionError
	if !errors.As(err, &pe) || pe.Reason != "expired" {
		t.Fatalf("got %v, want the expired key's reason (carl's key has no user ID for bad@)", err)
	}
}

// Good and bad recipients in one Send: the good get ciphertext, the bad
// nothing, and the error lists every bad one.
func TestMixedGoodAndBad(t *testing.T) {
	k := testKeys(t)
	exp, err := mailsectest.NewPGPKey("E", "exp@example.org", mailsectest.PGPKeyOptions{Expired: true})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := mailsectest.NewPGPKey("R", "rev@example.org", mailsectest.PGPKeyOptions{Revoked: true})
	if err != nil {
		t.Fatal(err)
	}
	src := mapSource{
		"ann@example.org": {k["ann@example.org"]}, "bob@example.org": {k["bob@example.org"]},
		"exp@example.org": {exp}, "rev@example.org": {rev},
	}
	p, err := pgp.New(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, p)
	rec, err := s.Send(context.Background(), &mailsec.Message{From: "lab@example.com",
		To: []string{"ann@example.org", "exp@example.org"}, Cc: []string{"none@example.org"},
		Bcc: []string{"bob@example.org", "rev@example.org"}, Subject: "secret subject", Text: canary})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"exp@example.org", "rev@example.org", "none@example.org", "expired", "revoked", "no key found"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error does not mention %q: %v", want, err)
		}
	}
	ds := rt.Deliveries()
	if len(ds) != 2 {
		t.Fatalf("%d deliveries", len(ds))
	}
	if strings.Join(ds[0].To, ",") != "ann@example.org" || strings.Join(ds[1].To, ",") != "bob@example.org" {
		t.Fatalf("deliveries to %v and %v", ds[0].To, ds[1].To)
	}
	for _, d := range ds {
		checkWire(t, d.Data, "secret subject")
	}
	for _, r := range rec.Recipients {
		if (r.Err == nil) != (r.Address == "ann@example.org" || r.Address == "bob@example.org") {
			t.Fatalf("%s: %v", r.Address, r.Err)
		}
	}
}

func TestReadKeyRingErrors(t *testing.T) {
	k := testKeys(t)
	good, _ := mailsectest.ArmorPublic(k["ann@example.org"])
	lines := strings.Split(good, "\n")
	lines[3] = strings.Repeat("A", len(lines[3])) // corrupt the base64 body
	for name, in := range map[string]string{
		"empty":           "",
		"garbage":         "not a key at all",
		"corrupt armor":   strings.Join(lines, "\n"),
		"truncated armor": good[:len(good)/2],
		"message block":   "-----BEGIN PGP MESSAGE-----\n\nwcBMA0\n-----END PGP MESSAGE-----\n",
		"binary garbage":  "\x99\x01\x0d\x04\xff\xff",
	} {
		if kr, err := pgp.ReadKeyRing(strings.NewReader(in)); err == nil {
			t.Errorf("%s: accepted (%d keys)", name, len(kr.Entities()))
		} else if !strings.HasPrefix(err.Error(), "pgp: ") {
			t.Errorf("%s: unclear error %v", name, err)
		}
	}
	kr, err := pgp.ReadKeyRing(strings.NewReader("junk before\n" + good + "\nbetween\n" + mustArmor(t, k["bob@example.org"])))
	if err != nil || len(kr.Entities()) != 2 {
		t.Fatalf("two armored blocks: %v", err)
	}
	if es, err := kr.Lookup(context.Background(), "BOB@EXAMPLE.ORG"); err != nil || len(es) != 1 {
		t.Fatalf("case-insensitive lookup: %v", err)
	}
	if _, err := kr.Lookup(context.Background(), "carl@example.org"); !errors.Is(err, pgp.ErrKeyNotFound) {
		t.Fatalf("missing key: %v", err)
	}
}

func mustArmor(t *testing.T, e *openpgp.Entity) string {
	t.Helper()
	s, err := mailsectest.ArmorPublic(e)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A user ID with an internationalised domain matches the recipient, who
// arrives with the domain in A-labels; a KELVIN SIGN mailbox is not kate.
func TestAddressFolding(t *testing.T) {
	k, err := mailsectest.NewPGPKey("Kate", "kate@bücher.example", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := pgp.New(pgp.NewKeyRing(k), nil)
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s, err := mailsec.NewSender(rt, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if err != nil {
		t.Fatal(err)
	}
	m := &mailsec.Message{From: "app@example.com", To: []string{"kate@bücher.example"}, Subject: "s", Text: "t"}
	rec, err := s.Send(context.Background(), m)
	if err != nil || rec.Recipients[0].Protection == nil || rec.Recipients[0].Protection.Fingerprint != pgp.Fingerprint(k) {
		t.Fatalf("IDN recipient: %v", err)
	}
	k2, err := mailsectest.NewPGPKey("Kate", "kate@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := pgp.NewKeyRing(k2).Lookup(context.Background(), "\u212Aate@example.org"); len(got) != 0 {
		t.Fatal("the KELVIN SIGN mailbox found kate's key")
	}
}

// A signed message above MaxSize fails before any of it is delivered: a
// signature needs the whole content in memory.
func TestSignedTooLarge(t *testing.T) {
	signer, err := mailsectest.NewPGPKey("App", "app@example.com", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ann, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := pgp.New(pgp.NewKeyRing(ann), &pgp.Options{Signer: signer, MaxSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s, err := mailsec.NewSender(rt, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if err != nil {
		t.Fatal(err)
	}
	m := &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "s", Text: strings.Repeat("line of text\n", 10000)}
	if _, err := s.Send(context.Background(), m); !errors.Is(err, pgp.ErrTooLarge) || len(rt.Deliveries()) != 0 {
		t.Fatalf("error %v, %d deliveries", err, len(rt.Deliveries()))
	}
	m.Text = "short"
	if _, err := s.Send(context.Background(), m); err != nil || len(rt.Deliveries()) != 1 {
		t.Fatalf("small message: %v", err)
	}
}

// A signing key without a valid user ID for the From (or Sender) address
// signs nothing, and the message is not sent unprotected instead, even
// under a policy that only prefers protection.
func TestSignerMustBeAuthor(t *testing.T) {
	k := testKeys(t)
	ann, bob := k["ann@example.org"], k["bob@example.org"]
	p, err := pgp.New(publicRing(t, ann), &pgp.Options{Signer: bob})
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s, err := mailsec.NewSender(rt, &mailsec.Options{Policy: mailsec.PreferProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if err != nil {
		t.Fatal(err)
	}
	m := &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "s", Text: "t"}
	_, err = s.Send(context.Background(), m)
	var ke *pgp.KeyError
	if !errors.As(err, &ke) || !strings.Contains(ke.Reason, "From or Sender") || ke.Code != pgp.KeySignerNotAuthor {
		t.Fatalf("err = %v, want a KeyError about the author", err)
	}
	// Not the recipient's missing key: the signer is at fault.
	if errors.Is(ke, mailsec.ErrNoKey) || !strings.Contains(ke.Error(), "app@example.com") || !strings.Contains(ke.Error(), ke.Fingerprint) {
		t.Fatalf("signer error %q matches ErrNoKey or does not name the author and key", ke)
	}
	if n := len(rt.Deliveries()); n != 0 {
		t.Fatalf("%d deliveries: a signer mismatch must not lead to plain content", n)
	}
	m.Sender = "bob@example.org"
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatalf("signer named by Sender: %v", err)
	}
}
