package mailsectest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/mailsec/mailsec/mailsectest"
)

// Each option of NewPGPKey gives the key property it promises.
func TestNewPGPKey(t *testing.T) {
	now := time.Now()
	mk := func(o mailsectest.PGPKeyOptions) *openpgp.Entity {
		t.Helper()
		e, err := mailsectest.NewPGPKey("Ann", "ann@example.org", o)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	good := mk(mailsectest.PGPKeyOptions{})
	if _, ok := good.EncryptionKey(now); !ok || good.PrimaryKey.PubKeyAlgo != packet.PubKeyAlgoEdDSA || good.PrimaryKey.Version != 4 {
		t.Fatal("default key is not a valid v4 Curve25519 key")
	}
	if id := good.PrimaryIdentity(); id == nil || id.UserId.Email != "ann@example.org" {
		t.Fatal("user ID")
	}
	if e := mk(mailsectest.PGPKeyOptions{Expired: true}); !e.PrimaryKey.KeyExpired(e.PrimaryIdentity().SelfSignature, now) {
		t.Fatal("Expired key has not expired")
	}
	if e := mk(mailsectest.PGPKeyOptions{Revoked: true}); !e.Revoked(now) {
		t.Fatal("Revoked key is not revoked")
	}
	if e := mk(mailsectest.PGPKeyOptions{SignOnly: true}); len(e.Subkeys) != 0 {
		t.Fatal("SignOnly key has subkeys")
	}
	if e := mk(mailsectest.PGPKeyOptions{RevokedEncryptionSubkey: true}); len(e.Subkeys) != 1 || !e.Subkeys[0].Revoked(now) {
		t.Fatal("encryption subkey not revoked")
	}
	if e := mk(mailsectest.PGPKeyOptions{V6: true}); e.PrimaryKey.Version != 6 {
		t.Fatal("V6 key is not version 6")
	}
	e := mk(mailsectest.PGPKeyOptions{Algorithm: mailsectest.PGPRSA1024})
	if bits, _ := e.PrimaryKey.BitLength(); bits != 1024 {
		t.Fatalf("RSA-1024 key has %d bits", bits)
	}
	pub, err := mailsectest.ArmorPublic(good)
	if err != nil || !strings.HasPrefix(pub, "-----BEGIN PGP PUBLIC KEY BLOCK-----") || strings.Contains(pub, "PRIVATE") {
		t.Fatalf("ArmorPublic: %v", err)
	}
	sec, err := mailsectest.ArmorPrivate(good, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(sec))
	if err != nil || !el[0].PrivateKey.Encrypted || el[0].DecryptPrivateKeys([]byte("pw")) != nil {
		t.Fatalf("ArmorPrivate: %v", err)
	}
	if good.PrivateKey.Encrypted {
		t.Fatal("ArmorPrivate changed its argument")
	}
}

func ExampleNewPGPKey() {
	// A Curve25519 key for a test recipient, and its public half as a
	// user would export it with gpg --armor --export.
	ann, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		panic(err)
	}
	pub, _ := mailsectest.ArmorPublic(ann)
	fmt.Println(strings.SplitN(pub, "\n", 2)[0])
	// Output: -----BEGIN PGP PUBLIC KEY BLOCK-----
}

func ExampleArmorPrivate() {
	lab, _ := mailsectest.NewPGPKey("Lab", "lab@example.com", mailsectest.PGPKeyOptions{Algorithm: mailsectest.PGPCurve25519})
	sec, _ := mailsectest.ArmorPrivate(lab, []byte("passphrase"))
	fmt.Println(strings.SplitN(sec, "\n", 2)[0])
	// Output: -----BEGIN PGP PRIVATE KEY BLOCK-----
}

func ExampleArmorPublic() {
	bob, _ := mailsectest.NewPGPKey("Bob", "bob@example.org", mailsectest.PGPKeyOptions{Expired: true})
	pub, _ := mailsectest.ArmorPublic(bob)
	fmt.Println(strings.Contains(pub, "END PGP PUBLIC KEY BLOCK"))
	// Output: true
}
