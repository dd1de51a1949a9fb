package pgp_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// gpg 2.2 finds the end of armored data by its "=" padding or the CRC-24
// line; data a multiple of three octets long has no padding. Messages
// whose ciphertext length leaves each remainder modulo 3 must all decrypt
// in gpg with a good MDC.
func TestGPGReadsEveryArmorLength(t *testing.T) {
	home := gpgHome(t)
	kr, err := pgp.ReadKeyRing(bytes.NewReader(gpgKey(t, home, "Ann <ann@example.org>", "ed25519", "cv25519")))
	if err != nil {
		t.Fatal(err)
	}
	p, err := pgp.New(kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, p)
	seen := map[int]bool{}
	for i := 0; i < 9 && len(seen) < 3; i++ {
		text := canary + strings.Repeat("x", i)
		if _, err := s.Send(context.Background(), &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"},
			Subject: "Armor", Text: text + "\n"}); err != nil {
			t.Fatal(err)
		}
		ds := rt.Deliveries()
		ct := encryptedPart(t, ds[len(ds)-1].Data)
		blk, err := armor.Decode(bytes.NewReader(ct))
		if err != nil {
			t.Fatal(err)
		}
		bin, err := io.ReadAll(blk.Body)
		if err != nil {
			t.Fatal(err)
		}
		seen[len(bin)%3] = true
		status, plain := gpgDecrypt(t, home, ct)
		if !strings.Contains(status, "[GNUPG:] DECRYPTION_OKAY") || !strings.Contains(status, "[GNUPG:] GOODMDC") {
			t.Fatalf("ciphertext of %d octets: gpg status:\n%s", len(bin), status)
		}
		if !bytes.Contains(plain, []byte("\r\n"+text+"\r\n")) {
			t.Fatalf("ciphertext of %d octets: gpg plaintext lacks the body:\n%s", len(bin), plain)
		}
	}
	if len(seen) < 3 {
		t.Fatalf("ciphertext lengths covered only remainders %v modulo 3", seen)
	}
}
