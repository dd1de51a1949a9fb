package pgp_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// wireInfo is what the packets of a ciphertext say about its encryption,
// as key (which must hold a private encryption key) reads them.
type wireInfo struct {
	seipd  int                   // SEIPD version
	pkesk  int                   // PKESK version
	cipher packet.CipherFunction // SEIPDv1: from the decrypted session key; SEIPDv2: the packet's
	mode   packet.AEADMode       // SEIPDv2
}

func readWire(t *testing.T, key *openpgp.Entity, armored []byte) wireInfo {
	t.Helper()
	blk, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	var wi wireInfo
	pr := packet.NewReader(blk.Body)
	for {
		p, err := pr.Next()
		if err != nil {
			t.Fatalf("reading packets: %v", err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			wi.pkesk = p.Version
			for _, sk := range key.Subkeys {
				if sk.PrivateKey != nil && (sk.PublicKey.KeyId == p.KeyId || p.Version == 6) {
					if err := p.Decrypt(sk.PrivateKey, nil); err == nil && p.Version == 3 {
						wi.cipher = p.CipherFunc
					}
				}
			}
		case *packet.SymmetricallyEncrypted:
			wi.seipd = p.Version
			if p.Version == 2 {
				wi.cipher, wi.mode = p.Cipher, p.Mode
			}
			return wi
		}
	}
}

// withPrefs returns a copy of e whose self-signatures prefer only the
// given ciphers, as a key edited with gpg's setpref would.
func withPrefs(t *testing.T, e *openpgp.Entity, ciphers ...packet.CipherFunction) *openpgp.Entity {
	t.Helper()
	e = roundTrip(t, e)
	var prefs []uint8
	for _, c := range ciphers {
		prefs = append(prefs, uint8(c))
	}
	for _, id := range e.Identities {
		id.SelfSignature.PreferredSymmetric = prefs
	}
	return e
}

// Recipient keys preferring only ciphers below AES-128 get AES-128, and
// AES-256 only when every key lists it: the cipher read back from the
// session key, and the one the Protector reports.
func TestCipherNeverBelowAES128(t *testing.T) {
	k := testKeys(t)
	ann, bob := k["ann@example.org"], k["bob@example.org"]
	for name, c := range map[string]struct {
		keys []*openpgp.Entity
		want packet.CipherFunction
	}{
		"aes256 listed":     {[]*openpgp.Entity{ann}, packet.CipherAES256},
		"3des and cast5":    {[]*openpgp.Entity{withPrefs(t, ann, packet.Cipher3DES, packet.CipherCAST5)}, packet.CipherAES128},
		"no preferences":    {[]*openpgp.Entity{withPrefs(t, ann)}, packet.CipherAES128},
		"aes128 only":       {[]*openpgp.Entity{withPrefs(t, ann, packet.CipherAES128)}, packet.CipherAES128},
		"one weak of two":   {[]*openpgp.Entity{bob, withPrefs(t, ann, packet.CipherCAST5)}, packet.CipherAES128},
		"aes192 and 3des":   {[]*openpgp.Entity{withPrefs(t, ann, packet.CipherAES192, packet.Cipher3DES)}, packet.CipherAES128},
		"aes256 first of 3": {[]*openpgp.Entity{withPrefs(t, ann, packet.Cipher3DES, packet.CipherAES256)}, packet.CipherAES256},
	} {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			src := mapSource{}
			var rcpts []string
			for _, e := range c.keys {
				for _, id := range e.Identities {
					src[id.UserId.Email] = []*openpgp.Entity{e}
					rcpts = append(rcpts, id.UserId.Email)
				}
			}
			ct, out := protectCanary(t, src, nil, rcpts...)
			wantName := map[packet.CipherFunction]string{packet.CipherAES256: "aes256-cfb", packet.CipherAES128: "aes128-cfb"}[c.want]
			for i, e := range c.keys {
				wi := readWire(t, e, ct)
				if wi.seipd != 1 || wi.pkesk != 3 || wi.cipher != c.want {
					t.Fatalf("key %d: %+v, want SEIPDv1 with cipher %d", i, wi, c.want)
				}
				if pt := goDecrypt(t, e, ct); !bytes.Contains(pt, []byte(canary)) {
					t.Fatalf("key %d cannot read it", i)
				}
				if got := out.Keys[rcpts[i]].Cipher; got != wantName {
					t.Fatalf("reported cipher %q, want %q", got, wantName)
				}
			}
		})
	}
}

// A key gpg was told to prefer only 3DES and CAST5 (setpref): the
// message is encrypted with AES-128, gpg decrypts it and says so, and the
// Receipt names the cipher.
func TestGPGWeakPreferencesGetAES128(t *testing.T) {
	home := gpgHome(t)
	gpgKey(t, home, "Ann <ann@example.org>", "ed25519", "cv25519")
	mustGPG(t, home, []byte("setpref S2 S3 H8 Z0\ny\nsave\n"), "--command-fd", "0", "--edit-key", fprOf(t, home, "ann@example.org"))
	pub := mustGPG(t, home, nil, "--armor", "--export", "ann@example.org")
	kr, err := pgp.ReadKeyRing(strings.NewReader(pub))
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := kr.Entities()[0].PrimarySelfSignature()
	if !slices.Equal(sig.PreferredSymmetric, []uint8{uint8(packet.Cipher3DES), uint8(packet.CipherCAST5)}) {
		t.Fatalf("setpref did not take: preferences %v", sig.PreferredSymmetric)
	}
	p, err := pgp.New(kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	rec, err := newSender(t, rt, p).Send(context.Background(), &mailsec.Message{From: "lab@example.com",
		To: []string{"ann@example.org"}, Subject: "weak prefs", Text: canary})
	if err != nil {
		t.Fatal(err)
	}
	const note = "key prefers no AES cipher (3DES, CAST5); AES-128 is used instead"
	if pr := rec.Recipients[0].Protection; pr == nil || pr.Cipher != "aes128-cfb" || !slices.Equal(pr.Notes, []string{note}) {
		t.Fatalf("receipt %+v", pr)
	}
	ck, err := pgp.CheckKey(context.Background(), strings.NewReader(pub), "ann@example.org", nil)
	if err != nil || !slices.Equal(ck.Warnings, []string{note}) {
		t.Fatalf("CheckKey: %v, warnings %q", err, ck.Warnings)
	}
	status, plain := gpgDecrypt(t, home, encryptedPart(t, rt.Deliveries()[0].Data))
	// DECRYPTION_INFO <mdc> <cipher>: 2 = SHA-1 MDC, 7 = AES-128.
	if !strings.Contains(status, "[GNUPG:] DECRYPTION_INFO 2 7") || !strings.Contains(status, "[GNUPG:] DECRYPTION_OKAY") ||
		!bytes.Contains(plain, []byte(canary)) {
		t.Fatalf("gpg status:\n%s", status)
	}
}

// SEIPDv2 only when allowed and every key advertises it: by default a
// key advertising it still gets SEIPDv1 (gpg --list-packets shows an
// MDC-protected packet, and gpg 2.2 decrypts it); with AllowSEIPDv2 the
// message is SEIPDv2 with AES-256-OCB, which go-crypto reads; a second
// recipient whose key does not advertise it brings back SEIPDv1.
func TestSEIPDv2OptIn(t *testing.T) {
	home := gpgHome(t)
	aead := expiringKey(t, "ann@example.org", time.Now().Add(-time.Hour), 0, true)
	sig, _ := aead.PrimarySelfSignature()
	if !sig.SEIPDv2 {
		t.Fatal("test key does not advertise SEIPDv2")
	}
	sec, err := mailsectest.ArmorPrivate(aead, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustGPG(t, home, []byte(sec), "--passphrase", "", "--import")
	bob := testKeys(t)["bob@example.org"]
	src := mapSource{"ann@example.org": {aead}, "bob@example.org": {bob}}

	ct, out := protectCanary(t, src, nil, "ann@example.org")
	if wi := readWire(t, aead, ct); wi.seipd != 1 || wi.pkesk != 3 || wi.cipher != packet.CipherAES256 || out.Keys["ann@example.org"].Cipher != "aes256-cfb" {
		t.Fatalf("default: %+v, reported %q", wi, out.Keys["ann@example.org"].Cipher)
	}
	blk, err := armor.Decode(bytes.NewReader(ct))
	if err != nil {
		t.Fatal(err)
	}
	var bin bytes.Buffer
	bin.ReadFrom(blk.Body)
	listed, errs, _ := gpg(t, home, bin.Bytes(), "--list-packets")
	if !strings.Contains(listed, ":encrypted data packet:") || !strings.Contains(listed, "mdc_method: 2") {
		t.Fatalf("gpg --list-packets:\n%s\n%s", listed, errs)
	}
	status, plain := gpgDecrypt(t, home, ct)
	if !strings.Contains(status, "DECRYPTION_INFO 2 9") || !bytes.Contains(plain, []byte(canary)) {
		t.Fatalf("gpg cannot read the default output:\n%s", status)
	}

	ct, out = protectCanary(t, src, &pgp.Options{AllowSEIPDv2: true}, "ann@example.org")
	wi := readWire(t, aead, ct)
	if wi.seipd != 2 || wi.pkesk != 6 || wi.cipher != packet.CipherAES256 || wi.mode != packet.AEADModeOCB ||
		out.Keys["ann@example.org"].Cipher != "aes256-ocb" {
		t.Fatalf("opt-in: %+v, reported %q", wi, out.Keys["ann@example.org"].Cipher)
	}
	if pt := goDecrypt(t, aead, ct); !bytes.Contains(pt, []byte(canary)) {
		t.Fatal("go-crypto cannot read the SEIPDv2 output")
	}

	ct, out = protectCanary(t, src, &pgp.Options{AllowSEIPDv2: true}, "ann@example.org", "bob@example.org")
	if wi := readWire(t, bob, ct); wi.seipd != 1 || out.Keys["ann@example.org"].Cipher != "aes256-cfb" {
		t.Fatalf("mixed recipients: %+v, reported %q", wi, out.Keys["ann@example.org"].Cipher)
	}
}

// A key expiring within Options.ExpiryWarning: the Receipt records its
// expiry, the cipher and a note that says when; a key that does not
// expire gets neither expiry nor note; a negative window turns notes off.
func TestReceiptNotesExpiringKey(t *testing.T) {
	now := time.Now().Truncate(time.Second) // keys made by testKeys must exist by then
	created := now.Add(-time.Hour)
	soon := expiringKey(t, "ann@example.org", created, 12*24*time.Hour+2*time.Hour, false)
	bob := testKeys(t)["bob@example.org"]
	kr := pgp.NewKeyRing(soon, bob)
	send := func(o *pgp.Options) *mailsec.Receipt {
		t.Helper()
		o.Now = func() time.Time { return now }
		p, err := pgp.New(kr, o)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := newSender(t, &mailsectest.RecordingTransport{}, p).Send(context.Background(), &mailsec.Message{
			From: "lab@example.com", To: []string{"ann@example.org", "bob@example.org"}, Subject: "results", Text: canary})
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	rec := send(&pgp.Options{})
	ann, b := rec.Recipients[0].Protection, rec.Recipients[1].Protection
	wantExp := created.Add(12*24*time.Hour + 2*time.Hour)
	if ann == nil || !ann.KeyExpires.Equal(wantExp) || ann.Cipher != "aes256-cfb" ||
		!slices.Equal(ann.Notes, []string{"key expires in 12 days (" + wantExp.UTC().Format(time.DateOnly) + ")"}) {
		t.Fatalf("ann: %+v", ann)
	}
	if b == nil || !b.KeyExpires.IsZero() || b.Cipher != "aes256-cfb" || len(b.Notes) != 0 {
		t.Fatalf("bob: %+v", b)
	}
	if ann := send(&pgp.Options{ExpiryWarning: -1}).Recipients[0].Protection; len(ann.Notes) != 0 || !ann.KeyExpires.Equal(wantExp) {
		t.Fatalf("notes off: %+v", ann)
	}
	if ann := send(&pgp.Options{ExpiryWarning: 10 * 24 * time.Hour}).Recipients[0].Protection; len(ann.Notes) != 0 {
		t.Fatalf("10-day window: %+v", ann)
	}
}

// protectCanary protects a text holding canary for rcpts with keys from
// src, and returns the encrypted part and what Protect reported.
func protectCanary(t *testing.T, src pgp.KeySource, o *pgp.Options, rcpts ...string) ([]byte, *mailsec.Protected) {
	t.Helper()
	p, err := pgp.New(src, o)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Protect(context.Background(), &mailsec.Entity{Header: headerFor(rcpts[0]), Body: strBody(canary)}, rcpts)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := out.Entity.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return encryptedPart(t, buf.Bytes()), out
}
